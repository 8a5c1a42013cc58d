package dns_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kubewire/kubewire/dns"
)

func TestParseResolvConf(t *testing.T) {
	rc, err := dns.ParseResolvConf(strings.NewReader(`# host resolver
nameserver 10.0.0.2
nameserver fe80::1%eth0
search old.example
search corp.example. lab.example .
options ndots:1
options edns0 timeout:2 ; the last options line wins
domain ignored.example
`))
	if err != nil {
		t.Fatal(err)
	}
	want := dns.ResolvConf{
		Nameservers: []netip.Addr{ip("10.0.0.2"), ip("fe80::1%eth0")},
		Search:      []string{"corp.example", "lab.example", "."},
		Options:     []string{"edns0", "timeout:2"},
	}
	if !slices.Equal(rc.Nameservers, want.Nameservers) || !slices.Equal(rc.Search, want.Search) || !slices.Equal(rc.Options, want.Options) {
		t.Fatalf("got %+v\nwant %+v", rc, want)
	}
	if got := rc.String(); got != "nameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch corp.example lab.example .\noptions edns0 timeout:2\n" {
		t.Fatalf("String:\n%s", got)
	}
	for _, bad := range []string{"nameserver\n", "nameserver dns.example\n"} {
		if _, err := dns.ParseResolvConf(strings.NewReader(bad)); !errors.Is(err, dns.ErrInvalid) || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := dns.ReadResolvConf("/nonexistent/resolv.conf"); err == nil {
		t.Error("missing file accepted")
	}
}

func TestPodResolvConf(t *testing.T) {
	host := &dns.ResolvConf{
		Nameservers: []netip.Addr{ip("192.0.2.53"), ip("192.0.2.54")},
		Search:      []string{"corp.example", "lab.example"},
		Options:     []string{"ndots:1", "timeout:2"},
	}
	clusterDNS := []netip.Addr{ip("10.96.0.10")}
	base := func(edit func(*dns.PodDNSParams)) dns.PodDNSParams {
		p := dns.PodDNSParams{Namespace: "web", ClusterDomain: "cluster.local", ClusterDNS: clusterDNS, Host: host}
		edit(&p)
		return p
	}
	clusterSearch := "search web.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
	longSearch := make([]string, 40)
	for i := range longSearch {
		longSearch[i] = fmt.Sprintf("d%02d.example", i)
	}
	long := strings.Repeat("x", 60)
	var charSearch []string
	for i := range 40 {
		charSearch = append(charSearch, fmt.Sprintf("%s%02d.%s.example", long, i, long)) // 134 characters
	}
	for _, tc := range []struct {
		name     string
		params   dns.PodDNSParams
		want     string
		warnings int
	}{
		{"ClusterFirst", base(func(*dns.PodDNSParams) {}),
			"nameserver 10.96.0.10\n" + clusterSearch + "options ndots:5\n", 0},
		{"empty policy is ClusterFirst, trailing dot dropped", base(func(p *dns.PodDNSParams) { p.Policy = ""; p.ClusterDomain = "cluster.local." }),
			"nameserver 10.96.0.10\n" + clusterSearch + "options ndots:5\n", 0},
		{"ClusterFirst on the host network is Default", base(func(p *dns.PodDNSParams) { p.Policy = dns.DNSClusterFirst; p.HostNetwork = true }),
			"nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions ndots:1 timeout:2\n", 0},
		{"ClusterFirstWithHostNet", base(func(p *dns.PodDNSParams) { p.Policy = dns.DNSClusterFirstWithHostNet; p.HostNetwork = true }),
			"nameserver 10.96.0.10\n" + clusterSearch + "options ndots:5\n", 0},
		{"ClusterFirst without cluster DNS falls back to Default", base(func(p *dns.PodDNSParams) { p.ClusterDNS = nil }),
			"nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions ndots:1 timeout:2\n", 1},
		{"ClusterFirst without a cluster domain", base(func(p *dns.PodDNSParams) { p.ClusterDomain = "" }),
			"nameserver 10.96.0.10\nsearch corp.example lab.example\noptions ndots:5\n", 0},
		{"host search duplicates dropped", base(func(p *dns.PodDNSParams) { p.Host = &dns.ResolvConf{Search: []string{"cluster.local", "x.example"}} }),
			"nameserver 10.96.0.10\nsearch web.svc.cluster.local svc.cluster.local cluster.local x.example\noptions ndots:5\n", 0},
		{"Default", base(func(p *dns.PodDNSParams) { p.Policy = dns.DNSDefault }),
			"nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions ndots:1 timeout:2\n", 0},
		{"Default without a host resolv.conf", base(func(p *dns.PodDNSParams) {
			p.Policy, p.Host, p.NodeIPs = dns.DNSDefault, nil, []netip.Addr{ip("192.0.2.1"), ip("2001:db8::1")}
		}), "nameserver 127.0.0.1\nnameserver ::1\nsearch .\n", 0},
		{"Default without anything", base(func(p *dns.PodDNSParams) { p.Policy, p.Host = dns.DNSDefault, nil }),
			"nameserver 127.0.0.1\nsearch .\n", 0},
		{"None", base(func(p *dns.PodDNSParams) { p.Policy = dns.DNSNone }), "", 0},
		{"None with dnsConfig", base(func(p *dns.PodDNSParams) {
			p.Policy = dns.DNSNone
			p.Config = &dns.PodDNSConfig{Nameservers: []netip.Addr{ip("1.1.1.1"), ip("1.1.1.1")}, Searches: []string{"a.example"},
				Options: []dns.PodDNSOption{{Name: "ndots", Value: "2"}, {Name: "edns0"}}}
		}), "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2 edns0\n", 0},
		{"ClusterFirst merged with dnsConfig", base(func(p *dns.PodDNSParams) {
			p.Config = &dns.PodDNSConfig{Nameservers: []netip.Addr{ip("10.96.0.10"), ip("1.1.1.1")}, Searches: []string{"svc.cluster.local", "extra.example"},
				Options: []dns.PodDNSOption{{Name: "ndots", Value: "2"}, {Name: "single-request-reopen"}}}
		}), "nameserver 10.96.0.10\nnameserver 1.1.1.1\nsearch web.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example extra.example\noptions ndots:2 single-request-reopen\n", 0},
		{"at most 3 nameservers", base(func(p *dns.PodDNSParams) {
			p.Policy = dns.DNSDefault
			p.Config = &dns.PodDNSConfig{Nameservers: []netip.Addr{ip("1.1.1.1"), ip("8.8.8.8")}}
		}), "nameserver 192.0.2.53\nnameserver 192.0.2.54\nnameserver 1.1.1.1\nsearch corp.example lab.example\noptions ndots:1 timeout:2\n", 1},
		{"at most 32 search domains", base(func(p *dns.PodDNSParams) {
			p.Policy = dns.DNSNone
			p.Config = &dns.PodDNSConfig{Searches: longSearch}
		}), "search " + strings.Join(longSearch[:32], " ") + "\n", 1},
		{"search line of at most 2048 characters", base(func(p *dns.PodDNSParams) {
			p.Policy = dns.DNSNone
			p.Config = &dns.PodDNSConfig{Searches: charSearch[:20]}
		}), "search " + strings.Join(charSearch[:15], " ") + "\n", 1},
		{"search domains over 253 characters dropped", base(func(p *dns.PodDNSParams) {
			p.Policy = dns.DNSNone
			p.Config = &dns.PodDNSConfig{Searches: []string{strings.Repeat("a.", 127) + "bc", "ok.example"}}
		}), "search ok.example\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, warnings, err := dns.PodResolvConf(tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if got := rc.String(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			if len(warnings) != tc.warnings {
				t.Errorf("warnings %q, want %d", warnings, tc.warnings)
			}
			if len(strings.Join(rc.Search, " ")) > dns.MaxDNSSearchListChars || len(rc.Search) > dns.MaxDNSSearchPaths || len(rc.Nameservers) > dns.MaxDNSNameservers {
				t.Errorf("limits exceeded: %+v", rc)
			}
		})
	}
	// The host's resolv.conf is not modified.
	if !slices.Equal(host.Search, []string{"corp.example", "lab.example"}) || len(host.Nameservers) != 2 {
		t.Fatalf("host config modified: %+v", host)
	}
	if _, _, err := dns.PodResolvConf(dns.PodDNSParams{Policy: "Bogus"}); !errors.Is(err, dns.ErrInvalid) {
		t.Fatalf("bad policy: %v", err)
	}
}
