package policy

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
)

// compiler holds a cluster and its compiled form, and updates the latter
// incrementally: an event recompiles only the pods, peer sets and rules it
// can change. Compile and the Enforcer both use it.
//
// Peer sets are shared: every rule whose peers are written the same way
// (same selectors, same ipBlocks, and, for selectors that need it, the same
// policy namespace) uses one set, so a label change updates one set, not
// one per policy that happens to select the same peers.
type compiler struct {
	nsLabels map[string]Labels
	pods     map[Key]*Pod
	byNS     map[string]map[Key]*Pod
	nodes    map[string][]netip.Addr
	pols     map[Key]*polState
	polsByNS map[string]map[Key]*polState
	defs     map[string]*peerDef // by canonical key
	admins   []*polState         // admin policies in evaluation order
	baseline *polState

	progs map[Key]*PodProgram // isolated pods
	sets  map[string]*AddrSet
	dirty map[Key]bool // pods whose program is rebuilt by program()
	// dirtyDefs have peer sets to rebuild; dirtyRules egress named-port
	// groups.
	dirtyDefs  map[*peerDef]bool
	dirtyRules map[*ruleState]bool
	// namedEgress are the rules whose groups depend on peer pods' ports.
	namedEgress map[*ruleState]bool

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
	// Admin policies: the policy (pol.Key names it in rule IDs).
	admin *AdminPolicy
}

// peerDef is one distinct peer list: its members and its set.
type peerDef struct {
	key, name string
	ns        string // the namespace podSelector-only peers look in
	peers     []Peer
	selPeers  bool
	blocks    []AddrRange
	members   map[Key]bool // pods selected by the selector peers
	ips       []ipCount    // their addresses, sorted (a count per address)
	refs      int
}

// setGen numbers AddrSet versions, unique in the process (a driver may see
// Programs of several compilers).
var setGen atomic.Uint64

type ipCount struct {
	ip netip.Addr
	n  int
}

func (d *peerDef) addIPs(ips []netip.Addr) {
	for _, ip := range ips {
		i, ok := slices.BinarySearchFunc(d.ips, ip, func(x ipCount, ip netip.Addr) int { return x.ip.Compare(ip) })
		if ok {
			d.ips[i].n++
		} else {
			d.ips = slices.Insert(d.ips, i, ipCount{ip, 1})
		}
	}
}

func (d *peerDef) removeIPs(ips []netip.Addr) {
	for _, ip := range ips {
		i, ok := slices.BinarySearchFunc(d.ips, ip, func(x ipCount, ip netip.Addr) int { return x.ip.Compare(ip) })
		if !ok {
			continue
		}
		if d.ips[i].n--; d.ips[i].n == 0 {
			d.ips = slices.Delete(d.ips, i, i+1)
		}
	}
}

type ruleState struct {
	id       RuleID
	action   AdminAction // admin rules
	owner    *polState
	def      *peerDef // nil: no peers, every address
	allPorts bool
	numeric  []PortRange
	named    []PortSpec
	// Egress named ports: per resolved port, the set of destination pods.
	groups []CompiledRule
}

func newCompiler() *compiler {
	return &compiler{nsLabels: map[string]Labels{}, pods: map[Key]*Pod{}, byNS: map[string]map[Key]*Pod{},
		nodes: map[string][]netip.Addr{}, pols: map[Key]*polState{}, polsByNS: map[string]map[Key]*polState{},
		defs: map[string]*peerDef{}, progs: map[Key]*PodProgram{}, sets: map[string]*AddrSet{}, dirty: map[Key]bool{},
		dirtyDefs: map[*peerDef]bool{}, dirtyRules: map[*ruleState]bool{}, namedEgress: map[*ruleState]bool{},
		podIPs: map[Key][]netip.Addr{}}
}

// memberOf reports whether a selector peer of d selects pod.
func (c *compiler) memberOf(d *peerDef, pod *Pod) bool {
	if !d.selPeers || len(pod.IPs) == 0 {
		return false
	}
	for i := range d.peers {
		p := &d.peers[i]
		if p.IPBlock == nil && peerSelects(p, d.ns, pod, c.nsLabels) {
			return true
		}
	}
	return false
}

