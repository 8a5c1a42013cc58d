package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/kubewire/kubewire/ipam"
)

// IPAM is what the Manager needs from an address allocator;
// *ipam.PodAllocator implements it.
type IPAM interface {
	Allocate(ctx context.Context, owner string, requested ...netip.Addr) ([]ipam.Allocation, error)
	Release(ctx context.Context, owner string) error
	Lookup(ctx context.Context, owner string) ([]ipam.Allocation, error)
	GC(ctx context.Context, keep func(owner string) bool) ([]string, error)
}

var _ IPAM = (*ipam.PodAllocator)(nil)

// Config configures a Manager.
type Config struct {
	// Links builds attachments in the kernel (required).
	Links LinkDriver
	// IPAM hands out pod addresses (required).
	IPAM IPAM
	// Mode is how pods attach (default ModeRouted).
	Mode Mode
	// MTU of pod interfaces; 0 means 1500.
	MTU int
	// Bridge is the node bridge in bridge mode (default "kw-br0").
	Bridge string
	// LinkPrefix starts every host-side veth name (default "kw"); at most 5
	// bytes so a hash fits beside it.
	LinkPrefix string
	// Logger receives debug events; nil discards.
	Logger *slog.Logger
}

// Manager attaches pods to the node: it allocates their addresses, builds
// their interfaces through a LinkDriver and undoes both on failure. Its
// methods are safe for concurrent use; calls for one PodKey are serialised.
type Manager struct {
	cfg Config
	log *slog.Logger

	locks keyedMutex

	nodeMu    sync.Mutex
	nodeReady map[string]bool // NodeSpecs applied, rendered
}

// ErrInvalidAttachment is wrapped by every validation error of Attach input.
var ErrInvalidAttachment = errors.New("network: invalid attachment")

// NewManager checks cfg and returns a Manager. It starts nothing and touches
// no kernel state.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Links == nil {
		return nil, errors.New("network: Config.Links is required")
	}
	if cfg.IPAM == nil {
		return nil, errors.New("network: Config.IPAM is required")
	}
	if cfg.Mode != ModeRouted && cfg.Mode != ModeBridge {
		return nil, fmt.Errorf("network: Config.Mode %d: unknown mode", int(cfg.Mode))
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("network: Config.MTU %d: must be between 576 and 65535", cfg.MTU)
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "kw-br0"
	}
	if err := checkIfName(cfg.Bridge); err != nil {
		return nil, fmt.Errorf("network: Config.Bridge %q: %w", cfg.Bridge, err)
	}
	if cfg.LinkPrefix == "" {
		cfg.LinkPrefix = DefaultLinkPrefix
	}
	if len(cfg.LinkPrefix) > 5 || checkIfName(cfg.LinkPrefix) != nil {
		return nil, fmt.Errorf("network: Config.LinkPrefix %q: want 1-5 characters valid in an interface name", cfg.LinkPrefix)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: log}, nil
}

// Attachment asks for one pod interface.
type Attachment struct {
	ContainerID string
	// NetNS is the path of the pod's network namespace (required for Attach
	// and Check; Detach works without it or when it is gone).
	NetNS string
	// IfName is the interface name inside the pod (default "eth0").
	IfName string
	// RequestedIPs asks for specific addresses (at most one per family).
	RequestedIPs []netip.Addr
}

// Key returns the attachment's identity.
func (a Attachment) Key() PodKey {
	ifn := a.IfName
	if ifn == "" {
		ifn = "eth0"
	}
	return PodKey{ContainerID: a.ContainerID, IfName: ifn}
}

// Owner returns the IPAM owner ID of a key.
func (k PodKey) Owner() string { return ipam.PodOwner(k.ContainerID, k.IfName) }

// IPConfig is one address of an attached pod.
type IPConfig struct {
	// Address is the pod address with the prefix length configured in the
	// pod (/32 or /128 in routed mode, the subnet's in bridge mode).
	Address netip.Prefix
	Gateway netip.Addr
}

// Result describes a completed attachment.
type Result struct {
	Key        PodKey
	HostIfName string
	HostMAC    net.HardwareAddr
	PodMAC     net.HardwareAddr
	NetNS      string
	MTU        int
	IPs        []IPConfig
	// Routes are the routes inside the pod.
	Routes []Route
}

