package nftables

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/policy"
)

// Names of the fixed objects of a PolicyDataplane table.
const (
	PolicyChainForward = "forward"
	polHeldSet         = "held"
	polSelfSet         = "self"
	polChainAdminDeny  = "admin-deny"
)

// PolicyOptions configures a PolicyDataplane.
type PolicyOptions struct {
	Options
	// Node, when set, limits enforcement to the pods of this node (their
	// ingress and egress); other pods are enforced by their own nodes.
	// Empty enforces every isolated pod of the Program.
	Node string
	// Reject refuses denied connections (TCP reset, ICMP administratively
	// prohibited) instead of dropping them.
	Reject bool
	// LogGroup, when not zero, copies denied packets to this nflog group,
	// prefixed "kubewire-deny <direction> <pod>", at most LogRate a second
	// (default 10).
	LogGroup uint16
	LogRate  uint32
}

// PolicyDataplane enforces NetworkPolicy (a policy.Program) in one
// nftables table of family inet that it owns. It implements
// policy.Dataplane; methods are serialised.
//
// The table, for IPv4 (IPv6 likewise):
//
//	chain forward { type filter hook forward priority filter;
//		ct state established,related accept
//		ip saddr @held-v4 drop; ip daddr @held-v4 drop
//		ip saddr vmap @egress-pods-v4      (pod address : jump its egress chain)
//		ip daddr vmap @ingress-pods-v4 }
//	chain ingress-<hash>-<ns/pod> {
//		ip saddr @peers-<hash>-<rule>-v4 meta l4proto tcp th dport 80 return   (one rule per allowed port range)
//		... drop }
//
// Pod addresses are matched after service DNAT (the forward hook comes
// after it): rules see the pod's own port. A label change changes the
// elements of peer sets; a pod's chain is rewritten only when its rules
// change. Traffic between a pod and its own node does not cross the
// forward hook and always passes; replies of allowed connections pass
// through the established rule.
type PolicyDataplane struct {
	tableConn
	opts PolicyOptions

	committed *polRender // nil: next sync is full
	held      map[netip.Addr]bool
	objects   int
	fullSyncs int
}

var _ policy.Dataplane = (*PolicyDataplane)(nil)

// NewPolicy validates opts, probes the kernel once per process and opens a
// connection bound to the namespace. The table is created by the first
// Sync (or Hold).
func NewPolicy(opts PolicyOptions) (*PolicyDataplane, error) {
	if opts.LogRate == 0 {
		opts.LogRate = 10
	}
	p := &PolicyDataplane{opts: opts, held: map[netip.Addr]bool{}}
	p.forget = func() { p.committed = nil } // Cleanup: the next Sync rebuilds
	if err := p.open(opts.Options, "policy-v1", polProbe.check); err != nil {
		return nil, err
	}
	return p, nil
}

// Hold closes the pod-start window: traffic from and to the addresses
// (new pods whose policies the Program may not hold yet) is dropped until
// a Sync whose Program knows their pods; that Sync releases them in the
// same transaction that installs their policy. Call it before the pod's
// addresses are usable (a CNI plugin: before ADD returns).
func (p *PolicyDataplane) Hold(ctx context.Context, ips ...netip.Addr) error {
	for i, ip := range ips {
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
			return invalid(fmt.Sprintf("Hold ips[%d]", i), ip.String(), "not a pod address")
		}
	}
	return p.withConn(ctx, func(c *nft.Conn) error { return p.syncLocked(c, nil, ips) })
}

// Sync makes the table enforce exactly prog in one transaction, writing
// only what changed since the last sync (peer set elements, the chains of
// pods whose rules changed, dispatch map elements); the table is rebuilt
// when it was deleted, flushed or added to from outside.
func (p *PolicyDataplane) Sync(ctx context.Context, prog *policy.Program) error {
	return p.withConn(ctx, func(c *nft.Conn) error { return p.syncLocked(c, prog, nil) })
}

