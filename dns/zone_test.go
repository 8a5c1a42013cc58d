package dns_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
)

// fixture is a small cluster: dual-stack and IPv6-only ClusterIP
// services, headless services (ready, not ready, dual-stack endpoints),
// ExternalName services, a known empty namespace and a pod.
func fixture(t testing.TB, cfg dns.Config) *dns.Records {
	t.Helper()
	if cfg.ReverseCIDRs == nil {
		cfg.ReverseCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	}
	r, err := dns.NewRecords(cfg)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.OnServiceAdd(&dns.Service{Namespace: "default", Name: "web",
		ClusterIPs: []netip.Addr{ip("10.96.0.10"), ip("fd00:96::10")},
		Ports: []dns.Port{
			{Name: "http", Protocol: dns.TCP, Port: 80},
			{Name: "dns", Protocol: dns.UDP, Port: 53},
			{Protocol: dns.TCP, Port: 8080},
		}}))
	must(r.OnServiceAdd(&dns.Service{Namespace: "default", Name: "v6only",
		ClusterIPs: []netip.Addr{ip("fd00:96::20")}, Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}}}))
	must(r.OnServiceAdd(&dns.Service{Namespace: "kube-system", Name: "other",
		ClusterIPs: []netip.Addr{ip("10.96.0.30")}}))
	must(r.OnServiceAdd(&dns.Service{Namespace: "default", Name: "db",
		Ports: []dns.Port{{Name: "pg", Protocol: dns.TCP, Port: 5432}}}))
	must(r.OnEndpointSliceAdd(&dns.EndpointSlice{Namespace: "default", Name: "db-v4", Service: "db",
		Ports: []dns.Port{{Name: "pg", Protocol: dns.TCP, Port: 5432}},
		Endpoints: []dns.Endpoint{
			{Addresses: []netip.Addr{ip("10.1.0.5")}, Hostname: "db-0", Ready: true},
			{Addresses: []netip.Addr{ip("10.1.0.6")}, Ready: true},
			{Addresses: []netip.Addr{ip("10.1.0.7")}, Hostname: "db-2", Ready: false},
		}}))
	must(r.OnEndpointSliceAdd(&dns.EndpointSlice{Namespace: "default", Name: "db-v6", Service: "db",
		Ports: []dns.Port{{Name: "pg", Protocol: dns.TCP, Port: 5432}},
		Endpoints: []dns.Endpoint{
			{Addresses: []netip.Addr{ip("fd00:1::5")}, Hostname: "db-0", Ready: true},
			{Addresses: []netip.Addr{ip("fd00:1::6")}, Ready: true},
		}}))
	must(r.OnServiceAdd(&dns.Service{Namespace: "default", Name: "empty",
		Ports: []dns.Port{{Name: "pg", Protocol: dns.TCP, Port: 5432}}}))
	must(r.OnEndpointSliceAdd(&dns.EndpointSlice{Namespace: "default", Name: "empty-1", Service: "empty",
		Ports:     []dns.Port{{Name: "pg", Protocol: dns.TCP, Port: 5432}},
		Endpoints: []dns.Endpoint{{Addresses: []netip.Addr{ip("10.1.0.9")}, Ready: false}}}))
	must(r.OnServiceAdd(&dns.Service{Namespace: "default", Name: "ext", ExternalName: "db.example.com"}))
	must(r.OnServiceAdd(&dns.Service{Namespace: "default", Name: "ext-in", ExternalName: "web.default.svc.cluster.local."}))
	must(r.OnNamespaceAdd(&dns.Namespace{Name: "empty-ns"}))
	must(r.OnPodAdd(&dns.Pod{Namespace: "default", Name: "client", IPs: []netip.Addr{ip("10.244.1.5"), ip("fd00:244::5")}}))
	r.MarkSynced()
	return r
}

type zoneCase struct {
	name  string
	qtype uint16
	rcode int
	// answer and extra, as rrText renders them, sorted
	answer []string
	extra  []string
}

const (
	webA    = "web.default.svc.cluster.local. A 10.96.0.10"
	webAAAA = "web.default.svc.cluster.local. AAAA fd00:96::10"
)