func (m *Manager) validate(a Attachment, needNetNS bool) error {
	if a.ContainerID == "" {
		return fmt.Errorf("%w: ContainerID is empty", ErrInvalidAttachment)
	}
	if len(a.ContainerID) > 256 || strings.ContainsAny(a.ContainerID, "\x00/\n") {
		return fmt.Errorf("%w: ContainerID %q: invalid", ErrInvalidAttachment, a.ContainerID)
	}
	if err := checkIfName(a.Key().IfName); err != nil {
		return fmt.Errorf("%w: IfName %q: %v", ErrInvalidAttachment, a.IfName, err)
	}
	if needNetNS && a.NetNS == "" {
		return fmt.Errorf("%w: NetNS is empty", ErrInvalidAttachment)
	}
	seen := map[bool]bool{}
	for i, ip := range a.RequestedIPs {
		if !ip.IsValid() {
			return fmt.Errorf("%w: RequestedIPs[%d]: invalid address", ErrInvalidAttachment, i)
		}
		if seen[ip.Is4()] {
			return fmt.Errorf("%w: RequestedIPs[%d] %s: at most one address per family", ErrInvalidAttachment, i, ip)
		}
		seen[ip.Is4()] = true
	}
	return nil
}

func checkIfName(n string) error {
	if n == "" || len(n) > 15 || n == "." || n == ".." || strings.ContainsAny(n, "/ \t\n\x00:") {
		return errors.New("not a valid interface name (1-15 bytes, no '/', ':' or spaces)")
	}
	return nil
}

// Attach allocates addresses for the attachment and builds its interface.
// Calling it again for the same key returns the same addresses and repairs
// the interface. If anything fails, what this call created is removed and
// the addresses it allocated are released.
func (m *Manager) Attach(ctx context.Context, a Attachment) (*Result, error) {
	if err := m.validate(a, true); err != nil {
		return nil, err
	}
	key := a.Key()
	unlock := m.locks.lock(key.String())
	defer unlock()

	owner := key.Owner()
	_, lookErr := m.cfg.IPAM.Lookup(ctx, owner)
	preexisting := lookErr == nil
	allocs, err := m.cfg.IPAM.Allocate(ctx, owner, a.RequestedIPs...)
	if err != nil {
		return nil, fmt.Errorf("allocate addresses for %s: %w", key, err)
	}
	spec, res, err := m.plan(key, a.NetNS, allocs)
	if err == nil {
		err = m.setupNode(ctx, spec, allocs)
	}
	if err == nil {
		var link PodLink
		link, err = m.cfg.Links.SetupPod(ctx, spec)
		res.HostMAC = link.HostMAC
	}
	if err != nil {
		// The node may have changed under us (bridge deleted): set it up
		// again on the next Attach.
		m.nodeMu.Lock()
		m.nodeReady = nil
		m.nodeMu.Unlock()
		if !preexisting {
			rerr := m.cfg.Links.TeardownPod(ctx, key, spec.HostIfName, a.NetNS)
			if rerr == nil {
				rerr = m.cfg.IPAM.Release(ctx, owner)
			}
			if rerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
		}
		return nil, fmt.Errorf("attach %s: %w", key, err)
	}
	m.log.DebugContext(ctx, "pod attached", "key", key, "ips", res.IPs)
	return res, nil
}

