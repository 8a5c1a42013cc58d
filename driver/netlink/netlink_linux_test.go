package netlink_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/driver/netlink"
	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/ipam"
	"github.com/kubewire/kubewire/network"
)

var (
	underlay = map[string][]netip.Prefix{
		"node1": {netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("2001:db8::1/64")},
		"node2": {netip.MustParsePrefix("198.18.0.2/24"), netip.MustParsePrefix("2001:db8::2/64")},
	}
	podCIDRs = map[string][]netip.Prefix{
		"node1": {netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")},
		"node2": {netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fd00:10:244:2::/64")},
	}
)

// testNode is one simulated node: a namespace, the driver bound to it, and
// a Manager over a memory IPAM.
type testNode struct {
	name  string
	ns    *sandbox.NS
	drv   *netlink.Driver
	mgr   *network.Manager
	alloc *ipam.PodAllocator
	mtu   int
}

func newNode(t testing.TB, sb *sandbox.Sandbox, name string, mode network.Mode, cidrs []netip.Prefix) *testNode {
	return newNodeMTU(t, sb, name, mode, cidrs, 0)
}

func newNodeMTU(t testing.TB, sb *sandbox.Sandbox, name string, mode network.Mode, cidrs []netip.Prefix, mtu int) *testNode {
	t.Helper()
	ns := sb.Namespace(name)
	drv, err := netlink.New(netlink.Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	var ranges []ipam.Range
	for _, c := range cidrs {
		r := ipam.Range{Subnet: c}
		if mode == network.ModeBridge {
			r.Gateway = c.Addr().Next()
		}
		ranges = append(ranges, r)
	}
	alloc, err := ipam.NewPodAllocator(ipam.PodAllocatorConfig{Ranges: ranges, Store: ipam.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := network.NewManager(network.Config{Links: drv, IPAM: alloc, Mode: mode, MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	if mtu == 0 {
		mtu = 1500
	}
	return &testNode{name: name, ns: ns, drv: drv, mgr: mgr, alloc: alloc, mtu: mtu}
}

type testPod struct {
	ns  *sandbox.NS
	res *network.Result
	att network.Attachment
}

func (n *testNode) attach(t *testing.T, sb *sandbox.Sandbox, name string) *testPod {
	t.Helper()
	ns := sb.Namespace(name)
	att := network.Attachment{ContainerID: "ctr-" + ns.Name, NetNS: ns.Path()}
	res, err := n.mgr.Attach(context.Background(), att)
	if err != nil {
		t.Fatalf("attach %s on %s: %v", name, n.name, err)
	}
	return &testPod{ns: ns, res: res, att: att}
}

func (p *testPod) addr(v4 bool) netip.Addr {
	for _, ip := range p.res.IPs {
		if ip.Address.Addr().Is4() == v4 {
			return ip.Address.Addr()
		}
	}
	panic("no address of that family")
}

// reachAll checks TCP and UDP, IPv4 and IPv6, from a to b, and that b sees
// a's own address (no NAT between pods).
func reachAll(t *testing.T, a, b *testPod) {
	t.Helper()
	for _, v4 := range []bool{true, false} {
		for _, proto := range []string{"tcp", "udp"} {
			srv := b.ns.ServeEcho(proto, netip.AddrPortFrom(b.addr(v4), 0))
			from := a.ns.MustReach(t, proto, srv)
			if from.Addr() != a.addr(v4) {
				t.Errorf("%s %s: server saw %s, want pod address %s", proto, srv, from.Addr(), a.addr(v4))
			}
		}
	}
}

func TestPodsOnOneNode(t *testing.T) {
	for _, mode := range []network.Mode{network.ModeRouted, network.ModeBridge} {
		t.Run(mode.String(), func(t *testing.T) {
			sb := sandbox.New(t)
			node := newNode(t, sb, "node", mode, podCIDRs["node1"])
			a := node.attach(t, sb, "pod-a")
			b := node.attach(t, sb, "pod-b")
			reachAll(t, a, b)
			reachAll(t, b, a)

			// Node to pod and back, from the node's own address.
			if err := node.ns.SetupLink("lo", netip.MustParsePrefix("198.18.0.1/32"), netip.MustParsePrefix("2001:db8::1/128")); err != nil {
				t.Fatal(err)
			}
			for _, v4 := range []bool{true, false} {
				srv := a.ns.ServeEcho("tcp", netip.AddrPortFrom(a.addr(v4), 0))
				node.ns.MustReach(t, "tcp", srv)
				nodeSrv := node.ns.ServeEcho("tcp", netip.AddrPortFrom(map[bool]netip.Addr{
					true: netip.MustParseAddr("198.18.0.1"), false: netip.MustParseAddr("2001:db8::1")}[v4], 0))
				if from := a.ns.MustReach(t, "tcp", nodeSrv); from.Addr() != a.addr(v4) {
					t.Errorf("node saw pod as %s, want %s", from.Addr(), a.addr(v4))
				}
			}

			// Containers of one pod share its namespace: localhost works.
			lo := a.ns.ServeEcho("tcp", netip.MustParseAddrPort("127.0.0.1:0"))
			a.ns.MustReach(t, "tcp", lo)
			lo6 := a.ns.ServeEcho("tcp", netip.MustParseAddrPort("[::1]:0"))
			a.ns.MustReach(t, "tcp", lo6)

			// Result shape.
			if len(a.res.IPs) != 2 || a.res.MTU != 1500 || a.res.HostIfName == "" {
				t.Fatalf("result = %+v", a.res)
			}
			if mode == network.ModeRouted && a.res.IPs[0].Address.Bits() != 32 {
				t.Errorf("routed mode address %s, want a /32", a.res.IPs[0].Address)
			}
			if mode == network.ModeBridge && a.res.IPs[0].Gateway != netip.MustParseAddr("10.244.1.1") {
				t.Errorf("bridge mode gateway %s, want 10.244.1.1", a.res.IPs[0].Gateway)
			}

			// Check passes, Attach again is idempotent (same addresses).
			ctx := context.Background()
			if err := node.mgr.Check(ctx, a.att); err != nil {
				t.Fatalf("Check: %v", err)
			}
			again, err := node.mgr.Attach(ctx, a.att)
			if err != nil || !slices.Equal(again.IPs, a.res.IPs) {
				t.Fatalf("second Attach = %+v, %v; want %+v", again, err, a.res.IPs)
			}
			reachAll(t, b, a)

			// Drift: remove the pod's default route; Check names it.
			podNL := a.ns.Netlink()
			eth0, _ := podNL.LinkByName("eth0")
			routes, _ := podNL.RouteList(eth0, vnl.FAMILY_V4)
			for _, r := range routes {
				if r.Dst == nil || r.Dst.IP.IsUnspecified() {
					if err := podNL.RouteDel(&r); err != nil {
						t.Fatal(err)
					}
				}
			}
			err = node.mgr.Check(ctx, a.att)
			var drift *network.DriftError
			if !errors.As(err, &drift) || !strings.Contains(err.Error(), "route 0.0.0.0/0") {
				t.Fatalf("Check after removing the default route = %v, want drift naming it", err)
			}
			// Attach repairs it.
			if _, err := node.mgr.Attach(ctx, a.att); err != nil {
				t.Fatal(err)
			}
			if err := node.mgr.Check(ctx, a.att); err != nil {
				t.Fatalf("Check after repair: %v", err)
			}

			// List, then Detach leaves nothing behind; Detach is idempotent.
			links, err := node.mgr.List(ctx)
			if err != nil || len(links) != 2 {
				t.Fatalf("List = %v, %v; want 2 attachments", links, err)
			}
			for _, p := range []*testPod{a, b} {
				if err := node.mgr.Detach(ctx, p.att); err != nil {
					t.Fatal(err)
				}
				if err := node.mgr.Detach(ctx, p.att); err != nil {
					t.Fatalf("second Detach: %v", err)
				}
			}
			assertNodeClean(t, node, []*testPod{a, b})
		})
	}
}

// assertNodeClean checks that no pod link, pod route, pod interface or
// address allocation is left.
func assertNodeClean(t *testing.T, node *testNode, pods []*testPod) {
	t.Helper()
	ctx := context.Background()
	if links, err := node.mgr.List(ctx); err != nil || len(links) != 0 {
		t.Errorf("attachments left: %v %v", links, err)
	}
	all, err := node.ns.Netlink().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range all {
		if _, ok := l.(*vnl.Veth); ok && strings.HasPrefix(l.Attrs().Name, "kw") {
			t.Errorf("veth %s left on the node", l.Attrs().Name)
		}
	}
	routes, err := node.ns.Netlink().RouteListFiltered(vnl.FAMILY_ALL, &vnl.Route{Protocol: 188}, vnl.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 0 {
		t.Errorf("pod routes left on the node: %v", routes)
	}
	owners, err := node.alloc.Owners(ctx)
	if err != nil || len(owners) != 0 {
		t.Errorf("IPAM owners left: %v %v", owners, err)
	}
	for _, p := range pods {
		if _, err := p.ns.Netlink().LinkByName("eth0"); err == nil {
			t.Errorf("eth0 left in %s", p.ns.Role)
		}
	}
}

func TestDetachAfterNetNSGone(t *testing.T) {
	sb := sandbox.New(t)
	node := newNode(t, sb, "node", network.ModeRouted, podCIDRs["node1"])
	ctx := context.Background()
	// A pod namespace that is deleted before DEL, as when a runtime loses it.
	podSB := sandbox.New(t)
	ns := podSB.Namespace("doomed")
	att := network.Attachment{ContainerID: "doomed", NetNS: ns.Path()}
	if _, err := node.mgr.Attach(ctx, att); err != nil {
		t.Fatal(err)
	}
	path := ns.Path()
	ns.Netlink().Close()
	ns.Close()
	if err := netns.DeleteNamed(ns.Name); err != nil {
		t.Fatal(err)
	}
	if err := node.mgr.Detach(ctx, network.Attachment{ContainerID: "doomed", NetNS: path}); err != nil {
		t.Fatalf("Detach with the namespace gone: %v", err)
	}
	assertNodeClean(t, node, nil)
}

func TestAttachRollsBack(t *testing.T) {
	sb := sandbox.New(t)
	node := newNode(t, sb, "node", network.ModeRouted, podCIDRs["node1"])
	ctx := context.Background()
	pod := sb.Namespace("pod")
	// Something else already owns eth0 in the pod: the attach must fail and
	// leave no veth and no address behind.
	sb.Connect(pod, "eth0", nil, sb.Namespace("other"), "x0", nil)
	_, err := node.mgr.Attach(ctx, network.Attachment{ContainerID: "c1", NetNS: pod.Path()})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Attach over a foreign eth0 = %v, want an 'already exists' error", err)
	}
	assertNodeClean(t, node, nil)
	// Missing namespace: clear error, nothing left.
	_, err = node.mgr.Attach(ctx, network.Attachment{ContainerID: "c2", NetNS: "/run/netns/kwt-does-not-exist"})
	if err == nil {
		t.Fatal("Attach into a missing namespace succeeded")
	}
	assertNodeClean(t, node, nil)
}

func TestGC(t *testing.T) {
	sb := sandbox.New(t)
	node := newNode(t, sb, "node", network.ModeBridge, podCIDRs["node1"])
	ctx := context.Background()
	a := node.attach(t, sb, "pod-a")
	b := node.attach(t, sb, "pod-b")
	// An address allocated without any link (a killed ADD).
	if _, err := node.alloc.Allocate(ctx, ipam.PodOwner("killed", "eth0")); err != nil {
		t.Fatal(err)
	}
	removed, err := node.mgr.GC(ctx, func(k network.PodKey) bool { return k == a.att.Key() })
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != b.att.Key() {
		t.Fatalf("GC removed %v, want [%v]", removed, b.att.Key())
	}
	owners, _ := node.alloc.Owners(ctx)
	if want := []string{a.att.Key().Owner()}; !slices.Equal(owners, want) {
		t.Fatalf("owners after GC = %v, want %v", owners, want)
	}
	if err := node.mgr.Check(ctx, a.att); err != nil {
		t.Fatalf("kept pod broken by GC: %v", err)
	}
}

func TestProbeAndOptions(t *testing.T) {
	sandbox.RequirePrivileged(t)
	if _, err := netlink.New(netlink.Options{LinkPrefix: "toolong"}); err == nil {
		t.Fatal("6-byte link prefix accepted")
	}
	if _, err := netlink.New(netlink.Options{RouteProtocol: 300}); err == nil || !strings.Contains(err.Error(), "RouteProtocol 300") {
		t.Fatalf("bad RouteProtocol error = %v", err)
	}
	if _, err := netlink.New(netlink.Options{NetNS: "/etc/hostname"}); err == nil {
		t.Fatal("a non-namespace path accepted")
	}
}

func ExampleNew() {
	// Bind the driver to the node's namespace (here: a named one) and
	// attach a pod with addresses from a memory IPAM.
	drv, err := netlink.New(netlink.Options{NetNS: "/run/netns/node"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drv.Close()
	alloc, _ := ipam.NewPodAllocator(ipam.PodAllocatorConfig{
		Ranges: []ipam.Range{{Subnet: netip.MustParsePrefix("10.244.1.0/24")}},
		Store:  ipam.NewMemoryStore(),
	})
	pods, _ := network.NewManager(network.Config{Links: drv, IPAM: alloc, Mode: network.ModeRouted})
	res, err := pods.Attach(context.Background(), network.Attachment{ContainerID: "abc123", NetNS: "/run/netns/pod"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.IPs[0].Address)
}

// twoNodes wires node1 and node2 over an underlay veth and syncs the fabric
// on both.
func twoNodes(t *testing.T, mode network.FabricMode, podMode network.Mode, underlayV6 bool) (*sandbox.Sandbox, *testNode, *testNode) {
	t.Helper()
	sb := sandbox.New(t)
	// Pods get the MTU the fabric leaves them, as an agent would configure.
	mtu := 1500
	if mode == network.FabricVXLAN {
		under := netip.MustParseAddr("198.18.0.1")
		if underlayV6 {
			under = netip.MustParseAddr("2001:db8::1")
		}
		mtu = network.VXLANConfig{}.MTU(under)
	}
	n1 := newNodeMTU(t, sb, "node1", podMode, podCIDRs["node1"], mtu)
	n2 := newNodeMTU(t, sb, "node2", podMode, podCIDRs["node2"], mtu)
	sb.Connect(n1.ns, "eth0", underlay["node1"], n2.ns, "eth0", underlay["node2"])
	nodes := map[string]network.Node{}
	for _, name := range []string{"node1", "node2"} {
		var addrs []netip.Addr
		for _, p := range underlay[name] {
			if mode == network.FabricVXLAN && p.Addr().Is4() == underlayV6 {
				continue // VXLAN: one underlay family
			}
			addrs = append(addrs, p.Addr())
		}
		nodes[name] = network.Node{Name: name, Addresses: addrs, PodCIDRs: podCIDRs[name]}
	}
	for _, n := range []*testNode{n1, n2} {
		peer := "node2"
		if n.name == "node2" {
			peer = "node1"
		}
		f, err := network.NewFabric(network.FabricConfig{Routes: n.drv})
		if err != nil {
			t.Fatal(err)
		}
		topo := network.Topology{Mode: mode, Local: nodes[n.name], Peers: []network.Node{nodes[peer]}}
		if err := f.Sync(context.Background(), topo); err != nil {
			t.Fatalf("fabric sync on %s: %v", n.name, err)
		}
		// Idempotent.
		if err := f.Sync(context.Background(), topo); err != nil {
			t.Fatalf("second fabric sync on %s: %v", n.name, err)
		}
	}
	return sb, n1, n2
}

func TestTwoNodes(t *testing.T) {
	cases := []struct {
		name       string
		fabric     network.FabricMode
		pods       network.Mode
		underlayV6 bool
	}{
		{"host-gw/routed", network.FabricHostGW, network.ModeRouted, false},
		{"host-gw/bridge", network.FabricHostGW, network.ModeBridge, false},
		{"vxlan/routed/v4-underlay", network.FabricVXLAN, network.ModeRouted, false},
		{"vxlan/bridge/v6-underlay", network.FabricVXLAN, network.ModeBridge, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sb, n1, n2 := twoNodes(t, tc.fabric, tc.pods, tc.underlayV6)
			a := n1.attach(t, sb, "pod-a")
			b := n2.attach(t, sb, "pod-b")
			reachAll(t, a, b)
			reachAll(t, b, a)
			if a.res.MTU != n1.mtu {
				t.Errorf("pod MTU %d, want %d", a.res.MTU, n1.mtu)
			}
			if l, err := a.ns.Netlink().LinkByName("eth0"); err != nil || l.Attrs().MTU != n1.mtu {
				t.Errorf("pod eth0 MTU in the kernel: %v %v, want %d", l, err, n1.mtu)
			}
			// Full-size segments cross the fabric both ways.
			for _, v4 := range []bool{true, false} {
				srv := b.ns.ServeEcho("tcp", netip.AddrPortFrom(b.addr(v4), 0))
				if err := a.ns.Transfer(srv, 1<<20, 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if tc.fabric == network.FabricVXLAN {
				l, err := n1.ns.Netlink().LinkByName("kw-vxlan")
				if err != nil {
					t.Fatalf("no vxlan device on node1: %v", err)
				}
				want := 1450
				if tc.underlayV6 {
					want = 1430
				}
				if l.Attrs().MTU != want {
					t.Errorf("vxlan MTU %d, want %d", l.Attrs().MTU, want)
				}
			}
			// Removing the peer removes its routes (and the overlay entries),
			// and an empty plan removes everything the driver made.
			ctx := context.Background()
			if err := n1.drv.SyncNodeRoutes(ctx, network.NodeRoutes{}); err != nil {
				t.Fatal(err)
			}
			a.ns.MustNotReach(t, "tcp", b.ns.ServeEcho("tcp", netip.AddrPortFrom(b.addr(true), 0)))
			routes, err := n1.ns.Netlink().RouteListFiltered(vnl.FAMILY_ALL, &vnl.Route{Protocol: 187}, vnl.RT_FILTER_PROTOCOL)
			if err != nil || len(routes) != 0 {
				t.Fatalf("fabric routes left after empty sync: %v %v", routes, err)
			}
			if _, err := n1.ns.Netlink().LinkByName("kw-vxlan"); err == nil {
				t.Fatal("vxlan device left after empty sync")
			}
		})
	}
}

// TestFabricTransitions applies a sequence of topologies (peers added,
// moved, removed, mode switched) and checks that the kernel holds exactly
// each plan, in order and after a jump, so no earlier state leaks.
func TestFabricTransitions(t *testing.T) {
	sb := sandbox.New(t)
	n := newNode(t, sb, "node1", network.ModeRouted, podCIDRs["node1"])
	peerNS := sb.Namespace("peer")
	sb.Connect(n.ns, "eth0", underlay["node1"], peerNS, "eth0", underlay["node2"])
	local := network.Node{Name: "node1", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.1")}, PodCIDRs: podCIDRs["node1"]}
	peer := func(name, addr, cidr string) network.Node {
		return network.Node{Name: name, Addresses: []netip.Addr{netip.MustParseAddr(addr)}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix(cidr)}}
	}
	states := []network.Topology{
		{Mode: network.FabricHostGW, Local: local, Peers: []network.Node{peer("n2", "198.18.0.2", "10.244.2.0/24")}},
		{Mode: network.FabricHostGW, Local: local, Peers: []network.Node{peer("n2", "198.18.0.2", "10.244.2.0/24"), peer("n3", "198.18.0.3", "10.244.3.0/24")}},
		{Mode: network.FabricHostGW, Local: local, Peers: []network.Node{peer("n3", "198.18.0.4", "10.244.3.0/24")}},
		{Mode: network.FabricVXLAN, Local: local, Peers: []network.Node{peer("n3", "198.18.0.4", "10.244.3.0/24"), peer("n4", "198.18.0.5", "10.244.4.0/24")}},
		{Mode: network.FabricVXLAN, Local: local, Peers: []network.Node{peer("n4", "198.18.0.5", "10.244.4.0/24")}},
		{Mode: network.FabricHostGW, Local: local},
	}
	ctx := context.Background()
	order := []int{0, 1, 2, 3, 4, 5, 3, 0, 4, 1, 5}
	for _, i := range order {
		plan, err := states[i].Plan()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.drv.SyncNodeRoutes(ctx, plan); err != nil {
			t.Fatalf("state %d: %v", i, err)
		}
		got := kernelFabric(t, n.ns)
		want := planText(plan)
		if got != want {
			t.Fatalf("state %d: kernel holds\n%s\nwant\n%s", i, got, want)
		}
	}
}

// kernelFabric renders the fabric objects found in a node namespace.
func kernelFabric(t *testing.T, ns *sandbox.NS) string {
	t.Helper()
	h := ns.Netlink()
	var lines []string
	routes, err := h.RouteListFiltered(vnl.FAMILY_ALL, &vnl.Route{Protocol: 187}, vnl.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		gw, _ := netip.AddrFromSlice(r.Gw)
		lines = append(lines, fmt.Sprintf("route %s via %s", r.Dst, gw.Unmap()))
	}
	if l, err := h.LinkByName("kw-vxlan"); err == nil {
		lines = append(lines, fmt.Sprintf("vxlan mac=%s mtu=%d", l.Attrs().HardwareAddr, l.Attrs().MTU))
		fdb, _ := h.NeighList(l.Attrs().Index, 7 /* AF_BRIDGE */)
		for _, e := range fdb {
			if e.IP != nil && e.State&vnl.NUD_PERMANENT != 0 {
				lines = append(lines, fmt.Sprintf("fdb %s dst %s", e.HardwareAddr, e.IP))
			}
		}
		neighs, _ := h.NeighList(l.Attrs().Index, vnl.FAMILY_V4)
		for _, e := range neighs {
			if e.State&vnl.NUD_PERMANENT != 0 {
				lines = append(lines, fmt.Sprintf("neigh %s %s", e.IP, e.HardwareAddr))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func planText(p network.NodeRoutes) string {
	var lines []string
	for _, r := range p.Routes {
		lines = append(lines, fmt.Sprintf("route %s via %s", r.Dst, r.Via))
	}
	if v := p.VXLAN; v != nil {
		lines = append(lines, fmt.Sprintf("vxlan mac=%s mtu=%d", v.MAC, v.MTU))
		for _, e := range p.FDB {
			lines = append(lines, fmt.Sprintf("fdb %s dst %s", e.MAC, e.Dst))
		}
		for _, n := range p.Neighbors {
			lines = append(lines, fmt.Sprintf("neigh %s %s", n.IP, n.MAC))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestLinkDriverConformance(t *testing.T) {
	t.Run("delete", func(t *testing.T) { linkConformance(t, false) })
	t.Run("defer-delete", func(t *testing.T) { linkConformance(t, true) })
}

func linkConformance(t *testing.T, deferDelete bool) {
	drivertest.TestLinkDriver(t, func(t *testing.T) drivertest.LinkEnv {
		sb := sandbox.New(t)
		node := sb.Namespace("node")
		drv, err := netlink.New(netlink.Options{NetNS: node.Path(), DeferDelete: deferDelete})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { drv.Close() })
		pods := map[string]*sandbox.NS{}
		return drivertest.LinkEnv{
			Driver: drv,
			NewNetNS: func(t *testing.T) string {
				ns := sb.Namespace("pod")
				pods[ns.Path()] = ns
				return ns.Path()
			},
			RemoveNetNS: func(t *testing.T, path string) {
				ns := pods[path]
				ns.Netlink().Close()
				ns.Close()
				if err := netns.DeleteNamed(ns.Name); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}

// TestBridgeDeletedBehindOurBack: someone deletes the node bridge; the next
// Attach fails once at most, and the one after it rebuilds the bridge.
func TestBridgeDeletedBehindOurBack(t *testing.T) {
	sb := sandbox.New(t)
	node := newNode(t, sb, "node", network.ModeBridge, podCIDRs["node1"])
	a := node.attach(t, sb, "pod-a")
	br, err := node.ns.Netlink().LinkByName("kw-br0")
	if err != nil {
		t.Fatal(err)
	}
	if err := node.ns.Netlink().LinkDel(br); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pod := sb.Namespace("pod-b")
	att := network.Attachment{ContainerID: "b", NetNS: pod.Path()}
	if _, err := node.mgr.Attach(ctx, att); err == nil {
		t.Log("first Attach after the bridge vanished succeeded")
	}
	res, err := node.mgr.Attach(ctx, att)
	if err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	b := &testPod{ns: pod, res: res, att: att}
	// Re-attach a to the new bridge (its port went with the old one).
	if a.res, err = node.mgr.Attach(ctx, a.att); err != nil {
		t.Fatal(err)
	}
	reachAll(t, a, b)
}

// TestDeferDelete: a retired attachment stops at once, its address can be
// given to a new pod that works while the retired pair still exists, the
// same key can attach again in the same namespace, and Reap removes every
// retired link in one call.
func TestDeferDelete(t *testing.T) {
	sb := sandbox.New(t)
	ns := sb.Namespace("node")
	drv, err := netlink.New(netlink.Options{NetNS: ns.Path(), DeferDelete: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	alloc, _ := ipam.NewPodAllocator(ipam.PodAllocatorConfig{Ranges: []ipam.Range{{Subnet: netip.MustParsePrefix("10.244.1.0/30")}}, Store: ipam.NewMemoryStore()})
	mgr, _ := network.NewManager(network.Config{Links: drv, IPAM: alloc})
	node := &testNode{name: "node", ns: ns, drv: drv, mgr: mgr, alloc: alloc, mtu: 1500}
	if err := ns.SetupLink("lo", netip.MustParsePrefix("198.18.0.1/32")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	a := node.attach(t, sb, "pod-a")
	b := node.attach(t, sb, "pod-b") // the /30 is now full
	srv := b.ns.ServeEcho("tcp", netip.AddrPortFrom(b.addr(true), 0))
	a.ns.MustReach(t, "tcp", srv)
	start := time.Now()
	if err := mgr.Detach(ctx, b.att); err != nil {
		t.Fatal(err)
	}
	t.Logf("detach with DeferDelete took %v", time.Since(start))
	a.ns.MustNotReach(t, "tcp", srv)
	if n, err := drv.Retired(ctx); err != nil || n != 1 {
		t.Fatalf("Retired = %d, %v; want 1", n, err)
	}
	// b's address goes to c, which works beside the retired pair.
	c := node.attach(t, sb, "pod-c")
	if c.addr(true) != b.addr(true) {
		t.Fatalf("pod-c got %s, want the freed %s", c.addr(true), b.addr(true))
	}
	a.ns.MustReach(t, "tcp", c.ns.ServeEcho("tcp", netip.AddrPortFrom(c.addr(true), 0)))
	// b attaches again in its namespace (eth0 is free), and is retired again
	// before any reap: the older retired pair is replaced.
	if err := mgr.Detach(ctx, c.att); err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.Attach(ctx, b.att); err != nil {
		t.Fatalf("re-attach in the same namespace: %v", err)
	}
	if err := mgr.Detach(ctx, b.att); err != nil {
		t.Fatal(err)
	}
	if n, _ := drv.Retired(ctx); n != 2 {
		t.Fatalf("Retired = %d, want 2 (c, and b's latest)", n)
	}
	if err := drv.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := drv.Retired(ctx); n != 0 {
		t.Fatalf("Retired after Reap = %d", n)
	}
	for _, p := range []*testPod{b, c} {
		links, _ := p.ns.Netlink().LinkList()
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				t.Errorf("%s left in %s after Reap", l.Attrs().Name, p.ns.Role)
			}
		}
	}
	if err := drv.Reap(ctx); err != nil {
		t.Fatalf("Reap with nothing to reap: %v", err)
	}
	// The live pod is untouched.
	node.ns.MustReach(t, "tcp", a.ns.ServeEcho("tcp", netip.AddrPortFrom(a.addr(true), 0)))
}
