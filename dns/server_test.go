package dns_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kubewire/kubewire/dns"
)

// bigHeadless adds a headless service with n ready endpoints.
func bigHeadless(t testing.TB, r *dns.Records, name string, n int) {
	t.Helper()
	if err := r.OnServiceAdd(&dns.Service{Namespace: "default", Name: name, Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}}}); err != nil {
		t.Fatal(err)
	}
	for s := 0; s*100 < n; s++ {
		es := &dns.EndpointSlice{Namespace: "default", Name: fmt.Sprintf("%s-%d", name, s), Service: name,
			Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 8080}}}
		for i := s * 100; i < min(n, (s+1)*100); i++ {
			es.Endpoints = append(es.Endpoints, dns.Endpoint{Ready: true,
				Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})}})
		}
		if err := r.OnEndpointSliceAdd(es); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTruncation(t *testing.T) {
	rec := fixture(t, dns.Config{})
	bigHeadless(t, rec, "big", 1000)
	bigHeadless(t, rec, "mid", 40)     // 40 A records: ~700 bytes
	bigHeadless(t, rec, "fifteen", 15) // 15 SRV records fit in 1232 bytes, their addresses do not
	_, addr := startServer(t, dns.ServerConfig{Records: rec})
	const big = "big.default.svc.cluster.local."

	for _, tc := range []struct {
		name      string
		network   string
		qname     string
		qtype     uint16
		edns      uint16 // 0: no EDNS
		tc        bool
		answers   int // -1: any
		maxSize   int
		wantExtra int // -1: any
	}{
		{"udp no edns", "udp", big, mdns.TypeA, 0, true, -1, 512, -1},
		{"udp edns 1232", "udp", big, mdns.TypeA, 1232, true, -1, 1232, -1},
		{"udp edns 4096 capped at MaxUDPSize", "udp", big, mdns.TypeA, 4096, true, -1, 1232, -1},
		{"udp edns below 512 means 512", "udp", big, mdns.TypeA, 100, true, -1, 512, -1},
		{"tcp everything", "tcp", big, mdns.TypeA, 0, false, 1000, 65535, -1},
		// 1000 SRV records fit in 64 KiB; not all their addresses do,
		// and additional data is optional: no TC.
		{"tcp srv", "tcp", "_http._tcp." + big, mdns.TypeSRV, 1232, false, 1000, 65535, -1},
		{"mid fits with edns", "udp", "mid.default.svc.cluster.local.", mdns.TypeA, 1232, false, 40, 1232, -1},
		{"mid truncated without", "udp", "mid.default.svc.cluster.local.", mdns.TypeA, 0, true, -1, 512, -1},
		{"srv answers fit, additional dropped without TC", "udp", "_http._tcp.fifteen.default.svc.cluster.local.", mdns.TypeSRV, 1232, false, 15, 1232, -1},
		{"srv answers fit with additional over TCP", "tcp", "_http._tcp.fifteen.default.svc.cluster.local.", mdns.TypeSRV, 1232, false, 15, 65535, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var edit []func(*mdns.Msg)
			if tc.edns != 0 {
				edit = append(edit, edns(tc.edns))
			}
			r := ask(t, addr, tc.network, tc.qname, tc.qtype, edit...)
			r.Compress = true
			b, err := r.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if r.Truncated != tc.tc {
				t.Errorf("TC %v, want %v (%d answers, %d bytes)", r.Truncated, tc.tc, len(r.Answer), len(b))
			}
			if len(b) > tc.maxSize {
				t.Errorf("%d bytes, want at most %d", len(b), tc.maxSize)
			}
			if tc.answers >= 0 && len(r.Answer) != tc.answers {
				t.Errorf("%d answers, want %d", len(r.Answer), tc.answers)
			}
			if tc.wantExtra >= 0 && len(texts(r.Extra)) != tc.wantExtra {
				t.Errorf("%d additional records, want %d", len(texts(r.Extra)), tc.wantExtra)
			}
			if opt := r.IsEdns0(); (opt != nil) != (tc.edns != 0) {
				t.Errorf("reply OPT %v for a query with EDNS size %d", opt, tc.edns)
			} else if opt != nil && opt.UDPSize() != 1232 {
				t.Errorf("advertised size %d, want 1232", opt.UDPSize())
			}
		})
	}
	// Every address of the big service is there over TCP, once.
	r := ask(t, addr, "tcp", big, mdns.TypeA)
	seen := map[string]bool{}
	for _, rr := range r.Answer {
		seen[rr.(*mdns.A).A.String()] = true
	}
	if len(seen) != 1000 {
		t.Errorf("%d distinct addresses over TCP, want 1000", len(seen))
	}
	// Endpoint names of a large service (indexed) and of a small one (scanned).
	for _, name := range []string{"10-2-3-231.big.default.svc.cluster.local.", "10-2-0-7.fifteen.default.svc.cluster.local."} {
		if got := texts(ask(t, addr, "udp", name, mdns.TypeA).Answer); len(got) != 1 {
			t.Errorf("%s: %q", name, got)
		}
	}
	if got := texts(ask(t, addr, "udp", dns.ReverseName(ip("10.2.3.231")), mdns.TypePTR).Answer); len(got) != 1 || !strings.HasSuffix(got[0], "PTR 10-2-3-231.big.default.svc.cluster.local.") {
		t.Errorf("PTR in a large service: %q", got)
	}
	r = ask(t, addr, "udp", "_http._tcp.fifteen.default.svc.cluster.local.", mdns.TypeSRV, edns(1232))
	if n := len(texts(r.Extra)); n == 0 || n >= 15 {
		t.Errorf("%d additional records over UDP, want some but not all 15", n)
	}
}