func (p *PolicyDataplane) syncLocked(c *nft.Conn, prog *policy.Program, hold []netip.Addr) error {
	held := map[netip.Addr]bool{}
	for ip := range p.held {
		if prog == nil || !prog.Knows(ip) {
			held[ip] = true
		}
	}
	for _, ip := range hold {
		held[ip] = true
	}
	var want *polRender
	if prog == nil && p.committed != nil {
		want = p.committed.withHeld(held)
	} else {
		want = p.render(prog, p.committed, held)
	}
	full := p.committed == nil || !p.holds(c, p.objects, PolicyChainForward, polForwardRules)
	old := p.committed
	if full {
		old = &polRender{}
	}
	q := &polQueue{c: c, table: p.table, adminDeny: p.denyVerdict()}
	if full {
		p.removeTable(c)
		q.skeleton()
	}
	q.diff(old, want)
	// Each message is acknowledged: the receive buffer holds an skb per ack.
	if err := p.growBuffers(q.msgs*2048 + 1<<20); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		p.committed = nil
		return fmt.Errorf("nftables: sync policy in table inet %s: %w", p.table.Name, err)
	}
	if full {
		p.fullSyncs++
	}
	p.committed, p.held, p.objects = want, held, want.objects()
	return nil
}

// polRender is the table's desired contents beyond the fixed objects. A
// pod or set whose *policy.PodProgram or *policy.AddrSet is the one of the
// last sync keeps its rendering: the compiler hands out new pointers for
// what changed only, so a sync costs what changed.
type polRender struct {
	pods   map[policy.Key]*podRender
	sets   map[string]*setRender
	chains map[string]*svcChainSpec // shared by content (see render)
	refs   map[string]int           // pods using each chain
	held   [2][]netip.Addr          // sorted
	gen    uint64                   // of the Program rendered
}

type podRender struct {
	pp     *policy.PodProgram
	chains [2]string // entry chain names; "": no policy in that direction
	extra  [2]string // the chain admin rules pass to ("": none)
}

type setRender struct {
	src *policy.AddrSet
	// delta: the change from the committed version of the set, by family.
	delta          bool
	added, removed [2][]addrRange
}

// byFamily splits ranges by family.
func byFamily(rs []policy.AddrRange) [2][]addrRange {
	var out [2][]addrRange
	for _, x := range rs {
		out[famIndex(x.From)] = append(out[famIndex(x.From)], addrRange{From: x.From, To: x.To})
	}
	return out
}

func (r *polRender) objects() int { return polFixedObjects + 2*len(r.sets) + len(r.chains) }

func (r *polRender) withHeld(held map[netip.Addr]bool) *polRender {
	c := *r
	c.held = heldLists(held)
	return &c
}

func heldLists(held map[netip.Addr]bool) [2][]netip.Addr {
	var out [2][]netip.Addr
	for ip := range held {
		out[famIndex(ip)] = append(out[famIndex(ip)], ip)
	}
	for f := range 2 {
		slices.SortFunc(out[f], netip.Addr.Compare)
	}
	return out
}

var polDirNames = [2]string{"ingress", "egress"}

// render computes what prog (nil: nothing) needs in the table, reusing
// the renderings of prev (nil: none) for what did not change. Pods with
// the same rules share one chain, named after a hash of its contents
// (with 1,000 policies over 5,000 pods, one chain per policy rather than
// per pod): a pod whose rules change points its dispatch elements at
// another chain, and a chain's rules never change once written.
func (p *PolicyDataplane) render(prog *policy.Program, prev *polRender, held map[netip.Addr]bool) *polRender {
	if prev == nil {
		prev = &polRender{}
	}
	if prog == nil {
		return &polRender{pods: map[policy.Key]*podRender{}, sets: map[string]*setRender{}, chains: map[string]*svcChainSpec{},
			refs: map[string]int{}, held: heldLists(held)}
	}
	r := &polRender{sets: map[string]*setRender{}, held: heldLists(held), gen: prog.Generation()}
	prog.RangeSets(func(set *policy.AddrSet) {
		old := prev.sets[set.Name]
		if old != nil && old.src == set {
			r.sets[set.Name] = old
			return
		}
		sr := &setRender{src: set}
		if old != nil {
			if add, rem, ok := set.DeltaFrom(old.src); ok {
				sr.delta, sr.added, sr.removed = true, byFamily(add), byFamily(rem)
			}
		}
		r.sets[set.Name] = sr
	})
	if changed, ok := prog.ChangedSince(prev.gen); ok && prev.pods != nil {
		// Only the pods the compiler recompiled: copy and patch.
		r.pods, r.chains, r.refs = maps.Clone(prev.pods), maps.Clone(prev.chains), maps.Clone(prev.refs)
		for _, k := range changed {
			if old := r.pods[k]; old != nil {
				r.release(old)
				delete(r.pods, k)
			}
			if pp := prog.PodOf(k); pp != nil && (p.opts.Node == "" || pp.Node == p.opts.Node) {
				r.pods[k] = p.renderPod(pp, r)
			}
		}
		return r
	}
	r.pods, r.chains, r.refs = map[policy.Key]*podRender{}, map[string]*svcChainSpec{}, map[string]int{}
	for _, pp := range prog.Pods {
		if p.opts.Node != "" && pp.Node != p.opts.Node {
			continue
		}
		if pr := prev.pods[pp.Pod]; pr != nil && pr.pp == pp {
			r.pods[pp.Pod] = pr
			for _, name := range append(pr.chains[:], pr.extra[:]...) {
				if name != "" {
					r.chains[name] = prev.chains[name]
					r.refs[name]++
				}
			}
			continue
		}
		r.pods[pp.Pod] = p.renderPod(pp, r)
	}
	return r
}

