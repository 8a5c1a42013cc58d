package policy

import (
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"
)

// compiler holds a cluster and its compiled form, and updates the latter
// incrementally: an event recompiles only the pods, peer sets and rules it
// can change. Compile and the Enforcer both use it.
type compiler struct {
	nsLabels map[string]Labels
	pods     map[Key]*Pod
	byNS     map[string]map[Key]*Pod
	nodes    map[string][]netip.Addr
	pols     map[Key]*polState
	polsByNS map[string]map[Key]*polState

	progs map[Key]*PodProgram // isolated pods
	sets  map[string]*AddrSet
	dirty map[Key]bool // pods whose program is rebuilt by program()
	// dirtyRules have peer sets (or egress named-port groups) to rebuild.
	dirtyRules map[*ruleState]bool

	// What the last Program holds, patched by program().
	last        *Program
	sorted      []*PodProgram        // progs by pod
	podIPs      map[Key][]netip.Addr // the addresses in last.pods, by pod
	errors      []error              // of refused policies, by policy
	polsChanged bool
}

type polState struct {
	pol      Policy
	err      error
	dirs     [2]bool
	selected map[Key]bool
	rules    [2][]*ruleState
}

// setGen numbers AddrSet versions, unique in the process (a driver may see
// Programs of several compilers).
var setGen atomic.Uint64

type ipCount struct {
	ip netip.Addr
	n  int
}

func (rs *ruleState) addIPs(ips []netip.Addr) {
	for _, ip := range ips {
		i, ok := slices.BinarySearchFunc(rs.ips, ip, func(x ipCount, ip netip.Addr) int { return x.ip.Compare(ip) })
		if ok {
			rs.ips[i].n++
		} else {
			rs.ips = slices.Insert(rs.ips, i, ipCount{ip, 1})
		}
	}
}

func (rs *ruleState) removeIPs(ips []netip.Addr) {
	for _, ip := range ips {
		i, ok := slices.BinarySearchFunc(rs.ips, ip, func(x ipCount, ip netip.Addr) int { return x.ip.Compare(ip) })
		if !ok {
			continue
		}
		if rs.ips[i].n--; rs.ips[i].n == 0 {
			rs.ips = slices.Delete(rs.ips, i, i+1)
		}
	}
}

type ruleState struct {
	id       RuleID
	owner    *polState
	rule     *Rule
	anyPeer  bool // no peers: every address
	selPeers bool // some peer has selectors
	blocks   []AddrRange
	members  map[Key]bool // pods selected by the selector peers
	ips      []ipCount    // their addresses, sorted (a count per address)
	allPorts bool
	numeric  []PortRange
	named    []PortSpec
	// Egress named ports: per resolved port, the set of destination pods.
	groups []CompiledRule
}

func newCompiler() *compiler {
	return &compiler{nsLabels: map[string]Labels{}, pods: map[Key]*Pod{}, byNS: map[string]map[Key]*Pod{},
		nodes: map[string][]netip.Addr{}, pols: map[Key]*polState{}, polsByNS: map[string]map[Key]*polState{},
		progs: map[Key]*PodProgram{}, sets: map[string]*AddrSet{}, dirty: map[Key]bool{}, dirtyRules: map[*ruleState]bool{},
		podIPs: map[Key][]netip.Addr{}}
}

// eachRule calls fn for every rule of every valid policy.
func (c *compiler) eachRule(fn func(rs *ruleState)) {
	for _, ps := range c.pols {
		if ps.err != nil {
			continue
		}
		for d := range 2 {
			for _, rs := range ps.rules[d] {
				fn(rs)
			}
		}
	}
}

// memberOf reports whether a selector peer of rs selects pod.
func (c *compiler) memberOf(rs *ruleState, pod *Pod) bool {
	if !rs.selPeers || len(pod.IPs) == 0 {
		return false
	}
	for i := range rs.rule.Peers {
		p := &rs.rule.Peers[i]
		if p.IPBlock == nil && peerSelects(p, rs.owner.pol.Namespace, pod, c.nsLabels) {
			return true
		}
	}
	return false
}

// recheckMember updates rs's membership of pod k, which was old and is
// now pod (either nil: absent); changed addresses or ports of a member
// also dirty the rule.
func (c *compiler) recheckMember(rs *ruleState, k Key, old, pod *Pod, podChanged bool) {
	was := rs.members[k]
	is := pod != nil && c.memberOf(rs, pod)
	if !is && !was {
		// Egress named ports also reach pods inside ipBlocks, or any pod:
		// their ports or addresses may have changed.
		if rs.id.Direction == Egress && len(rs.named) > 0 && podChanged && (rs.anyPeer || len(rs.blocks) > 0) {
			c.dirtyRules[rs] = true
		}
		return
	}
	if was && is && !podChanged {
		return
	}
	if was {
		rs.removeIPs(old.IPs)
		delete(rs.members, k)
	}
	if is {
		rs.addIPs(pod.IPs)
		rs.members[k] = true
	}
	c.dirtyRules[rs] = true
}