func TestMalformedQueries(t *testing.T) {
	rec := fixture(t, dns.Config{})
	s, err := dns.NewServer(dns.ServerConfig{Records: rec})
	if err != nil {
		t.Fatal(err)
	}
	q := func(edit func(*mdns.Msg)) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetQuestion("web.default.svc.cluster.local.", mdns.TypeA)
		edit(m)
		w := udpFrom("10.0.0.1")
		s.ServeDNS(w, m)
		if len(w.msgs) != 1 {
			t.Fatalf("%d replies", len(w.msgs))
		}
		r := new(mdns.Msg)
		if err := r.Unpack(w.msgs[0]); err != nil {
			t.Fatal(err)
		}
		if r.Id != m.Id || !r.Response {
			t.Fatalf("reply header %+v", r.MsgHdr)
		}
		return r
	}
	for _, tc := range []struct {
		name  string
		edit  func(*mdns.Msg)
		rcode int
	}{
		{"no question", func(m *mdns.Msg) { m.Question = nil }, mdns.RcodeFormatError},
		{"two questions", func(m *mdns.Msg) { m.Question = append(m.Question, m.Question[0]) }, mdns.RcodeFormatError},
		{"a response", func(m *mdns.Msg) { m.Response = true }, mdns.RcodeFormatError},
		{"update", func(m *mdns.Msg) { m.Opcode = mdns.OpcodeUpdate }, mdns.RcodeNotImplemented},
		{"notify", func(m *mdns.Msg) { m.Opcode = mdns.OpcodeNotify }, mdns.RcodeNotImplemented},
		{"chaos class", func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS }, mdns.RcodeRefused},
		{"axfr", func(m *mdns.Msg) { m.Question[0].Qtype = mdns.TypeAXFR }, mdns.RcodeRefused},
		{"edns version 1", func(m *mdns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }, mdns.RcodeBadVers},
		{"out of zone, no forwarder", func(m *mdns.Msg) { m.Question[0].Name = "example.com." }, mdns.RcodeRefused},
		{"class ANY", func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassANY }, mdns.RcodeSuccess},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := q(tc.edit); r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
		})
	}
}