// renderPod renders the chains of one pod into r (sharing those r has):
// for each direction, the admin rules (Allow: return, Deny: goto
// admin-deny, Pass: goto the next chain) and then the NetworkPolicy part:
// its allow rules and the deny, or, for a pod no NetworkPolicy isolates,
// the baseline rules (falling through: allowed).
func (p *PolicyDataplane) renderPod(pp *policy.PodProgram, r *polRender) *podRender {
	pr := &podRender{pp: pp}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	deny := &expr.Verdict{Kind: expr.VerdictGoto, Chain: polChainAdminDeny}
	for d := range 2 {
		dp := pp.Dirs[d]
		if dp == nil {
			continue
		}
		dir := policy.Direction(d)
		np := &svcChainSpec{}
		if len(dp.Policies) > 0 {
			for _, cr := range dp.Rules {
				for fam := range 2 {
					np.rules = append(np.rules, ruleExprs(dir, fam, &cr, ret)...)
				}
			}
			np.rules = append(np.rules, p.denyRules(dir, dp.Policies[0])...)
		} else {
			for _, ar := range dp.Baseline {
				for fam := range 2 {
					np.rules = append(np.rules, p.adminRuleExprs(dir, fam, &ar, ret, deny, nil)...)
				}
			}
		}
		name := r.addChain(polDirNames[d], np)
		if len(dp.Admin) > 0 {
			pass := &expr.Verdict{Kind: expr.VerdictGoto, Chain: name}
			admin := &svcChainSpec{}
			for _, ar := range dp.Admin {
				for fam := range 2 {
					admin.rules = append(admin.rules, p.adminRuleExprs(dir, fam, &ar, ret, deny, pass)...)
				}
			}
			admin.rules = append(admin.rules, svcRule{exprs: []expr.Any{pass}})
			pr.extra[d], name = name, r.addChain("admin-"+polDirNames[d], admin)
		}
		pr.chains[d] = name
	}
	return pr
}

// adminRuleExprs renders an admin or baseline rule; with LogGroup, a Deny
// is first logged (rate limited) with the rule's ID as prefix.
func (p *PolicyDataplane) adminRuleExprs(dir policy.Direction, fam int, ar *policy.AdminCompiledRule, allow, deny, pass *expr.Verdict) []svcRule {
	switch ar.Action {
	case policy.ActionAllow:
		return ruleExprs(dir, fam, &ar.CompiledRule, allow)
	case policy.ActionPass:
		return ruleExprs(dir, fam, &ar.CompiledRule, pass)
	}
	var out []svcRule
	if p.opts.LogGroup != 0 {
		out = ruleExprsThen(dir, fam, &ar.CompiledRule, p.logExprs("kubewire-deny "+ar.ID.String()))
	}
	return append(out, ruleExprs(dir, fam, &ar.CompiledRule, deny)...)
}

// addChain names ch after its contents, shares an equal chain r has, and
// counts the reference.
func (r *polRender) addChain(prefix string, ch *svcChainSpec) string {
	sum := sha256.Sum256([]byte(ch.fingerprint()))
	ch.name = prefix + "-" + hex.EncodeToString(sum[:8])
	if c, ok := r.chains[ch.name]; ok {
		ch = c
	}
	r.chains[ch.name] = ch
	r.refs[ch.name]++
	return ch.name
}

