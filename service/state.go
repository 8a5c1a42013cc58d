package service

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// State is the whole desired service dataplane of one node: what a
// Dataplane renders. Semantics (which endpoints, which policy, reject or
// drop) are decided here, once for every driver.
type State struct {
	// Ports holds one entry per service port, sorted by Name.
	Ports []PortState
	// NodeAddresses are the node's primary addresses (NodeInfo.Addresses),
	// where node ports answer unless the dataplane has its own list.
	NodeAddresses []netip.Addr
}

// PortState is one service port as the dataplane must serve it.
type PortState struct {
	Name     PortName
	Protocol Protocol
	// ClusterIPs and Port: the virtual address(es) and port.
	ClusterIPs []netip.Addr
	Port       uint16
	// NodePort is served on the node's node-port addresses (0: none).
	NodePort uint16
	// ExternalIPs and LoadBalancerIPs (VIP mode only) take external traffic
	// on Port.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// SourceRanges, when set, restrict load balancer traffic to these
	// sources (loadBalancerSourceRanges).
	SourceRanges []netip.Prefix
	// AffinityTimeout > 0 pins a client IP to its endpoint for that long.
	AffinityTimeout time.Duration

	// InternalEndpoints serve cluster-internal traffic (to ClusterIPs):
	// the cluster set, or this node's set when InternalLocal.
	InternalEndpoints []Target
	InternalLocal     bool
	// ExternalEndpoints serve external traffic (node port, external and
	// load balancer IPs): the cluster set, or this node's set when
	// ExternalLocal. With ExternalLocal, traffic from this node and its
	// pods uses ClusterEndpoints instead (short-circuit), and the client
	// source address is preserved.
	ExternalEndpoints []Target
	ExternalLocal     bool
	// ClusterEndpoints is the cluster-wide set (for the short-circuit).
	ClusterEndpoints []Target
	// HasEndpoints is false when no usable endpoint exists anywhere: then
	// traffic is refused at once (ICMP port unreachable / TCP reset). When
	// it is true and a policy leaves this node an empty set, traffic is
	// dropped instead.
	HasEndpoints bool
}

// Target is one endpoint a dataplane forwards to. Endpoint lists hold both
// families of a dual-stack service: a dataplane sends traffic for an IPv4
// service address to the IPv4 targets only, and likewise for IPv6.
type Target struct {
	Addr netip.Addr
	Port uint16
	// Local marks an endpoint on this node.
	Local bool
}

// AddrPort returns the target's address and port.
func (t Target) AddrPort() netip.AddrPort { return netip.AddrPortFrom(t.Addr, t.Port) }

// Equal reports whether two port states render the same.
func (p *PortState) Equal(o *PortState) bool {
	return p.Name == o.Name && p.Protocol == o.Protocol && slices.Equal(p.ClusterIPs, o.ClusterIPs) && p.Port == o.Port &&
		p.NodePort == o.NodePort && slices.Equal(p.ExternalIPs, o.ExternalIPs) && slices.Equal(p.LoadBalancerIPs, o.LoadBalancerIPs) &&
		slices.Equal(p.SourceRanges, o.SourceRanges) && p.AffinityTimeout == o.AffinityTimeout &&
		slices.Equal(p.InternalEndpoints, o.InternalEndpoints) && p.InternalLocal == o.InternalLocal &&
		slices.Equal(p.ExternalEndpoints, o.ExternalEndpoints) && p.ExternalLocal == o.ExternalLocal &&
		slices.Equal(p.ClusterEndpoints, o.ClusterEndpoints) && p.HasEndpoints == o.HasEndpoints
}

// Hint tells a Dataplane what changed since its last successful Sync. It
// is only a hint: a driver may ignore it and diff on its own; Full asks for
// a complete resync (after a failure, or periodically).
type Hint struct {
	Full bool
	// Changed lists the ports added, changed or removed.
	Changed []PortName
	// Exact promises that Changed lists every port that differs from the
	// State of the last successful Sync (the Proxier's hints do): a driver
	// may then look at those ports only, and its cost no longer grows with
	// the number of services. Without it a driver compares the whole State.
	Exact bool
}

// Dataplane programs the service proxy into the kernel. Implementations:
// driver/nftables, driver/fake.
type Dataplane interface {
	// Sync makes the dataplane serve exactly st (and nothing else it
	// owns). Idempotent; an empty State removes every service.
	Sync(ctx context.Context, st *State, hint Hint) error
}

