package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	vnl "github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubewire/kubewire/dns"
	dnskube "github.com/kubewire/kubewire/dns/kubeconv"
	netlinkdrv "github.com/kubewire/kubewire/driver/netlink"
	nftdrv "github.com/kubewire/kubewire/driver/nftables"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/ipam"
	"github.com/kubewire/kubewire/network"
	"github.com/kubewire/kubewire/policy"
	policykube "github.com/kubewire/kubewire/policy/kubeconv"
	"github.com/kubewire/kubewire/service"
	servicekube "github.com/kubewire/kubewire/service/kubeconv"
)

// The underlay joining the nodes (a bridge in a "switch" namespace) and the
// outside client use documentation and benchmarking ranges, only inside the
// sandbox's namespaces.
var (
	outsideV4 = netip.MustParseAddr("198.18.1.1")
	outsideV6 = netip.MustParseAddr("2001:db8:1::1")
	switchV4  = netip.MustParsePrefix("198.18.1.254/24")
	switchV6  = netip.MustParsePrefix("2001:db8:1::fe/64")
)

// The cluster DNS the sandbox adds: a pod in kube-system serving package
// dns, behind the kube-dns Service (the tenth address of the service CIDR,
// as kubeadm does).
const (
	dnsNamespace = "kube-system"
	dnsName      = "kube-dns"
	dnsLabel     = "k8s-app"
)

type node struct {
	name    string
	ns      *sandbox.NS
	addrs   []netip.Prefix // underlay, IPv4 then IPv6
	cidrs   []netip.Prefix // pod CIDRs
	links   *netlinkdrv.Driver
	masq    *nftdrv.Masquerade
	pods    *network.Manager
	proxy   *service.Proxier
	enforce *policy.Enforcer
}

// addr returns the node's underlay address of a family.
func (n *node) addr(v4 bool) netip.Addr {
	for _, a := range n.addrs {
		if a.Addr().Is4() == v4 {
			return a.Addr()
		}
	}
	return netip.Addr{}
}

type pod struct {
	obj    *corev1.Pod
	key    string // namespace/name
	node   *node
	ns     *sandbox.NS
	ips    []netip.Addr // cluster family order
	ports  []corev1.ContainerPort
	system bool // added by the sandbox (cluster DNS)
}

func (p *pod) ip(v4 bool) netip.Addr {
	for _, a := range p.ips {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// timing is the build time of one component.
type timing struct {
	Component string        `json:"component"`
	Took      time.Duration `json:"took_ns"`
}

// cluster is a built sandbox cluster.
type cluster struct {
	m        *Manifest
	sb       *sandbox.Sandbox
	env      *sandbox.Program
	outside  *sandbox.NS
	nodes    []*node
	pods     []*pod
	podByKey map[string]*pod
	slices   []*discoveryv1.EndpointSlice // declared and derived
	dnsIPs   []netip.Addr                 // kube-dns ClusterIPs
	timings  []timing
	progress io.Writer
}

func (c *cluster) step(component string, f func() error) error {
	fmt.Fprintf(c.progress, "  %-9s ...", component)
	start := time.Now()
	err := f()
	took := time.Since(start)
	c.timings = append(c.timings, timing{component, took})
	if err != nil {
		fmt.Fprintln(c.progress, " failed")
		return fmt.Errorf("%s: %w", component, err)
	}
	fmt.Fprintf(c.progress, " %s\n", ms(took))
	return nil
}

// families returns the cluster's families as "is IPv4" flags, primary first.
func (c *cluster) families() []bool {
	var out []bool
	for _, f := range c.m.Cluster.IPFamilies {
		out = append(out, f == string(corev1.IPv4Protocol))
	}
	return out
}

// build creates the cluster of m: progress lines go to progress.
func build(ctx context.Context, env *sandbox.Program, m *Manifest, progress io.Writer) (*cluster, error) {
	c := &cluster{m: m, env: env, sb: sandbox.New(env), podByKey: map[string]*pod{}, progress: progress}
	addClusterDNS(m)
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"nodes", c.buildNodes},
		{"pods", c.buildPods},
		{"services", c.buildServices},
		{"policy", c.buildPolicy},
		{"dns", c.buildDNS},
	}
	for _, s := range steps {
		if err := c.step(s.name, func() error { return s.f(ctx) }); err != nil {
			return c, err
		}
	}
	return c, nil
}