// release drops a pod's references to its chains.
func (r *polRender) release(pr *podRender) {
	for _, name := range append(pr.chains[:], pr.extra[:]...) {
		if name == "" {
			continue
		}
		if r.refs[name]--; r.refs[name] <= 0 {
			delete(r.refs, name)
			delete(r.chains, name)
		}
	}
}

// ruleExprs renders one compiled rule for one family: one nft rule per
// allowed port range, ending in return.
func ruleExprs(dir policy.Direction, fam int, cr *policy.CompiledRule, verdict expr.Any) []svcRule {
	return ruleExprsThen(dir, fam, cr, []expr.Any{verdict})
}

// ruleExprsThen is ruleExprs ending each rule with the statements then.
func ruleExprsThen(dir policy.Direction, fam int, cr *policy.CompiledRule, then []expr.Any) []svcRule {
	f := svcFamilies[fam]
	base := nfprotoIs(f.portFamily)
	if cr.Peers != "" {
		set := peerSetName(cr.Peers, fam)
		off := f.saddrOff
		if dir == policy.Egress {
			off = f.daddrOff
		}
		base = append(base,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen},
			&expr.Lookup{SourceRegister: reg1, SetName: set})
	}
	if cr.Ports == nil {
		return []svcRule{{exprs: append(base, then...)}}
	}
	var out []svcRule
	for _, pr := range cr.Ports {
		ex := append(slices.Clone(base),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{polProtos[pr.Protocol]}})
		if pr.First != 0 || pr.Last != 65535 {
			ex = append(ex, &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
			if pr.First == pr.Last {
				ex = append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binary.BigEndian.AppendUint16(nil, pr.First)})
			} else {
				ex = append(ex,
					&expr.Cmp{Op: expr.CmpOpGte, Register: reg1, Data: binary.BigEndian.AppendUint16(nil, pr.First)},
					&expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: binary.BigEndian.AppendUint16(nil, pr.Last)})
			}
		}
		out = append(out, svcRule{exprs: append(ex, then...)})
	}
	return out
}

// peerSetName names the kernel set of one family of a peer set (the rule
// refers to it even while it is empty, so that a label change only
// changes elements).
func peerSetName(name string, fam int) string {
	n := hashName("peers", name, name)
	if len(n) > maxChainNameLen-3 {
		n = n[:maxChainNameLen-3]
	}
	return n + "-" + svcFamilies[fam].suffix
}

var polProtos = map[policy.Protocol]byte{policy.TCP: unix.IPPROTO_TCP, policy.UDP: unix.IPPROTO_UDP, policy.SCTP: unix.IPPROTO_SCTP}

// denyRules end a chain: log (rate limited, the prefix naming the
// direction and the first policy isolating the pod) and drop or reject.
func (p *PolicyDataplane) denyRules(dir policy.Direction, pol policy.Key) []svcRule {
	var out []svcRule
	if p.opts.LogGroup != 0 {
		out = append(out, svcRule{exprs: p.logExprs("kubewire-deny " + polDirNames[dir] + " " + pol.String())})
	}
	return append(out, p.denyVerdict()...)
}

// logExprs copies the packet to the nflog group with prefix, rate limited.
func (p *PolicyDataplane) logExprs(prefix string) []expr.Any {
	if len(prefix) > 127 {
		prefix = prefix[:127]
	}
	return []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(p.opts.LogRate), Unit: expr.LimitTimeSecond, Burst: p.opts.LogRate},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: p.opts.LogGroup, Data: []byte(prefix)},
	}
}

// denyVerdict is drop, or reject (TCP reset, ICMP administratively
// prohibited) with Reject.
func (p *PolicyDataplane) denyVerdict() []svcRule {
	if p.opts.Reject {
		return []svcRule{
			svcRule{exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}},
			svcRule{exprs: []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}}}
	}
	return []svcRule{{exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}}}
}

// Fixed objects: the forward and admin-deny chains, per family the held
// and self sets and the two dispatch maps.
const (
	polFixedObjects = 2 + 2*4
	polForwardRules = 1 + 2*2 + 2 + 2*2
)

func polSetRef(name string, fam int) *nft.Set {
	return &nft.Set{Name: name + "-" + svcFamilies[fam].suffix}
}

func polVmapName(dir, fam int) string { return polDirNames[dir] + "-pods-" + svcFamilies[fam].suffix }

