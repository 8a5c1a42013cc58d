// Package fake implements kubewire's driver interfaces in memory, so code
// that embeds kubewire can be tested without root or a kernel. Every fake
// records the desired state it was given and renders it as stable, readable
// text with Dump; tests compare that text or inspect the fields.
//
// Fakes are safe for concurrent use. Failures can be injected per operation
// with FailOn, and pod namespaces can be made to disappear with
// RemoveNetNS, to exercise rollback and cleanup paths.
package fake

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kubewire/kubewire/network"
)

// ErrNetNSGone is returned by SetupPod and InspectPod for a namespace the
// fake does not know (see AddNetNS).
var ErrNetNSGone = errors.New("fake: network namespace does not exist")

// Links is an in-memory network.LinkDriver, network.RouteDriver and
// network.Masquerader.
type Links struct {
	mu      sync.Mutex
	node    *network.NodeSpec
	bridges map[string][]netip.Prefix
	pods    map[string]network.PodSpec // by host interface name
	netns   map[string]bool
	strict  bool
	fail    map[string]error
	calls   map[string]int
	routes  network.NodeRoutes
	masq    network.MasqueradeRules
}

var (
	_ network.LinkDriver  = (*Links)(nil)
	_ network.RouteDriver = (*Links)(nil)
	_ network.Masquerader = (*Links)(nil)
)

// NewLinks returns an empty fake. Unless StrictNetNS is called, every
// namespace path is taken to exist.
func NewLinks() *Links {
	return &Links{
		bridges: map[string][]netip.Prefix{},
		pods:    map[string]network.PodSpec{},
		netns:   map[string]bool{},
		fail:    map[string]error{},
		calls:   map[string]int{},
	}
}

// StrictNetNS makes the fake accept only namespaces added with AddNetNS.
func (f *Links) StrictNetNS() { f.mu.Lock(); f.strict = true; f.mu.Unlock() }

// AddNetNS declares a pod namespace path as existing.
func (f *Links) AddNetNS(path string) { f.mu.Lock(); f.netns[path] = true; f.mu.Unlock() }

// RemoveNetNS makes a namespace disappear, with every pod interface in it
// (as the kernel does when a pod sandbox dies): host sides stay, but their
// peers are gone, so they vanish too.
func (f *Links) RemoveNetNS(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.netns[path] = false
	for name, p := range f.pods {
		if p.NetNS == path {
			delete(f.pods, name)
		}
	}
}

// FailOn makes the next call of op ("SetupNode", "SetupPod", "TeardownPod",
// "Pods", "InspectPod", "SyncNodeRoutes", "SyncMasquerade") return err.
// A nil err clears it.
func (f *Links) FailOn(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, op)
		return
	}
	f.fail[op] = err
}

// Calls returns how many times op was called.
func (f *Links) Calls(op string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls[op] }

func (f *Links) enter(op string) error {
	f.calls[op]++
	if err, ok := f.fail[op]; ok {
		delete(f.fail, op)
		return err
	}
	return nil
}

func (f *Links) nsExists(path string) bool {
	if v, ok := f.netns[path]; ok {
		return v
	}
	return !f.strict
}

// SetupNode implements network.LinkDriver.
func (f *Links) SetupNode(ctx context.Context, spec network.NodeSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("SetupNode"); err != nil {
		return err
	}
	n := spec
	if f.node != nil {
		n.IPv4 = n.IPv4 || f.node.IPv4
		n.IPv6 = n.IPv6 || f.node.IPv6
	}
	f.node = &n
	if spec.Bridge != "" {
		for _, a := range spec.BridgeAddrs {
			if !slices.Contains(f.bridges[spec.Bridge], a) {
				f.bridges[spec.Bridge] = append(f.bridges[spec.Bridge], a)
			}
		}
		if _, ok := f.bridges[spec.Bridge]; !ok {
			f.bridges[spec.Bridge] = nil
		}
	}
	return nil
}

// SetupPod implements network.LinkDriver.
func (f *Links) SetupPod(ctx context.Context, spec network.PodSpec) (network.PodLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("SetupPod"); err != nil {
		return network.PodLink{}, err
	}
	if !f.nsExists(spec.NetNS) {
		return network.PodLink{}, fmt.Errorf("open %s: %w", spec.NetNS, ErrNetNSGone)
	}
	if spec.Bridge != "" {
		if _, ok := f.bridges[spec.Bridge]; !ok {
			return network.PodLink{}, fmt.Errorf("fake: bridge %s does not exist", spec.Bridge)
		}
	}
	for name, p := range f.pods {
		if name != spec.HostIfName && p.NetNS == spec.NetNS && p.IfName == spec.IfName {
			return network.PodLink{}, fmt.Errorf("fake: interface %s already exists in %s", spec.IfName, spec.NetNS)
		}
	}
	f.pods[spec.HostIfName] = clonePod(spec)
	return link(spec), nil
}

func link(spec network.PodSpec) network.PodLink {
	return network.PodLink{PodKey: spec.PodKey, HostIfName: spec.HostIfName, HostMAC: spec.HostMAC, PodIfIndex: 2}
}

func clonePod(s network.PodSpec) network.PodSpec {
	s.Addresses = slices.Clone(s.Addresses)
	s.Routes = slices.Clone(s.Routes)
	s.Neighbors = slices.Clone(s.Neighbors)
	s.HostRoutes = slices.Clone(s.HostRoutes)
	s.HostNeighbors = slices.Clone(s.HostNeighbors)
	return s
}