// recheckMember updates d's membership of pod k, which was old and is now
// pod (either nil: absent).
func (c *compiler) recheckMember(d *peerDef, k Key, old, pod *Pod, podChanged bool) {
	was := d.members[k]
	is := pod != nil && c.memberOf(d, pod)
	if (!is && !was) || (was && is && (!podChanged || slices.Equal(old.IPs, pod.IPs))) {
		return
	}
	if was {
		d.removeIPs(old.IPs)
		delete(d.members, k)
	}
	if is {
		d.addIPs(pod.IPs)
		d.members[k] = true
	}
	c.dirtyDefs[d] = true
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
	for _, d := range c.defs {
		if !d.selPeers {
			continue
		}
		for k, p := range c.byNS[name] {
			c.recheckMember(d, k, p, p, false)
		}
	}
	for rs := range c.namedEgress {
		c.dirtyRules[rs] = true
	}
	// Admin subjects select by namespace labels.
	for _, ps := range c.adminStates() {
		if ps.err != nil {
			continue
		}
		for k, p := range c.byNS[name] {
			if sel := c.subjectSelects(&ps.admin.Subject, p); sel != ps.selected[k] {
				if sel {
					ps.selected[k] = true
				} else {
					delete(ps.selected, k)
				}
				c.dirty[k] = true
			}
		}
	}
}

// adminStates lists the admin policies and the baseline.
func (c *compiler) adminStates() []*polState {
	if c.baseline == nil {
		return c.admins
	}
	return append(slices.Clip(c.admins), c.baseline)
}

// setAdminPolicy records an admin policy (baseline: the baseline one).
func (c *compiler) setAdminPolicy(a *AdminPolicy, baseline bool) {
	c.deleteAdminPolicy(a.Name, baseline)
	c.polsChanged = true
	cp := *a
	ps := &polState{pol: Policy{Key: a.key(baseline)}, selected: map[Key]bool{}, admin: &cp}
	if baseline {
		c.baseline = ps
	} else {
		i, _ := slices.BinarySearchFunc(c.admins, ps, compareAdmin)
		c.admins = slices.Insert(c.admins, i, ps)
	}
	if ps.err = a.Validate(baseline); ps.err != nil {
		return
	}
	ps.dirs = [2]bool{len(a.Ingress) > 0, len(a.Egress) > 0}
	for k, pod := range c.pods {
		if c.subjectSelects(&cp.Subject, pod) {
			ps.selected[k] = true
			c.dirty[k] = true
		}
	}
	for d, rules := range [2][]AdminRule{cp.Ingress, cp.Egress} {
		for i := range rules {
			r := &Rule{Peers: adminPeers(&rules[i]), Ports: rules[i].Ports}
			rs := c.newRule(ps, RuleID{ps.pol.Key, Direction(d), i}, r)
			rs.action = rules[i].Action
			ps.rules[d] = append(ps.rules[d], rs)
		}
	}
}

func compareAdmin(a, b *polState) int {
	if a.admin.Priority != b.admin.Priority {
		return int(a.admin.Priority) - int(b.admin.Priority)
	}
	return strings.Compare(a.admin.Name, b.admin.Name)
}

// deleteAdminPolicy removes an admin policy (baseline: the baseline one).
func (c *compiler) deleteAdminPolicy(name string, baseline bool) {
	var ps *polState
	if baseline {
		if c.baseline != nil && c.baseline.admin.Name == name {
			ps, c.baseline = c.baseline, nil
		}
	} else {
		i := slices.IndexFunc(c.admins, func(p *polState) bool { return p.admin.Name == name })
		if i >= 0 {
			ps = c.admins[i]
			c.admins = slices.Delete(c.admins, i, i+1)
		}
	}
	if ps == nil {
		return
	}
	c.polsChanged = true
	c.releaseRules(ps)
}

