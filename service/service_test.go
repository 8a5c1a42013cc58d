package service_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/internal/runner"
	"github.com/kubewire/kubewire/service"
)

var web = service.Name{Namespace: "default", Name: "web"}

func svc(mut ...func(*service.Service)) *service.Service {
	s := &service.Service{
		Name:       web,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:10:96::10")},
		Ports:      []service.Port{{Name: "http", Protocol: service.TCP, Port: 80, TargetPort: 8080}},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

type ep struct {
	addr                        string
	ready, serving, terminating bool
	node, zone                  string
	zoneHints, nodeHints        []string
}

func slice(name string, port uint16, eps ...ep) *service.EndpointSlice {
	es := &service.EndpointSlice{Name: name, Service: web, Ports: []service.SlicePort{{Name: "http", Protocol: service.TCP, Port: port}}}
	for _, e := range eps {
		es.Endpoints = append(es.Endpoints, service.Endpoint{
			Addresses: []netip.Addr{netip.MustParseAddr(e.addr)}, Ready: e.ready, Serving: e.serving, Terminating: e.terminating,
			NodeName: e.node, Zone: e.zone, ZoneHints: e.zoneHints, NodeHints: e.nodeHints,
		})
	}
	return es
}

func ready(addr, node string) ep {
	return ep{addr: addr, ready: true, serving: true, node: node, zone: "z-" + node}
}

func addrs(bs []service.Backend) string {
	var s []string
	for _, b := range bs {
		s = append(s, b.Addr.String())
	}
	return strings.Join(s, " ")
}

func targets(ts []service.Target) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Addr.String())
	}
	return strings.Join(s, " ")
}

func TestBackendsMergeSlices(t *testing.T) {
	a := slice("a", 8080, ready("10.244.1.2", "n1"), ep{addr: "10.244.1.3", serving: true, terminating: true, node: "n1"})
	// The same address in a second slice, ready there: the ready copy wins.
	b := slice("b", 8080, ready("10.244.1.3", "n1"), ready("10.244.2.2", "n2"))
	// A slice for another port name is ignored.
	c := slice("c", 9090, ready("10.244.9.9", "n9"))
	c.Ports[0].Name = "metrics"
	bs := service.Backends([]*service.EndpointSlice{a, b, c}, service.PortName{Service: web, Port: "http", Protocol: service.TCP})
	if got := addrs(bs); got != "10.244.1.2 10.244.1.3 10.244.2.2" {
		t.Fatalf("backends = %s", got)
	}
	if !bs[1].Ready || bs[1].Terminating {
		t.Fatalf("duplicate kept the terminating copy: %+v", bs[1])
	}
	// UDP port of the same name is a different port.
	if bs := service.Backends([]*service.EndpointSlice{a}, service.PortName{Service: web, Port: "http", Protocol: service.UDP}); len(bs) != 0 {
		t.Fatalf("UDP backends from a TCP slice: %v", bs)
	}
}

