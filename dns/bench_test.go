package dns_test

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubewire/kubewire/dns"
)

// loadServices feeds n services spread over 100 namespaces: ClusterIP
// services with two named ports and one EndpointSlice of three ready
// endpoints, or headless ones with the same slices.
func loadServices(tb testing.TB, r *dns.Records, n int, headless bool) {
	tb.Helper()
	for i := range n {
		ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("svc-%06d", i)
		s := &dns.Service{Namespace: ns, Name: name, Ports: []dns.Port{
			{Name: "http", Protocol: dns.TCP, Port: 80}, {Name: "metrics", Protocol: dns.TCP, Port: 9090}}}
		if !headless {
			s.ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})}
		}
		if err := r.OnServiceAdd(s); err != nil {
			tb.Fatal(err)
		}
		es := &dns.EndpointSlice{Namespace: ns, Name: name + "-x1", Service: name,
			Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 8080}, {Name: "metrics", Protocol: dns.TCP, Port: 9090}}}
		for j := range 3 {
			es.Endpoints = append(es.Endpoints, dns.Endpoint{Ready: true,
				Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 128 + byte(i>>14), byte(i >> 6), byte(i<<2 | j)})}})
		}
		if err := r.OnEndpointSliceAdd(es); err != nil {
			tb.Fatal(err)
		}
	}
}

func packedQuery(tb testing.TB, name string, qtype uint16) *mdns.Msg {
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, false)
	return q
}

// serve runs one query through the whole handler path (lookup, reply,
// EDNS, packing) and checks the rcode.
// loop serves an A query for name from the client address from, b.N times.
func loop(b *testing.B, s *dns.Server, from, name string, rcode int) {
	w := udpFrom(from)
	q := packedQuery(b, name, mdns.TypeA)
	b.ReportAllocs()
	for b.Loop() {
		serve(b, s, w, q, rcode)
	}
}

func serve(b *testing.B, s *dns.Server, w *fakeWriter, q *mdns.Msg, rcode int) {
	w.msgs = w.msgs[:0]
	s.ServeDNS(w, q)
	if len(w.msgs) != 1 || int(w.msgs[0][3]&0xF) != rcode {
		b.Fatalf("reply %v, want rcode %d", w.msgs, rcode)
	}
}

// BenchmarkQuery measures the query path in process (no sockets; see
// dns/bench for the same over UDP):
//
//	go test -run '^$' -bench BenchmarkQuery -benchmem -benchtime 1s ./dns/
func BenchmarkQuery(b *testing.B) {
	// zone builds a server over n services (and the pods given), with cfg.
	zone := func(b *testing.B, n int, cfg dns.ServerConfig, pods ...*dns.Pod) *dns.Server {
		rec, err := dns.NewRecords(dns.Config{})
		if err != nil {
			b.Fatal(err)
		}
		loadServices(b, rec, n, false)
		for _, p := range pods {
			if err := rec.OnPodAdd(p); err != nil {
				b.Fatal(err)
			}
		}
		rec.MarkSynced()
		cfg.Records = rec
		s, err := dns.NewServer(cfg)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	for _, n := range []int{1000, 100000} {
		s := zone(b, n, dns.ServerConfig{})
		b.Run(fmt.Sprintf("in-zone-hit/services=%d", n), func(b *testing.B) {
			loop(b, s, "10.0.0.1", fmt.Sprintf("svc-%06d.ns-%d.svc.cluster.local.", n/2, (n/2)%100), mdns.RcodeSuccess)
		})
		b.Run(fmt.Sprintf("nxdomain/services=%d", n), func(b *testing.B) {
			loop(b, s, "10.0.0.1", "nope.ns-1.svc.cluster.local.", mdns.RcodeNameError)
		})
	}
	b.Run("in-zone-hit/metrics", func(b *testing.B) {
		// The same with Prometheus metrics registered.
		s := zone(b, 1000, dns.ServerConfig{Registerer: prometheus.NewRegistry()})
		loop(b, s, "10.0.0.1", "svc-000500.ns-0.svc.cluster.local.", mdns.RcodeSuccess)
	})
	b.Run("autopath", func(b *testing.B) {
		// A pod of ns-7 asks for "svc-000001.ns-1": its first search
		// domain fails, the second (svc.<zone>) answers with a CNAME.
		s := zone(b, 1000, dns.ServerConfig{Autopath: dns.AutopathConfig{Enabled: true}},
			&dns.Pod{Namespace: "ns-7", Name: "client", IPs: []netip.Addr{ip("10.244.0.7")}})
		loop(b, s, "10.244.0.7", "svc-000001.ns-1.ns-7.svc.cluster.local.", mdns.RcodeSuccess)
	})
	b.Run("forwarded-cached", func(b *testing.B) {
		up := newUpstream(b, answer(3600, map[string]string{"www.example.com.": "192.0.2.1"}))
		s := zone(b, 0, dns.ServerConfig{Forward: dns.ForwardConfig{Upstreams: []netip.AddrPort{up.addr}}})
		serve(b, s, udpFrom("10.0.0.1"), packedQuery(b, "www.example.com.", mdns.TypeA), mdns.RcodeSuccess) // fills the cache
		loop(b, s, "10.0.0.1", "www.example.com.", mdns.RcodeSuccess)
		if n := up.count("www.example.com.", mdns.TypeA); n != 1 {
			b.Fatalf("upstream asked %d times", n)
		}
	})
}

// BenchmarkRecordsMemory reports the heap Records keeps per service
// (bytes/service): the service, its slice and endpoints, the name and PTR
// index entries, everything. The design bound is 1 KB.
//
//	go test -run '^$' -bench BenchmarkRecordsMemory -benchtime 3x ./dns/
func BenchmarkRecordsMemory(b *testing.B) {
	const n = 100000
	for _, headless := range []bool{false, true} {
		kind := "clusterip"
		if headless {
			kind = "headless"
		}
		b.Run(fmt.Sprintf("%s/services=%d", kind, n), func(b *testing.B) {
			var perService float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				rec, err := dns.NewRecords(dns.Config{})
				if err != nil {
					b.Fatal(err)
				}
				loadServices(b, rec, n, headless)
				runtime.GC()
				runtime.ReadMemStats(&after)
				if st := rec.Stats(); st.Services != n {
					b.Fatalf("stats %+v", st)
				}
				perService = float64(after.HeapAlloc-before.HeapAlloc) / n
				runtime.KeepAlive(rec)
			}
			b.ReportMetric(perService, "bytes/service")
		})
	}
}