// TestEventsVisibleAtOnce: every event shows in the next answer, with a
// cache in front of the forwarder.
func TestEventsVisibleAtOnce(t *testing.T) {
	up := newUpstream(t, answer(3600, map[string]string{"example.com.": "192.0.2.1"}))
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: []netip.AddrPort{up.addr}}})
	a := func(name string, qtype uint16) []string {
		t.Helper()
		return texts(ask(t, addr, "udp", name, qtype).Answer)
	}
	const web = "web.default.svc.cluster.local."
	if got := a(web, mdns.TypeA); !slices.Equal(got, []string{webA}) {
		t.Fatalf("before: %q", got)
	}
	// Update the service: a new address, at once.
	if err := rec.OnServiceUpdate(nil, &dns.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{ip("10.96.0.99")}}); err != nil {
		t.Fatal(err)
	}
	if got := a(web, mdns.TypeA); !slices.Equal(got, []string{"web.default.svc.cluster.local. A 10.96.0.99"}) {
		t.Fatalf("after update: %q", got)
	}
	if got := a(web, mdns.TypeAAAA); len(got) != 0 {
		t.Fatalf("AAAA after update to single-stack: %q", got)
	}
	if got := a(dns.ReverseName(ip("10.96.0.10")), mdns.TypePTR); len(got) != 0 {
		t.Fatalf("old PTR kept: %q", got)
	}
	if got := a(dns.ReverseName(ip("10.96.0.99")), mdns.TypePTR); len(got) != 1 {
		t.Fatalf("new PTR missing: %q", got)
	}
	// A new ready endpoint in a headless service.
	if err := rec.OnEndpointSliceUpdate(nil, &dns.EndpointSlice{Namespace: "default", Name: "db-v4", Service: "db",
		Ports:     []dns.Port{{Name: "pg", Protocol: dns.TCP, Port: 5432}},
		Endpoints: []dns.Endpoint{{Addresses: []netip.Addr{ip("10.1.0.8")}, Hostname: "db-3", Ready: true}}}); err != nil {
		t.Fatal(err)
	}
	if got := a("db.default.svc.cluster.local.", mdns.TypeA); !slices.Equal(got, []string{"db.default.svc.cluster.local. A 10.1.0.8"}) {
		t.Fatalf("headless after slice update: %q", got)
	}
	if got := a("db-0.db.default.svc.cluster.local.", mdns.TypeA); len(got) != 0 {
		t.Fatalf("removed endpoint still answers: %q", got)
	}
	if r := ask(t, addr, "udp", dns.ReverseName(ip("10.1.0.5")), mdns.TypePTR); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("PTR of a removed endpoint: %v", r)
	}
	// Deletion: NXDOMAIN, and the namespace remains while other services live.
	rec.OnServiceDelete(&dns.Service{Namespace: "default", Name: "web"})
	if r := ask(t, addr, "udp", web, mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("after delete: %v", r)
	}
	if r := ask(t, addr, "udp", "default.svc.cluster.local.", mdns.TypeA); r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("namespace after delete: %v", r)
	}
	// Slices may come before their service: the service shows them.
	if err := rec.OnEndpointSliceAdd(&dns.EndpointSlice{Namespace: "late", Name: "late-1", Service: "late",
		Endpoints: []dns.Endpoint{{Addresses: []netip.Addr{ip("10.3.0.1")}, Ready: true}}}); err != nil {
		t.Fatal(err)
	}
	if r := ask(t, addr, "udp", "late.late.svc.cluster.local.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("slice without its service: %v", r)
	}
	if r := ask(t, addr, "udp", "late.svc.cluster.local.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("namespace of a lone slice exists: %v", r)
	}
	if err := rec.OnServiceAdd(&dns.Service{Namespace: "late", Name: "late"}); err != nil {
		t.Fatal(err)
	}
	if got := a("late.late.svc.cluster.local.", mdns.TypeA); len(got) != 1 {
		t.Fatalf("service after its slice: %q", got)
	}
	// Namespaces and pods come and go.
	rec.OnNamespaceDelete(&dns.Namespace{Name: "empty-ns"})
	if r := ask(t, addr, "udp", "empty-ns.svc.cluster.local.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("deleted namespace: %v", r)
	}
	// Forwarded names are cached: the upstream sees one query for two.
	for range 2 {
		if got := a("example.com.", mdns.TypeA); len(got) != 1 {
			t.Fatalf("forwarded: %q", got)
		}
	}
	if n := up.count("example.com.", mdns.TypeA); n != 1 {
		t.Fatalf("upstream asked %d times, want 1 (cached)", n)
	}
}

