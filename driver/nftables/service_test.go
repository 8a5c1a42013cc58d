package nftables

import (
	"errors"
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

func TestValidateState(t *testing.T) {
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
		err := validateState(&service.State{Ports: []service.PortState{*p}})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: got %v, want ErrInvalid naming %s", c.name, err, c.field)
		}
	}
	dup := &service.State{Ports: []service.PortState{good, good}}
	if err := validateState(dup); !errors.Is(err, ErrInvalid) {
		t.Errorf("duplicate port: got %v", err)
	}
	if err := validateState(&service.State{Ports: []service.PortState{good}}); err != nil {
		t.Errorf("valid state refused: %v", err)
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

func TestRenderPort(t *testing.T) {
	cfg, err := buildSvcConfig(ServiceOptions{ClusterCIDRs: prefixes("10.244.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	pn := pname("ns", "web", "")
	dual := clusterPort(pn, addrs("10.96.0.1", "fd00:10:96::1"), tgt("10.244.1.2", 80), tgt("fd00:10:244:1::2", 80), tgt("10.244.2.2", 80))
	r := cfg.renderPort(&dual)
	want := []string{"svc-ns/web/tcp", "ep-10.244.1.2-80", "ep-10.244.2.2-80", "svc-ns/web/tcp", "ep-fd00:10:244:1::2-80"}
	if got := chainNames(r); !slices.Equal(got, want) {
		t.Errorf("chains %q, want %q", got, want)
	}
	if len(r.elems) != 2 {
		t.Errorf("elements %v, want one per cluster IP", r.elems)
	}
	// The IPv4 dispatch has two endpoints, the IPv6 one one.
	for _, c := range []svcChainSpec{r.chains[0], r.chains[3]} {
		last := c.rules[len(c.rules)-1]
		ng, ok := last.exprs[0].(*expr.Numgen)
		if !ok || int(ng.Modulus) != len(last.vmap) {
			t.Errorf("chain %s: dispatch %v %v", c.name, last.exprs, last.vmap)
		}
	}

	// No endpoints: reject; endpoints elsewhere only (iTP Local): drop.
	none := clusterPort(pn, addrs("10.96.0.1"))
	r = cfg.renderPort(&none)
	if len(r.chains) != 0 || len(r.elems) != 1 {
		t.Fatalf("no endpoints: chains %v elements %v", chainNames(r), r.elems)
	}
	for k, v := range r.elems {
		if k.kind != mapNoEPIPs || v.chain != SvcChainReject {
			t.Errorf("no endpoints: %v -> %v, want reject", k, v)
		}
	}
	local := none
	local.HasEndpoints, local.InternalLocal = true, true
	for k, v := range cfg.renderPort(&local).elems {
		if k.kind != mapNoEPIPs || v.kind != expr.VerdictDrop {
			t.Errorf("iTP Local: %v -> %v, want drop", k, v)
		}
	}

	// eTP Local without local endpoints: ext chain short-circuits local
	// traffic to the cluster set; the rest is dropped by the filter.
	ext := clusterPort(pn, addrs("10.96.0.1"), tgt("10.244.2.2", 80))
	ext.NodePort, ext.ExternalLocal, ext.ExternalEndpoints = 30080, true, nil
	ext.LoadBalancerIPs, ext.SourceRanges = addrs("198.18.100.2"), prefixes("198.18.0.0/24", "2001:db8::/64")
	r = cfg.renderPort(&ext)
	want = []string{"svc-ns/web/tcp", "fw-ns/web/tcp", "ext-ns/web/tcp", "cls-ns/web/tcp", "ep-10.244.2.2-80"}
	if got := chainNames(r); !slices.Equal(got, want) {
		t.Errorf("chains %q, want %q", got, want)
	}
	kinds := map[int]int{}
	for k := range r.elems {
		kinds[k.kind]++
	}
	if kinds[mapServiceIPs] != 2 || kinds[mapNodePorts] != 1 || kinds[mapNoEPIPs] != 1 || kinds[mapNoEPNodePorts] != 1 {
		t.Errorf("element kinds %v", kinds)
	}
}

func TestPlanSync(t *testing.T) {
	cfg, _ := buildSvcConfig(ServiceOptions{ClusterCIDRs: prefixes("10.244.0.0/16")})
	a := clusterPort(pname("ns", "a", ""), addrs("10.96.0.1"), tgt("10.244.1.2", 80), tgt("10.244.2.2", 80))
	b := clusterPort(pname("ns", "b", ""), addrs("10.96.0.2"), tgt("10.244.1.2", 80))
	prev := map[service.PortName]*service.PortState{a.Name: clonePort(&a), b.Name: clonePort(&b)}

	// Nothing changed: empty plan.
	if p := cfg.planSync(prev, &service.State{Ports: []service.PortState{a, b}}); !p.empty() {
		t.Errorf("unchanged state planned %+v", p)
	}
	// One endpoint of a removed: a's service chain rewritten, one endpoint
	// chain deleted, b untouched, no element changes.
	a2 := clusterPort(a.Name, a.ClusterIPs, tgt("10.244.1.2", 80))
	p := cfg.planSync(prev, &service.State{Ports: []service.PortState{a2, b}})
	if len(p.flush) != 1 || !strings.HasPrefix(p.flush[0], "svc-") || len(p.delChains) != 1 ||
		!strings.HasSuffix(p.delChains[0], "-10.244.2.2-80") || len(p.addChains) != 0 || len(p.addElems)+len(p.delElems) != 0 {
		t.Errorf("endpoint removal planned flush %q del %q add %q elems +%d -%d", p.flush, p.delChains, p.addChains, len(p.addElems), len(p.delElems))
	}
	if p.objDelta != -1 {
		t.Errorf("objDelta %d, want -1", p.objDelta)
	}
	// The dispatch map of a's service chain is emptied and refilled.
	if len(p.flushVmaps) != 1 || p.flushVmaps[p.flush[0]] != 2 || len(p.fillVmaps[p.flush[0]]) != 1 {
		t.Errorf("endpoint removal planned vmaps flush %v fill %q", p.flushVmaps, p.fillVmaps)
	}
	// b removed, c added.
	c := clusterPort(pname("ns", "c", ""), addrs("10.96.0.3"), tgt("10.244.3.2", 80))
	p = cfg.planSync(prev, &service.State{Ports: []service.PortState{a, c}})
	if len(p.delChains) != 2 || len(p.addChains) != 2 || len(p.delElems) != 1 || len(p.addElems) != 1 || len(p.flush) != 0 {
		t.Errorf("replace planned del %q add %q elems +%d -%d flush %q", p.delChains, p.addChains, len(p.addElems), len(p.delElems), p.flush)
	}
	if p.objDelta != 0 {
		t.Errorf("objDelta %d, want 0", p.objDelta)
	}
	// Affinity on: sets added, chains rewritten.
	aff := a
	aff.AffinityTimeout = time.Hour
	p = cfg.planSync(prev, &service.State{Ports: []service.PortState{aff, b}})
	if len(p.addSets) != 2 || len(p.flush) != 3 || len(p.addChains) != 0 {
		t.Errorf("affinity planned sets %v flush %q add %q", p.addSets, p.flush, p.addChains)
	}
	// Everything removed.
	p = cfg.planSync(prev, &service.State{})
	if len(p.delChains) != 5 || len(p.delElems) != 2 || p.objDelta != -7 {
		t.Errorf("removal planned del %q elems -%d objDelta %d", p.delChains, len(p.delElems), p.objDelta)
	}
	// Full plan of the same state adds what the incremental one removes.
	full := cfg.planFull(&service.State{Ports: []service.PortState{a, b}})
	if len(full.addChains) != 5 || len(full.addElems) != 2 || len(full.addVmaps) != 2 || full.objDelta != 7 {
		t.Errorf("full plan adds %q elems %d objDelta %d", full.addChains, len(full.addElems), full.objDelta)
	}
}
