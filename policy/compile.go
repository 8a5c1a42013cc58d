package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// Cluster is everything the policies of a cluster depend on.
type Cluster struct {
	Namespaces []Namespace
	Pods       []Pod
	Nodes      []Node
	Policies   []Policy
	// AdminPolicies are AdminNetworkPolicies; Baseline the
	// BaselineAdminNetworkPolicy (nil: none).
	AdminPolicies []AdminPolicy
	Baseline      *AdminPolicy
}

// RuleID names one rule of one policy: "ns/name ingress[0]".
type RuleID struct {
	Policy    Key
	Direction Direction
	Index     int
}

func (r RuleID) String() string {
	return r.Policy.String() + " " + r.Direction.String() + "[" + strconv.Itoa(r.Index) + "]"
}

// PortRange is ports First..Last of a protocol.
type PortRange struct {
	Protocol    Protocol
	First, Last uint16
}

// CompiledRule allows traffic with a peer in the set named Peers ("": any
// address; the set is Program.Set(Peers)) on one of Ports (nil: any
// protocol and port). Rules name their sets so that a label change
// changes a set, not the rules of every pod that uses it.
type CompiledRule struct {
	ID    RuleID
	Peers string
	Ports []PortRange
}

func (r *CompiledRule) matches(p *Program, peer netip.Addr, proto Protocol, port uint16) bool {
	if r.Peers != "" {
		if s := p.sets[r.Peers]; s == nil || !s.Contains(peer) {
			return false
		}
	}
	if r.Ports == nil {
		return true
	}
	for _, p := range r.Ports {
		if p.Protocol == proto && p.First <= port && port <= p.Last {
			return true
		}
	}
	return false
}

// DirProgram is what one pod allows in one direction, once isolated.
type DirProgram struct {
	// Admin are the rules of the admin policies selecting the pod, in
	// evaluation order: the first that matches decides (Pass: go on to
	// NetworkPolicy).
	Admin []AdminCompiledRule
	// Policies are the NetworkPolicies isolating the pod for this
	// direction (sorted); none: not isolated by NetworkPolicy.
	Policies []Key
	// Rules allow; what no rule allows is denied (when Policies isolate).
	Rules []CompiledRule
	// Baseline are the rules of the baseline admin policy, for pods no
	// NetworkPolicy isolates: the first that matches decides, else allow.
	Baseline []AdminCompiledRule
}

// PodProgram is the policy of one pod.
type PodProgram struct {
	Pod  Key
	IPs  []netip.Addr
	Node string
	// NodeIPs are the addresses of the pod's node: traffic with them always
	// passes.
	NodeIPs []netip.Addr
	// Dirs[Ingress], Dirs[Egress]: nil when the pod is not isolated.
	Dirs [2]*DirProgram
}

// Program is the compiled policy of a cluster: every pod that is isolated
// in some direction, and the policies refused as invalid. A Program is
// immutable; the Enforcer's successive Programs share the *PodProgram and
// *AddrSet of what did not change (drivers compare pointers to skip it).
type Program struct {
	Pods   []*PodProgram // sorted by pod
	Errors []error       // one per refused policy; the others still apply

	sets map[string]*AddrSet
	byIP map[netip.Addr]*PodProgram
	pods map[netip.Addr]Key // every pod address, isolated or not

	// gen identifies the Program; base is the generation it was derived
	// from and changed the pods whose program may differ from it.
	gen, base uint64
	changed   []Key
}

// programGen numbers Programs, unique in the process.
var programGen atomic.Uint64

// Generation identifies this Program among those of the process.
func (p *Program) Generation() uint64 { return p.gen }

// ChangedSince returns the pods whose PodProgram may differ from those of
// the Program of generation gen, when this Program was derived from it
// (ok false: compare every pod). Pods not listed have the same
// *PodProgram in both.
func (p *Program) ChangedSince(gen uint64) (pods []Key, ok bool) {
	if gen == 0 || p.base != gen {
		return nil, false
	}
	return p.changed, true
}

// PodOf returns the program of isolated pod k (nil if not isolated).
func (p *Program) PodOf(k Key) *PodProgram {
	i, ok := slices.BinarySearchFunc(p.Pods, k, func(pp *PodProgram, k Key) int { return pp.Pod.Compare(k) })
	if !ok {
		return nil
	}
	return p.Pods[i]
}

// Set returns the peer set a rule names (nil if none has that name).
func (p *Program) Set(name string) *AddrSet { return p.sets[name] }

// RangeSets calls fn for every peer set the rules use, in no order.
func (p *Program) RangeSets(fn func(*AddrSet)) {
	for _, s := range p.sets {
		fn(s)
	}
}

// Sets returns every peer set the rules use, sorted by name.
func (p *Program) Sets() []*AddrSet {
	out := make([]*AddrSet, 0, len(p.sets))
	for _, s := range p.sets {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *AddrSet) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Compile compiles the policies of a cluster. A policy that fails
// Validate is left out (and reported in Program.Errors): it never widens
// or narrows what the others allow, though pods it alone would select stay
// unisolated.
func Compile(c *Cluster) *Program {
	cp := newCompiler()
	for _, ns := range c.Namespaces {
		cp.setNamespace(ns.Name, ns.Labels)
	}
	for _, n := range c.Nodes {
		cp.setNode(n)
	}
	for i := range c.Pods {
		cp.setPod(&c.Pods[i])
	}
	for i := range c.Policies {
		cp.setPolicy(&c.Policies[i])
	}
	for i := range c.AdminPolicies {
		cp.setAdminPolicy(&c.AdminPolicies[i], false)
	}
	if c.Baseline != nil {
		cp.setAdminPolicy(c.Baseline, true)
	}
	return cp.program()
}

// peerSelects reports whether a selector peer selects pod.
func peerSelects(peer *Peer, ns string, pod *Pod, nsLabels map[string]Labels) bool {
	if peer.NamespaceSelector == nil {
		if pod.Namespace != ns {
			return false
		}
	} else if l, ok := nsLabels[pod.Namespace]; !ok || !peer.NamespaceSelector.Matches(l) {
		return false
	}
	return peer.PodSelector == nil || peer.PodSelector.Matches(pod.Labels)
}

// setName names the peer set of a rule (suffix: a named-port group).
func setName(id RuleID, suffix string) string {
	return fmt.Sprintf("%s/%s/%s/%d%s", id.Policy.Namespace, id.Policy.Name, id.Direction, id.Index, suffix)
}

// resolve finds the container port named ps.Name with ps.Protocol.
func resolve(p *Pod, ps PortSpec) (PortRange, bool) {
	for _, np := range p.Ports {
		if np.Name == ps.Name && np.Protocol == ps.Protocol {
			return PortRange{ps.Protocol, np.Port, np.Port}, true
		}
	}
	return PortRange{}, false
}

func comparePorts(a, b PortRange) int {
	if a.Protocol != b.Protocol {
		if a.Protocol < b.Protocol {
			return -1
		}
		return 1
	}
	if a.First != b.First {
		return int(a.First) - int(b.First)
	}
	return int(a.Last) - int(b.Last)
}

// normalizePorts sorts and merges port ranges per protocol.
func normalizePorts(ps []PortRange) []PortRange {
	slices.SortFunc(ps, comparePorts)
	var out []PortRange
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Protocol == p.Protocol && int(p.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, p.Last)
			continue
		}
		out = append(out, p)
	}
	return out
}