// polQueue queues a policy table change.
type polQueue struct {
	c         *nft.Conn
	table     *nft.Table
	msgs      int
	nextID    uint32
	adminDeny []svcRule // the rules of the admin-deny chain
}

func (q *polQueue) id() uint32 { q.nextID++; return q.nextID }

func (q *polQueue) skeleton() {
	q.c.AddTable(q.table)
	for fam := range 2 {
		q.c.AddSet(&nft.Set{Table: q.table, Name: polHeldSet + "-" + svcFamilies[fam].suffix, ID: q.id(), KeyType: addrType(fam),
			Comment: commentPrefix + ": new pods whose policy is not programmed yet"}, nil)
		q.c.AddSet(&nft.Set{Table: q.table, Name: polSelfSet + "-" + svcFamilies[fam].suffix, ID: q.id(), KeyType: pairTypes[fam],
			Concatenation: true, Comment: commentPrefix + ": pod . pod: a pod reaching itself through a service"}, nil)
		for dir := range 2 {
			q.c.AddSet(&nft.Set{Table: q.table, Name: polVmapName(dir, fam), ID: q.id(), IsMap: true, KeyType: addrType(fam),
				DataType: nft.TypeVerdict}, nil)
		}
	}
	q.c.AddChain(&nft.Chain{Name: PolicyChainForward, Table: q.table, Type: nft.ChainTypeFilter,
		Hooknum: nft.ChainHookForward, Priority: nft.ChainPriorityFilter})
	// Denials of admin and baseline rules (log, then drop or reject).
	q.c.AddChain(&nft.Chain{Name: polChainAdminDeny, Table: q.table})
	for _, r := range q.adminDeny {
		q.c.AddRule(&nft.Rule{Table: q.table, Chain: &nft.Chain{Name: polChainAdminDeny, Table: q.table}, Exprs: r.exprs})
	}
	add := func(exprs []expr.Any, comment string) {
		r := &nft.Rule{Table: q.table, Chain: &nft.Chain{Name: PolicyChainForward, Table: q.table}, Exprs: exprs}
		if comment != "" {
			r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
		}
		q.c.AddRule(r)
	}
	add([]expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}, commentPrefix+": replies of allowed connections")
	for fam := range 2 {
		f := svcFamilies[fam]
		for _, off := range []uint32{f.saddrOff, f.daddrOff} {
			add(append(nfprotoIs(f.portFamily),
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen},
				&expr.Lookup{SourceRegister: reg1, SetName: polHeldSet + "-" + f.suffix},
				&expr.Verdict{Kind: expr.VerdictDrop}), commentPrefix+": pods not programmed yet")
		}
	}
	for fam := range 2 {
		// A pod reaching itself through a service (hairpin: the packet
		// leaves its namespace) is allowed, as NetworkPolicy says and
		// policy.Trace does.
		f := svcFamilies[fam]
		add(append(nfprotoIs(f.portFamily),
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
			&expr.Payload{DestRegister: reg32At + f.addrLen/4, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
			&expr.Lookup{SourceRegister: reg1, SetName: polSelfSet + "-" + f.suffix},
			&expr.Verdict{Kind: expr.VerdictAccept}), commentPrefix+": a pod reaching itself")
	}
	for fam := range 2 {
		f := svcFamilies[fam]
		for dir, off := range []uint32{f.saddrOff, f.daddrOff} {
			// dir 0 here is egress (source address), 1 ingress.
			d := 1 - dir
			add(append(nfprotoIs(f.portFamily),
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen},
				&expr.Lookup{SourceRegister: reg1, SetName: polVmapName(d, fam), IsDestRegSet: true, DestRegister: 0}), "")
		}
	}
	q.msgs += 20
}

var pairTypes = [2]nft.SetDatatype{pairV4, pairV6}

// selfElement is the self-set element of a pod address: ip . ip.
func selfElement(ip netip.Addr) nft.SetElement {
	return nft.SetElement{Key: append(ip.AsSlice(), ip.AsSlice()...)}
}