// TeardownPod implements network.LinkDriver.
func (f *Links) TeardownPod(ctx context.Context, key network.PodKey, hostIfName, netnsPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("TeardownPod"); err != nil {
		return err
	}
	delete(f.pods, hostIfName)
	return nil
}

// Pods implements network.LinkDriver.
func (f *Links) Pods(ctx context.Context) ([]network.PodLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Pods"); err != nil {
		return nil, err
	}
	out := make([]network.PodLink, 0, len(f.pods))
	for _, p := range f.pods {
		out = append(out, link(p))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].HostIfName < out[j].HostIfName })
	return out, nil
}

// InspectPod implements network.LinkDriver.
func (f *Links) InspectPod(ctx context.Context, key network.PodKey, hostIfName, netnsPath string) (network.PodState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("InspectPod"); err != nil {
		return network.PodState{}, err
	}
	if !f.nsExists(netnsPath) {
		return network.PodState{}, fmt.Errorf("open %s: %w", netnsPath, ErrNetNSGone)
	}
	p, ok := f.pods[hostIfName]
	if !ok {
		return network.PodState{}, nil
	}
	return network.PodState{
		HostIfName: p.HostIfName, HostUp: true, HostMaster: p.Bridge, HostRoutes: slices.Clone(p.HostRoutes),
		IfName: p.IfName, PodUp: true, PodMAC: p.PodMAC, MTU: p.MTU,
		Addresses: slices.Clone(p.Addresses), Routes: slices.Clone(p.Routes), Neighbors: slices.Clone(p.Neighbors),
	}, nil
}

// Mutate lets a test change a stored pod (to simulate drift). fn receives
// the spec stored under hostIfName; it reports false if there is none.
func (f *Links) Mutate(hostIfName string, fn func(*network.PodSpec)) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pods[hostIfName]
	if !ok {
		return false
	}
	fn(&p)
	f.pods[hostIfName] = p
	return true
}

// SyncNodeRoutes implements network.RouteDriver.
func (f *Links) SyncNodeRoutes(ctx context.Context, want network.NodeRoutes) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("SyncNodeRoutes"); err != nil {
		return err
	}
	f.routes = want
	f.routes.Routes = slices.Clone(want.Routes)
	f.routes.FDB = slices.Clone(want.FDB)
	f.routes.Neighbors = slices.Clone(want.Neighbors)
	return nil
}

// SyncMasquerade implements network.Masquerader.
func (f *Links) SyncMasquerade(ctx context.Context, rules network.MasqueradeRules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("SyncMasquerade"); err != nil {
		return err
	}
	f.masq = rules
	f.masq.Sources = slices.Clone(rules.Sources)
	f.masq.Except = slices.Clone(rules.Except)
	return nil
}

// Dump renders everything the fake holds, sorted, one object per line.
func (f *Links) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	if n := f.node; n != nil {
		fmt.Fprintf(&b, "node mode=%s mtu=%d ipv4=%t ipv6=%t\n", n.Mode, n.MTU, n.IPv4, n.IPv6)
	}
	var brs []string
	for name := range f.bridges {
		brs = append(brs, name)
	}
	sort.Strings(brs)
	for _, name := range brs {
		fmt.Fprintf(&b, "bridge %s%s\n", name, joinPrefixes(f.bridges[name]))
	}
	var names []string
	for name := range f.pods {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := f.pods[name]
		fmt.Fprintf(&b, "pod %s host=%s hostmac=%s", p.PodKey, p.HostIfName, p.HostMAC)
		if p.Bridge != "" {
			fmt.Fprintf(&b, " bridge=%s", p.Bridge)
		}
		fmt.Fprintf(&b, " netns=%s mtu=%d mac=%s\n", p.NetNS, p.MTU, p.PodMAC)
		for _, r := range p.HostRoutes {
			fmt.Fprintf(&b, "  host route %s\n", r)
		}
		for _, n := range p.HostNeighbors {
			fmt.Fprintf(&b, "  host neigh %s\n", n)
		}
		for _, a := range p.Addresses {
			fmt.Fprintf(&b, "  addr %s\n", a)
		}
		for _, r := range p.Routes {
			fmt.Fprintf(&b, "  route %s\n", r)
		}
		for _, n := range p.Neighbors {
			fmt.Fprintf(&b, "  neigh %s\n", n)
		}
	}
	if v := f.routes.VXLAN; v != nil {
		fmt.Fprintf(&b, "vxlan %s vni=%d port=%d local=%s mac=%s mtu=%d%s\n", v.Name, v.VNI, v.Port, v.Local, v.MAC, v.MTU, joinPrefixes(v.Addresses))
	}
	for _, e := range f.routes.FDB {
		fmt.Fprintf(&b, "fdb %s dst %s\n", e.MAC, e.Dst)
	}
	for _, n := range f.routes.Neighbors {
		fmt.Fprintf(&b, "neigh %s\n", n)
	}
	for _, r := range f.routes.Routes {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	if len(f.masq.Sources) > 0 {
		fmt.Fprintf(&b, "masquerade from%s except%s random-fully=%t\n", joinPrefixes(f.masq.Sources), joinPrefixes(f.masq.Except), f.masq.RandomFully)
	}
	return b.String()
}

func joinPrefixes(ps []netip.Prefix) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(" " + p.String())
	}
	return b.String()
}