// isDNSPod tells whether p serves the cluster DNS (the sandbox runs
// package dns in it instead of echo servers).
func isDNSPod(p *corev1.Pod) bool {
	return p.Namespace == dnsNamespace && p.Labels[dnsLabel] == dnsName
}

// addClusterDNS adds the kube-system namespace, a cluster DNS pod and the
// kube-dns Service, each unless the manifest has one.
func addClusterDNS(m *Manifest) {
	if !slices.ContainsFunc(m.Namespaces, func(n *corev1.Namespace) bool { return n.Name == dnsNamespace }) {
		m.Namespaces = append(m.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dnsNamespace}})
	}
	labels := map[string]string{dnsLabel: dnsName}
	if !slices.ContainsFunc(m.Pods, isDNSPod) {
		m.Pods = append(m.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: dnsNamespace, Name: "kubewire-dns", Labels: labels},
			Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "dns", Ports: []corev1.ContainerPort{
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
			}}}},
		})
	}
	if slices.ContainsFunc(m.Services, func(s *corev1.Service) bool { return s.Namespace == dnsNamespace && s.Name == dnsName }) {
		return
	}
	var ips []string // ServiceCIDRs are in IPFamilies order (Load)
	for _, p := range m.Cluster.ServiceCIDRs {
		a := p.Masked().Addr()
		for range 10 {
			a = a.Next()
		}
		ips = append(ips, a.String())
	}
	policy := corev1.IPFamilyPolicyPreferDualStack
	families := make([]corev1.IPFamily, 0, len(m.Cluster.IPFamilies))
	for _, f := range m.Cluster.IPFamilies {
		families = append(families, corev1.IPFamily(f))
	}
	m.Services = append(m.Services, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: dnsNamespace, Name: dnsName},
		Spec: corev1.ServiceSpec{
			Selector: labels, ClusterIP: ips[0], ClusterIPs: ips, IPFamilies: families, IPFamilyPolicy: &policy,
			Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intStr("dns")},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intStr("dns-tcp")},
			},
		},
	})
}

func (c *cluster) buildNodes(ctx context.Context) error {
	cl := c.m.Cluster
	sw := c.sb.Namespace("switch")
	if err := sw.Netlink().LinkAdd(&vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: "br0"}}); err != nil {
		return fmt.Errorf("switch bridge: %w", err)
	}
	if err := sw.SetupLink("br0", switchV4, switchV6); err != nil {
		return err
	}
	c.outside = c.sb.Namespace("outside")
	c.sb.Connect(c.outside, "eth0", []netip.Prefix{netip.PrefixFrom(outsideV4, 24), netip.PrefixFrom(outsideV6, 64)}, sw, "outside", nil)
	if err := plug(sw, "outside"); err != nil {
		return err
	}
	var fabric network.FabricMode
	if err := fabric.UnmarshalText([]byte(cl.Overlay)); err != nil {
		return fmt.Errorf("cluster overlay %q: %w", cl.Overlay, err)
	}
	var mode network.Mode
	if err := mode.UnmarshalText([]byte(cl.PodNetwork)); err != nil {
		return fmt.Errorf("cluster podNetwork %q: %w", cl.PodNetwork, err)
	}
	cidrs, err := ipam.NewNodeCIDRAllocator(ipam.NodeCIDRConfig{ClusterCIDRs: cl.PodCIDRs, Store: ipam.NewMemoryStore()})
	if err != nil {
		return err
	}
	mtu := 1500
	if fabric == network.FabricVXLAN {
		mtu = network.VXLANConfig{}.MTU(switchV4.Addr())
	}
	for i := 1; i <= cl.Nodes; i++ {
		n := &node{
			name: fmt.Sprintf("node%d", i),
			addrs: []netip.Prefix{
				netip.MustParsePrefix(fmt.Sprintf("198.18.1.%d/24", 10+i)),
				netip.MustParsePrefix(fmt.Sprintf("2001:db8:1::%x/64", 0x10+i)),
			},
		}
		if n.cidrs, err = cidrs.Allocate(ctx, n.name); err != nil {
			return fmt.Errorf("pod CIDRs of %s: %w", n.name, err)
		}
		if err := c.newNode(n, sw, mode, mtu); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		c.nodes = append(c.nodes, n)
	}
	// Every node learns the topology, as an agent would from Node objects.
	var topo []network.Node
	for _, n := range c.nodes {
		tn := network.Node{Name: n.name, PodCIDRs: n.cidrs}
		for _, a := range n.addrs {
			if fabric == network.FabricVXLAN && a.Addr().Is6() {
				continue // the overlay runs over the IPv4 underlay
			}
			tn.Addresses = append(tn.Addresses, a.Addr())
		}
		topo = append(topo, tn)
	}
	for i, n := range c.nodes {
		f, err := network.NewFabric(network.FabricConfig{Routes: n.links, Masquerade: n.masq, ClusterCIDRs: cl.PodCIDRs})
		if err != nil {
			return err
		}
		peers := slices.Concat(topo[:i], topo[i+1:])
		if err := f.Sync(ctx, network.Topology{Mode: fabric, Local: topo[i], Peers: peers}); err != nil {
			return fmt.Errorf("fabric on %s: %w", n.name, err)
		}
	}
	return nil
}