// diff queues what turns old into new, in this order: dispatch and held
// elements that go, chains deleted, sets deleted, added and changed,
// chains added with their rules, dispatch and held elements that come.
func (q *polQueue) diff(old, new *polRender) {
	var delVmap, addVmap [2][2][]nft.SetElement
	var delSelf, addSelf [2][]nft.SetElement
	for k, op := range old.pods {
		np := new.pods[k]
		if np == op {
			continue
		}
		for _, ip := range op.pp.IPs {
			if np == nil || !slices.Contains(np.pp.IPs, ip) {
				delSelf[famIndex(ip)] = append(delSelf[famIndex(ip)], selfElement(ip))
			}
		}
		for d := range 2 {
			if op.chains[d] == "" {
				continue
			}
			for _, ip := range op.pp.IPs {
				if np == nil || np.chains[d] != op.chains[d] || !slices.Contains(np.pp.IPs, ip) {
					delVmap[d][famIndex(ip)] = append(delVmap[d][famIndex(ip)], nft.SetElement{Key: ip.AsSlice()})
				}
			}
		}
	}
	for k, np := range new.pods {
		op := old.pods[k]
		if np == op {
			continue
		}
		for _, ip := range np.pp.IPs {
			if op == nil || !slices.Contains(op.pp.IPs, ip) {
				addSelf[famIndex(ip)] = append(addSelf[famIndex(ip)], selfElement(ip))
			}
		}
		for d := range 2 {
			name := np.chains[d]
			if name == "" {
				continue
			}
			for _, ip := range np.pp.IPs {
				if op == nil || op.chains[d] != name || !slices.Contains(op.pp.IPs, ip) {
					addVmap[d][famIndex(ip)] = append(addVmap[d][famIndex(ip)],
						nft.SetElement{Key: ip.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: name}})
				}
			}
		}
	}
	var delChains, addChains []string
	for n := range old.chains {
		if new.chains[n] == nil {
			delChains = append(delChains, n)
		}
	}
	for n := range new.chains {
		if old.chains[n] == nil {
			addChains = append(addChains, n)
		}
	}
	for d := range 2 {
		for f := range 2 {
			q.elems(&nft.Set{Name: polVmapName(d, f)}, delVmap[d][f], false)
		}
	}
	for f := range 2 {
		q.elems(&nft.Set{Name: polSelfSet + "-" + svcFamilies[f].suffix}, delSelf[f], false)
	}
	var heldAdds [2][]nft.SetElement
	for f := range 2 {
		var del []nft.SetElement
		for _, ip := range old.held[f] {
			if _, ok := slices.BinarySearchFunc(new.held[f], ip, netip.Addr.Compare); !ok {
				del = append(del, nft.SetElement{Key: ip.AsSlice()})
			}
		}
		for _, ip := range new.held[f] {
			if _, ok := slices.BinarySearchFunc(old.held[f], ip, netip.Addr.Compare); !ok {
				heldAdds[f] = append(heldAdds[f], nft.SetElement{Key: ip.AsSlice()})
			}
		}
		q.elems(&nft.Set{Name: polHeldSet + "-" + svcFamilies[f].suffix}, del, false)
	}
	// Flush them all first: an admin chain refers to the chain it passes to.
	slices.Sort(delChains)
	for _, n := range delChains {
		q.c.FlushChain(&nft.Chain{Name: n, Table: q.table})
		q.msgs++
	}
	for _, n := range delChains {
		q.c.DelChain(&nft.Chain{Name: n, Table: q.table})
		q.msgs++
	}
	for _, n := range sortedKeys(old.sets) {
		if _, ok := new.sets[n]; !ok {
			for fam := range 2 {
				q.c.DelSet(&nft.Set{Table: q.table, Name: peerSetName(n, fam)})
				q.msgs++
			}
		}
	}
	for _, n := range sortedKeys(new.sets) {
		ns, os := new.sets[n], old.sets[n]
		if ns == os {
			continue
		}
		var del, add [2][]addrRange
		switch {
		case os == nil:
			add = byFamily(ns.src.Ranges)
		case ns.delta:
			del, add = ns.removed, ns.added
		default:
			o, n := byFamily(os.src.Ranges), byFamily(ns.src.Ranges)
			for fam := range 2 {
				del[fam], add[fam] = diffRanges(o[fam], n[fam])
			}
		}
		for fam := range 2 {
			s := &nft.Set{Table: q.table, Name: peerSetName(n, fam), ID: q.id(), KeyType: addrType(fam), Interval: true}
			if os == nil {
				q.c.AddSet(s, nil)
				q.msgs++
			}
			q.elems(s, rangeElements(del[fam]), false)
			q.elems(s, rangeElements(add[fam]), true)
		}
	}
	slices.Sort(addChains)
	for _, n := range addChains {
		q.c.AddChain(&nft.Chain{Name: n, Table: q.table})
		q.msgs++
	}
	for _, n := range addChains {
		ch := new.chains[n]
		for _, r := range ch.rules {
			q.c.AddRule(&nft.Rule{Table: q.table, Chain: &nft.Chain{Name: ch.name, Table: q.table}, Exprs: r.exprs})
			q.msgs++
		}
	}
	for d := range 2 {
		for f := range 2 {
			slices.SortFunc(addVmap[d][f], func(a, b nft.SetElement) int { return slices.Compare(a.Key, b.Key) })
			q.elems(&nft.Set{Name: polVmapName(d, f), IsMap: true, DataType: nft.TypeVerdict}, addVmap[d][f], true)
		}
	}
	for f := range 2 {
		q.elems(&nft.Set{Name: polHeldSet + "-" + svcFamilies[f].suffix}, heldAdds[f], true)
		slices.SortFunc(addSelf[f], func(a, b nft.SetElement) int { return slices.Compare(a.Key, b.Key) })
		q.elems(&nft.Set{Name: polSelfSet + "-" + svcFamilies[f].suffix, Concatenation: true, KeyType: pairTypes[f]}, addSelf[f], true)
	}
}