func zoneCases() []zoneCase {
	nx := mdns.RcodeNameError
	ptr := func(a string) string { return dns.ReverseName(ip(a)) }
	return []zoneCase{
		// Schema version.
		{name: "dns-version.cluster.local.", qtype: mdns.TypeTXT, answer: []string{`dns-version.cluster.local. TXT "1.1.0"`}},
		{name: "dns-version.cluster.local.", qtype: mdns.TypeA},
		// ClusterIP services, dual-stack and single-stack.
		{name: "web.default.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{webA}},
		{name: "web.default.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{webAAAA}},
		{name: "WEB.Default.SVC.Cluster.LOCAL.", qtype: mdns.TypeA, answer: []string{webA}},
		{name: "web.default.svc.cluster.local.", qtype: mdns.TypeANY, answer: []string{webA, webAAAA}},
		{name: "web.default.svc.cluster.local.", qtype: mdns.TypeTXT},
		{name: "web.default.svc.cluster.local.", qtype: mdns.TypeSRV},
		{name: "web.default.svc.cluster.local.", qtype: mdns.TypeMX},
		{name: "v6only.default.svc.cluster.local.", qtype: mdns.TypeA},
		{name: "v6only.default.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"v6only.default.svc.cluster.local. AAAA fd00:96::20"}},
		{name: "other.kube-system.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"other.kube-system.svc.cluster.local. A 10.96.0.30"}},
		{name: "nope.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "nope.default.svc.cluster.local.", qtype: mdns.TypeTXT, rcode: nx},
		{name: "web.nons.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		// SRV per named port.
		{name: "_http._tcp.web.default.svc.cluster.local.", qtype: mdns.TypeSRV,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local."},
			extra:  []string{webA, webAAAA}},
		{name: "_DNS._UDP.web.default.svc.cluster.local.", qtype: mdns.TypeSRV,
			answer: []string{"_dns._udp.web.default.svc.cluster.local. SRV 0 100 53 web.default.svc.cluster.local."},
			extra:  []string{webA, webAAAA}},
		{name: "_http._tcp.web.default.svc.cluster.local.", qtype: mdns.TypeA},
		{name: "_dns._tcp.web.default.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		{name: "_http._udp.web.default.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		{name: "_http._xyz.web.default.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		{name: "_tcp.web.default.svc.cluster.local.", qtype: mdns.TypeSRV},
		{name: "_sctp.web.default.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		{name: "_http._tcp.v6only.default.svc.cluster.local.", qtype: mdns.TypeSRV,
			answer: []string{"_http._tcp.v6only.default.svc.cluster.local. SRV 0 100 80 v6only.default.svc.cluster.local."},
			extra:  []string{"v6only.default.svc.cluster.local. AAAA fd00:96::20"}},
		// Endpoint names exist only under headless services.
		{name: "10-96-0-10.web.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		// Headless: ready endpoints only, both families.
		{name: "db.default.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{
			"db.default.svc.cluster.local. A 10.1.0.5", "db.default.svc.cluster.local. A 10.1.0.6"}},
		{name: "db.default.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{
			"db.default.svc.cluster.local. AAAA fd00:1::5", "db.default.svc.cluster.local. AAAA fd00:1::6"}},
		{name: "db.default.svc.cluster.local.", qtype: mdns.TypeTXT},
		{name: "db-0.db.default.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"db-0.db.default.svc.cluster.local. A 10.1.0.5"}},
		{name: "db-0.db.default.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"db-0.db.default.svc.cluster.local. AAAA fd00:1::5"}},
		{name: "10-1-0-6.db.default.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{"10-1-0-6.db.default.svc.cluster.local. A 10.1.0.6"}},
		{name: "10-1-0-6.db.default.svc.cluster.local.", qtype: mdns.TypeAAAA},
		{name: "fd00-1--6.db.default.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"fd00-1--6.db.default.svc.cluster.local. AAAA fd00:1::6"}},
		{name: "db-2.db.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "10-1-0-7.db.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "_pg._tcp.db.default.svc.cluster.local.", qtype: mdns.TypeSRV,
			answer: []string{
				"_pg._tcp.db.default.svc.cluster.local. SRV 0 33 5432 10-1-0-6.db.default.svc.cluster.local.",
				"_pg._tcp.db.default.svc.cluster.local. SRV 0 33 5432 db-0.db.default.svc.cluster.local.",
				"_pg._tcp.db.default.svc.cluster.local. SRV 0 33 5432 fd00-1--6.db.default.svc.cluster.local.",
			},
			extra: []string{
				"10-1-0-6.db.default.svc.cluster.local. A 10.1.0.6",
				"db-0.db.default.svc.cluster.local. A 10.1.0.5",
				"db-0.db.default.svc.cluster.local. AAAA fd00:1::5",
				"fd00-1--6.db.default.svc.cluster.local. AAAA fd00:1::6",
			}},
		{name: "_pg._udp.db.default.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		// Headless without a ready endpoint: the name does not exist.
		{name: "empty.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "empty.default.svc.cluster.local.", qtype: mdns.TypeAAAA, rcode: nx},
		{name: "_pg._tcp.empty.default.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		{name: "10-1-0-9.empty.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		// ExternalName: a CNAME, chased in and out of the zone.
		{name: "ext.default.svc.cluster.local.", qtype: mdns.TypeCNAME, answer: []string{"ext.default.svc.cluster.local. CNAME db.example.com."}},
		{name: "ext.default.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{
			"db.example.com. A 192.0.2.10", "ext.default.svc.cluster.local. CNAME db.example.com."}},
		{name: "ext-in.default.svc.cluster.local.", qtype: mdns.TypeA, answer: []string{
			"ext-in.default.svc.cluster.local. CNAME web.default.svc.cluster.local.", webA}},
		{name: "ext-in.default.svc.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{
			"ext-in.default.svc.cluster.local. CNAME web.default.svc.cluster.local.", webAAAA}},
		{name: "_http._tcp.ext.default.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		// Empty non-terminals and the apex.
		{name: "cluster.local.", qtype: mdns.TypeSOA, answer: []string{"cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"}},
		{name: "cluster.local.", qtype: mdns.TypeA},
		{name: "cluster.local.", qtype: mdns.TypeNS},
		{name: "svc.cluster.local.", qtype: mdns.TypeA},
		{name: "default.svc.cluster.local.", qtype: mdns.TypeA},
		{name: "kube-system.svc.cluster.local.", qtype: mdns.TypeSRV},
		{name: "empty-ns.svc.cluster.local.", qtype: mdns.TypeA},
		{name: "nons.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "foo.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "dns.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		// No wildcards; too many labels.
		{name: "*.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "web.*.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "*.*.svc.cluster.local.", qtype: mdns.TypeSRV, rcode: nx},
		{name: "a.b._http._tcp.web.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "x.db-0.db.default.svc.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		// Pods (verified).
		{name: "pod.cluster.local.", qtype: mdns.TypeA},
		{name: "default.pod.cluster.local.", qtype: mdns.TypeA},
		{name: "10-244-1-5.default.pod.cluster.local.", qtype: mdns.TypeA, answer: []string{"10-244-1-5.default.pod.cluster.local. A 10.244.1.5"}},
		{name: "10-244-1-5.default.pod.cluster.local.", qtype: mdns.TypeAAAA},
		{name: "fd00-244--5.default.pod.cluster.local.", qtype: mdns.TypeAAAA, answer: []string{"fd00-244--5.default.pod.cluster.local. AAAA fd00:244::5"}},
		{name: "10-244-1-5.kube-system.pod.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "10-244-1-99.default.pod.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "10-244-1.default.pod.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		{name: "x.10-244-1-5.default.pod.cluster.local.", qtype: mdns.TypeA, rcode: nx},
		// PTR: cluster IPs and headless endpoints, IPv4 and IPv6.
		{name: ptr("10.96.0.10"), qtype: mdns.TypePTR, answer: []string{ptr("10.96.0.10") + " PTR web.default.svc.cluster.local."}},
		{name: ptr("fd00:96::10"), qtype: mdns.TypePTR, answer: []string{ptr("fd00:96::10") + " PTR web.default.svc.cluster.local."}},
		{name: ptr("10.1.0.5"), qtype: mdns.TypePTR, answer: []string{ptr("10.1.0.5") + " PTR db-0.db.default.svc.cluster.local."}},
		{name: ptr("10.1.0.6"), qtype: mdns.TypePTR, answer: []string{ptr("10.1.0.6") + " PTR 10-1-0-6.db.default.svc.cluster.local."}},
		{name: ptr("fd00:1::5"), qtype: mdns.TypePTR, answer: []string{ptr("fd00:1::5") + " PTR db-0.db.default.svc.cluster.local."}},
		{name: ptr("fd00:1::6"), qtype: mdns.TypePTR, answer: []string{ptr("fd00:1::6") + " PTR fd00-1--6.db.default.svc.cluster.local."}},
		// In the authoritative reverse zone 10.in-addr.arpa.: unknown
		// addresses (a not-ready endpoint) do not exist, partial names do.
		{name: ptr("10.1.0.7"), qtype: mdns.TypePTR, rcode: nx},
		{name: ptr("10.96.0.10"), qtype: mdns.TypeA},
		{name: "0.96.10.in-addr.arpa.", qtype: mdns.TypePTR},
		{name: "x.10.0.96.10.in-addr.arpa.", qtype: mdns.TypePTR, rcode: nx},
		{name: "10.in-addr.arpa.", qtype: mdns.TypeA},
	}
}

// serial replaces the SOA serial (a timestamp) in rendered records.
func serial(s []string) []string {
	out := slices.Clone(s)
	for i, x := range out {
		var a, b, c string
		var n uint32
		if _, err := fmt.Sscanf(x, "%s SOA %s %s %d", &a, &b, &c, &n); err == nil {
			out[i] = fmt.Sprintf("%s SOA %s %s SERIAL", a, b, c) + x[len(fmt.Sprintf("%s SOA %s %s %d", a, b, c, n)):]
		}
	}
	return out
}

func checkCase(t *testing.T, tc zoneCase, r *mdns.Msg) {
	t.Helper()
	if r.Rcode != tc.rcode {
		t.Fatalf("rcode %s, want %s\n%v", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode], r)
	}
	if !r.Authoritative {
		t.Errorf("AA not set for a zone answer")
	}
	want := tc.answer
	if want == nil {
		want = []string{}
	}
	if got := serial(texts(r.Answer)); !slices.Equal(got, want) {
		t.Errorf("answer\n got  %q\n want %q", got, want)
	}
	if tc.extra != nil {
		if got := texts(r.Extra); !slices.Equal(got, tc.extra) {
			t.Errorf("extra\n got  %q\n want %q", got, tc.extra)
		}
	}
	if len(tc.answer) == 0 && tc.rcode != mdns.RcodeServerFailure {
		// Negative answers carry the zone SOA, minimum = record TTL.
		if len(r.Ns) != 1 {
			t.Fatalf("authority %v, want the SOA", r.Ns)
		}
		soa, ok := r.Ns[0].(*mdns.SOA)
		if !ok || soa.Minttl != 5 || soa.Hdr.Ttl != 5 {
			t.Fatalf("authority %v, want an SOA with minimum and TTL 5", r.Ns[0])
		}
		if zone := soa.Hdr.Name; zone != "cluster.local." && zone != "10.in-addr.arpa." {
			t.Errorf("SOA owner %s", zone)
		}
	}
	for _, rr := range append(append([]mdns.RR{}, r.Answer...), r.Extra...) {
		if rr.Header().Rrtype != mdns.TypeOPT && rr.Header().Ttl != 5 && rr.Header().Name != "db.example.com." {
			t.Errorf("TTL %d in %v, want 5", rr.Header().Ttl, rr)
		}
	}
}

// TestZone asks every case over a real UDP and TCP listener.
func TestZone(t *testing.T) {
	up := newUpstream(t, answer(300, map[string]string{"db.example.com.": "192.0.2.10"}))
	rec := fixture(t, dns.Config{Pods: dns.PodsVerified})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: []netip.AddrPort{up.addr}}})
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range zoneCases() {
			t.Run(network+"/"+tc.name+"/"+mdns.TypeToString[tc.qtype], func(t *testing.T) {
				checkCase(t, tc, ask(t, addr, network, tc.name, tc.qtype, edns(4096)))
			})
		}
	}
}

// TestLookup checks the same cases on Records directly, and what Lookup
// leaves to the caller.
func TestLookup(t *testing.T) {
	rec := fixture(t, dns.Config{Pods: dns.PodsVerified})
	for _, tc := range zoneCases() {
		if tc.name == "ext.default.svc.cluster.local." && tc.qtype == mdns.TypeA {
			continue // chased by the Server
		}
		t.Run(tc.name+"/"+mdns.TypeToString[tc.qtype], func(t *testing.T) {
			res, ok := rec.Lookup(tc.name, tc.qtype)
			if !ok {
				t.Fatal("not authoritative")
			}
			m := &mdns.Msg{Answer: res.Answer, Ns: res.Ns, Extra: res.Extra}
			m.Rcode, m.Authoritative = res.Rcode, true
			if tc.name == "ext-in.default.svc.cluster.local." {
				tc.answer = tc.answer[:1] // the Server chases the CNAME
			}
			checkCase(t, tc, m)
		})
	}
	for _, name := range []string{"example.com.", "4.3.2.1.in-addr.arpa.", "cluster.local.example."} {
		if _, ok := rec.Lookup(name, mdns.TypePTR); ok {
			t.Errorf("Lookup(%s) claims the name", name)
		}
	}
}

func TestPodModes(t *testing.T) {
	for _, tc := range []struct {
		mode          dns.PodMode
		name          string
		qtype         uint16
		rcode, answer int
	}{
		{dns.PodsDisabled, "10-244-1-5.default.pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{dns.PodsDisabled, "pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{dns.PodsDisabled, "default.pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{"", "10-244-1-5.default.pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{dns.PodsInsecure, "10-244-1-5.default.pod.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, 1},
		{dns.PodsInsecure, "1-2-3-4.default.pod.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, 1},
		{dns.PodsInsecure, "1-2-3-4.empty-ns.pod.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, 1},
		{dns.PodsInsecure, "fd00--1.default.pod.cluster.local.", mdns.TypeAAAA, mdns.RcodeSuccess, 1},
		{dns.PodsInsecure, "1-2-3-4.nons.pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{dns.PodsInsecure, "01-2-3-4.default.pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{dns.PodsInsecure, "1-2-3-400.default.pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{dns.PodsInsecure, "default.pod.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, 0},
		{dns.PodsVerified, "1-2-3-4.default.pod.cluster.local.", mdns.TypeA, mdns.RcodeNameError, 0},
		{dns.PodsVerified, "fd00-244-0-0-0-0-0-5.default.pod.cluster.local.", mdns.TypeAAAA, mdns.RcodeSuccess, 1},
	} {
		t.Run(string(tc.mode)+"/"+tc.name, func(t *testing.T) {
			rec := fixture(t, dns.Config{Pods: tc.mode})
			res, _ := rec.Lookup(tc.name, tc.qtype)
			if res.Rcode != tc.rcode || len(res.Answer) != tc.answer {
				t.Fatalf("rcode %s, %d answers; want %s, %d", mdns.RcodeToString[res.Rcode], len(res.Answer), mdns.RcodeToString[tc.rcode], tc.answer)
			}
		})
	}
}

func TestZoneConfig(t *testing.T) {
	r, err := dns.NewRecords(dns.Config{Zone: "Kube.Example", TTL: 30e9, Nameservers: []netip.Addr{ip("10.96.0.10"), ip("fd00:96::a")}})
	if err != nil {
		t.Fatal(err)
	}
	r.MarkSynced()
	if r.Zone() != "kube.example." {
		t.Fatalf("zone %q", r.Zone())
	}
	res, _ := r.Lookup("kube.example.", mdns.TypeNS)
	if got := texts(res.Answer); !slices.Equal(got, []string{"kube.example. NS ns.dns.kube.example."}) {
		t.Errorf("NS %q", got)
	}
	if got := texts(res.Extra); !slices.Equal(got, []string{"ns.dns.kube.example. A 10.96.0.10", "ns.dns.kube.example. AAAA fd00:96::a"}) {
		t.Errorf("glue %q", got)
	}
	res, _ = r.Lookup("ns.dns.kube.example.", mdns.TypeAAAA)
	if len(res.Answer) != 1 || res.Answer[0].Header().Ttl != 30 {
		t.Errorf("ns.dns AAAA: %v", res.Answer)
	}
	res, _ = r.Lookup("dns.kube.example.", mdns.TypeA)
	if res.Rcode != mdns.RcodeSuccess || len(res.Answer) != 0 {
		t.Errorf("dns.<zone>: %v", res)
	}
	if _, ok := r.Lookup("web.default.svc.cluster.local.", mdns.TypeA); ok {
		t.Error("cluster.local. is not this zone")
	}
	for _, bad := range []dns.Config{
		{Zone: "bad zone"}, {Zone: "."}, {TTL: 1500e6}, {TTL: -1}, {Pods: "maybe"},
		{Nameservers: []netip.Addr{{}}}, {ReverseCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/12")}},
		{ReverseCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/63")}},
	} {
		if _, err := dns.NewRecords(bad); err == nil {
			t.Errorf("NewRecords(%+v) accepted", bad)
		}
	}
}

// TestNotSynced: SERVFAIL in the zone until MarkSynced; other names are
// forwarded meanwhile.
func TestNotSynced(t *testing.T) {
	up := newUpstream(t, answer(60, map[string]string{"example.com.": "192.0.2.1"}))
	rec, err := dns.NewRecords(dns.Config{ReverseCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.OnServiceAdd(&dns.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{ip("10.96.0.10")}}); err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: []netip.AddrPort{up.addr}}})
	for _, name := range []string{"web.default.svc.cluster.local.", "nope.cluster.local.", "cluster.local.", "11.0.96.10.in-addr.arpa."} {
		if r := ask(t, addr, "udp", name, mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("%s before sync: %s, want SERVFAIL", name, mdns.RcodeToString[r.Rcode])
		}
	}
	if r := ask(t, addr, "udp", "example.com.", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("forwarded name before sync: %v", r)
	}
	rec.MarkSynced()
	if r := ask(t, addr, "udp", "web.default.svc.cluster.local.", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after sync: %v", r)
	}
	if r := ask(t, addr, "udp", "11.0.96.10.in-addr.arpa.", mdns.TypePTR); r.Rcode != mdns.RcodeNameError {
		t.Errorf("unknown PTR after sync: %v", r)
	}
}