// BuildPort computes the PortState of one service port on a node.
func BuildPort(s *Service, p Port, backends []Backend, node NodeInfo) PortState {
	name := PortName{Service: s.Name, Port: p.Name, Protocol: p.Protocol}
	sel := Select(s, backends, node)
	ps := PortState{
		Name:            name,
		Protocol:        p.Protocol,
		ClusterIPs:      sortAddrs(s.ClusterIPs),
		Port:            p.Port,
		NodePort:        p.NodePort,
		ExternalIPs:     sortAddrs(s.ExternalIPs),
		SourceRanges:    slices.Clone(s.LoadBalancerSourceRanges),
		AffinityTimeout: s.AffinityTimeout,
		InternalLocal:   s.InternalTrafficPolicy.Local(),
		ExternalLocal:   s.ExternalTrafficPolicy.Local() && s.ExternallyAccessible(),
		HasEndpoints:    sel.HasAny,
	}
	for _, in := range s.LoadBalancerIngress {
		if in.Mode != IPModeProxy {
			ps.LoadBalancerIPs = append(ps.LoadBalancerIPs, in.IP)
		}
	}
	ps.LoadBalancerIPs = sortAddrs(ps.LoadBalancerIPs)
	targets := func(bs []Backend) []Target {
		out := make([]Target, 0, len(bs))
		for _, b := range bs {
			out = append(out, Target{Addr: b.Addr, Port: b.Port, Local: node.Name != "" && b.NodeName == node.Name})
		}
		return out
	}
	ps.ClusterEndpoints = targets(sel.Cluster)
	if ps.InternalLocal {
		ps.InternalEndpoints = targets(sel.Local)
	} else {
		ps.InternalEndpoints = ps.ClusterEndpoints
	}
	if ps.ExternalLocal {
		ps.ExternalEndpoints = targets(sel.Local)
	} else {
		ps.ExternalEndpoints = ps.ClusterEndpoints
	}
	return ps
}

// SortPorts sorts port states by name (namespace, service, port name,
// protocol), as State requires.
func SortPorts(ps []PortState) {
	slices.SortFunc(ps, func(a, b PortState) int { return ComparePortNames(a.Name, b.Name) })
}

// ComparePortNames orders port names by namespace, service name, port name
// and protocol, without allocating.
func ComparePortNames(a, b PortName) int {
	if c := strings.Compare(a.Service.Namespace, b.Service.Namespace); c != 0 {
		return c
	}
	if c := strings.Compare(a.Service.Name, b.Service.Name); c != 0 {
		return c
	}
	if c := strings.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return strings.Compare(string(a.Protocol), string(b.Protocol))
}

// UDPFlowSet names UDP conntrack entries that may be stale after a sync:
// those whose original destination is one of Dests (or any address with
// destination port NodePort, when set) and whose reply does not come from
// one of Keep. Without removal, a long-lived UDP "connection" keeps going
// to an endpoint that is gone (or to nowhere, after a reject).
type UDPFlowSet struct {
	Dests    []netip.AddrPort
	NodePort uint16
	Keep     []netip.AddrPort
}

// Conntrack removes stale connection tracking entries. Implemented by
// driver/netlink.
type Conntrack interface {
	// ClearStaleUDP deletes the UDP entries of sets that are stale.
	ClearStaleUDP(ctx context.Context, sets []UDPFlowSet) error
}

// staleUDP returns the flow set to clear after a UDP port changed from old
// to cur (either may be nil: added or removed), or false when no entry can
// be stale (no endpoint went away and the port had endpoints before).
func staleUDP(old, cur *PortState) (UDPFlowSet, bool) {
	ref := cur
	if ref == nil {
		ref = old
	}
	if ref == nil || ref.Protocol != UDP {
		return UDPFlowSet{}, false
	}
	keep := map[netip.AddrPort]bool{}
	if cur != nil {
		for _, l := range [][]Target{cur.InternalEndpoints, cur.ExternalEndpoints, cur.ClusterEndpoints} {
			for _, t := range l {
				keep[t.AddrPort()] = true
			}
		}
	}
	gone := old == nil || !old.HasEndpoints || len(old.InternalEndpoints)+len(old.ExternalEndpoints) == 0
	if old != nil {
		for _, l := range [][]Target{old.InternalEndpoints, old.ExternalEndpoints, old.ClusterEndpoints} {
			for _, t := range l {
				if !keep[t.AddrPort()] {
					gone = true
				}
			}
		}
	}
	if !gone {
		return UDPFlowSet{}, false
	}
	set := UDPFlowSet{NodePort: ref.NodePort}
	for _, l := range [][]netip.Addr{ref.ClusterIPs, ref.ExternalIPs, ref.LoadBalancerIPs} {
		for _, a := range l {
			set.Dests = append(set.Dests, netip.AddrPortFrom(a, ref.Port))
		}
	}
	for ap := range keep {
		set.Keep = append(set.Keep, ap)
	}
	slices.SortFunc(set.Keep, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return set, true
}
