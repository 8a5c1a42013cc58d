package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// Cluster is everything the policies of a cluster depend on.
type Cluster struct {
	Namespaces []Namespace
	Pods       []Pod
	Nodes      []Node
	Policies   []Policy
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

// CompiledRule allows traffic with a peer in Peers (nil: any address) on
// one of Ports (nil: any protocol and port).
type CompiledRule struct {
	ID    RuleID
	Peers *AddrSet
	Ports []PortRange
}

func (r *CompiledRule) matches(peer netip.Addr, proto Protocol, port uint16) bool {
	if r.Peers != nil && !r.Peers.Contains(peer) {
		return false
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
	// Policies select the pod for this direction (sorted).
	Policies []Key
	// Rules allow; what no rule allows is denied.
	Rules []CompiledRule
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
// in some direction, and the policies refused as invalid.
type Program struct {
	Pods   []PodProgram // sorted by pod
	Errors []error      // one per refused policy; the others still apply
	Sets   []*AddrSet   // every peer set the rules use, sorted by name

	byIP map[netip.Addr]*PodProgram
	pods map[netip.Addr]Key // every pod address, isolated or not
}

// Compile compiles the policies of a cluster. A policy that fails
// Validate is left out (and reported in Program.Errors): it never widens
// or narrows what the others allow, though pods it alone would select stay
// unisolated.
func Compile(c *Cluster) *Program {
	prog := &Program{byIP: map[netip.Addr]*PodProgram{}, pods: map[netip.Addr]Key{}}
	nsLabels := make(map[string]Labels, len(c.Namespaces))
	for _, ns := range c.Namespaces {
		nsLabels[ns.Name] = ns.Labels
	}
	nodeIPs := map[string][]netip.Addr{}
	for _, n := range c.Nodes {
		nodeIPs[n.Name] = n.IPs
	}
	pods := slices.Clone(c.Pods)
	slices.SortFunc(pods, func(a, b Pod) int { return a.Key.Compare(b.Key) })
	for _, p := range pods {
		for _, ip := range p.IPs {
			prog.pods[ip] = p.Key
		}
	}
	podIdx := map[Key]int{}
	var programs []PodProgram
	programOf := func(i int) *PodProgram {
		if j, ok := podIdx[pods[i].Key]; ok {
			return &programs[j]
		}
		p := &pods[i]
		podIdx[p.Key] = len(programs)
		programs = append(programs, PodProgram{Pod: p.Key, IPs: slices.Clone(p.IPs), Node: p.Node, NodeIPs: slices.Clone(nodeIPs[p.Node])})
		return &programs[len(programs)-1]
	}
	policies := slices.Clone(c.Policies)
	slices.SortFunc(policies, func(a, b Policy) int { return a.Key.Compare(b.Key) })
	sets := map[string]*AddrSet{}
	for pi := range policies {
		pol := &policies[pi]
		if err := pol.Validate(); err != nil {
			prog.Errors = append(prog.Errors, err)
			continue
		}
		ingress, egress := pol.directions()
		var selected []int
		for i := range pods {
			if pods[i].Namespace == pol.Namespace && len(pods[i].IPs) > 0 && pol.PodSelector.Matches(pods[i].Labels) {
				selected = append(selected, i)
			}
		}
		for _, d := range []struct {
			dir   Direction
			on    bool
			rules []Rule
		}{{Ingress, ingress, pol.Ingress}, {Egress, egress, pol.Egress}} {
			if !d.on {
				continue
			}
			peerSets := make([]*AddrSet, len(d.rules))
			for ri := range d.rules {
				peerSets[ri] = peerSet(RuleID{pol.Key, d.dir, ri}, pol.Namespace, d.rules[ri].Peers, pods, nsLabels, sets)
			}
			for _, i := range selected {
				pp := programOf(i)
				dp := pp.Dirs[d.dir]
				if dp == nil {
					dp = &DirProgram{}
					pp.Dirs[d.dir] = dp
				}
				dp.Policies = append(dp.Policies, pol.Key)
				for ri := range d.rules {
					id := RuleID{pol.Key, d.dir, ri}
					dp.Rules = append(dp.Rules, compileRule(id, &d.rules[ri], peerSets[ri], &pods[i], pol.Namespace, pods, nsLabels, sets)...)
				}
			}
		}
	}
	slices.SortFunc(programs, func(a, b PodProgram) int { return a.Pod.Compare(b.Pod) })
	prog.Pods = programs
	for i := range prog.Pods {
		for _, ip := range prog.Pods[i].IPs {
			prog.byIP[ip] = &prog.Pods[i]
		}
	}
	for _, s := range sets {
		prog.Sets = append(prog.Sets, s)
	}
	slices.SortFunc(prog.Sets, func(a, b *AddrSet) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return prog
}

// peerSet is the address set of a rule's peers (nil: any address).
func peerSet(id RuleID, ns string, peers []Peer, pods []Pod, nsLabels map[string]Labels, sets map[string]*AddrSet) *AddrSet {
	if len(peers) == 0 {
		return nil
	}
	var rs []AddrRange
	for _, peer := range peers {
		if b := peer.IPBlock; b != nil {
			var cut []AddrRange
			for _, e := range b.Except {
				cut = append(cut, prefixRange(e))
			}
			rs = append(rs, subtract([]AddrRange{prefixRange(b.CIDR)}, normalize(cut))...)
			continue
		}
		for i := range pods {
			if peerSelects(&peer, ns, &pods[i], nsLabels) {
				for _, ip := range pods[i].IPs {
					rs = append(rs, AddrRange{From: ip, To: ip})
				}
			}
		}
	}
	s := &AddrSet{Name: setName(id, ""), Ranges: normalize(rs)}
	sets[s.Name] = s
	return s
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

// compileRule compiles rule id for the selected pod: numeric ports apply
// to the whole peer set; named ports are resolved against the destination
// pod: the selected pod for ingress, each peer pod for egress (peer pods
// grouped by the port the name resolves to).
func compileRule(id RuleID, r *Rule, peers *AddrSet, self *Pod, ns string, pods []Pod, nsLabels map[string]Labels, sets map[string]*AddrSet) []CompiledRule {
	if len(r.Ports) == 0 {
		return []CompiledRule{{ID: id, Peers: peers}}
	}
	var numeric []PortRange
	var named []PortSpec
	for _, ps := range r.Ports {
		switch {
		case ps.Name != "":
			named = append(named, ps)
		case ps.Port == 0:
			numeric = append(numeric, PortRange{ps.Protocol, 0, 65535})
		case ps.EndPort != 0:
			numeric = append(numeric, PortRange{ps.Protocol, ps.Port, ps.EndPort})
		default:
			numeric = append(numeric, PortRange{ps.Protocol, ps.Port, ps.Port})
		}
	}
	if id.Direction == Ingress {
		for _, ps := range named {
			if port, ok := resolve(self, ps); ok {
				numeric = append(numeric, port)
			}
		}
		if len(numeric) == 0 {
			return nil // only names this pod does not expose: matches nothing
		}
		return []CompiledRule{{ID: id, Peers: peers, Ports: normalizePorts(numeric)}}
	}
	var out []CompiledRule
	if len(numeric) > 0 {
		out = append(out, CompiledRule{ID: id, Peers: peers, Ports: normalizePorts(numeric)})
	}
	if len(named) == 0 {
		return out
	}
	// Egress to named ports: the destination pods among the peers (pods
	// whose addresses an ipBlock holds count), by resolved port.
	groups := map[PortRange][]AddrRange{}
	for i := range pods {
		q := &pods[i]
		if len(q.IPs) == 0 || !peerHolds(r.Peers, peers, ns, q, nsLabels) {
			continue
		}
		for _, ps := range named {
			port, ok := resolve(q, ps)
			if !ok {
				continue
			}
			for _, ip := range q.IPs {
				if peers == nil || peers.Contains(ip) {
					groups[port] = append(groups[port], AddrRange{From: ip, To: ip})
				}
			}
		}
	}
	keys := make([]PortRange, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, comparePorts)
	for _, k := range keys {
		name := setName(id, fmt.Sprintf("/%s-%d", k.Protocol, k.First))
		s, ok := sets[name]
		if !ok {
			s = &AddrSet{Name: name, Ranges: normalize(groups[k])}
			sets[name] = s
		}
		out = append(out, CompiledRule{ID: id, Peers: s, Ports: []PortRange{k}})
	}
	return out
}

// peerHolds reports whether pod q is a peer of the rule: selected by a
// selector peer, or with an address in the peer set (ipBlocks).
func peerHolds(peers []Peer, set *AddrSet, ns string, q *Pod, nsLabels map[string]Labels) bool {
	if len(peers) == 0 {
		return true
	}
	for i := range peers {
		if peers[i].IPBlock == nil && peerSelects(&peers[i], ns, q, nsLabels) {
			return true
		}
	}
	for _, ip := range q.IPs {
		if set.Contains(ip) {
			return true
		}
	}
	return false
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