func (c *compiler) setNamespace(name string, l Labels) {
	c.nsLabels[name] = maps.Clone(l)
	c.namespaceChanged(name)
}

func (c *compiler) deleteNamespace(name string) {
	delete(c.nsLabels, name)
	c.namespaceChanged(name)
}

func (c *compiler) namespaceChanged(name string) {
	c.eachRule(func(rs *ruleState) {
		if !rs.selPeers {
			return
		}
		for k, p := range c.byNS[name] {
			c.recheckMember(rs, k, p, p, false)
		}
	})
}

func (c *compiler) setNode(n Node) {
	c.nodes[n.Name] = slices.Clone(n.IPs)
	c.nodeChanged(n.Name)
}

func (c *compiler) deleteNode(name string) {
	delete(c.nodes, name)
	c.nodeChanged(name)
}

func (c *compiler) nodeChanged(name string) {
	for k, p := range c.pods {
		if p.Node == name && c.progs[k] != nil {
			c.dirty[k] = true
		}
	}
}

func (c *compiler) setPod(p *Pod) {
	cp := *p
	cp.Labels = maps.Clone(p.Labels)
	cp.IPs = slices.Clone(p.IPs)
	cp.Ports = slices.Clone(p.Ports)
	c.podChanged(p.Key, &cp)
}

func (c *compiler) deletePod(k Key) { c.podChanged(k, nil) }

func (c *compiler) podChanged(k Key, pod *Pod) {
	old := c.pods[k]
	if pod != nil {
		c.pods[k] = pod
		if c.byNS[k.Namespace] == nil {
			c.byNS[k.Namespace] = map[Key]*Pod{}
		}
		c.byNS[k.Namespace][k] = pod
	}
	for _, ps := range c.polsByNS[k.Namespace] {
		if ps.err != nil {
			continue
		}
		if sel := pod != nil && len(pod.IPs) > 0 && ps.pol.PodSelector.Matches(pod.Labels); sel {
			ps.selected[k] = true
		} else {
			delete(ps.selected, k)
		}
	}
	c.eachRule(func(rs *ruleState) { c.recheckMember(rs, k, old, pod, true) })
	c.dirty[k] = true
	if pod == nil {
		delete(c.pods, k)
		delete(c.byNS[k.Namespace], k)
	}
}

func (c *compiler) setPolicy(p *Policy) {
	c.deletePolicy(p.Key)
	c.polsChanged = true
	ps := &polState{pol: *p, selected: map[Key]bool{}}
	c.pols[p.Key] = ps
	if c.polsByNS[p.Namespace] == nil {
		c.polsByNS[p.Namespace] = map[Key]*polState{}
	}
	c.polsByNS[p.Namespace][p.Key] = ps
	if ps.err = p.Validate(); ps.err != nil {
		return
	}
	in, eg := p.directions()
	ps.dirs = [2]bool{in, eg}
	for k, pod := range c.byNS[p.Namespace] {
		if len(pod.IPs) > 0 && p.PodSelector.Matches(pod.Labels) {
			ps.selected[k] = true
			c.dirty[k] = true
		}
	}
	for d, rules := range [2][]Rule{ps.pol.Ingress, ps.pol.Egress} {
		if !ps.dirs[d] {
			continue
		}
		for i := range rules {
			rs := c.newRule(ps, RuleID{p.Key, Direction(d), i}, &rules[i])
			ps.rules[d] = append(ps.rules[d], rs)
			c.dirtyRules[rs] = true
		}
	}
}

