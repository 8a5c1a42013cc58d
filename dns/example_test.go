package dns_test

import (
	"context"
	"fmt"
	"net/netip"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
)

func ExampleRecords() {
	records, err := dns.NewRecords(dns.Config{Zone: "cluster.local.", Pods: dns.PodsVerified})
	if err != nil {
		panic(err)
	}
	// The embedder's event source feeds objects (dns/kubeconv converts
	// Kubernetes ones) and says when the initial lists are in.
	_ = records.OnServiceAdd(&dns.Service{Namespace: "default", Name: "web",
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Ports:      []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}}})
	_ = records.OnServiceAdd(&dns.Service{Namespace: "default", Name: "db"}) // headless
	_ = records.OnEndpointSliceAdd(&dns.EndpointSlice{Namespace: "default", Name: "db-x1", Service: "db",
		Endpoints: []dns.Endpoint{{Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.5")}, Hostname: "db-0", Ready: true}}})
	records.MarkSynced()

	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.default.svc.cluster.local.", mdns.TypeA},
		{"_http._tcp.web.default.svc.cluster.local.", mdns.TypeSRV},
		{"db-0.db.default.svc.cluster.local.", mdns.TypeA},
		{"5.0.1.10.in-addr.arpa.", mdns.TypePTR},
		{"web.default.svc.cluster.local.", mdns.TypeAAAA},
		{"nope.default.svc.cluster.local.", mdns.TypeA},
	} {
		res, _ := records.Lookup(q.name, q.qtype)
		fmt.Printf("%s %s: %s", q.name, mdns.TypeToString[q.qtype], mdns.RcodeToString[res.Rcode])
		for _, rr := range res.Answer {
			fmt.Printf(" [%s]", rrText(rr))
		}
		fmt.Println()
	}
	// Output:
	// web.default.svc.cluster.local. A: NOERROR [web.default.svc.cluster.local. A 10.96.0.10]
	// _http._tcp.web.default.svc.cluster.local. SRV: NOERROR [_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local.]
	// db-0.db.default.svc.cluster.local. A: NOERROR [db-0.db.default.svc.cluster.local. A 10.1.0.5]
	// 5.0.1.10.in-addr.arpa. PTR: NOERROR [5.0.1.10.in-addr.arpa. PTR db-0.db.default.svc.cluster.local.]
	// web.default.svc.cluster.local. AAAA: NOERROR
	// nope.default.svc.cluster.local. A: NXDOMAIN
}

func ExampleServer() {
	records, _ := dns.NewRecords(dns.Config{})
	_ = records.OnServiceAdd(&dns.Service{Namespace: "kube-system", Name: "kube-dns",
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}})
	records.MarkSynced()

	srv, err := dns.NewServer(dns.ServerConfig{
		Records: records,
		Listen:  []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, // UDP and TCP
		// Forward: dns.ForwardConfig{ResolvConf: "/etc/resolv.conf"},
	})
	if err != nil {
		panic(err)
	}
	if err := srv.Listen(); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()

	q := new(mdns.Msg)
	q.SetQuestion("kube-dns.kube-system.svc.cluster.local.", mdns.TypeA)
	r, _, err := (&mdns.Client{Net: "tcp"}).Exchange(q, srv.TCPAddrs()[0].String())
	if err != nil {
		panic(err)
	}
	fmt.Println(mdns.RcodeToString[r.Rcode], rrText(r.Answer[0]))

	cancel()
	fmt.Println("Run:", <-done)
	// Output:
	// NOERROR kube-dns.kube-system.svc.cluster.local. A 10.96.0.10
	// Run: <nil>
}

func ExamplePodResolvConf() {
	rc, warnings, err := dns.PodResolvConf(dns.PodDNSParams{
		Policy:        dns.DNSClusterFirst,
		Namespace:     "shop",
		ClusterDomain: "cluster.local",
		ClusterDNS:    []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Host:          &dns.ResolvConf{Search: []string{"corp.example"}},
		Config:        &dns.PodDNSConfig{Options: []dns.PodDNSOption{{Name: "ndots", Value: "2"}}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Print(rc)
	fmt.Println(len(warnings), "warnings")
	// Output:
	// nameserver 10.96.0.10
	// search shop.svc.cluster.local svc.cluster.local cluster.local corp.example
	// options ndots:2
	// 0 warnings
}
