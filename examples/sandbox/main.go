// Command sandbox simulates a small Kubernetes cluster inside throwaway
// network namespaces and shows that kubewire wires it correctly: every node
// is a namespace with kubewire's drivers bound to it, pods are namespaces
// attached by network.Manager, nodes reach each other's pods over host-gw
// routes or a VXLAN overlay, and pods reach a "remote" host outside the
// cluster through the node's egress masquerade.
//
// It prints the connectivity matrix it measured (TCP and UDP, IPv4 and
// IPv6) and exits non-zero if any expected path fails. Everything it creates
// is removed when it exits, also on failure or Ctrl-C. It needs root.
//
//	go run ./examples/sandbox                       # 2 nodes, host-gw, routed pods
//	go run ./examples/sandbox -fabric vxlan -mode bridge -nodes 3 -pods 2
//
// This binary is a composition root, as DESIGN.md describes: it builds the
// drivers, the IPAM and the managers, and feeds them the cluster topology.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	vnl "github.com/vishvananda/netlink"

	netlinkdrv "github.com/kubewire/kubewire/driver/netlink"
	nftdrv "github.com/kubewire/kubewire/driver/nftables"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/ipam"
	"github.com/kubewire/kubewire/network"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.fabric, "fabric", "host-gw", "cross-node fabric: host-gw or vxlan")
	flag.StringVar(&cfg.mode, "mode", "routed", "pod attachment: routed or bridge")
	flag.IntVar(&cfg.nodes, "nodes", 2, "number of nodes (1-9)")
	flag.IntVar(&cfg.pods, "pods", 1, "pods per node (1-9)")
	flag.Parse()

	prog := sandbox.NewProgram()
	err := prog.Run(func() error { return run(prog, cfg, os.Stdout) })
	prog.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

type config struct {
	fabric, mode string
	nodes, pods  int
}

// Addresses used inside the simulated cluster only: nodes share an underlay
// of 198.18.0.0/24 and 2001:db8::/64 (benchmarking and documentation
// ranges), pods get 10.244.N.0/24 and fd00:10:244:N::/64, and the remote host
// is 198.18.1.1 / 2001:db8:1::1 behind node 1.
var (
	clusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")}
	remoteV4     = netip.MustParseAddr("198.18.1.1")
	remoteV6     = netip.MustParseAddr("2001:db8:1::1")
)

type simNode struct {
	name  string
	ns    *sandbox.NS
	addrs []netip.Prefix
	cidrs []netip.Prefix
	links *netlinkdrv.Driver
	masq  *nftdrv.Masquerade
	pods  *network.Manager
}

type simPod struct {
	name string
	node *simNode
	ns   *sandbox.NS
	ips  []netip.Addr
}