func TestSelect(t *testing.T) {
	node := service.NodeInfo{Name: "n1", Zone: "z1"}
	for _, tc := range []struct {
		name           string
		svc            *service.Service
		eps            []ep
		cluster, local string
		hasAny         bool
	}{
		{"all ready", svc(), []ep{ready("10.0.0.1", "n1"), ready("10.0.0.2", "n2")}, "10.0.0.1 10.0.0.2", "", true},
		{"not ready excluded", svc(), []ep{ready("10.0.0.1", "n1"), {addr: "10.0.0.2", node: "n2"}}, "10.0.0.1", "", true},
		{"terminating fallback", svc(), []ep{{addr: "10.0.0.1", serving: true, terminating: true, node: "n2"}, {addr: "10.0.0.2", terminating: true, node: "n2"}}, "10.0.0.1", "", true},
		{"no fallback while one is ready", svc(), []ep{{addr: "10.0.0.1", serving: true, terminating: true}, ready("10.0.0.2", "n2")}, "10.0.0.2", "", true},
		{"nothing usable", svc(), []ep{{addr: "10.0.0.1", node: "n1"}}, "", "", false},
		{"iTP local", svc(func(s *service.Service) { s.InternalTrafficPolicy = service.PolicyLocal }),
			[]ep{ready("10.0.0.1", "n1"), ready("10.0.0.2", "n2")}, "", "10.0.0.1", true},
		{"iTP local, none here", svc(func(s *service.Service) { s.InternalTrafficPolicy = service.PolicyLocal }),
			[]ep{ready("10.0.0.2", "n2")}, "", "", true},
		{"eTP local with node port", svc(func(s *service.Service) { s.ExternalTrafficPolicy = service.PolicyLocal; s.Ports[0].NodePort = 30080 }),
			[]ep{ready("10.0.0.1", "n1"), ready("10.0.0.2", "n2")}, "10.0.0.1 10.0.0.2", "10.0.0.1", true},
		{"eTP local, local terminating fallback", svc(func(s *service.Service) { s.ExternalTrafficPolicy = service.PolicyLocal; s.Ports[0].NodePort = 30080 }),
			[]ep{{addr: "10.0.0.1", serving: true, terminating: true, node: "n1"}, ready("10.0.0.2", "n2")}, "10.0.0.2", "10.0.0.1", true},
		{"zone hints", svc(), []ep{
			{addr: "10.0.0.1", ready: true, serving: true, zoneHints: []string{"z1"}},
			{addr: "10.0.0.2", ready: true, serving: true, zoneHints: []string{"z2"}}}, "10.0.0.1", "", true},
		{"zone hints missing on one: ignored", svc(), []ep{
			{addr: "10.0.0.1", ready: true, serving: true, zoneHints: []string{"z1"}},
			{addr: "10.0.0.2", ready: true, serving: true}}, "10.0.0.1 10.0.0.2", "", true},
		{"zone hints for other zones only: ignored", svc(), []ep{
			{addr: "10.0.0.1", ready: true, serving: true, zoneHints: []string{"z2"}}}, "10.0.0.1", "", true},
		{"node hints", svc(), []ep{
			{addr: "10.0.0.1", ready: true, serving: true, nodeHints: []string{"n1"}, zoneHints: []string{"z1"}},
			{addr: "10.0.0.2", ready: true, serving: true, nodeHints: []string{"n2"}, zoneHints: []string{"z1"}}}, "10.0.0.1", "", true},
		{"node hints not for us: zone", svc(), []ep{
			{addr: "10.0.0.1", ready: true, serving: true, nodeHints: []string{"n3"}, zoneHints: []string{"z1"}},
			{addr: "10.0.0.2", ready: true, serving: true, nodeHints: []string{"n2"}, zoneHints: []string{"z1"}}}, "10.0.0.1 10.0.0.2", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := slice("s", 8080, tc.eps...)
			bs := service.Backends([]*service.EndpointSlice{es}, service.PortName{Service: web, Port: "http", Protocol: service.TCP})
			sel := service.Select(tc.svc, bs, node)
			if got := addrs(sel.Cluster); got != tc.cluster {
				t.Errorf("cluster = %q, want %q", got, tc.cluster)
			}
			if got := addrs(sel.Local); got != tc.local {
				t.Errorf("local = %q, want %q", got, tc.local)
			}
			if sel.HasAny != tc.hasAny {
				t.Errorf("hasAny = %v, want %v", sel.HasAny, tc.hasAny)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*service.Service)
		want string
	}{
		{func(s *service.Service) { s.Name.Namespace = "" }, "Name"},
		{func(s *service.Service) { s.ClusterIPs = nil }, "ClusterIPs"},
		{func(s *service.Service) {
			s.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}
		}, "two addresses of one family"},
		{func(s *service.Service) { s.Ports[0].Protocol = "ICMP" }, "Ports[0].Protocol ICMP"},
		{func(s *service.Service) { s.Ports[0].Port = 0 }, "Ports[0].Port 0"},
		{func(s *service.Service) { s.Ports[0].TargetPort = 0 }, "Ports[0].TargetPort"},
		{func(s *service.Service) {
			s.Ports = append(s.Ports, service.Port{Protocol: service.TCP, Port: 81, TargetPort: 81})
		}, "Ports[1].Name"},
		{func(s *service.Service) { s.ExternalTrafficPolicy = "Nearest" }, "ExternalTrafficPolicy Nearest"},
		{func(s *service.Service) { s.AffinityTimeout = -time.Second }, "AffinityTimeout"},
		{func(s *service.Service) {
			s.LoadBalancerIngress = []service.LBIngress{{IP: netip.MustParseAddr("1.2.3.4"), Mode: "Magic"}}
		}, "Mode Magic"},
	} {
		s := svc(tc.mut)
		err := s.Validate()
		if !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate = %v, want ErrInvalid naming %q", err, tc.want)
		}
	}
	if err := svc().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestBuildPort(t *testing.T) {
	s := svc(func(s *service.Service) {
		s.Ports[0].NodePort = 30080
		s.ExternalTrafficPolicy = service.PolicyLocal
		s.LoadBalancerIngress = []service.LBIngress{{IP: netip.MustParseAddr("198.18.9.1")}, {IP: netip.MustParseAddr("198.18.9.2"), Mode: service.IPModeProxy}}
		s.AffinityTimeout = 3 * time.Hour
	})
	es := slice("s", 8080, ready("10.244.1.2", "n1"), ready("10.244.2.2", "n2"), ready("fd00:10:244:1::2", "n1"))
	ps := service.BuildPort(s, s.Ports[0], service.Backends([]*service.EndpointSlice{es}, s.PortNames()[0]), service.NodeInfo{Name: "n1"})
	if got := targets(ps.ExternalEndpoints); got != "10.244.1.2 fd00:10:244:1::2" || !ps.ExternalLocal {
		t.Fatalf("external = %s (local %v)", got, ps.ExternalLocal)
	}
	if got := targets(ps.InternalEndpoints); got != "10.244.1.2 10.244.2.2 fd00:10:244:1::2" || ps.InternalLocal {
		t.Fatalf("internal = %s", got)
	}
	if len(ps.LoadBalancerIPs) != 1 || ps.LoadBalancerIPs[0].String() != "198.18.9.1" {
		t.Fatalf("LB IPs = %v (Proxy mode must be left to the load balancer)", ps.LoadBalancerIPs)
	}
	if !ps.InternalEndpoints[0].Local || ps.InternalEndpoints[1].Local {
		t.Fatalf("local marks wrong: %+v", ps.InternalEndpoints)
	}
}