// releaseRules drops what a policy's rules hold and recompiles the pods
// it selected.
func (c *compiler) releaseRules(ps *polState) {
	for pk := range ps.selected {
		c.dirty[pk] = true
	}
	for d := range 2 {
		for _, rs := range ps.rules[d] {
			delete(c.dirtyRules, rs)
			delete(c.namedEgress, rs)
			if rs.def != nil {
				c.releaseDef(rs.def)
			}
			for _, g := range rs.groups {
				delete(c.sets, g.Peers)
			}
		}
	}
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
	for _, ps := range c.adminStates() {
		if ps.err == nil && pod != nil && c.subjectSelects(&ps.admin.Subject, pod) {
			ps.selected[k] = true
		} else {
			delete(ps.selected, k)
		}
	}
	for _, d := range c.defs {
		c.recheckMember(d, k, old, pod, true)
	}
	// A pod's ports or addresses may change the groups of egress rules
	// with named ports (destinations are resolved per pod).
	for rs := range c.namedEgress {
		c.dirtyRules[rs] = true
	}
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
			ps.rules[d] = append(ps.rules[d], c.newRule(ps, RuleID{p.Key, Direction(d), i}, &rules[i]))
		}
	}
}

func (c *compiler) newRule(ps *polState, id RuleID, r *Rule) *ruleState {
	rs := &ruleState{id: id, owner: ps, allPorts: len(r.Ports) == 0}
	if len(r.Peers) > 0 {
		rs.def = c.acquireDef(ps.pol.Namespace, r.Peers)
	}
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
	if id.Direction == Egress && len(rs.named) > 0 {
		c.namedEgress[rs] = true
		c.dirtyRules[rs] = true
	}
	return rs
}

// acquireDef returns the shared definition of a peer list of a policy in
// namespace ns, making it (members and all) when new.
func (c *compiler) acquireDef(ns string, peers []Peer) *peerDef {
	key, needsNS := peersKey(peers)
	if needsNS {
		key = "ns=" + ns + ";" + key
	}
	if d := c.defs[key]; d != nil {
		d.refs++
		return d
	}
	d := &peerDef{key: key, name: "peers/" + hashKey(key), ns: ns, peers: slices.Clone(peers), members: map[Key]bool{}, refs: 1}
	var blocks []AddrRange
	for i := range peers {
		peer := &peers[i]
		if b := peer.IPBlock; b != nil {
			var cut []AddrRange
			for _, e := range b.Except {
				cut = append(cut, prefixRange(e))
			}
			blocks = append(blocks, subtract([]AddrRange{prefixRange(b.CIDR)}, normalize(cut))...)
			continue
		}
		d.selPeers = true
		// Only the pods of the namespaces the peer can select.
		for _, pns := range c.peerNamespaces(peer, ns) {
			for k, pod := range c.byNS[pns] {
				if !d.members[k] && len(pod.IPs) > 0 && (peer.PodSelector == nil || peer.PodSelector.Matches(pod.Labels)) {
					d.members[k] = true
					d.addIPs(pod.IPs)
				}
			}
		}
	}
	d.blocks = normalize(blocks)
	c.defs[key] = d
	c.dirtyDefs[d] = true
	return d
}

func (c *compiler) releaseDef(d *peerDef) {
	if d.refs--; d.refs > 0 {
		return
	}
	delete(c.defs, d.key)
	delete(c.dirtyDefs, d)
	delete(c.sets, d.name)
}

// peersKey is a canonical rendering of a peer list (peers are ORed, so
// their order does not matter), and whether it depends on the policy's
// namespace (a podSelector without namespaceSelector).
func peersKey(peers []Peer) (string, bool) {
	parts := make([]string, 0, len(peers))
	needsNS := false
	for _, p := range peers {
		var b strings.Builder
		if blk := p.IPBlock; blk != nil {
			b.WriteString("block=" + blk.CIDR.String())
			ex := make([]string, len(blk.Except))
			for i, e := range blk.Except {
				ex[i] = e.String()
			}
			slices.Sort(ex)
			b.WriteString("-" + strings.Join(ex, ","))
		} else {
			if p.NamespaceSelector == nil {
				needsNS = true
				b.WriteString("ns=.")
			} else {
				b.WriteString("nssel=" + selectorKey(p.NamespaceSelector))
			}
			if p.PodSelector != nil {
				b.WriteString("|podsel=" + selectorKey(p.PodSelector))
			}
		}
		parts = append(parts, b.String())
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), ";"), needsNS
}

