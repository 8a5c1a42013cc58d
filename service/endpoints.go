package service

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// EndpointSlice is the model of one discovery/v1 EndpointSlice of a
// Service. A Service's endpoints are the merge of all its slices.
type EndpointSlice struct {
	// Name is the slice's name, unique in its namespace.
	Name    string
	Service Name
	Ports   []SlicePort
	// Endpoints hold their conditions already defaulted (see Endpoint).
	Endpoints []Endpoint
	// TriggerTime is when the change this slice reflects happened (the
	// endpoints.kubernetes.io/last-change-trigger-time annotation); zero
	// when unknown. It feeds the network programming latency metric.
	TriggerTime time.Time
}

// SlicePort is a port of an EndpointSlice; its Name matches the service
// port name it serves.
type SlicePort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Endpoint is one endpoint of a slice. The conditions are the effective
// ones: discovery/v1 defines a nil ready, a nil serving and a nil
// terminating as true, true and false (kube-proxy reads them so);
// converters apply that.
type Endpoint struct {
	// Addresses: the proxy uses the first, as Kubernetes does.
	Addresses   []netip.Addr
	Ready       bool
	Serving     bool
	Terminating bool
	NodeName    string
	Zone        string
	// ZoneHints and NodeHints are the slice controller's topology hints.
	ZoneHints []string
	NodeHints []string
}

// Validate checks a slice, naming the first bad field and its value.
func (s *EndpointSlice) Validate() error {
	obj := "endpointslice " + s.Service.Namespace + "/" + s.Name
	if s.Name == "" || s.Service.Namespace == "" || s.Service.Name == "" {
		return invalid(obj, "Name", s.Name, "slice name and service namespace/name are required")
	}
	for i, p := range s.Ports {
		if !p.Protocol.valid() {
			return invalid(obj, fmt.Sprintf("Ports[%d].Protocol", i), p.Protocol, "want TCP, UDP or SCTP")
		}
	}
	for i, e := range s.Endpoints {
		for j, a := range e.Addresses {
			if !a.IsValid() || a.IsUnspecified() {
				return invalid(obj, fmt.Sprintf("Endpoints[%d].Addresses[%d]", i, j), a, "not a unicast address")
			}
		}
	}
	return nil
}

// Backend is an endpoint resolved for one service port: an address and a
// port, with the endpoint's conditions and placement.
type Backend struct {
	Addr        netip.Addr
	Port        uint16
	Ready       bool
	Serving     bool
	Terminating bool
	NodeName    string
	Zone        string
	ZoneHints   []string
	NodeHints   []string
}

// AddrPort returns the backend's address and port.
func (b Backend) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.Addr, b.Port) }

func (b Backend) String() string { return b.AddrPort().String() }

// Backends merges the slices of one service into the backends of one of
// its ports: every endpoint of every slice whose port has the same name
// and protocol, at that slice port's number. An address:port present in
// several slices (as during a slice migration) is kept once, preferring a
// ready over a serving over a terminating copy. The result is sorted by
// address and port.
func Backends(slices_ []*EndpointSlice, port PortName) []Backend {
	byAddr := map[netip.AddrPort]Backend{}
	for _, s := range slices_ {
		for _, sp := range s.Ports {
			if sp.Name != port.Port || sp.Protocol != port.Protocol || sp.Port == 0 {
				continue
			}
			for _, e := range s.Endpoints {
				if len(e.Addresses) == 0 {
					continue
				}
				b := Backend{
					Addr: e.Addresses[0].Unmap(), Port: sp.Port,
					Ready: e.Ready, Serving: e.Serving, Terminating: e.Terminating,
					NodeName: e.NodeName, Zone: e.Zone, ZoneHints: e.ZoneHints, NodeHints: e.NodeHints,
				}
				key := b.AddrPort()
				if old, ok := byAddr[key]; !ok || rank(b) > rank(old) {
					byAddr[key] = b
				}
			}
		}
	}
	out := make([]Backend, 0, len(byAddr))
	for _, b := range byAddr {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Backend) int { return a.AddrPort().Compare(b.AddrPort()) })
	return out
}

func rank(b Backend) int {
	switch {
	case b.Ready && !b.Terminating:
		return 3
	case b.Ready:
		return 2
	case b.Serving && !b.Terminating:
		return 1
	}
	return 0
}

// NodeInfo is what the proxy needs to know about this node.
type NodeInfo struct {
	Name string
	Zone string
	// Addresses are the node's primary addresses, at most one per family
	// (kubeconv.Node takes the first InternalIP, else ExternalIP, of each):
	// node ports answer on them unless the dataplane is configured with
	// its own list (kube-proxy's nodePortAddresses "primary").
	Addresses []netip.Addr
}