func (c *compiler) newRule(ps *polState, id RuleID, r *Rule) *ruleState {
	rs := &ruleState{id: id, owner: ps, rule: r, anyPeer: len(r.Peers) == 0, members: map[Key]bool{}, allPorts: len(r.Ports) == 0}
	var blocks []AddrRange
	for _, peer := range r.Peers {
		if b := peer.IPBlock; b != nil {
			var cut []AddrRange
			for _, e := range b.Except {
				cut = append(cut, prefixRange(e))
			}
			blocks = append(blocks, subtract([]AddrRange{prefixRange(b.CIDR)}, normalize(cut))...)
			continue
		}
		rs.selPeers = true
	}
	rs.blocks = normalize(blocks)
	for _, pp := range r.Ports {
		switch {
		case pp.Name != "":
			rs.named = append(rs.named, pp)
		case pp.Port == 0:
			rs.numeric = append(rs.numeric, PortRange{pp.Protocol, 0, 65535})
		case pp.EndPort != 0:
			rs.numeric = append(rs.numeric, PortRange{pp.Protocol, pp.Port, pp.EndPort})
		default:
			rs.numeric = append(rs.numeric, PortRange{pp.Protocol, pp.Port, pp.Port})
		}
	}
	rs.numeric = normalizePorts(rs.numeric)
	for i := range r.Peers {
		peer := &r.Peers[i]
		if peer.IPBlock != nil {
			continue
		}
		// Only the pods of the namespaces the peer can select.
		for _, ns := range c.peerNamespaces(peer, ps.pol.Namespace) {
			for k, pod := range c.byNS[ns] {
				if !rs.members[k] && len(pod.IPs) > 0 && (peer.PodSelector == nil || peer.PodSelector.Matches(pod.Labels)) {
					rs.members[k] = true
					rs.addIPs(pod.IPs)
				}
			}
		}
	}
	return rs
}

// peerNamespaces lists the namespaces whose pods a selector peer of a
// policy in namespace ns can select.
func (c *compiler) peerNamespaces(peer *Peer, ns string) []string {
	if peer.NamespaceSelector == nil {
		return []string{ns}
	}
	var out []string
	for name, l := range c.nsLabels {
		if peer.NamespaceSelector.Matches(l) {
			out = append(out, name)
		}
	}
	return out
}

func (c *compiler) deletePolicy(k Key) {
	ps := c.pols[k]
	if ps == nil {
		return
	}
	c.polsChanged = true
	for pk := range ps.selected {
		c.dirty[pk] = true
	}
	for d := range 2 {
		for _, rs := range ps.rules[d] {
			delete(c.dirtyRules, rs)
			delete(c.sets, setName(rs.id, ""))
			for _, g := range rs.groups {
				delete(c.sets, g.Peers)
			}
		}
	}
	delete(c.pols, k)
	delete(c.polsByNS[k.Namespace], k)
}

// rebuildRule recomputes a rule's peer set and egress named-port groups;
// when the groups change, the pods the policy selects are recompiled.
func (c *compiler) rebuildRule(rs *ruleState) {
	if !rs.anyPeer {
		name := setName(rs.id, "")
		set := &AddrSet{Name: name, Ranges: mergeIPs(rs.blocks, rs.ips), gen: setGen.Add(1)}
		if old := c.sets[name]; old != nil {
			set.base = old.gen
			set.removed, set.added = diffSorted(old.Ranges, set.Ranges)
		}
		c.sets[name] = set
	}
	if rs.id.Direction != Egress || len(rs.named) == 0 {
		return
	}
	set := c.sets[setName(rs.id, "")]
	groups := map[PortRange][]AddrRange{}
	for _, q := range c.pods {
		if len(q.IPs) == 0 {
			continue
		}
		holds := rs.anyPeer || rs.members[q.Key]
		if !holds {
			for _, ip := range q.IPs {
				if set.Contains(ip) {
					holds = true
				}
			}
		}
		if !holds {
			continue
		}
		for _, ps := range rs.named {
			port, ok := resolve(q, ps)
			if !ok {
				continue
			}
			for _, ip := range q.IPs {
				if rs.anyPeer || set.Contains(ip) {
					groups[port] = append(groups[port], AddrRange{From: ip, To: ip})
				}
			}
		}
	}
	keys := slices.SortedFunc(maps.Keys(groups), comparePorts)
	var out []CompiledRule
	for _, old := range rs.groups {
		delete(c.sets, old.Peers)
	}
	for _, k := range keys {
		name := setName(rs.id, "/"+string(k.Protocol)+"-"+itoa(int(k.First)))
		c.sets[name] = &AddrSet{Name: name, Ranges: normalize(groups[k])}
		out = append(out, CompiledRule{ID: rs.id, Peers: name, Ports: []PortRange{k}})
	}
	if !slices.EqualFunc(out, rs.groups, func(a, b CompiledRule) bool { return a.Peers == b.Peers }) {
		for k := range rs.owner.selected {
			c.dirty[k] = true
		}
	}
	rs.groups = out
}

func itoa(n int) string { return string(appendInt(nil, n)) }