func (c *cluster) newNode(n *node, sw *sandbox.NS, mode network.Mode, mtu int) error {
	env := c.env
	n.ns = c.sb.Namespace(n.name)
	port := "p-" + n.name
	c.sb.Connect(n.ns, "eth0", n.addrs, sw, port, nil)
	if err := plug(sw, port); err != nil {
		return err
	}
	for _, r := range []struct{ dst, via netip.Addr }{{netip.IPv4Unspecified(), switchV4.Addr()}, {netip.IPv6Unspecified(), switchV6.Addr()}} {
		if err := n.ns.AddRoute(netip.PrefixFrom(r.dst, 0), r.via, "eth0"); err != nil {
			return err
		}
	}
	var err error
	if n.links, err = netlinkdrv.New(netlinkdrv.Options{NetNS: n.ns.Path()}); err != nil {
		return err
	}
	env.Cleanup(func() { n.links.Close() })
	if n.masq, err = nftdrv.NewMasquerade(nftdrv.Options{NetNS: n.ns.Path(), Table: "kubewire-masq"}); err != nil {
		return err
	}
	env.Cleanup(func() { n.masq.Close() })
	var ranges []ipam.Range
	for _, p := range n.cidrs {
		r := ipam.Range{Subnet: p}
		if mode == network.ModeBridge {
			r.Gateway = p.Addr().Next()
		}
		ranges = append(ranges, r)
	}
	alloc, err := ipam.NewPodAllocator(ipam.PodAllocatorConfig{Ranges: ranges, Store: ipam.NewMemoryStore()})
	if err != nil {
		return err
	}
	n.pods, err = network.NewManager(network.Config{Links: n.links, IPAM: alloc, Mode: mode, MTU: mtu})
	return err
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

// convertAll converts every item with conv, leaving out those it skips
// (errors wrapping skip); it stops at the first other error.
func convertAll[T, U any](in []T, conv func(T) (U, error), skip error) ([]U, error) {
	out := make([]U, 0, len(in))
	for _, x := range in {
		u, err := conv(x)
		if errors.Is(err, skip) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// eachNode runs f for every node at once, as every node's agent would, and
// returns their errors.
func (c *cluster) eachNode(f func(n *node) error) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = f(n) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *cluster) nodeByName(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// role makes a namespace role from a pod's namespace and name.
func role(p *corev1.Pod) string {
	r := strings.ReplaceAll(p.Namespace+"-"+p.Name, ".", "-")
	if len(r) > 40 {
		r = r[:40]
	}
	return strings.TrimRight(r, "-")
}

// defaultPorts are served by pods that declare no container port.
var defaultPorts = []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}}

// buildPods attaches every pod (in parallel, a few at a time), fills its
// status with its addresses and starts its echo servers.
func (c *cluster) buildPods(ctx context.Context) error {
	for _, o := range c.m.Pods {
		n := c.nodeByName(o.Spec.NodeName)
		if n == nil {
			return fmt.Errorf("pod %s/%s: spec.nodeName %q: no such node", o.Namespace, o.Name, o.Spec.NodeName)
		}
		p := &pod{obj: o, key: o.Namespace + "/" + o.Name, node: n,
			system: isDNSPod(o)}
		for _, ct := range o.Spec.Containers {
			p.ports = append(p.ports, ct.Ports...)
		}
		if len(p.ports) == 0 {
			p.ports = defaultPorts
		}
		p.ns = c.sb.Namespace(role(o))
		c.pods = append(c.pods, p)
		c.podByKey[p.key] = p
	}
	// Nodes attach their pods in parallel, each in declaration order, so
	// that addresses are the same from run to run.
	if err := c.eachNode(func(n *node) error {
		for _, p := range c.pods {
			if p.node != n {
				continue
			}
			if err := c.attach(ctx, p); err != nil {
				return fmt.Errorf("pod %s: %w", p.key, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for _, p := range c.pods {
		if p.system {
			continue // the cluster DNS serves its ports
		}
		for _, cp := range p.ports {
			proto := strings.ToLower(string(cp.Protocol))
			p.ns.ServeEcho(proto, netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(cp.ContainerPort)))
		}
	}
	return nil
}

func (c *cluster) attach(ctx context.Context, p *pod) error {
	res, err := p.node.pods.Attach(ctx, network.Attachment{ContainerID: p.ns.Name, NetNS: p.ns.Path()})
	if err != nil {
		return err
	}
	for _, v4 := range c.families() {
		for _, ip := range res.IPs {
			if a := ip.Address.Addr(); a.Is4() == v4 {
				p.ips = append(p.ips, a)
			}
		}
	}
	p.obj.Status.Phase = corev1.PodRunning
	p.obj.Status.PodIPs = nil
	for _, a := range p.ips {
		p.obj.Status.PodIPs = append(p.obj.Status.PodIPs, corev1.PodIP{IP: a.String()})
	}
	if len(p.ips) > 0 {
		p.obj.Status.PodIP = p.ips[0].String()
	}
	p.obj.Status.HostIP = p.node.addr(true).String()
	return nil
}

// buildServices allocates cluster IPs and node ports, derives the
// EndpointSlices the manifest does not declare, and programs every node's
// service proxy.
func (c *cluster) buildServices(ctx context.Context) error {
	cl := c.m.Cluster
	ips, err := ipam.NewClusterIPAllocator(ipam.ClusterIPConfig{CIDRs: cl.ServiceCIDRs, Store: ipam.NewMemoryStore()})
	if err != nil {
		return err
	}
	ports, err := ipam.NewNodePortAllocator(ipam.NodePortConfig{Store: ipam.NewMemoryStore()})
	if err != nil {
		return err
	}
	// Requested addresses and ports first, so that dynamic ones avoid them.
	svcs := slices.Clone(c.m.Services)
	slices.SortStableFunc(svcs, func(a, b *corev1.Service) int {
		return boolCmp(a.Spec.ClusterIP == "", b.Spec.ClusterIP == "")
	})
	for _, s := range svcs {
		if err := allocateService(ctx, s, ips, ports); err != nil {
			return fmt.Errorf("service %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	c.slices = append(slices.Clone(c.m.EndpointSlices), DeriveEndpointSlices(c.m)...)

	svcModel, err := convertAll(c.m.Services, func(s *corev1.Service) (*service.Service, error) {
		return servicekube.Service(s, servicekube.Options{})
	}, servicekube.ErrSkip)
	if err != nil {
		return err
	}
	sliceModel, err := convertAll(c.slices, servicekube.EndpointSlice, servicekube.ErrSkip)
	if err != nil {
		return err
	}
	return c.eachNode(func(n *node) error { return c.proxyNode(ctx, n, svcModel, sliceModel) })
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func allocateService(ctx context.Context, s *corev1.Service, ips *ipam.ClusterIPAllocator, ports *ipam.NodePortAllocator) error {
	owner := s.Namespace + "/" + s.Name
	if s.Spec.Type == corev1.ServiceTypeExternalName || s.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	var families []ipam.Family
	for _, f := range s.Spec.IPFamilies {
		if f == corev1.IPv4Protocol {
			families = append(families, ipam.IPv4)
		} else {
			families = append(families, ipam.IPv6)
		}
	}
	var requested []netip.Addr
	for _, s := range s.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(s); err == nil {
			requested = append(requested, a)
		}
	}
	got, err := ips.Allocate(ctx, owner, families, requested)
	if err != nil {
		return fmt.Errorf("spec.clusterIPs: %w", err)
	}
	s.Spec.ClusterIPs = nil
	for _, a := range got {
		s.Spec.ClusterIPs = append(s.Spec.ClusterIPs, a.String())
	}
	s.Spec.ClusterIP = s.Spec.ClusterIPs[0]
	if s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return nil
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		n, err := ports.Allocate(ctx, fmt.Sprintf("%s/%d", owner, i), int(p.NodePort))
		if err != nil {
			return fmt.Errorf("spec.ports[%d].nodePort: %w", i, err)
		}
		p.NodePort = int32(n)
	}
	return nil
}

func (c *cluster) proxyNode(ctx context.Context, n *node, svcs []*service.Service, slices_ []*service.EndpointSlice) error {
	dp, err := nftdrv.NewService(nftdrv.ServiceOptions{
		Options:      nftdrv.Options{NetNS: n.ns.Path(), Table: "kubewire-services"},
		ClusterCIDRs: c.m.Cluster.PodCIDRs,
	})
	if err != nil {
		return err
	}
	c.env.Cleanup(func() { dp.Close() })
	info := service.NodeInfo{Name: n.name}
	for _, a := range n.addrs {
		info.Addresses = append(info.Addresses, a.Addr())
	}
	if n.proxy, err = service.NewProxier(service.Config{Dataplane: dp, Node: info}); err != nil {
		return err
	}
	for _, s := range svcs {
		if err := n.proxy.OnServiceAdd(s); err != nil {
			return err
		}
	}
	for _, es := range slices_ {
		if err := n.proxy.OnEndpointSliceAdd(es); err != nil {
			return err
		}
	}
	return n.proxy.Sync(ctx)
}

// buildPolicy runs one Enforcer per node, as an agent on each node would,
// each enforcing its own pods.
func (c *cluster) buildPolicy(ctx context.Context) error {
	var (
		nss  []policy.Namespace
		pods []*policy.Pod
		pols []*policy.Policy
		mns  []policy.Node
	)
	for _, o := range c.m.Namespaces {
		n, err := policykube.Namespace(o)
		if err != nil {
			return err
		}
		nss = append(nss, n)
	}
	for _, p := range c.pods {
		pp, err := policykube.Pod(p.obj)
		if err != nil {
			return err
		}
		pods = append(pods, pp)
	}
	for _, o := range c.m.NetworkPolicies {
		p, err := policykube.Policy(o)
		if err != nil {
			return err
		}
		pols = append(pols, p)
	}
	for _, n := range c.nodes {
		kn := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}
		for _, a := range n.addrs {
			kn.Status.Addresses = append(kn.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.Addr().String()})
		}
		pn, err := policykube.Node(kn)
		if err != nil {
			return err
		}
		mns = append(mns, pn)
	}
	return c.eachNode(func(n *node) error {
		dp, err := nftdrv.NewPolicy(nftdrv.PolicyOptions{
			Options: nftdrv.Options{NetNS: n.ns.Path(), Table: "kubewire-policy"},
			Node:    n.name, Reject: true,
		})
		if err != nil {
			return err
		}
		c.env.Cleanup(func() { dp.Close() })
		if n.enforce, err = policy.NewEnforcer(policy.Config{Dataplane: dp}); err != nil {
			return err
		}
		for _, x := range nss {
			n.enforce.OnNamespaceAdd(x)
		}
		for _, x := range mns {
			n.enforce.OnNodeAdd(x)
		}
		for _, x := range pods {
			n.enforce.OnPodAdd(x)
		}
		for _, x := range pols {
			n.enforce.OnPolicyAdd(x)
		}
		return n.enforce.Sync(ctx)
	})
}

// trace is the policy verdict of the cluster (every node compiles the same
// Program; node1's answers).
func (c *cluster) trace(src, dst netip.Addr, proto corev1.Protocol, port uint16) policy.Decision {
	return c.nodes[0].enforce.Trace(src, dst, policy.Protocol(proto), port)
}

// buildDNS fills the record index and starts the server inside the
// cluster DNS pod.
func (c *cluster) buildDNS(ctx context.Context) error {
	cl := c.m.Cluster
	rec, err := dns.NewRecords(dns.Config{Zone: cl.Domain, Pods: dns.PodsInsecure,
		ReverseCIDRs: slices.Concat(cl.ServiceCIDRs, cl.PodCIDRs)})
	if err != nil {
		return err
	}
	// Objects DNS skips (ErrSkip) are left out, as CoreDNS ignores them.
	svcs := map[string]*corev1.Service{}
	for _, o := range c.m.Services {
		svcs[o.Namespace+"/"+o.Name] = o
	}
	nss, err1 := convertAll(c.m.Namespaces, dnskube.Namespace, dnskube.ErrSkip)
	dsvcs, err2 := convertAll(c.m.Services, dnskube.Service, dnskube.ErrSkip)
	dslices, err3 := convertAll(c.slices, func(es *discoveryv1.EndpointSlice) (*dns.EndpointSlice, error) {
		return dnskube.EndpointSlice(es, svcs[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]])
	}, dnskube.ErrSkip)
	dpods, err4 := convertAll(c.pods, func(p *pod) (*dns.Pod, error) { return dnskube.Pod(p.obj) }, dnskube.ErrSkip)
	errs := []error{err1, err2, err3, err4}
	for _, x := range nss {
		errs = append(errs, rec.OnNamespaceAdd(x))
	}
	for _, x := range dsvcs {
		errs = append(errs, rec.OnServiceAdd(x))
		if x.Namespace == dnsNamespace && x.Name == dnsName {
			c.dnsIPs = x.ClusterIPs
		}
	}
	for _, x := range dslices {
		errs = append(errs, rec.OnEndpointSliceAdd(x))
	}
	for _, x := range dpods {
		errs = append(errs, rec.OnPodAdd(x))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rec.MarkSynced()

	var srvPod *pod
	for _, p := range c.pods {
		if isDNSPod(p.obj) {
			srvPod = p
			break
		}
	}
	if srvPod == nil {
		return errors.New("no cluster DNS pod")
	}
	var listen []netip.AddrPort
	for _, a := range srvPod.ips {
		listen = append(listen, netip.AddrPortFrom(a, 53))
	}
	srv, err := dns.NewServer(dns.ServerConfig{Records: rec, Listen: listen})
	if err != nil {
		return err
	}
	if err := srvPod.ns.Do(srv.Listen); err != nil {
		return fmt.Errorf("listen in %s: %w", srvPod.key, err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	c.env.Cleanup(func() { cancel(); <-done })
	return nil
}

// resolvConf is a pod's resolv.conf, as kubelet would write it.
func (c *cluster) resolvConf(p *pod) (dns.ResolvConf, error) {
	params, err := dnskube.PodDNS(p.obj)
	if err != nil {
		return dns.ResolvConf{}, err
	}
	params.ClusterDomain = strings.TrimSuffix(c.m.Cluster.Domain, ".")
	params.ClusterDNS = c.dnsIPs
	params.NodeIPs = []netip.Addr{p.node.addr(true)}
	rc, _, err := dns.PodResolvConf(params)
	return rc, err
}