func TestStatsAndCleanup(t *testing.T) {
	rec := fixture(t, dns.Config{})
	st := rec.Stats()
	if st.Services != 7 || st.EndpointSlices != 3 || st.Pods != 1 {
		t.Fatalf("stats %+v", st)
	}
	for _, s := range []string{"web", "v6only", "db", "empty", "ext", "ext-in"} {
		rec.OnServiceDelete(&dns.Service{Namespace: "default", Name: s})
	}
	rec.OnServiceDelete(&dns.Service{Namespace: "kube-system", Name: "other"})
	for _, s := range []string{"db-v4", "db-v6"} {
		rec.OnEndpointSliceDelete(&dns.EndpointSlice{Namespace: "default", Name: s, Service: "db"})
	}
	rec.OnEndpointSliceDelete(&dns.EndpointSlice{Namespace: "default", Name: "empty-1", Service: "empty"})
	rec.OnPodDelete(&dns.Pod{Namespace: "default", Name: "client"})
	rec.OnNamespaceDelete(&dns.Namespace{Name: "empty-ns"})
	if st := rec.Stats(); st != (dns.Stats{}) {
		t.Fatalf("after deleting everything: %+v", st)
	}
	// Invalid objects are refused and change nothing.
	for _, err := range []error{
		rec.OnServiceAdd(&dns.Service{Namespace: "default", Name: "Bad_Name"}),
		rec.OnServiceAdd(&dns.Service{Namespace: "default", Name: "x", ClusterIPs: []netip.Addr{ip("10.0.0.1"), ip("10.0.0.2")}}),
		rec.OnServiceAdd(&dns.Service{Namespace: "default", Name: "x", ExternalName: "10.0.0.1"}),
		rec.OnServiceAdd(&dns.Service{Namespace: "default", Name: "x", ExternalName: "a..b"}),
		rec.OnServiceAdd(&dns.Service{Namespace: "default", Name: "x", Ports: []dns.Port{{Protocol: "ICMP"}}}),
		rec.OnEndpointSliceAdd(&dns.EndpointSlice{Namespace: "default", Name: "s", Service: "x", Endpoints: []dns.Endpoint{{Addresses: []netip.Addr{{}}}}}),
		rec.OnEndpointSliceAdd(&dns.EndpointSlice{Namespace: "default", Name: "s", Service: "x", Endpoints: []dns.Endpoint{{Hostname: "a.b"}}}),
		rec.OnPodAdd(&dns.Pod{Namespace: "", Name: "p"}),
		rec.OnNamespaceAdd(&dns.Namespace{Name: "a.b"}),
		rec.OnServiceAdd(nil),
	} {
		if err == nil {
			t.Error("invalid object accepted")
		} else if !strings.HasPrefix(err.Error(), "dns: invalid") {
			t.Errorf("error %q", err)
		}
	}
	if st := rec.Stats(); st != (dns.Stats{}) {
		t.Fatalf("after invalid objects: %+v", st)
	}
}