func run(env *sandbox.Program, cfg config, out io.Writer) error {
	var fabric network.FabricMode
	if err := fabric.UnmarshalText([]byte(cfg.fabric)); err != nil {
		return err
	}
	var mode network.Mode
	if err := mode.UnmarshalText([]byte(cfg.mode)); err != nil {
		return err
	}
	if cfg.nodes < 1 || cfg.nodes > 9 || cfg.pods < 1 || cfg.pods > 9 {
		return errors.New("-nodes and -pods must be between 1 and 9")
	}
	if err := sandbox.Privileged(); err != nil {
		return fmt.Errorf("needs root to create network namespaces: %w", err)
	}
	sb := sandbox.New(env)
	ctx := context.Background()
	start := time.Now()

	// The underlay: one "switch" namespace with a bridge, every node plugged
	// into it, and a remote host outside the cluster behind it.
	sw := sb.Namespace("switch")
	if err := sw.Netlink().LinkAdd(&vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: "br0"}}); err != nil {
		return fmt.Errorf("switch bridge: %w", err)
	}
	if err := sw.SetupLink("br0", netip.MustParsePrefix("198.18.1.254/24"), netip.MustParsePrefix("2001:db8:1::fe/64")); err != nil {
		return err
	}
	sw.MustSysctl("net.ipv4.ip_forward", "1")
	sw.MustSysctl("net.ipv6.conf.all.forwarding", "1")
	remote := sb.Namespace("remote")
	sb.Connect(remote, "eth0", []netip.Prefix{netip.PrefixFrom(remoteV4, 24), netip.PrefixFrom(remoteV6, 64)}, sw, "remote", nil)
	if err := plug(sw, "remote"); err != nil {
		return err
	}
	for _, r := range []struct{ dst, via string }{{"0.0.0.0/0", "198.18.1.254"}, {"::/0", "2001:db8:1::fe"}} {
		if err := remote.AddRoute(netip.MustParsePrefix(r.dst), netip.MustParseAddr(r.via), "eth0"); err != nil {
			return err
		}
	}

	var nodes []*simNode
	for i := 1; i <= cfg.nodes; i++ {
		// Pods get the MTU the fabric leaves them (the overlay's over VXLAN).
		mtu := 1500
		if fabric == network.FabricVXLAN {
			mtu = network.VXLANConfig{}.MTU(netip.MustParseAddr("198.18.1.1"))
		}
		n, err := newSimNode(env, sb, sw, i, mode, mtu)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	// Every node learns the topology, as an agent would from Node objects.
	var topo []network.Node
	for _, n := range nodes {
		tn := network.Node{Name: n.name, PodCIDRs: n.cidrs}
		for _, a := range n.addrs {
			if fabric == network.FabricVXLAN && a.Addr().Is6() {
				continue // the overlay runs over the IPv4 underlay
			}
			tn.Addresses = append(tn.Addresses, a.Addr())
		}
		topo = append(topo, tn)
	}
	for i, n := range nodes {
		f, err := network.NewFabric(network.FabricConfig{Routes: n.links, Masquerade: n.masq, ClusterCIDRs: clusterCIDRs})
		if err != nil {
			return err
		}
		var peers []network.Node
		for j, p := range topo {
			if j != i {
				peers = append(peers, p)
			}
		}
		if err := f.Sync(ctx, network.Topology{Mode: fabric, Local: topo[i], Peers: peers}); err != nil {
			return fmt.Errorf("fabric on %s: %w", n.name, err)
		}
	}

	var pods []*simPod
	for _, n := range nodes {
		for j := 1; j <= cfg.pods; j++ {
			name := fmt.Sprintf("%s-pod%d", n.name, j)
			ns := sb.Namespace(name)
			res, err := n.pods.Attach(ctx, network.Attachment{ContainerID: ns.Name, NetNS: ns.Path()})
			if err != nil {
				return fmt.Errorf("attach %s: %w", name, err)
			}
			p := &simPod{name: name, node: n, ns: ns}
			for _, ip := range res.IPs {
				p.ips = append(p.ips, ip.Address.Addr())
			}
			pods = append(pods, p)
		}
	}
	setup := time.Since(start)

	fmt.Fprintf(out, "kubewire sandbox: %d nodes, %d pods, fabric %s, pods %s (built in %s)\n\n",
		len(nodes), len(pods), fabric, mode, setup.Round(time.Millisecond))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIPv4\tIPv6")
	for _, p := range pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.name, p.node.name, p.ips[0], p.ips[1])
	}
	tw.Flush()
	fmt.Fprintln(out)

	failures := 0
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tTCP/4\tUDP/4\tTCP/6\tUDP/6\tSEEN AS")
	type target struct {
		name    string
		ns      *sandbox.NS
		ips     []netip.Addr
		wantSrc func(p *simPod, v4 bool) netip.Addr
	}
	var targets []target
	for _, p := range pods {
		targets = append(targets, target{p.name, p.ns, p.ips, func(src *simPod, v4 bool) netip.Addr { return src.ip(v4) }})
	}
	targets = append(targets, target{"remote (egress)", remote, []netip.Addr{remoteV4, remoteV6}, func(src *simPod, v4 bool) netip.Addr {
		return src.node.addr(v4)
	}})
	for _, src := range pods {
		for _, dst := range targets {
			if dst.ns == src.ns {
				continue
			}
			cells := []string{src.name, dst.name}
			var seen []string
			for _, v4 := range []bool{true, false} {
				for _, proto := range []string{"tcp", "udp"} {
					ip := dst.ips[0]
					if !v4 {
						ip = dst.ips[1]
					}
					srv := dst.ns.ServeEcho(proto, netip.AddrPortFrom(ip, 0))
					from, err := src.ns.Probe(proto, srv, 3*time.Second)
					switch {
					case err != nil:
						cells = append(cells, "FAIL")
						failures++
					case from.Addr() != dst.wantSrc(src, v4):
						cells = append(cells, "NAT?")
						failures++
					default:
						cells = append(cells, "ok")
					}
					if err == nil && proto == "tcp" {
						seen = append(seen, from.Addr().String())
					}
				}
			}
			cells = append(cells, strings.Join(seen, " "))
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
	}
	tw.Flush()
	fmt.Fprintln(out)
	if failures > 0 {
		return fmt.Errorf("%d paths failed", failures)
	}
	fmt.Fprintln(out, "all paths ok: pods reach each other with their own addresses, and the remote host sees the node address.")
	return nil
}