// newProxier returns a Proxier on a fake dataplane, synced by hand.
func newProxier(t *testing.T) (*service.Proxier, *fake.Services) {
	t.Helper()
	dp := fake.NewServices(netip.MustParseAddr("198.18.0.1"))
	p, err := service.NewProxier(service.Config{Dataplane: dp, Node: service.NodeInfo{Name: "n1", Zone: "z1"}})
	if err != nil {
		t.Fatal(err)
	}
	return p, dp
}

func TestProxierSyncs(t *testing.T) {
	p, dp := newProxier(t)
	ctx := context.Background()
	if err := p.OnServiceAdd(svc()); err != nil {
		t.Fatal(err)
	}
	if err := p.OnEndpointSliceAdd(slice("s1", 8080, ready("10.244.1.2", "n1"), ready("10.244.2.2", "n2"))); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := `default/web:http/tcp 10.96.0.10,fd00:10:96::10:80
  internal: 10.244.1.2:8080* 10.244.2.2:8080
`
	if got := dp.Dump(); got != want {
		t.Fatalf("dump:\n%s\nwant:\n%s", got, want)
	}
	h := dp.Hints()
	if !h[0].Full || len(h[0].Changed) != 1 {
		t.Fatalf("first hint = %+v, want full with one change", h[0])
	}
	// A no-op update changes nothing; the next sync has no changes.
	if err := p.OnServiceUpdate(svc(), svc()); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if h := dp.Hints(); h[1].Full || len(h[1].Changed) != 0 {
		t.Fatalf("no-op hint = %+v", h[1])
	}
	// A failed sync makes the next one full.
	p.OnEndpointSliceDelete(slice("s1", 8080))
	dp.FailNext(errors.New("kernel says no"))
	if err := p.Sync(ctx); err == nil || !strings.Contains(err.Error(), "kernel says no") {
		t.Fatalf("Sync = %v, want the dataplane error", err)
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if h := dp.Hints(); !h[len(h)-1].Full {
		t.Fatalf("sync after a failure was not full: %+v", h[len(h)-1])
	}
	if got := dp.Dump(); !strings.Contains(got, " reject\n") || !strings.Contains(got, "internal: -") {
		t.Fatalf("service without endpoints should reject:\n%s", got)
	}
	// Deleting the service removes it.
	p.OnServiceDelete(svc())
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := dp.Dump(); got != "" {
		t.Fatalf("dump after delete:\n%s", got)
	}
	// Invalid objects are refused and do not reach the dataplane.
	if err := p.OnServiceAdd(svc(func(s *service.Service) { s.Ports[0].Port = 0 })); !errors.Is(err, service.ErrInvalid) {
		t.Fatalf("invalid service accepted: %v", err)
	}
}

func TestProxierNodeAddresses(t *testing.T) {
	p, dp := newProxier(t)
	ctx := context.Background()
	p.OnServiceAdd(svc(func(s *service.Service) { s.Ports[0].NodePort = 30080 }))
	p.OnEndpointSliceAdd(slice("s1", 8080, ready("10.244.1.2", "n1")))
	primary := netip.MustParseAddr("192.168.1.7")
	p.OnNodeUpdate(service.NodeInfo{Name: "n1", Zone: "z1", Addresses: []netip.Addr{primary}})
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if h := dp.Hints(); !h[len(h)-1].Full {
		t.Errorf("node addresses changed: hint %+v, want a full sync", h[len(h)-1])
	}
	if r := dp.Trace(netip.MustParseAddr("198.18.5.7"), false, service.TCP, netip.AddrPortFrom(primary, 30080)); r.Verdict != fake.VerdictForward {
		t.Errorf("node port on the node's primary address: %+v", r)
	}
	if r := dp.Trace(netip.MustParseAddr("198.18.5.7"), false, service.TCP, netip.MustParseAddrPort("198.18.0.1:30080")); r.Verdict != fake.VerdictNoMatch {
		t.Errorf("node port on another address: %+v, want no match", r)
	}
}

func TestProxierTrace(t *testing.T) {
	p, dp := newProxier(t)
	ctx := context.Background()
	p.OnServiceAdd(svc(func(s *service.Service) {
		s.Ports[0].NodePort = 30080
		s.ExternalTrafficPolicy = service.PolicyLocal
		s.LoadBalancerIngress = []service.LBIngress{{IP: netip.MustParseAddr("198.18.9.1")}}
		s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.18.5.0/24")}
	}))
	p.OnEndpointSliceAdd(slice("s1", 8080, ready("10.244.1.2", "n1"), ready("10.244.2.2", "n2")))
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("198.18.5.7")
	for _, tc := range []struct {
		name    string
		src     netip.Addr
		local   bool
		dst     string
		verdict fake.Verdict
		targets string
		masq    bool
	}{
		{"cluster IP from a pod", netip.MustParseAddr("10.244.1.9"), true, "10.96.0.10:80", fake.VerdictForward, "10.244.1.2 10.244.2.2", false},
		{"node port from outside, eTP local", client, false, "198.18.0.1:30080", fake.VerdictForward, "10.244.1.2", false},
		{"node port from the node: short-circuit", netip.MustParseAddr("198.18.0.1"), true, "198.18.0.1:30080", fake.VerdictForward, "10.244.1.2 10.244.2.2", true},
		{"LB IP from an allowed source", client, false, "198.18.9.1:80", fake.VerdictForward, "10.244.1.2", false},
		{"LB IP from another source", netip.MustParseAddr("198.18.6.1"), false, "198.18.9.1:80", fake.VerdictDrop, "", false},
		{"hairpin", netip.MustParseAddr("10.244.1.2"), true, "10.96.0.10:80", fake.VerdictForward, "10.244.1.2 10.244.2.2", true},
		{"another port of the ClusterIP", client, false, "10.96.0.10:81", fake.VerdictReject, "", false},
		{"not a service", client, false, "10.96.0.11:80", fake.VerdictNoMatch, "", false},
		{"IPv6 service, no IPv6 endpoint", client, true, "[fd00:10:96::10]:80", fake.VerdictDrop, "", false},
	} {
		r := dp.Trace(tc.src, tc.local, service.TCP, netip.MustParseAddrPort(tc.dst))
		if r.Verdict != tc.verdict || targets(r.Targets) != tc.targets || r.Masquerade != tc.masq {
			t.Errorf("%s: %+v, want %s [%s] masq=%v", tc.name, r, tc.verdict, tc.targets, tc.masq)
		}
	}
}

// TestProxierRunCoalesces drives Run with a fake clock: many events give
// one sync once MinSyncInterval has passed.
func TestProxierRunCoalesces(t *testing.T) {
	dp := fake.NewServices()
	clock := runner.NewFakeClock(time.Unix(0, 0))
	p, err := service.NewProxier(service.Config{Dataplane: dp, MinSyncInterval: time.Second, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, func() bool { return len(dp.Hints()) == 1 }) // the initial sync
	for i := 0; i < 20; i++ {
		s := svc(func(s *service.Service) { s.Name.Name = fmt.Sprintf("web-%d", i) })
		if err := p.OnServiceAdd(s); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(dp.Hints()); n != 1 {
		t.Fatalf("%d syncs before MinSyncInterval, want 1", n)
	}
	clock.Step(time.Second)
	waitFor(t, func() bool { return len(dp.Hints()) == 2 })
	if h := dp.Hints()[1]; len(h.Changed) != 20 {
		t.Fatalf("coalesced sync changed %d ports, want 20", len(h.Changed))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(strings.Split(dp.Dump(), "\n"), func(l string) bool { return strings.HasPrefix(l, "default/web-19:http/tcp") }) {
		t.Fatalf("dump lacks web-19:\n%s", dp.Dump())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 2s")
		}
		time.Sleep(time.Millisecond)
	}
}

type ctRecorder struct{ sets []service.UDPFlowSet }

func (c *ctRecorder) ClearStaleUDP(ctx context.Context, sets []service.UDPFlowSet) error {
	c.sets = append(c.sets, sets...)
	return nil
}

func TestProxierClearsStaleUDP(t *testing.T) {
	dp := fake.NewServices()
	ct := &ctRecorder{}
	p, err := service.NewProxier(service.Config{Dataplane: dp, Conntrack: ct})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dns := svc(func(s *service.Service) {
		s.Ports = []service.Port{{Name: "dns", Protocol: service.UDP, Port: 53, TargetPort: 53, NodePort: 30053}, {Name: "dns-tcp", Protocol: service.TCP, Port: 53, TargetPort: 53}}
	})
	mk := func(addrs ...string) *service.EndpointSlice {
		es := &service.EndpointSlice{Name: "s", Service: web, Ports: []service.SlicePort{{Name: "dns", Protocol: service.UDP, Port: 53}, {Name: "dns-tcp", Protocol: service.TCP, Port: 53}}}
		for _, a := range addrs {
			es.Endpoints = append(es.Endpoints, service.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr(a)}, Ready: true, Serving: true})
		}
		return es
	}
	p.OnServiceAdd(dns)
	p.OnEndpointSliceAdd(mk("10.244.1.2", "10.244.1.3"))
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// A new UDP port may have reject entries from before: cleared.
	if len(ct.sets) != 1 || ct.sets[0].NodePort != 30053 || len(ct.sets[0].Keep) != 2 {
		t.Fatalf("sets after add = %+v", ct.sets)
	}
	ct.sets = nil
	p.OnEndpointSliceUpdate(nil, mk("10.244.1.3", "10.244.1.4")) // .2 goes, .4 comes
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ct.sets) != 1 || fmt.Sprint(ct.sets[0].Keep) != "[10.244.1.3:53 10.244.1.4:53]" ||
		fmt.Sprint(ct.sets[0].Dests) != "[10.96.0.10:53 [fd00:10:96::10]:53]" {
		t.Fatalf("sets after an endpoint left = %+v", ct.sets)
	}
	ct.sets = nil
	p.OnEndpointSliceUpdate(nil, mk("10.244.1.3", "10.244.1.4", "10.244.1.5")) // only additions
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ct.sets) != 0 {
		t.Fatalf("an endpoint added made stale sets: %+v", ct.sets)
	}
	p.OnServiceDelete(dns)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ct.sets) != 1 || len(ct.sets[0].Keep) != 0 {
		t.Fatalf("sets after delete = %+v", ct.sets)
	}
}

