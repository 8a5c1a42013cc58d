package dns_test

import (
	"net/netip"
	"slices"
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubewire/kubewire/dns"
)

func TestAutopath(t *testing.T) {
	up := newUpstream(t, answer(60, map[string]string{
		"example.com.":         "192.0.2.1",
		"host1.corp.internal.": "198.51.100.1",
		"db.example.com.":      "192.0.2.10",
	}))
	rec := fixture(t, dns.Config{})
	if err := rec.OnPodAdd(&dns.Pod{Namespace: "kube-system", Name: "other-client", IPs: []netip.Addr{ip("10.244.2.5")}}); err != nil {
		t.Fatal(err)
	}
	if err := rec.OnPodAdd(&dns.Pod{Namespace: "default", Name: "loopback", IPs: []netip.Addr{ip("127.0.0.1")}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := dns.ServerConfig{Records: rec, Registerer: reg,
		Forward:  dns.ForwardConfig{Upstreams: fwd(up)},
		Autopath: dns.AutopathConfig{Enabled: true, HostSearch: []string{"corp.internal"}}}
	s, addr := startServer(t, cfg)

	const cnameTo = "CNAME "
	for _, tc := range []struct {
		client string
		name   string
		qtype  uint16
		rcode  int
		answer []string
	}{
		// The original name exists: answered as is.
		{"10.244.1.5", "web.default.svc.cluster.local.", mdns.TypeA, 0, []string{webA}},
		// "web.default" searched from namespace default.
		{"10.244.1.5", "web.default.default.svc.cluster.local.", mdns.TypeA, 0, []string{
			"web.default.default.svc.cluster.local. " + cnameTo + "web.default.svc.cluster.local.", webA}},
		{"fd00:244::5", "web.default.default.svc.cluster.local.", mdns.TypeAAAA, 0, []string{
			"web.default.default.svc.cluster.local. " + cnameTo + "web.default.svc.cluster.local.", webAAAA}},
		// Another namespace's service, by <svc>.<ns>.
		{"10.244.1.5", "other.kube-system.default.svc.cluster.local.", mdns.TypeA, 0, []string{
			"other.kube-system.default.svc.cluster.local. " + cnameTo + "other.kube-system.svc.cluster.local.",
			"other.kube-system.svc.cluster.local. A 10.96.0.30"}},
		// An existing name without the type: the CNAME alone (NODATA at the target).
		{"10.244.1.5", "v6only.default.default.svc.cluster.local.", mdns.TypeA, 0, []string{
			"v6only.default.default.svc.cluster.local. " + cnameTo + "v6only.default.svc.cluster.local."}},
		// An ExternalName found by the search, then chased.
		{"10.244.1.5", "ext.default.default.svc.cluster.local.", mdns.TypeA, 0, []string{
			"db.example.com. A 192.0.2.10",
			"ext.default.default.svc.cluster.local. " + cnameTo + "ext.default.svc.cluster.local.",
			"ext.default.svc.cluster.local. CNAME db.example.com."}},
		// The host search domains, then the bare name upstream.
		{"10.244.1.5", "host1.default.svc.cluster.local.", mdns.TypeA, 0, []string{
			"host1.corp.internal. A 198.51.100.1",
			"host1.default.svc.cluster.local. " + cnameTo + "host1.corp.internal."}},
		{"10.244.1.5", "example.com.default.svc.cluster.local.", mdns.TypeA, 0, []string{
			"example.com. A 192.0.2.1",
			"example.com.default.svc.cluster.local. " + cnameTo + "example.com."}},
		// Nothing exists: the original NXDOMAIN, the client searches on.
		{"10.244.1.5", "nothing.default.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError, nil},
		// Not the client's first search domain, or an unknown client: no autopath.
		{"10.244.2.5", "web.default.default.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError, nil},
		{"10.9.9.9", "web.default.default.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError, nil},
		// The search domain itself is not searched.
		{"10.244.1.5", "default.svc.cluster.local.", mdns.TypeA, 0, nil},
	} {
		t.Run(tc.client+"/"+tc.name, func(t *testing.T) {
			q := new(mdns.Msg)
			q.SetQuestion(tc.name, tc.qtype)
			w := udpFrom(tc.client)
			s.ServeDNS(w, q)
			r := new(mdns.Msg)
			if err := r.Unpack(w.msgs[0]); err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
			}
			want := tc.answer
			if want == nil {
				want = []string{}
			}
			if got := texts(r.Answer); !slices.Equal(got, want) {
				t.Errorf("answer\n got  %q\n want %q", got, want)
			}
			if r.Question[0].Name != tc.name {
				t.Errorf("question %q", r.Question[0].Name)
			}
		})
	}

	// Through the real listener: the client is 127.0.0.1, a pod of default.
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, addr, network, "web.default.default.svc.cluster.local.", mdns.TypeA)
		if len(r.Answer) != 2 || r.Answer[0].Header().Rrtype != mdns.TypeCNAME {
			t.Errorf("over %s: %v", network, r)
		}
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "kubewire_autopath_success_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 9 {
				t.Errorf("autopath successes %v, want 9", v)
			}
		}
	}

	// Disabled: no search.
	cfg.Autopath.Enabled = false
	cfg.Registerer = nil
	_, addr = startServer(t, cfg)
	if r := ask(t, addr, "udp", "web.default.default.svc.cluster.local.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("autopath disabled: %v", r)
	}
}
