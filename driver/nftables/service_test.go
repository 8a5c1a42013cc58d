package nftables

import (
	"encoding/binary"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables/expr"

	"github.com/kubewire/kubewire/service"
)

func pname(ns, name, port string) service.PortName {
	return service.PortName{Service: service.Name{Namespace: ns, Name: name}, Port: port, Protocol: service.TCP}
}

func tgt(s string, port uint16) service.Target {
	return service.Target{Addr: netip.MustParseAddr(s), Port: port}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// clusterPort is a ClusterIP service port with the same endpoints for every
// kind of traffic.
func clusterPort(name service.PortName, cips []netip.Addr, eps ...service.Target) service.PortState {
	return service.PortState{Name: name, Protocol: name.Protocol, ClusterIPs: cips, Port: 80,
		InternalEndpoints: eps, ExternalEndpoints: eps, ClusterEndpoints: eps, HasEndpoints: len(eps) > 0}
}

func TestSvcNames(t *testing.T) {
	pn := pname("default", "web", "http")
	a := svcChainName("svc", pn, 0)
	if !strings.HasPrefix(a, "svc-") || !strings.HasSuffix(a, "-default/web:http/tcp") || len(a) != len("svc-12345678-default/web:http/tcp") {
		t.Errorf("svc chain name %q", a)
	}
	if b := svcChainName("svc", pn, 1); b == a {
		t.Errorf("families share the chain name %q", a)
	}
	if b := svcChainName("svc", pname("default", "web", "https"), 0); b[:12] == a[:12] {
		t.Errorf("ports share a hash: %q %q", a, b)
	}
	ep := epChainName(pn, 1, tgt("fd00:10:244:1::2", 8080))
	if !strings.HasPrefix(ep, "ep-") || !strings.HasSuffix(ep, "-fd00:10:244:1::2-8080") {
		t.Errorf("endpoint chain name %q", ep)
	}
	if aff := affSetName(pn, 1, tgt("fd00:10:244:1::2", 8080)); aff[3:] != ep[2:] {
		t.Errorf("affinity set %q does not match endpoint chain %q", aff, ep)
	}
	long := pname(strings.Repeat("n", 63), strings.Repeat("s", 63), strings.Repeat("p", 15))
	l1, l2 := svcChainName("ext", long, 0), svcChainName("ext", pname(strings.Repeat("n", 63), strings.Repeat("s", 63), strings.Repeat("p", 14)+"q"), 0)
	if len(l1) != maxChainNameLen || l1 == l2 {
		t.Errorf("long names not bounded or not distinct: %q %q", l1, l2)
	}
}

func TestValidateServiceState(t *testing.T) {
	good := clusterPort(pname("a", "b", ""), addrs("10.96.0.1"), tgt("10.244.1.2", 80))
	cases := []struct {
		name  string
		edit  func(p *service.PortState)
		field string
	}{
		{"protocol", func(p *service.PortState) { p.Protocol = "ICMP" }, "State.Ports[0].Protocol"},
		{"port", func(p *service.PortState) { p.Port = 0 }, "State.Ports[0].Port"},
		{"cluster ip", func(p *service.PortState) { p.ClusterIPs = []netip.Addr{{}} }, "State.Ports[0].ClusterIPs[0]"},
		{"mapped", func(p *service.PortState) { p.ExternalIPs = addrs("::ffff:1.2.3.4") }, "State.Ports[0].ExternalIPs[0]"},
		{"endpoint port", func(p *service.PortState) { p.ClusterEndpoints = []service.Target{tgt("10.244.1.2", 0)} }, "State.Ports[0].ClusterEndpoints[0].Port"},
		{"affinity", func(p *service.PortState) { p.AffinityTimeout = -time.Second }, "State.Ports[0].AffinityTimeout"},
	}
	for _, c := range cases {
		p := clonePort(&good)
		c.edit(p)
		err := validatePorts(&service.State{Ports: []service.PortState{*p}})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: got %v, want ErrInvalid naming %s", c.name, err, c.field)
		}
	}
	dup := &service.State{Ports: []service.PortState{good, good}}
	if err := validatePorts(dup); !errors.Is(err, ErrInvalid) {
		t.Errorf("duplicate port: got %v", err)
	}
	if err := validatePorts(&service.State{Ports: []service.PortState{good}}); err != nil {
		t.Errorf("valid state refused: %v", err)
	}
	for i, a := range []netip.Addr{{}, netip.IPv4Unspecified(), netip.MustParseAddr("224.0.0.1"), netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("::ffff:10.0.0.1")} {
		err := validateNodeAddresses(&service.State{NodeAddresses: []netip.Addr{netip.MustParseAddr("10.0.0.1"), a}})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "State.NodeAddresses[1]") {
			t.Errorf("node address %d (%v): got %v, want ErrInvalid naming State.NodeAddresses[1]", i, a, err)
		}
	}
	if err := validateNodeAddresses(&service.State{NodeAddresses: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}}); err != nil {
		t.Errorf("valid node addresses refused: %v", err)
	}
	if _, err := buildSvcConfig(ServiceOptions{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.1/16")}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unmasked cluster CIDR: got %v", err)
	}
	if _, err := buildSvcConfig(ServiceOptions{NodePortAddresses: []netip.Addr{netip.IPv4Unspecified()}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unspecified node port address: got %v", err)
	}
}