// TestProxierIncrementalOrder applies random small batches of changes (the
// incremental path of the sorted state) and checks after each sync that
// the dataplane got exactly what a fresh Proxier fed the same objects gets.
func TestProxierIncrementalOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dp := fake.NewServices()
	p, _ := service.NewProxier(service.Config{Dataplane: dp})
	live := map[string]*service.Service{}
	mk := func(i int) *service.Service {
		return svc(func(s *service.Service) {
			s.Name.Name = fmt.Sprintf("s%03d", i)
			s.ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 1, byte(i)})}
			s.Ports = []service.Port{{Name: "a", Protocol: service.TCP, Port: 80, TargetPort: 80}, {Name: "b", Protocol: service.UDP, Port: uint16(53 + rng.IntN(3)), TargetPort: 53}}
		})
	}
	for i := 0; i < 100; i++ {
		s := mk(i)
		live[s.Name.Name] = s
		p.OnServiceAdd(s)
	}
	ctx := context.Background()
	for round := 0; round < 30; round++ {
		for k := 0; k < 1+rng.IntN(8); k++ {
			i := rng.IntN(120)
			s := mk(i)
			if _, ok := live[s.Name.Name]; ok && rng.IntN(2) == 0 {
				p.OnServiceDelete(s)
				delete(live, s.Name.Name)
			} else {
				p.OnServiceUpdate(nil, s)
				live[s.Name.Name] = s
			}
		}
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		fresh := fake.NewServices()
		q, _ := service.NewProxier(service.Config{Dataplane: fresh})
		for _, s := range live {
			q.OnServiceAdd(s)
		}
		if err := q.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if dp.Dump() != fresh.Dump() {
			t.Fatalf("round %d: incremental state differs from a fresh one:\n%s\nwant\n%s", round, dp.Dump(), fresh.Dump())
		}
	}
}