func selectorKey(s *Selector) string {
	var parts []string
	for k, v := range s.MatchLabels {
		parts = append(parts, "l:"+k+"="+v)
	}
	for _, r := range s.MatchExpressions {
		vs := slices.Clone(r.Values)
		slices.Sort(vs)
		parts = append(parts, "e:"+r.Key+" "+string(r.Operator)+" "+strings.Join(vs, ","))
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, "&") + "}"
}

// hashKey is a short stable digest of a definition key (FNV-1a, 64 bits).
func hashKey(s string) string {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = hex[h&15]
		h >>= 4
	}
	return string(b)
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
	c.releaseRules(ps)
	delete(c.pols, k)
	delete(c.polsByNS[k.Namespace], k)
}

// rebuildDef makes the next version of a peer set, with its delta.
func (c *compiler) rebuildDef(d *peerDef) {
	set := &AddrSet{Name: d.name, Ranges: mergeIPs(d.blocks, d.ips), gen: setGen.Add(1)}
	if old := c.sets[d.name]; old != nil {
		if slices.Equal(old.Ranges, set.Ranges) {
			return
		}
		set.base = old.gen
		set.removed, set.added = diffSorted(old.Ranges, set.Ranges)
	}
	c.sets[d.name] = set
}

// rebuildGroups recomputes the egress named-port groups of a rule; when
// they change, the pods the policy selects are recompiled.
func (c *compiler) rebuildGroups(rs *ruleState) {
	var set *AddrSet
	if rs.def != nil {
		set = c.sets[rs.def.name]
		if c.dirtyDefs[rs.def] || set == nil {
			c.rebuildDef(rs.def)
			set = c.sets[rs.def.name]
		}
	}
	groups := map[PortRange][]AddrRange{}
	for _, q := range c.pods {
		if len(q.IPs) == 0 {
			continue
		}
		for _, ps := range rs.named {
			port, ok := resolve(q, ps)
			if !ok {
				continue
			}
			for _, ip := range q.IPs {
				if set == nil || set.Contains(ip) {
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
		c.sets[name] = &AddrSet{Name: name, Ranges: normalize(groups[k]), gen: setGen.Add(1)}
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
	tier := func(ps *polState, baseline bool) {
		if ps.err != nil || !ps.selected[k] {
			return
		}
		for d := range 2 {
			for _, rs := range ps.rules[d] {
				dp := pp.Dirs[d]
				if dp == nil {
					dp = &DirProgram{}
					pp.Dirs[d] = dp
				}
				for _, cr := range rs.compile(pod) {
					acr := AdminCompiledRule{CompiledRule: cr, Action: rs.action}
					if baseline {
						dp.Baseline = append(dp.Baseline, acr)
					} else {
						dp.Admin = append(dp.Admin, acr)
					}
				}
			}
		}
	}
	for _, ps := range c.admins {
		tier(ps, false)
	}
	if c.baseline != nil {
		tier(c.baseline, true)
	}
	if pp.Dirs[Ingress] == nil && pp.Dirs[Egress] == nil {
		return nil
	}
	return pp
}

// compile gives the rule's CompiledRules for the selected pod self.
func (rs *ruleState) compile(self *Pod) []CompiledRule {
	peers := ""
	if rs.def != nil {
		peers = rs.def.name
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
	for d := range c.dirtyDefs {
		c.rebuildDef(d)
	}
	clear(c.dirtyDefs)
	for rs := range c.dirtyRules {
		c.rebuildGroups(rs)
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
	changed := make([]Key, 0, len(c.dirty))
	for k := range c.dirty {
		changed = append(changed, k)
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
		for _, ps := range c.adminStates() {
			if ps.err != nil {
				c.errors = append(c.errors, ps.err)
			}
		}
		for _, k := range slices.SortedFunc(maps.Keys(c.pols), Key.Compare) {
			if err := c.pols[k].err; err != nil {
				c.errors = append(c.errors, err)
			}
		}
		c.polsChanged = false
	}
	prog := &Program{Pods: slices.Clone(c.sorted), Errors: slices.Clone(c.errors), sets: maps.Clone(c.sets), byIP: byIP, pods: podIPs,
		gen: programGen.Add(1), base: last.gen, changed: changed}
	c.last = prog
	return prog
}

func podIPsOf(p *Pod) []netip.Addr {
	if p == nil {
		return nil
	}
	return p.IPs
}