func newSimNode(env *sandbox.Program, sb *sandbox.Sandbox, sw *sandbox.NS, i int, mode network.Mode, mtu int) (*simNode, error) {
	n := &simNode{
		name: fmt.Sprintf("node%d", i),
		addrs: []netip.Prefix{
			netip.MustParsePrefix(fmt.Sprintf("198.18.1.%d/24", 10+i)),
			netip.MustParsePrefix(fmt.Sprintf("2001:db8:1::%x/64", 0x10+i)),
		},
		cidrs: []netip.Prefix{
			netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)),
			netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i)),
		},
	}
	n.ns = sb.Namespace(n.name)
	port := "p-" + n.name
	sb.Connect(n.ns, "eth0", n.addrs, sw, port, nil)
	if err := plug(sw, port); err != nil {
		return nil, err
	}
	// Default routes to the "switch" router, as a real node has.
	for _, r := range []struct{ dst, via string }{{"0.0.0.0/0", "198.18.1.254"}, {"::/0", "2001:db8:1::fe"}} {
		if err := n.ns.AddRoute(netip.MustParsePrefix(r.dst), netip.MustParseAddr(r.via), "eth0"); err != nil {
			return nil, err
		}
	}
	var err error
	if n.links, err = netlinkdrv.New(netlinkdrv.Options{NetNS: n.ns.Path()}); err != nil {
		return nil, err
	}
	env.Cleanup(func() { n.links.Close() })
	if n.masq, err = nftdrv.NewMasquerade(nftdrv.Options{NetNS: n.ns.Path(), Table: "kubewire-masq"}); err != nil {
		return nil, err
	}
	env.Cleanup(func() { n.masq.Close() })
	var ranges []ipam.Range
	for _, c := range n.cidrs {
		r := ipam.Range{Subnet: c}
		if mode == network.ModeBridge {
			r.Gateway = c.Addr().Next()
		}
		ranges = append(ranges, r)
	}
	alloc, err := ipam.NewPodAllocator(ipam.PodAllocatorConfig{Ranges: ranges, Store: ipam.NewMemoryStore()})
	if err != nil {
		return nil, err
	}
	n.pods, err = network.NewManager(network.Config{Links: n.links, IPAM: alloc, Mode: mode, MTU: mtu})
	return n, err
}

// plug attaches a port of the switch namespace to its bridge.
func plug(sw *sandbox.NS, port string) error {
	h := sw.Netlink()
	br, err := h.LinkByName("br0")
	if err != nil {
		return err
	}
	l, err := h.LinkByName(port)
	if err != nil {
		return err
	}
	if err := h.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("plug %s: %w", port, err)
	}
	return h.LinkSetUp(l)
}

func (p *simPod) ip(v4 bool) netip.Addr {
	for _, a := range p.ips {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

func (n *simNode) addr(v4 bool) netip.Addr {
	for _, a := range n.addrs {
		if a.Addr().Is4() == v4 {
			return a.Addr()
		}
	}
	return netip.Addr{}
}