func (q *polQueue) elems(s *nft.Set, els []nft.SetElement, add bool) {
	s.Table = q.table
	for chunk := range slices.Chunk(els, maxElemsPerMsg) {
		if add {
			_ = q.c.SetAddElements(s, chunk)
		} else {
			_ = q.c.SetDeleteElements(s, chunk)
		}
		q.msgs++
	}
}

// rangeElements encodes ranges as interval elements: a start element and
// an end element (the address after the range) each, so a range can be
// deleted on its own later.
func rangeElements(rs []addrRange) []nft.SetElement {
	var els []nft.SetElement
	for _, r := range rs {
		els = append(els, nft.SetElement{Key: r.From.AsSlice()})
		if end := r.To.Next(); end.IsValid() {
			els = append(els, nft.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

// diffRanges returns the ranges of old not in new and of new not in old.
func diffRanges(old, new []addrRange) (del, add []addrRange) {
	in := func(rs []addrRange, r addrRange) bool {
		_, ok := slices.BinarySearchFunc(rs, r, func(a, b addrRange) int {
			if c := a.From.Compare(b.From); c != 0 {
				return c
			}
			return a.To.Compare(b.To)
		})
		return ok
	}
	for _, r := range old {
		if !in(new, r) {
			del = append(del, r)
		}
	}
	for _, r := range new {
		if !in(old, r) {
			add = append(add, r)
		}
	}
	return del, add
}

func sortedAddrKeys[V any](m map[netip.Addr]V) []netip.Addr {
	keys := make([]netip.Addr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, netip.Addr.Compare)
	return keys
}

var polProbe = &featureProbe{run: func() error { return netns.DoFresh(runPolProbe) }}

// runPolProbe builds the policy table with one isolated pod in the current
// (throwaway) namespace.
func runPolProbe() error {
	return runProbeSteps(func(c *nft.Conn) []probeStep {
		d := &PolicyDataplane{opts: PolicyOptions{LogGroup: 1, LogRate: 10}}
		d.table = &nft.Table{Family: nft.TableFamilyINet, Name: "kubewire-probe"}
		q := &polQueue{c: c, table: d.table}
		pod := policy.Pod{Key: policy.Key{Namespace: "probe", Name: "a"}, Labels: policy.Labels{"a": "b"},
			IPs: []netip.Addr{netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("fd00:10:244::2")}}
		prog := policy.Compile(&policy.Cluster{Pods: []policy.Pod{pod}, Policies: []policy.Policy{{Key: policy.Key{Namespace: "probe", Name: "p"},
			Ingress: []policy.Rule{{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8")}}},
				Ports: []policy.PortSpec{{Protocol: policy.TCP, Port: 80, EndPort: 90}}}}}}})
		want := d.render(prog, nil, nil)
		return []probeStep{
			{"nftables inet filter chains, verdict maps on addresses, ct state", "5.2", func() error { q.skeleton(); return nil }},
			{"nftables interval sets, log to nflog with a limit", "5.2", func() error { q.diff(&polRender{}, want); return nil }},
		}
	})
}