// plan computes the PodSpec for allocations.
func (m *Manager) plan(key PodKey, netnsPath string, allocs []ipam.Allocation) (PodSpec, *Result, error) {
	spec := PodSpec{
		PodKey:     key,
		NetNS:      netnsPath,
		Mode:       m.cfg.Mode,
		MTU:        m.cfg.MTU,
		HostIfName: key.HostIfName(m.cfg.LinkPrefix),
		PodMAC:     key.StableMAC("pod"),
	}
	res := &Result{Key: key, HostIfName: spec.HostIfName, PodMAC: spec.PodMAC, NetNS: netnsPath, MTU: spec.MTU}
	switch m.cfg.Mode {
	case ModeRouted:
		spec.HostMAC = HostVethMAC
		for _, al := range allocs {
			addr := al.Address.Addr()
			host := netip.PrefixFrom(addr, addr.BitLen())
			gw := RoutedGatewayIPv4
			if addr.Is6() {
				gw = RoutedGatewayIPv6
			}
			spec.Addresses = append(spec.Addresses, host)
			spec.HostRoutes = append(spec.HostRoutes, Route{Dst: host, Dev: spec.HostIfName})
			spec.HostNeighbors = append(spec.HostNeighbors, Neighbor{IP: addr, MAC: spec.PodMAC, Dev: spec.HostIfName})
			spec.Neighbors = append(spec.Neighbors, Neighbor{IP: gw, MAC: spec.HostMAC, Dev: key.IfName})
			if addr.Is4() {
				spec.Routes = append(spec.Routes, Route{Dst: netip.PrefixFrom(gw, 32), Dev: key.IfName})
			}
			def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if addr.Is6() {
				def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			spec.Routes = append(spec.Routes, Route{Dst: def, Via: gw, Dev: key.IfName})
			res.IPs = append(res.IPs, IPConfig{Address: host, Gateway: gw})
		}
	case ModeBridge:
		spec.Bridge = m.cfg.Bridge
		spec.HostMAC = key.StableMAC("host")
		for i, al := range allocs {
			gw := al.Gateway
			if !gw.IsValid() {
				return spec, nil, fmt.Errorf("bridge mode needs a gateway: IPAM range of %s has none (allocation %d)", al.Address, i)
			}
			if !al.Address.Contains(gw) {
				return spec, nil, fmt.Errorf("gateway %s is outside %s", gw, al.Address.Masked())
			}
			spec.Addresses = append(spec.Addresses, al.Address)
			def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if gw.Is6() {
				def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			spec.Routes = append(spec.Routes, Route{Dst: def, Via: gw, Dev: key.IfName})
			res.IPs = append(res.IPs, IPConfig{Address: al.Address, Gateway: gw})
		}
	}
	res.Routes = spec.Routes
	return spec, res, nil
}

// setupNode applies the node-wide spec once per distinct spec.
func (m *Manager) setupNode(ctx context.Context, pod PodSpec, allocs []ipam.Allocation) error {
	ns := NodeSpec{Mode: m.cfg.Mode, MTU: m.cfg.MTU}
	for _, al := range allocs {
		if al.Address.Addr().Is4() {
			ns.IPv4 = true
		} else {
			ns.IPv6 = true
		}
		if m.cfg.Mode == ModeBridge {
			ns.Bridge = m.cfg.Bridge
			ns.BridgeAddrs = append(ns.BridgeAddrs, netip.PrefixFrom(al.Gateway, al.Address.Bits()))
		}
	}
	ns.BridgeAddrs = sortedPrefixes(ns.BridgeAddrs)
	m.nodeMu.Lock()
	defer m.nodeMu.Unlock()
	id := fmt.Sprintf("%+v", ns)
	if m.nodeReady[id] {
		return nil
	}
	// SetupNode is additive (it adds families and bridge addresses and never
	// removes them), so each distinct spec is applied once.
	if err := m.cfg.Links.SetupNode(ctx, ns); err != nil {
		return fmt.Errorf("set up node: %w", err)
	}
	if m.nodeReady == nil {
		m.nodeReady = map[string]bool{}
	}
	m.nodeReady[id] = true
	return nil
}

// Detach removes the attachment's interfaces and releases its addresses.
// It succeeds when the attachment or its namespace is already gone, so it can
// be repeated. Addresses are released only once the interfaces are gone, so a
// failed Detach never frees an address still configured in a pod.
func (m *Manager) Detach(ctx context.Context, a Attachment) error {
	if err := m.validate(a, false); err != nil {
		return err
	}
	key := a.Key()
	unlock := m.locks.lock(key.String())
	defer unlock()
	if err := m.cfg.Links.TeardownPod(ctx, key, key.HostIfName(m.cfg.LinkPrefix), a.NetNS); err != nil {
		return fmt.Errorf("detach %s: %w", key, err)
	}
	if err := m.cfg.IPAM.Release(ctx, key.Owner()); err != nil {
		return fmt.Errorf("detach %s: release addresses: %w", key, err)
	}
	m.log.DebugContext(ctx, "pod detached", "key", key)
	return nil
}

// ErrDrift is wrapped by Check when an attachment differs from what Attach
// made.
var ErrDrift = errors.New("network: attachment drifted")

// DriftError lists every difference Check found.
type DriftError struct {
	Key      PodKey
	Problems []string
}

func (e *DriftError) Error() string {
	return fmt.Sprintf("network: attachment %s drifted: %s", e.Key, strings.Join(e.Problems, "; "))
}

// Is reports whether target is ErrDrift.
func (e *DriftError) Is(target error) bool { return target == ErrDrift }

// Check verifies that a live attachment still matches what Attach built:
// addresses held in IPAM and configured in the pod, routes, neighbours, MTU,
// MAC and the host side. It returns a *DriftError listing every difference.
func (m *Manager) Check(ctx context.Context, a Attachment) error {
	if err := m.validate(a, true); err != nil {
		return err
	}
	key := a.Key()
	allocs, err := m.cfg.IPAM.Lookup(ctx, key.Owner())
	if errors.Is(err, ipam.ErrNotFound) {
		return &DriftError{Key: key, Problems: []string{"no addresses allocated"}}
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", key, err)
	}
	spec, _, err := m.plan(key, a.NetNS, allocs)
	if err != nil {
		return fmt.Errorf("check %s: %w", key, err)
	}
	st, err := m.cfg.Links.InspectPod(ctx, key, spec.HostIfName, a.NetNS)
	if err != nil {
		return fmt.Errorf("check %s: %w", key, err)
	}
	if p := Diff(spec, st); len(p) > 0 {
		return &DriftError{Key: key, Problems: p}
	}
	return nil
}

// Diff lists how an observed state differs from a spec (empty when it
// matches). Extra routes or addresses in the pod that the spec does not name
// are not drift: chained plugins may add them.
func Diff(spec PodSpec, st PodState) []string {
	var p []string
	if st.HostIfName == "" {
		p = append(p, "host interface "+spec.HostIfName+" missing")
	} else {
		if !st.HostUp {
			p = append(p, "host interface "+spec.HostIfName+" down")
		}
		if spec.Bridge != "" && st.HostMaster != spec.Bridge {
			p = append(p, fmt.Sprintf("host interface not on bridge %s (master %q)", spec.Bridge, st.HostMaster))
		}
		for _, r := range spec.HostRoutes {
			if !slices.ContainsFunc(st.HostRoutes, func(o Route) bool { return sameRoute(o, r) }) {
				p = append(p, "host route "+r.String()+" missing")
			}
		}
	}
	if st.IfName == "" {
		return append(p, "pod interface "+spec.IfName+" missing")
	}
	if !st.PodUp {
		p = append(p, "pod interface "+spec.IfName+" down")
	}
	if spec.MTU != 0 && st.MTU != spec.MTU {
		p = append(p, fmt.Sprintf("pod MTU %d, want %d", st.MTU, spec.MTU))
	}
	if spec.PodMAC != nil && st.PodMAC.String() != spec.PodMAC.String() {
		p = append(p, fmt.Sprintf("pod MAC %s, want %s", st.PodMAC, spec.PodMAC))
	}
	for _, a := range spec.Addresses {
		if !slices.Contains(st.Addresses, a) {
			p = append(p, "pod address "+a.String()+" missing")
		}
	}
	for _, r := range spec.Routes {
		if !slices.ContainsFunc(st.Routes, func(o Route) bool { return sameRoute(o, r) }) {
			p = append(p, "pod route "+r.String()+" missing")
		}
	}
	for _, n := range spec.Neighbors {
		if !slices.ContainsFunc(st.Neighbors, func(o Neighbor) bool {
			return o.IP == n.IP && o.MAC.String() == n.MAC.String()
		}) {
			p = append(p, "pod neighbour "+n.String()+" missing")
		}
	}
	return p
}

func sameRoute(a, b Route) bool {
	return a.Dst == b.Dst && a.Via == b.Via && (a.Dev == "" || b.Dev == "" || a.Dev == b.Dev)
}

// List returns the attachments present on the node.
func (m *Manager) List(ctx context.Context) ([]PodLink, error) {
	return m.cfg.Links.Pods(ctx)
}

// GC removes every attachment and address allocation whose key keep does not
// report as live, as CNI GC does with cni.dev/valid-attachments. It returns
// the keys it removed interfaces for; failures are joined.
func (m *Manager) GC(ctx context.Context, keep func(PodKey) bool) ([]PodKey, error) {
	links, err := m.cfg.Links.Pods(ctx)
	if err != nil {
		return nil, fmt.Errorf("gc: list attachments: %w", err)
	}
	var removed []PodKey
	var errs []error
	for _, l := range links {
		if keep(l.PodKey) {
			continue
		}
		unlock := m.locks.lock(l.PodKey.String())
		err := m.cfg.Links.TeardownPod(ctx, l.PodKey, l.HostIfName, "")
		unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("gc %s: %w", l.PodKey, err))
			continue
		}
		removed = append(removed, l.PodKey)
	}
	live := map[string]bool{}
	for _, l := range links {
		if keep(l.PodKey) {
			live[l.Owner()] = true
		}
	}
	// Links a driver only retired (see Reaper) are deleted now.
	if r, ok := m.cfg.Links.(Reaper); ok {
		if err := r.Reap(ctx); err != nil {
			errs = append(errs, fmt.Errorf("gc: reap retired links: %w", err))
		}
	}
	// An allocation is kept when its owner is live; owners are compared in
	// their canonical form, so parse them back to keys.
	if _, err := m.cfg.IPAM.GC(ctx, func(owner string) bool {
		if live[owner] {
			return true
		}
		k, ok := ParseOwner(owner)
		return ok && keep(k)
	}); err != nil {
		errs = append(errs, fmt.Errorf("gc addresses: %w", err))
	}
	return removed, errors.Join(errs...)
}

// ParseOwner inverts PodKey.Owner (ipam.PodOwner joins with "/", which
// neither part may contain).
func ParseOwner(owner string) (PodKey, bool) {
	i := strings.LastIndexByte(owner, '/')
	if i <= 0 || i == len(owner)-1 {
		return PodKey{}, false
	}
	return PodKey{ContainerID: owner[:i], IfName: owner[i+1:]}, true
}

// keyedMutex serialises work per key.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
