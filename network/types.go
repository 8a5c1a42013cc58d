package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Mode is how pods attach to their node.
type Mode int

const (
	// ModeRouted gives each pod a point-to-point veth: the pod holds /32 and
	// /128 addresses, its default route goes to a link-local gateway answered
	// by static neighbour entries, and the node routes each pod address to its
	// veth (as CNI's ptp plugin and Calico do). No bridge, no ARP.
	ModeRouted Mode = iota
	// ModeBridge plugs every pod's veth into a node bridge that holds the
	// gateway address of the node's pod subnet (as CNI's bridge plugin does).
	ModeBridge
)

func (m Mode) String() string {
	switch m {
	case ModeRouted:
		return "routed"
	case ModeBridge:
		return "bridge"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) {
	if m != ModeRouted && m != ModeBridge {
		return nil, fmt.Errorf("network: invalid mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText accepts "routed" (also "ptp") and "bridge".
func (m *Mode) UnmarshalText(b []byte) error {
	switch string(b) {
	case "routed", "ptp":
		*m = ModeRouted
	case "bridge":
		*m = ModeBridge
	default:
		return fmt.Errorf("network: mode %q: want routed or bridge", b)
	}
	return nil
}

// The gateways pods use in routed mode. They are never assigned to any
// interface: static neighbour entries in the pod resolve them to the host
// veth's MAC address.
var (
	RoutedGatewayIPv4 = netip.MustParseAddr("169.254.1.1")
	RoutedGatewayIPv6 = netip.MustParseAddr("fe80::1")
)

// DefaultLinkPrefix starts host-side interface names when Config.LinkPrefix
// is empty.
const DefaultLinkPrefix = "kw"

// HostVethMAC is the MAC address of every host-side veth in routed mode.
// Each veth is its own L2 segment, so they can share it (as Calico does);
// pods' static gateway neighbour entries point at it.
var HostVethMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}

// Route is one route, inside a pod or on the node.
type Route struct {
	Dst netip.Prefix
	// Via is the next hop; invalid for a directly connected (scope link) route.
	Via netip.Addr
	// Dev is the output interface.
	Dev string
	// OnLink marks Via as reachable on Dev without a covering prefix.
	OnLink bool
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Via.IsValid() {
		b.WriteString(" via " + r.Via.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev " + r.Dev)
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	return b.String()
}

// Neighbor is a permanent neighbour (ARP/NDP) entry.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
	Dev string
}

func (n Neighbor) String() string {
	return n.IP.String() + " lladdr " + n.MAC.String() + " dev " + n.Dev
}

// PodKey names one attachment: a container (sandbox) and an interface in it.
type PodKey struct {
	ContainerID string
	IfName      string
}

func (k PodKey) String() string { return k.ContainerID + "/" + k.IfName }

// HostIfName returns the name of the node-side veth of the attachment: a
// fixed prefix and a hash of the key, so it fits IFNAMSIZ and is the same on
// every call (which makes Attach and Detach idempotent without any state).
func (k PodKey) HostIfName(prefix string) string {
	sum := sha256.Sum256([]byte(k.ContainerID + "\x00" + k.IfName))
	n := 15 - len(prefix)
	return prefix + hex.EncodeToString(sum[:])[:n]
}

// StableMAC derives a stable, locally administered unicast MAC from the key
// and a salt, so a re-created attachment keeps its MACs (peers' neighbour
// caches stay right).
func (k PodKey) StableMAC(salt string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(salt + "\x00" + k.ContainerID + "\x00" + k.IfName))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// PodSpec is everything a LinkDriver needs to build one attachment. The
// Manager computes it; the driver only makes the kernel match it.
type PodSpec struct {
	PodKey
	// NetNS is the path of the pod's network namespace.
	NetNS string
	Mode  Mode
	MTU   int

	// HostIfName and HostMAC name the node-side veth; Bridge, when set, is
	// the bridge it joins (bridge mode).
	HostIfName string
	HostMAC    net.HardwareAddr
	Bridge     string
	// HostRoutes and HostNeighbors are installed in the node namespace on
	// the host-side veth (routed mode).
	HostRoutes    []Route
	HostNeighbors []Neighbor

	// PodMAC, Addresses, Routes and Neighbors configure the pod's interface
	// (named IfName inside NetNS).
	PodMAC    net.HardwareAddr
	Addresses []netip.Prefix
	Routes    []Route
	Neighbors []Neighbor
}

// PodLink is an attachment found on the node (for listing and garbage
// collection).
type PodLink struct {
	PodKey
	HostIfName string
	HostMAC    net.HardwareAddr
	// PodIfIndex is the index of the pod-side interface inside its namespace.
	PodIfIndex int
}

// PodState is what a driver observed of one attachment (for Check).
type PodState struct {
	// HostIfName is the host-side veth, "" when missing.
	HostIfName string
	HostUp     bool
	HostMaster string
	HostRoutes []Route
	// IfName is the pod-side interface, "" when missing.
	IfName    string
	PodUp     bool
	PodMAC    net.HardwareAddr
	MTU       int
	Addresses []netip.Prefix
	Routes    []Route
	Neighbors []Neighbor
}

// NodeSpec is the node-wide part of pod networking, made once per node.
type NodeSpec struct {
	Mode Mode
	// Bridge and BridgeAddrs (gateway addresses with the subnet mask) apply to
	// bridge mode.
	Bridge      string
	BridgeAddrs []netip.Prefix
	MTU         int
	// IPv4 and IPv6 enable forwarding for that family in the node namespace.
	IPv4, IPv6 bool
}

// LinkDriver builds pod attachments in the kernel. Every method is
// idempotent. Implementations: driver/netlink (the kernel), driver/fake.
type LinkDriver interface {
	// SetupNode makes the node-wide objects of spec exist (forwarding for its
	// families, the bridge and its addresses). It only adds.
	SetupNode(ctx context.Context, spec NodeSpec) error
	// SetupPod makes the attachment match spec, creating or repairing it.
	// On error, nothing of a newly created attachment is left behind.
	SetupPod(ctx context.Context, spec PodSpec) (PodLink, error)
	// TeardownPod removes the attachment's host and pod interfaces (and with
	// them its routes and neighbours). netnsPath may name a namespace that no
	// longer exists; removing an absent attachment is not an error.
	TeardownPod(ctx context.Context, key PodKey, hostIfName, netnsPath string) error
	// Pods lists the attachments present on the node.
	Pods(ctx context.Context) ([]PodLink, error)
	// InspectPod reports the observed state of an attachment.
	InspectPod(ctx context.Context, key PodKey, hostIfName, netnsPath string) (PodState, error)
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// Reaper is implemented by link drivers that can defer the slow part of
// TeardownPod (driver/netlink with DeferDelete): torn-down attachments are
// retired at once and deleted later, together, by Reap. Manager.GC calls it.
type Reaper interface {
	// Reap deletes every retired attachment. Idempotent.
	Reap(ctx context.Context) error
}
