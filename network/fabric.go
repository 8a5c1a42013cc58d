package network

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// FabricMode is how a node reaches the pods of other nodes.
type FabricMode int

const (
	// FabricHostGW routes each peer's pod CIDRs via the peer's node address
	// (nodes share one L2 segment), as flannel's host-gw backend does.
	FabricHostGW FabricMode = iota
	// FabricVXLAN carries pod traffic in VXLAN over any L3 underlay: one
	// VXLAN device per node, with static FDB and neighbour entries per peer.
	FabricVXLAN
)

func (m FabricMode) String() string {
	switch m {
	case FabricHostGW:
		return "host-gw"
	case FabricVXLAN:
		return "vxlan"
	}
	return fmt.Sprintf("FabricMode(%d)", int(m))
}

// MarshalText implements encoding.TextMarshaler.
func (m FabricMode) MarshalText() ([]byte, error) {
	if m != FabricHostGW && m != FabricVXLAN {
		return nil, fmt.Errorf("network: invalid fabric mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText accepts "host-gw" and "vxlan".
func (m *FabricMode) UnmarshalText(b []byte) error {
	switch string(b) {
	case "host-gw":
		*m = FabricHostGW
	case "vxlan":
		*m = FabricVXLAN
	default:
		return fmt.Errorf("network: fabric mode %q: want host-gw or vxlan", b)
	}
	return nil
}

// Node is one node of the cluster as the fabric sees it.
type Node struct {
	Name string
	// Addresses are the node's underlay addresses (its InternalIPs), at most
	// one per family. host-gw routes a pod CIDR via the peer address of the
	// same family; VXLAN tunnels to the first address of the underlay family.
	Addresses []netip.Addr
	// PodCIDRs are the node's pod ranges, at most one per family.
	PodCIDRs []netip.Prefix
	// VTEPMAC is the node's VXLAN device MAC; empty means derived from Name
	// (every node derives the same value, so nothing has to be exchanged).
	VTEPMAC net.HardwareAddr
}

// VXLANConfig tunes the overlay. The zero value means: device "kw-vxlan",
// VNI 1, UDP port 8472 (the Linux and flannel default), MTU derived from
// UnderlayMTU.
type VXLANConfig struct {
	Device string
	VNI    uint32
	Port   uint16
	// UnderlayMTU is the MTU of the node's underlay link (default 1500). The
	// overlay MTU is 50 bytes less for an IPv4 underlay, 70 for IPv6.
	UnderlayMTU int
}

// MTU returns the overlay MTU for an underlay of the given family.
func (c VXLANConfig) MTU(underlay netip.Addr) int {
	m := c.UnderlayMTU
	if m == 0 {
		m = 1500
	}
	if underlay.Is6() && !underlay.Is4In6() {
		return m - 70
	}
	return m - 50
}

func (c VXLANConfig) withDefaults() VXLANConfig {
	if c.Device == "" {
		c.Device = "kw-vxlan"
	}
	if c.VNI == 0 {
		c.VNI = 1
	}
	if c.Port == 0 {
		c.Port = 8472
	}
	return c
}

// Topology is the whole desired cross-node state of one node.
type Topology struct {
	Mode  FabricMode
	Local Node
	Peers []Node
	VXLAN VXLANConfig
}

// VXLANDevice is the overlay device of a node.
type VXLANDevice struct {
	Name  string
	VNI   uint32
	Port  uint16
	Local netip.Addr
	MAC   net.HardwareAddr
	MTU   int
	// Addresses are the VTEP addresses (the network address of each local
	// pod CIDR, as a host prefix), the next hops peers route to.
	Addresses []netip.Prefix
}

// FDBEntry sends frames for MAC to the tunnel endpoint Dst.
type FDBEntry struct {
	MAC net.HardwareAddr
	Dst netip.Addr
}

// NodeRoutes is the kernel-level plan for a Topology: what a RouteDriver
// installs. Routes carry the driver's ownership mark, so routes the plan no
// longer holds are removed on the next sync.
type NodeRoutes struct {
	Routes    []Route
	VXLAN     *VXLANDevice
	FDB       []FDBEntry
	Neighbors []Neighbor
}

// RouteDriver makes the node's cross-node routes match a plan.
type RouteDriver interface {
	// SyncNodeRoutes makes the kernel hold exactly the routes, VXLAN device,
	// FDB and neighbour entries of want among the objects the driver owns.
	// Idempotent; an empty plan removes everything the driver made.
	SyncNodeRoutes(ctx context.Context, want NodeRoutes) error
}

// MasqueradeRules says which traffic leaving pods is source-NATed to the node.
type MasqueradeRules struct {
	// Sources are the pod ranges whose traffic may be masqueraded (usually
	// the node's pod CIDRs or the cluster CIDRs).
	Sources []netip.Prefix
	// Except are destinations reached without NAT (the cluster CIDRs: pod to
	// pod traffic is never masqueraded; add the service CIDR or other
	// non-masquerade ranges here).
	Except []netip.Prefix
	// RandomFully picks source ports at random (avoids SNAT port races).
	RandomFully bool
}

// Masquerader programs egress masquerade. Implemented by driver/nftables.
type Masquerader interface {
	// SyncMasquerade makes the kernel masquerade exactly as rules say; empty
	// Sources removes the masquerade.
	SyncMasquerade(ctx context.Context, rules MasqueradeRules) error
}

// ErrInvalidTopology is wrapped by every validation error of a Topology.
var ErrInvalidTopology = errors.New("network: invalid topology")

func topologyError(field string, value any, reason string) error {
	return fmt.Errorf("%w: %s %v: %s", ErrInvalidTopology, field, value, reason)
}

// Plan turns a Topology into the kernel objects that realise it. It is pure:
// same input, same plan.
func (t Topology) Plan() (NodeRoutes, error) {
	if err := t.validate(); err != nil {
		return NodeRoutes{}, err
	}
	var plan NodeRoutes
	switch t.Mode {
	case FabricHostGW:
		for _, p := range t.Peers {
			for _, c := range p.PodCIDRs {
				via, ok := p.address(c.Addr().Is4())
				if !ok {
					return NodeRoutes{}, topologyError("Peers["+p.Name+"].Addresses", p.Addresses,
						"host-gw needs an underlay address of the family of pod CIDR "+c.String())
				}
				plan.Routes = append(plan.Routes, Route{Dst: c, Via: via})
			}
		}
	case FabricVXLAN:
		cfg := t.VXLAN.withDefaults()
		local := t.Local.Addresses[0]
		dev := &VXLANDevice{
			Name:  cfg.Device,
			VNI:   cfg.VNI,
			Port:  cfg.Port,
			Local: local,
			MAC:   VTEPMAC(t.Local),
			MTU:   cfg.MTU(local),
		}
		for _, c := range t.Local.PodCIDRs {
			dev.Addresses = append(dev.Addresses, netip.PrefixFrom(c.Addr(), c.Addr().BitLen()))
		}
		plan.VXLAN = dev
		for _, p := range t.Peers {
			mac := VTEPMAC(p)
			dst, ok := p.address(local.Is4())
			if !ok {
				return NodeRoutes{}, topologyError("Peers["+p.Name+"].Addresses", p.Addresses,
					"no address of the underlay family of "+local.String())
			}
			plan.FDB = append(plan.FDB, FDBEntry{MAC: mac, Dst: dst})
			for _, c := range p.PodCIDRs {
				vtep := c.Addr() // the peer's VTEP address: its CIDR's network address
				plan.Neighbors = append(plan.Neighbors, Neighbor{IP: vtep, MAC: mac, Dev: dev.Name})
				plan.Routes = append(plan.Routes, Route{Dst: c, Via: vtep, Dev: dev.Name, OnLink: true})
			}
		}
	}
	slices.SortFunc(plan.Routes, func(a, b Route) int { return strings.Compare(a.String(), b.String()) })
	return plan, nil
}

func (t Topology) validate() error {
	if t.Mode != FabricHostGW && t.Mode != FabricVXLAN {
		return topologyError("Mode", int(t.Mode), "unknown fabric mode")
	}
	if t.Mode == FabricVXLAN && len(t.Local.Addresses) == 0 {
		return topologyError("Local.Addresses", "[]", "VXLAN needs the local underlay address")
	}
	if d := t.VXLAN.Device; d != "" && (len(d) > 15 || strings.ContainsAny(d, "/ \t.")) {
		return topologyError("VXLAN.Device", d, "not a valid interface name")
	}
	if t.VXLAN.VNI >= 1<<24 {
		return topologyError("VXLAN.VNI", t.VXLAN.VNI, "must be below 2^24")
	}
	nodes := append([]Node{t.Local}, t.Peers...)
	names := map[string]bool{}
	var cidrs []netip.Prefix
	for i, n := range nodes {
		field := "Local"
		if i > 0 {
			field = fmt.Sprintf("Peers[%d]", i-1)
		}
		if n.Name == "" {
			return topologyError(field+".Name", `""`, "node name is required")
		}
		if names[n.Name] {
			return topologyError(field+".Name", n.Name, "duplicate node")
		}
		names[n.Name] = true
		if i > 0 && len(n.Addresses) == 0 {
			return topologyError(field+".Addresses", "[]", "peer needs an underlay address")
		}
		afams := map[bool]bool{}
		for j, a := range n.Addresses {
			f := fmt.Sprintf("%s.Addresses[%d]", field, j)
			if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
				return topologyError(f, a, "not a valid unicast address")
			}
			if afams[a.Is4()] {
				return topologyError(f, a, "at most one address per family")
			}
			afams[a.Is4()] = true
		}
		if n.VTEPMAC != nil && len(n.VTEPMAC) != 6 {
			return topologyError(field+".VTEPMAC", n.VTEPMAC, "want a 6-byte MAC")
		}
		fams := map[bool]bool{}
		for j, c := range n.PodCIDRs {
			f := fmt.Sprintf("%s.PodCIDRs[%d]", field, j)
			if !c.IsValid() || c != c.Masked() {
				return topologyError(f, c, "not a masked prefix")
			}
			if fams[c.Addr().Is4()] {
				return topologyError(f, c, "at most one pod CIDR per family")
			}
			fams[c.Addr().Is4()] = true
			for _, o := range cidrs {
				if o.Overlaps(c) {
					return topologyError(f, c, "overlaps "+o.String())
				}
			}
			cidrs = append(cidrs, c)
		}
	}
	return nil
}

func (n Node) address(v4 bool) (netip.Addr, bool) {
	for _, a := range n.Addresses {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// VTEPMAC returns n.VTEPMAC, or the MAC derived from n.Name when unset.
func VTEPMAC(n Node) net.HardwareAddr {
	if len(n.VTEPMAC) == 6 {
		return n.VTEPMAC
	}
	sum := sha256.Sum256([]byte("kubewire-vtep\x00" + n.Name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// FabricConfig configures a Fabric.
type FabricConfig struct {
	// Routes installs the plan (required).
	Routes RouteDriver
	// Masquerade, when set, receives the egress masquerade rules.
	Masquerade Masquerader
	// ClusterCIDRs are the ranges pod traffic stays unmasqueraded within.
	ClusterCIDRs []netip.Prefix
	// NoMasquerade turns egress masquerade off.
	NoMasquerade bool
	Logger       *slog.Logger
}

// Fabric keeps a node's cross-node routes and egress masquerade in line
// with the cluster topology. Sync may be called from any goroutine.
type Fabric struct {
	cfg FabricConfig
}

// NewFabric checks cfg and returns a Fabric. It starts nothing.
func NewFabric(cfg FabricConfig) (*Fabric, error) {
	if cfg.Routes == nil {
		return nil, errors.New("network: FabricConfig.Routes is required")
	}
	for i, c := range cfg.ClusterCIDRs {
		if !c.IsValid() || c != c.Masked() {
			return nil, fmt.Errorf("network: FabricConfig.ClusterCIDRs[%d] %s: not a masked prefix", i, c)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fabric{cfg: cfg}, nil
}

// Sync makes routes (and masquerade) match t. Errors of both parts are
// joined; the next Sync retries everything.
func (f *Fabric) Sync(ctx context.Context, t Topology) error {
	plan, err := t.Plan()
	if err != nil {
		return err
	}
	var errs []error
	if err := f.cfg.Routes.SyncNodeRoutes(ctx, plan); err != nil {
		errs = append(errs, fmt.Errorf("sync node routes: %w", err))
	}
	if f.cfg.Masquerade != nil {
		rules := MasqueradeRules{}
		if !f.cfg.NoMasquerade {
			rules.Sources = slices.Clone(t.Local.PodCIDRs)
			rules.Except = slices.Clone(f.cfg.ClusterCIDRs)
			if len(rules.Except) == 0 {
				// Without cluster CIDRs, at least keep traffic to every known
				// pod range unmasqueraded.
				for _, n := range append([]Node{t.Local}, t.Peers...) {
					rules.Except = append(rules.Except, n.PodCIDRs...)
				}
			}
		}
		if err := f.cfg.Masquerade.SyncMasquerade(ctx, rules); err != nil {
			errs = append(errs, fmt.Errorf("sync masquerade: %w", err))
		}
	}
	f.cfg.Logger.DebugContext(ctx, "fabric synced", "mode", t.Mode, "peers", len(t.Peers), "routes", len(plan.Routes))
	return errors.Join(errs...)
}