func appendInt(b []byte, n int) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// podProgram compiles the program of pod k (nil: not isolated).
func (c *compiler) podProgram(k Key) *PodProgram {
	pod := c.pods[k]
	if pod == nil || len(pod.IPs) == 0 {
		return nil
	}
	pp := &PodProgram{Pod: k, IPs: slices.Clone(pod.IPs), Node: pod.Node, NodeIPs: slices.Clone(c.nodes[pod.Node])}
	keys := slices.SortedFunc(maps.Keys(c.polsByNS[k.Namespace]), Key.Compare)
	for _, pk := range keys {
		ps := c.polsByNS[k.Namespace][pk]
		if ps.err != nil || !ps.selected[k] {
			continue
		}
		for d := range 2 {
			if !ps.dirs[d] {
				continue
			}
			dp := pp.Dirs[d]
			if dp == nil {
				dp = &DirProgram{}
				pp.Dirs[d] = dp
			}
			dp.Policies = append(dp.Policies, pk)
			for _, rs := range ps.rules[d] {
				dp.Rules = append(dp.Rules, rs.compile(pod)...)
			}
		}
	}
	if pp.Dirs[Ingress] == nil && pp.Dirs[Egress] == nil {
		return nil
	}
	return pp
}

// compile gives the rule's CompiledRules for the selected pod self.
func (rs *ruleState) compile(self *Pod) []CompiledRule {
	peers := ""
	if !rs.anyPeer {
		peers = setName(rs.id, "")
	}
	if rs.allPorts {
		return []CompiledRule{{ID: rs.id, Peers: peers}}
	}
	ports := slices.Clone(rs.numeric)
	if rs.id.Direction == Ingress {
		for _, ps := range rs.named {
			if port, ok := resolve(self, ps); ok {
				ports = append(ports, port)
			}
		}
	}
	var out []CompiledRule
	if len(ports) > 0 {
		out = append(out, CompiledRule{ID: rs.id, Peers: peers, Ports: normalizePorts(ports)})
	}
	if rs.id.Direction == Egress {
		out = append(out, rs.groups...)
	}
	return out
}

// program brings the compiled form up to date and returns it as an
// immutable Program.
func (c *compiler) program() *Program {
	for rs := range c.dirtyRules {
		c.rebuildRule(rs)
	}
	clear(c.dirtyRules)
	// The previous Program's maps and lists are copied and patched for
	// what changed (Programs are immutable: a driver may still read the
	// last one), never rebuilt from every pod.
	last := c.last
	if last == nil {
		last = &Program{byIP: map[netip.Addr]*PodProgram{}, pods: map[netip.Addr]Key{}}
	}
	byIP, podIPs := last.byIP, last.pods
	clonedByIP, clonedPods := false, false
	for k := range c.dirty {
		old := c.progs[k]
		pp := c.podProgram(k)
		if pp != nil {
			c.progs[k] = pp
		} else {
			delete(c.progs, k)
		}
		i, found := slices.BinarySearchFunc(c.sorted, k, func(p *PodProgram, k Key) int { return p.Pod.Compare(k) })
		switch {
		case pp != nil && found:
			c.sorted[i] = pp
		case pp != nil:
			c.sorted = slices.Insert(c.sorted, i, pp)
		case found:
			c.sorted = slices.Delete(c.sorted, i, i+1)
		}
		if old != pp {
			if !clonedByIP {
				byIP, clonedByIP = maps.Clone(byIP), true
			}
			if old != nil {
				for _, ip := range old.IPs {
					if byIP[ip] == old {
						delete(byIP, ip)
					}
				}
			}
			if pp != nil {
				for _, ip := range pp.IPs {
					byIP[ip] = pp
				}
			}
		}
		// Every pod address, isolated or not.
		pod := c.pods[k]
		if !slices.Equal(c.podIPs[k], podIPsOf(pod)) {
			if !clonedPods {
				podIPs, clonedPods = maps.Clone(podIPs), true
			}
			for _, ip := range c.podIPs[k] {
				if podIPs[ip] == k {
					delete(podIPs, ip)
				}
			}
			if pod != nil {
				for _, ip := range pod.IPs {
					podIPs[ip] = k
				}
				c.podIPs[k] = slices.Clone(pod.IPs)
			} else {
				delete(c.podIPs, k)
			}
		}
	}
	clear(c.dirty)
	if c.polsChanged {
		c.errors = nil
		for _, k := range slices.SortedFunc(maps.Keys(c.pols), Key.Compare) {
			if err := c.pols[k].err; err != nil {
				c.errors = append(c.errors, err)
			}
		}
		c.polsChanged = false
	}
	prog := &Program{Pods: slices.Clone(c.sorted), Errors: slices.Clone(c.errors), sets: maps.Clone(c.sets), byIP: byIP, pods: podIPs}
	c.last = prog
	return prog
}

func podIPsOf(p *Pod) []netip.Addr {
	if p == nil {
		return nil
	}
	return p.IPs
}