func chainNames(r portRender) []string {
	var out []string
	for _, c := range r.chains {
		out = append(out, strings.SplitN(c.name, "-", 3)[0]+"-"+strings.SplitN(c.name, "-", 3)[2])
	}
	return out
}

// setCounts counts the elements of a rendering by set name.
func setCounts(els []renderedElem) map[string]int {
	m := map[string]int{}
	for _, e := range els {
		m[e.ref.name()]++
	}
	return m
}

func ownsAll(entryKey) bool { return true }

func TestRenderPort(t *testing.T) {
	cfg, err := buildSvcConfig(ServiceOptions{ClusterCIDRs: prefixes("10.244.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	pn := pname("ns", "web", "")
	local := tgt("10.244.1.2", 80)
	local.Local = true
	dual := clusterPort(pn, addrs("10.96.0.1", "fd00:10:96::1"), local, tgt("fd00:10:244:1::2", 80), tgt("10.244.2.2", 80))
	r := cfg.renderPort(&dual, ownsAll)
	want := map[string]int{"service-keys-v4": 1, "service-dnat-n2-v4": 2, "mark-outside-v4": 1,
		"service-keys-v6": 1, "service-dnat-n1-v6": 1}
	if got := setCounts(r.elems); !maps.Equal(got, want) || len(r.chains) != 0 {
		t.Errorf("dual stack: elements %v chains %v, want %v and no chain", got, chainNames(r), want)
	}
	if got := setCounts(r.shared); !maps.Equal(got, map[string]int{"cluster-ips-v4": 1, "cluster-ips-v6": 1, "hairpin-v4": 1}) {
		t.Errorf("dual stack: shared %v", got)
	}
	for _, e := range r.elems {
		if e.ref.kind == setDNAT && e.ref.fam == 0 {
			ord := binary.NativeEndian.Uint32([]byte(e.key[12:]))
			if wantV := backendValue(dual.InternalEndpoints[[]int{0, 2}[ord]]); e.val != wantV {
				t.Errorf("backend %d = %x, want %x", ord, e.val, wantV)
			}
		}
	}
	if r := cfg.renderPort(&dual, func(e entryKey) bool { return e.fam == 1 }); setCounts(r.elems)["service-keys-v4"] != 0 {
		t.Errorf("a key owned by another port was rendered: %v", setCounts(r.elems))
	}

	// Session affinity: kube-proxy's chains, dispatched by the affinity map.
	aff := dual
	aff.AffinityTimeout = time.Hour
	r = cfg.renderPort(&aff, ownsAll)
	wantChains := []string{"svc-ns/web/tcp", "ep-10.244.1.2-80", "ep-10.244.2.2-80", "svc-ns/web/tcp", "ep-fd00:10:244:1::2-80"}
	if got := chainNames(r); !slices.Equal(got, wantChains) || len(r.sets) != 3 {
		t.Errorf("affinity chains %q sets %v, want %q", got, r.sets, wantChains)
	}
	if got := setCounts(r.elems); got["affinity-ips-v4"] != 1 || got["affinity-ips-v6"] != 1 || got["service-dnat-n2-v4"] != 0 {
		t.Errorf("affinity elements %v", got)
	}
	for _, c := range []svcChainSpec{r.chains[0], r.chains[3]} {
		last := c.rules[len(c.rules)-1]
		ng, ok := last.exprs[0].(*expr.Numgen)
		if !ok || int(ng.Modulus) != len(last.vmap) {
			t.Errorf("chain %s: dispatch %v %v", c.name, last.exprs, last.vmap)
		}
	}

	// No endpoints: reject; endpoints elsewhere only (iTP Local): drop.
	none := clusterPort(pn, addrs("10.96.0.1"))
	if got := setCounts(cfg.renderPort(&none, ownsAll).elems); !maps.Equal(got, map[string]int{"no-endpoints-reject-v4": 1}) {
		t.Errorf("no endpoints: %v", got)
	}
	iLocal := none
	iLocal.HasEndpoints, iLocal.InternalLocal = true, true
	if got := setCounts(cfg.renderPort(&iLocal, ownsAll).elems); !maps.Equal(got, map[string]int{"no-endpoints-drop-v4": 1}) {
		t.Errorf("iTP Local: %v", got)
	}

	// eTP Local without local endpoints: local traffic short-circuits to
	// the cluster set; the rest is dropped by the filter; the LB IP has a
	// firewall.
	ext := clusterPort(pn, addrs("10.96.0.1"), tgt("10.244.2.2", 80))
	ext.NodePort, ext.ExternalLocal, ext.ExternalEndpoints = 30080, true, nil
	ext.LoadBalancerIPs, ext.SourceRanges = addrs("198.18.100.2"), prefixes("198.18.0.0/24", "2001:db8::/64")
	r = cfg.renderPort(&ext, ownsAll)
	want = map[string]int{"service-keys-v4": 2, "service-dnat-n1-v4": 1, "mark-outside-v4": 1,
		"local-mark-v4": 1, "service-local-dnat-n1-v4": 1, "no-endpoints-drop-v4": 1, "firewall-v4": 1, "firewall-allow-v4": 1,
		"nodeport-keys-v4": 1, "nodeport-local-mark-v4": 1, "nodeport-local-dnat-n1-v4": 1, "nodeport-no-endpoints-drop-v4": 1}
	if got := setCounts(r.elems); !maps.Equal(got, want) {
		t.Errorf("eTP Local: %v\nwant %v", got, want)
	}
	for _, e := range r.elems {
		switch e.ref.kind {
		case setNPLocalDNAT:
			if e.key[8:] != "\x00\x00\x00\x00" || e.val != backendValue(ext.ClusterEndpoints[0]) {
				t.Errorf("short-circuit %x : %x", e.key, e.val)
			}
		case setFirewallAllow:
			if e.key[12:] != string([]byte{198, 18, 0, 0}) || e.val[12:] != string([]byte{198, 18, 0, 255}) {
				t.Errorf("allowed range %x-%x", e.key, e.val)
			}
		}
	}
}

func TestPlanSync(t *testing.T) {
	cfg, _ := buildSvcConfig(ServiceOptions{ClusterCIDRs: prefixes("10.244.0.0/16")})
	a := clusterPort(pname("ns", "a", ""), addrs("10.96.0.1"), tgt("10.244.1.2", 80), tgt("10.244.2.2", 80))
	b := clusterPort(pname("ns", "b", ""), addrs("10.96.0.2"), tgt("10.244.1.2", 80))
	c := newCommitted()
	p := cfg.planSync(c, &service.State{Ports: []service.PortState{a, b}})
	if len(p.delElems) != 0 || len(p.addElems) != 4+3+2 || !slices.Equal(names(p.addCountSets), []string{"service-dnat-n1-v4", "service-dnat-n2-v4"}) ||
		p.objDelta != 2 {
		t.Errorf("first plan: +%d -%d elements, maps %v, objDelta %d", len(p.addElems), len(p.delElems), p.addCountSets, p.objDelta)
	}
	// Nothing changed: empty plan.
	if p := cfg.planSync(c, &service.State{Ports: []service.PortState{a, b}}); !p.empty() {
		t.Errorf("unchanged state planned %+v", p)
	}
	// One endpoint of a removed: a moves from the map of count 2 to that of
	// count 1 (the map of 2 and its rule go), b is untouched.
	a2 := clusterPort(a.Name, a.ClusterIPs, tgt("10.244.1.2", 80))
	p = cfg.planSync(c, &service.State{Ports: []service.PortState{a2, b}})
	if got, want := setCounts(p.delElems), map[string]int{"service-dnat-n2-v4": 2}; !maps.Equal(got, want) {
		t.Errorf("endpoint removal deletes %v, want %v", got, want)
	}
	if got := setCounts(p.addElems); !maps.Equal(got, map[string]int{"service-dnat-n1-v4": 1}) {
		t.Errorf("endpoint removal adds %v", got)
	}
	if !slices.Equal(names(p.delCountSets), []string{"service-dnat-n2-v4"}) || len(p.addCountSets) != 0 || p.objDelta != -1 {
		t.Errorf("endpoint removal: maps +%v -%v, objDelta %d", p.addCountSets, p.delCountSets, p.objDelta)
	}
	// A second port on a's ClusterIP shares the cluster-ips element.
	a3 := a2
	a3.Name.Port, a3.Port = "other", 81
	p = cfg.planSync(c, &service.State{Ports: []service.PortState{a2, a3, b}})
	if got := setCounts(p.addElems); got["cluster-ips-v4"] != 0 || got["service-dnat-n1-v4"] != 1 {
		t.Errorf("second port adds %v", got)
	}
	p = cfg.planSync(c, &service.State{Ports: []service.PortState{a3, b}})
	if got := setCounts(p.delElems); got["cluster-ips-v4"] != 0 {
		t.Errorf("removing one of two ports on a ClusterIP deletes %v", got)
	}
	// Two services claim one external IP and port: the first by name owns
	// it; when it goes, the other takes over.
	x1 := clusterPort(pname("ns", "x1", ""), addrs("10.96.0.11"), tgt("10.244.1.11", 80))
	x2 := clusterPort(pname("ns", "x2", ""), addrs("10.96.0.12"), tgt("10.244.1.12", 80))
	x1.ExternalIPs, x2.ExternalIPs = addrs("192.0.2.7"), addrs("192.0.2.7")
	p = cfg.planSync(c, &service.State{Ports: []service.PortState{a3, b, x1, x2}})
	extKey := svcKey(netip.MustParseAddr("192.0.2.7"), 6, 80)
	backendOf := func(els []renderedElem) string {
		for _, e := range els {
			if e.ref.kind == setDNAT && e.key == ordinalKey(extKey, 0) {
				return e.val
			}
		}
		return ""
	}
	if got := backendOf(p.addElems); got != backendValue(x1.ExternalEndpoints[0]) {
		t.Errorf("shared external IP goes to %x, want x1's endpoint", got)
	}
	p = cfg.planSync(c, &service.State{Ports: []service.PortState{a3, b, x2}})
	if got := backendOf(p.addElems); got != backendValue(x2.ExternalEndpoints[0]) || backendOf(p.delElems) == "" {
		t.Errorf("after x1 left, the external IP goes to %x (deleted %x), want x2's endpoint", got, backendOf(p.delElems))
	}
	// Affinity: chains and sets added, elements move to the affinity map.
	aff := b
	aff.AffinityTimeout = time.Hour
	p = cfg.planSync(c, &service.State{Ports: []service.PortState{a3, aff, x2}})
	if len(p.addSets) != 1 || len(p.addChains) != 2 || len(p.addVmaps) != 1 || setCounts(p.addElems)["affinity-ips-v4"] != 1 || p.objDelta != 4 {
		t.Errorf("affinity planned sets %v chains %q vmaps %v elements %v objDelta %d", p.addSets, p.addChains, p.addVmaps, setCounts(p.addElems), p.objDelta)
	}
	// Everything removed: every element goes, and every per-count set.
	p = cfg.planSync(c, &service.State{})
	added := 0
	for _, cp := range []*svcCommitted{c} {
		added = len(cp.ports) + len(cp.claims) + len(cp.shared) + len(cp.counts)
	}
	if len(p.addElems) != 0 || added != 0 || len(p.delChains) != 2 || len(p.delSets) != 1 || len(p.delCountSets) != 1 {
		t.Errorf("removal left %d objects, added %d elements, deleted chains %q sets %v count sets %v", added, len(p.addElems), p.delChains, p.delSets, p.delCountSets)
	}
}

func names(refs []setRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.name())
	}
	return out
}

// BenchmarkPlanSync measures the Go side of adding and removing one service
// with 10k present (no kernel): comparing the whole State, and with an
// exact hint.
func BenchmarkPlanSync(b *testing.B) {
	cfg, _ := buildSvcConfig(ServiceOptions{ClusterCIDRs: prefixes("10.244.0.0/16")})
	base := benchPorts(10000, 10)
	extra := clusterPort(pname("bench", "zzz-extra", ""), addrs("10.96.250.1"), tgt("10.244.250.1", 80))
	with := &service.State{Ports: append(slices.Clone(base), extra)}
	without := &service.State{Ports: base}
	for _, exact := range []bool{false, true} {
		b.Run(map[bool]string{false: "compare", true: "exact"}[exact], func(b *testing.B) {
			c := newCommitted()
			cfg.planSync(c, &service.State{Ports: base})
			for i := 0; b.Loop(); i++ {
				st := with
				if i%2 == 1 {
					st = without
				}
				if exact {
					if _, err := cfg.planChanged(c, st, []service.PortName{extra.Name}); err != nil {
						b.Fatal(err)
					}
					continue
				}
				if err := validatePorts(st); err != nil {
					b.Fatal(err)
				}
				cfg.planSync(c, st)
			}
		})
	}
}