func TestQueryLogAndMetrics(t *testing.T) {
	var buf bytes.Buffer
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	log := slog.New(slog.NewTextHandler(lockedWriter{&buf, mu}, nil))
	reg := prometheus.NewRegistry()
	up := newUpstream(t, answer(60, map[string]string{"example.com.": "192.0.2.1"}))
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, QueryLog: log, Registerer: reg,
		Forward: dns.ForwardConfig{Upstreams: []netip.AddrPort{up.addr}}})
	ask(t, addr, "udp", "web.default.svc.cluster.local.", mdns.TypeA)
	ask(t, addr, "tcp", "nope.default.svc.cluster.local.", mdns.TypeAAAA)
	ask(t, addr, "udp", "example.com.", mdns.TypeA)
	ask(t, addr, "udp", "example.com.", mdns.TypeA)
	ask(t, addr, "udp", "web.default.svc.cluster.local.", mdns.TypeLOC) // NODATA

	<-mu
	logged := buf.String()
	mu <- struct{}{}
	for _, want := range []string{"name=web.default.svc.cluster.local. rcode=NOERROR", "type=AAAA", "rcode=NXDOMAIN", "proto=tcp", "source=cache", "source=forward", "source=zone"} {
		if !strings.Contains(logged, want) {
			t.Errorf("query log lacks %q:\n%s", want, logged)
		}
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string, labels map[string]string) float64 {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if match(m, labels) {
					switch {
					case m.Counter != nil:
						return m.Counter.GetValue()
					case m.Gauge != nil:
						return m.Gauge.GetValue()
					case m.Histogram != nil:
						return float64(m.Histogram.GetSampleCount())
					}
				}
			}
		}
		return -1
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kubewire_dns_requests_total", map[string]string{"proto": "udp", "family": "1", "type": "A"}, 3},
		{"kubewire_dns_requests_total", map[string]string{"proto": "tcp", "type": "AAAA"}, 1},
		{"kubewire_dns_responses_total", map[string]string{"rcode": "NXDOMAIN"}, 1},
		{"kubewire_dns_requests_total", map[string]string{"proto": "udp", "type": "other"}, 1},
		{"kubewire_dns_responses_total", map[string]string{"rcode": "NOERROR"}, 4},
		{"kubewire_dns_request_duration_seconds", map[string]string{"type": "A"}, 3},
		{"kubewire_dns_request_duration_seconds", map[string]string{"type": "other"}, 1},
		{"kubewire_cache_hits_total", map[string]string{"type": "success"}, 1},
		{"kubewire_cache_misses_total", nil, 1},
		{"kubewire_cache_entries", map[string]string{"type": "success"}, 1},
		{"kubewire_forward_requests_total", map[string]string{"to": up.addr.String()}, 1},
		{"kubewire_forward_responses_total", map[string]string{"to": up.addr.String(), "rcode": "NOERROR"}, 1},
		{"kubewire_forward_upstream_healthy", map[string]string{"to": up.addr.String()}, 1},
	} {
		if got := get(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// A second server cannot register on the same registry.
	if _, err := dns.NewServer(dns.ServerConfig{Records: rec, Registerer: reg}); err == nil {
		t.Error("second registration accepted")
	}
}

func match(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

type lockedWriter struct {
	buf *bytes.Buffer
	mu  chan struct{}
}

func (w lockedWriter) Write(p []byte) (int, error) {
	<-w.mu
	defer func() { w.mu <- struct{}{} }()
	return w.buf.Write(p)
}

func TestServerLifecycle(t *testing.T) {
	rec := fixture(t, dns.Config{})
	if _, err := dns.NewServer(dns.ServerConfig{}); err == nil {
		t.Error("no Records accepted")
	}
	for _, cfg := range []dns.ServerConfig{
		{Records: rec, MaxUDPSize: 100},
		{Records: rec, Forward: dns.ForwardConfig{ResolvConf: "/nonexistent/resolv.conf"}},
		{Records: rec, StubDomains: map[string]dns.ForwardConfig{"svc.cluster.local.": {Upstreams: []netip.AddrPort{ipp("127.0.0.1:53")}}}},
		{Records: rec, StubDomains: map[string]dns.ForwardConfig{"corp.example.": {}}},
		{Records: rec, Forward: dns.ForwardConfig{Upstreams: []netip.AddrPort{{}}}},
		{Records: rec, Cache: dns.CacheConfig{MaxTTL: time.Millisecond}},
		{Records: rec, Autopath: dns.AutopathConfig{Enabled: true, HostSearch: []string{"bad domain"}}},
	} {
		if _, err := dns.NewServer(cfg); err == nil {
			t.Errorf("NewServer accepted %+v", cfg)
		}
	}
	// Run with nothing to listen on fails; Close is idempotent.
	s, err := dns.NewServer(dns.ServerConfig{Records: rec})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("Run without sockets succeeded")
	}
	s, err = dns.NewServer(dns.ServerConfig{Records: rec, Listen: []netip.AddrPort{ipp("127.0.0.1:0"), ipp("[::1]:0")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	if got := s.UDPAddrs(); len(got) != 2 || !got[1].Addr().Is6() {
		t.Fatalf("UDP addresses %v", got)
	}
	if err := s.Listen(); err == nil {
		t.Error("second Listen succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// IPv6 end to end.
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Listen: []netip.AddrPort{ipp("[::1]:0")}})
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, addr, network, "web.default.svc.cluster.local.", mdns.TypeAAAA)
		if got := texts(r.Answer); !slices.Equal(got, []string{webAAAA}) {
			t.Errorf("over %s/IPv6: %q", network, got)
		}
	}
}

type panicWriter struct{ *fakeWriter }

func (panicWriter) Write([]byte) (int, error) { panic("broken writer") }

// TestPanicRecovery: a panic while answering is contained and counted.
func TestPanicRecovery(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := dns.NewServer(dns.ServerConfig{Records: fixture(t, dns.Config{}), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	q := new(mdns.Msg)
	q.SetQuestion("web.default.svc.cluster.local.", mdns.TypeA)
	s.ServeDNS(panicWriter{udpFrom("10.0.0.1")}, q)
	s.ServeDNS(nil, q)
	s.ServeDNS(udpFrom("10.0.0.1"), nil)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "kubewire_dns_panics_total" && mf.GetMetric()[0].GetCounter().GetValue() == 1 {
			return
		}
	}
	t.Fatal("panic not counted")
}