// Equal reports whether two NodeInfos are the same.
func (n NodeInfo) Equal(o NodeInfo) bool {
	return n.Name == o.Name && n.Zone == o.Zone && slices.Equal(n.Addresses, o.Addresses)
}

// Selection is the endpoints one node uses for one service port.
type Selection struct {
	// Cluster are the endpoints for traffic under the Cluster policy:
	// ready ones (filtered by topology hints), or, when none is ready,
	// serving-and-terminating ones.
	Cluster []Backend
	// Local are this node's endpoints for traffic under the Local policy:
	// ready ones, or, when none is ready, serving-and-terminating ones.
	Local []Backend
	// HasAny reports whether any usable endpoint exists anywhere: when
	// false, traffic is refused (ICMP/TCP reset); when true but the policy
	// gives an empty set on this node, traffic is dropped.
	HasAny bool
}

// usesCluster and usesLocal say which endpoint sets a service's policies
// need (kube-proxy's UsesClusterEndpoints / UsesLocalEndpoints).
func usesCluster(s *Service) bool {
	return !s.InternalTrafficPolicy.Local() || (s.ExternallyAccessible() && !s.ExternalTrafficPolicy.Local())
}

func usesLocal(s *Service) bool {
	return s.InternalTrafficPolicy.Local() || (s.ExternallyAccessible() && s.ExternalTrafficPolicy.Local())
}

// Select picks the endpoints this node uses for a service port, with the
// same rules as kube-proxy's CategorizeEndpoints: topology hints
// (PreferSameNode when every ready endpoint has node hints and one names
// this node, else PreferSameZone when every ready endpoint has zone hints
// and one names this zone), fallback to serving-and-terminating endpoints
// when no ready one exists, and Local sets from this node's endpoints.
func Select(s *Service, backends []Backend, node NodeInfo) Selection {
	var sel Selection
	if usesCluster(s) {
		mode := topologyMode(backends, node)
		sel.Cluster = filter(backends, func(b Backend) bool { return b.Ready && forTopology(b, mode, node) })
		if len(sel.Cluster) == 0 {
			sel.Cluster = filter(backends, func(b Backend) bool { return b.Serving && b.Terminating && forTopology(b, mode, node) })
		}
		sel.HasAny = len(sel.Cluster) > 0
	}
	if !usesLocal(s) {
		return sel
	}
	var localReady, localTerminating bool
	for _, b := range backends {
		local := node.Name != "" && b.NodeName == node.Name
		switch {
		case b.Ready:
			sel.HasAny = true
			localReady = localReady || local
		case b.Serving && b.Terminating:
			sel.HasAny = true
			localTerminating = localTerminating || local
		}
	}
	isLocal := func(b Backend) bool { return node.Name != "" && b.NodeName == node.Name }
	switch {
	case localReady:
		sel.Local = filter(backends, func(b Backend) bool { return isLocal(b) && b.Ready })
	case localTerminating:
		sel.Local = filter(backends, func(b Backend) bool { return isLocal(b) && b.Serving && b.Terminating })
	}
	return sel
}

const (
	topoNone = iota
	topoSameZone
	topoSameNode
)

func topologyMode(backends []Backend, node NodeInfo) int {
	allNode, allZone := true, true
	forNode, forZone := false, false
	any := false
	for _, b := range backends {
		if !b.Ready {
			continue
		}
		any = true
		if len(b.NodeHints) == 0 {
			allNode = false
		} else if slices.Contains(b.NodeHints, node.Name) {
			forNode = true
		}
		if len(b.ZoneHints) == 0 {
			allZone = false
		} else if slices.Contains(b.ZoneHints, node.Zone) {
			forZone = true
		}
	}
	switch {
	case !any:
		return topoNone
	case allNode && forNode:
		return topoSameNode
	case allZone && forZone:
		return topoSameZone
	}
	return topoNone
}

func forTopology(b Backend, mode int, node NodeInfo) bool {
	switch mode {
	case topoSameNode:
		return slices.Contains(b.NodeHints, node.Name)
	case topoSameZone:
		return slices.Contains(b.ZoneHints, node.Zone)
	}
	return true
}

func filter(in []Backend, keep func(Backend) bool) []Backend {
	var out []Backend
	for _, b := range in {
		if keep(b) {
			out = append(out, b)
		}
	}
	return out
}

// sortAddrs sorts and dedups addresses.
func sortAddrs(a []netip.Addr) []netip.Addr {
	out := slices.Clone(a)
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return slices.Compact(out)
}
