package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"unsafe"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/service"
)

// ServiceProxy programs Kubernetes services (kube-proxy's job, nftables
// mode) into one nftables table of family inet that it owns. It implements
// service.Dataplane. All methods are safe for concurrent use; they are
// serialised.
type ServiceProxy struct {
	tableConn
	cfg svcConfig

	// Guarded by tableConn.mu (only touched inside withConn).
	committed *svcCommitted // after the last sync; nil: next sync is full
	eff       svcConfig     // cfg with the node-port addresses the table was built with
	objects   int           // chains and sets the table should count
	postRules int           // rules of nat-postrouting
	fullSyncs int           // full rebuilds done, for tests
}

var _ service.Dataplane = (*ServiceProxy)(nil)

// NewService validates opts, probes (once per process, in a throwaway
// namespace) that the kernel has what the ruleset needs, and opens an
// nftables netlink connection bound to the namespace. A missing kernel
// feature is reported as a *driver.UnsupportedError. It changes nothing in
// the namespace: the table is created by the first Sync.
func NewService(opts ServiceOptions) (*ServiceProxy, error) {
	cfg, err := buildSvcConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &ServiceProxy{cfg: cfg}
	s.forget = func() { s.committed = nil } // Cleanup: the next Sync rebuilds
	if err := s.open(opts.Options, "service-v2", svcProbe.check); err != nil {
		return nil, err
	}
	return s, nil
}

// Sync makes the table serve exactly st, in one netlink transaction. What
// the last sync committed is kept: unless hint.Full is set, the previous
// sync failed, or the table was deleted, flushed or added to from outside,
// only the elements (and, for ports with session affinity, the chains) of
// the service ports that changed are written. Otherwise the table is
// deleted and rebuilt within the batch. With hint.Exact only the ports in
// hint.Changed are looked at (and validated), so a small change costs the
// same with 10 services or 10,000. An invalid State is refused
// (errors.Is(err, ErrInvalid)) before anything is sent.
func (s *ServiceProxy) Sync(ctx context.Context, st *service.State, hint service.Hint) error {
	var (
		full bool
		plan *svcPlan
	)
	if err := validateNodeAddresses(st); err != nil {
		return err
	}
	err := s.withConn(ctx, func(c *nft.Conn) error {
		eff := s.cfg.withNodeAddresses(st.NodeAddresses)
		full = hint.Full || s.committed == nil || !eff.sameNodePorts(&s.eff) || !s.holds(c, s.objects, SvcChainNatPostrouting, s.postRules)
		if full || !hint.Exact {
			if err := validatePorts(st); err != nil {
				return err
			}
		}
		cm := s.committed
		s.committed = nil // a failure below leaves the next sync full
		if full {
			cm = newCommitted()
			plan = eff.planSync(cm, st)
		} else if hint.Exact {
			var err error
			if plan, err = eff.planChanged(cm, st, hint.Changed); err != nil {
				s.committed = cm // nothing was changed
				return err
			}
		} else {
			plan = eff.planSync(cm, st)
		}
		if !full && plan.empty() {
			s.committed = cm
			return nil
		}
		q := svcQueue{c: c, table: s.table, nextID: firstDynamicSetID, cfg: &eff, sets: map[setRef]*nft.Set{}}
		if full {
			s.removeTable(c)
			if err := q.skeleton(); err != nil {
				return err
			}
		}
		if err := q.plan(plan); err != nil {
			return err
		}
		if err := s.growBuffers(q.msgs*1024 + q.elemBytes + 1<<20); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return err
		}
		if full {
			s.objects, s.postRules = q.skeletonObjects, q.postRules
			s.fullSyncs++
		}
		s.objects += plan.objDelta
		s.committed, s.eff = cm, eff
		return nil
	})
	if err != nil {
		return fmt.Errorf("nftables: sync services in table inet %s: %w", s.table.Name, err)
	}
	s.log.DebugContext(ctx, "services synced", "ports", len(st.Ports), "full", full,
		"elementsAdded", len(plan.addElems), "elementsDeleted", len(plan.delElems),
		"chainsAdded", len(plan.addChains), "chainsRewritten", len(plan.flush), "chainsDeleted", len(plan.delChains))
	return nil
}

func clonePort(p *service.PortState) *service.PortState {
	c := *p
	c.ClusterIPs = slices.Clone(p.ClusterIPs)
	c.ExternalIPs = slices.Clone(p.ExternalIPs)
	c.LoadBalancerIPs = slices.Clone(p.LoadBalancerIPs)
	c.SourceRanges = slices.Clone(p.SourceRanges)
	c.InternalEndpoints = slices.Clone(p.InternalEndpoints)
	c.ExternalEndpoints = slices.Clone(p.ExternalEndpoints)
	c.ClusterEndpoints = slices.Clone(p.ClusterEndpoints)
	return &c
}

// svcQueue queues objects on a connection, counting the messages (to size
// the socket buffers) and allocating set IDs within the batch.
type svcQueue struct {
	c               *nft.Conn
	table           *nft.Table
	cfg             *svcConfig
	sets            map[setRef]*nft.Set // queued in this batch or looked up
	nextID          uint32
	msgs            int
	elemBytes       int // an estimate of the bytes of the elements queued
	skeletonObjects int
	postRules       int
}

func (q *svcQueue) chain(name string) *nft.Chain { return &nft.Chain{Name: name, Table: q.table} }

func (q *svcQueue) addRule(chain string, exprs []expr.Any, comment string) {
	r := &nft.Rule{Table: q.table, Chain: q.chain(chain), Exprs: exprs}
	if comment != "" {
		r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
	}
	q.c.AddRule(r)
	q.msgs++
}

func (q *svcQueue) addSet(s *nft.Set, els []nft.SetElement) error {
	q.msgs += 1 + len(els)/maxElemsPerMsg + 1
	return q.c.AddSet(s, els)
}

// set returns the set r (its ID that of this batch when queued here).
func (q *svcQueue) set(r setRef) *nft.Set {
	s, ok := q.sets[r]
	if !ok {
		s = q.nftSet(r)
		q.sets[r] = s
	}
	return s
}

// lookup is "<registers from reg1> @r" (invert: "!= @r").
func (q *svcQueue) lookup(r setRef, invert bool) *expr.Lookup {
	s := q.set(r)
	return &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, Invert: invert}
}

// Names of the fixed chains.
const (
	svcChainServiceIPs = "service-ips"
	svcChainNodePorts  = "nodeports"
)

// skeleton queues the table, its fixed sets, chains and rules. For IPv4
// (IPv6 likewise), "K" standing for "ip daddr . meta l4proto . th dport"
// and "NK" for "meta l4proto . th dport":
//
//	chain nat-prerouting, nat-output { type nat hook ... priority dstnat; jump services }
//	chain nat-postrouting { type nat hook postrouting priority srcnat;
//		meta mark & 0x4000 != 0 meta mark set meta mark & ~0x4000 masquerade fully-random
//		ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade fully-random }
//	chain services {
//		K @service-keys-v4 goto service-ips
//		NK @nodeport-keys-v4 <node port address> goto nodeports }
//	chain service-ips {
//		K @firewall-v4 K . ip saddr != @firewall-allow-v4 fib saddr type != local drop
//		K vmap @affinity-ips-v4
//		K @mark-outside-v4 ip saddr != @cluster-cidrs-v4 meta mark set meta mark | 0x4000
//		K @mark-v4 meta mark set meta mark | 0x4000
//		fib saddr type local K @local-mark-v4 meta mark set meta mark | 0x4000
//		jump service-local-dnat; jump service-dnat }
//	chain nodeports { the same for node port keys }
//	chain service-dnat { per endpoint count N in use:
//		dnat ip to K . numgen random mod N map @service-dnat-nN-v4 }
//	chain service-local-dnat { per N: from a cluster CIDR, or from the node:
//		ip saddr @cluster-cidrs-v4 dnat ip to K . numgen random mod N map @service-local-dnat-nN-v4
//		fib saddr type local dnat ip to K . numgen random mod N map @service-local-dnat-nN-v4 }
//	chain filter-input, filter-forward, filter-output { type filter hook ... priority -1;
//		ct state new jump endpoints-check }
//	chain endpoints-check {
//		K @no-endpoints-reject-v4 goto reject-chain
//		K @no-endpoints-drop-v4 drop
//		(node port keys likewise)
//		ip daddr @cluster-ips-v4 goto reject-chain }
//	chain reject-chain { meta l4proto tcp reject with tcp reset; reject }
//
// The filter chains run after DNAT: a new connection still addressed to a
// service address was not DNATed, because the service has no endpoint
// (for this traffic on this node) or the port is not a service port.
func (q *svcQueue) skeleton() error {
	cfg := q.cfg
	q.c.AddTable(q.table)
	q.msgs += 3 // the table deleted and added
	for fam := range 2 {
		for kind := range setKind(numFixedSetKinds) {
			if err := q.addSet(q.set(setRef{kind: kind, fam: uint8(fam)}), nil); err != nil {
				return err
			}
			q.skeletonObjects++
		}
		cidrs := &nft.Set{Table: q.table, Name: clusterCIDRSet(fam), ID: clusterCIDRSetID(fam), KeyType: addrType(fam),
			Interval: true, Comment: commentPrefix + ": cluster (pod) ranges"}
		if err := q.addSet(cidrs, intervalElements(cfg.clusterCIDRs[fam])); err != nil {
			return err
		}
		q.skeletonObjects++
		if !cfg.anyNodePort {
			var els []nft.SetElement
			for _, a := range cfg.nodePortIPs[fam] {
				els = append(els, nft.SetElement{Key: a.AsSlice()})
			}
			ips := &nft.Set{Table: q.table, Name: nodePortIPsSet(fam), ID: nodePortIPsSetID(fam), KeyType: addrType(fam),
				Comment: commentPrefix + ": addresses node ports answer on"}
			if err := q.addSet(ips, els); err != nil {
				return err
			}
			q.skeletonObjects++
		}
	}
	filterPrio := nft.ChainPriorityRef(*nft.ChainPriorityFilter - 1)
	for _, ch := range []*nft.Chain{
		{Name: SvcChainNatPrerouting, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookPrerouting, Priority: nft.ChainPriorityNATDest},
		{Name: SvcChainNatOutput, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookOutput, Priority: nft.ChainPriorityNATDest},
		{Name: SvcChainNatPostrouting, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookPostrouting, Priority: nft.ChainPriorityNATSource},
		{Name: SvcChainFilterInput, Type: nft.ChainTypeFilter, Hooknum: nft.ChainHookInput, Priority: filterPrio},
		{Name: SvcChainFilterForward, Type: nft.ChainTypeFilter, Hooknum: nft.ChainHookForward, Priority: filterPrio},
		{Name: SvcChainFilterOutput, Type: nft.ChainTypeFilter, Hooknum: nft.ChainHookOutput, Priority: filterPrio},
		{Name: SvcChainServices}, {Name: svcChainServiceIPs}, {Name: svcChainNodePorts},
		{Name: setKindNames[setLocalDNAT]}, {Name: setKindNames[setDNAT]},
		{Name: setKindNames[setNPLocalDNAT]}, {Name: setKindNames[setNPDNAT]},
		{Name: SvcChainEndpointsCheck}, {Name: SvcChainReject},
	} {
		ch.Table = q.table
		q.c.AddChain(ch)
		q.msgs++
		q.skeletonObjects++
	}
	jump := func(kind expr.VerdictKind, to string) *expr.Verdict { return &expr.Verdict{Kind: kind, Chain: to} }
	q.addRule(SvcChainNatPrerouting, []expr.Any{jump(expr.VerdictJump, SvcChainServices)}, commentPrefix+": services")
	q.addRule(SvcChainNatOutput, []expr.Any{jump(expr.VerdictJump, SvcChainServices)}, commentPrefix+": services")
	mark := binaryutil.NativeEndian.PutUint32(svcMasqMark)
	q.addRule(SvcChainNatPostrouting, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mark, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(^uint32(svcMasqMark)), Xor: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true},
		&expr.Masq{FullyRandom: true},
	}, commentPrefix+": masquerade marked service traffic")
	q.postRules = 1
	for fam := range 2 {
		f := svcFamilies[fam]
		q.addRule(SvcChainNatPostrouting, slices.Concat(nfprotoIs(f.portFamily), ctStatusDNAT(), []expr.Any{
			saddrLoad(f),
			&expr.Payload{DestRegister: reg32At + f.addrLen/4, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
			q.lookup(setRef{kind: setHairpin, fam: uint8(fam)}, false),
			&expr.Masq{FullyRandom: true},
		}), commentPrefix+": hairpin (a pod reaching itself through a service)")
		q.postRules++
	}
	ctNew := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		jump(expr.VerdictJump, SvcChainEndpointsCheck),
	}
	for _, ch := range []string{SvcChainFilterInput, SvcChainFilterForward, SvcChainFilterOutput} {
		q.addRule(ch, ctNew, commentPrefix+": refuse or drop service traffic without endpoints")
	}

	ref := func(kind setKind, fam int) setRef { return setRef{kind: kind, fam: uint8(fam)} }
	for fam := range 2 {
		f := svcFamilies[fam]
		q.addRule(SvcChainServices, slices.Concat(svcKeyLoad(f), []expr.Any{q.lookup(ref(setServiceKeys, fam), false),
			jump(expr.VerdictGoto, svcChainServiceIPs)}), "")
	}
	for fam := range 2 {
		if !cfg.nodePortsOn(fam) {
			continue
		}
		f := svcFamilies[fam]
		q.addRule(SvcChainServices, slices.Concat(npKeyLoad(f), []expr.Any{q.lookup(ref(setNodePortKeys, fam), false)},
			q.nodePortAddr(fam), []expr.Any{jump(expr.VerdictGoto, svcChainNodePorts)}), commentPrefix+": node ports "+f.name)
	}
	for fam := range 2 {
		f := svcFamilies[fam]
		fw := slices.Concat(svcKeyLoad(f), []expr.Any{q.lookup(ref(setFirewall, fam), false)}, svcKeyReload(f), []expr.Any{
			&expr.Payload{DestRegister: reg32At + f.addrLen/4 + 2, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
			q.lookup(ref(setFirewallAllow, fam), true),
			&expr.Fib{Register: reg1, FlagSADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Verdict{Kind: expr.VerdictDrop},
		})
		q.addRule(svcChainServiceIPs, fw, commentPrefix+": loadBalancerSourceRanges")
	}
	for fam := range 2 {
		f := svcFamilies[fam]
		q.addRule(svcChainServiceIPs, append(svcKeyLoad(f), vmapLookup(q.set(ref(setAffinityIPs, fam)))), "")
		q.addRule(svcChainNodePorts, append(npKeyLoad(f), vmapLookup(q.set(ref(setAffinityNP, fam)))), "")
	}
	for fam := range 2 {
		f := svcFamilies[fam]
		if len(cfg.clusterCIDRs[fam]) > 0 && !cfg.masqueradeAll {
			q.addRule(svcChainServiceIPs, slices.Concat(nfprotoIs(f.portFamily), []expr.Any{saddrLoad(f),
				&expr.Lookup{SourceRegister: reg1, SetName: clusterCIDRSet(fam), SetID: clusterCIDRSetID(fam), Invert: true}},
				svcKeyReload(f), []expr.Any{q.lookup(ref(setMarkOutside, fam), false)}, markExprs()), "")
		}
		q.addRule(svcChainServiceIPs, slices.Concat(svcKeyLoad(f), []expr.Any{q.lookup(ref(setMark, fam), false)}, markExprs()), "")
		q.addRule(svcChainNodePorts, slices.Concat(npKeyLoad(f), []expr.Any{q.lookup(ref(setNPMark, fam), false)}, markExprs()), "")
		q.addRule(svcChainServiceIPs, slices.Concat(nfprotoIs(f.portFamily), fibSaddrLocal(), svcKeyReload(f),
			[]expr.Any{q.lookup(ref(setLocalMark, fam), false)}, markExprs()), "")
		q.addRule(svcChainNodePorts, slices.Concat(nfprotoIs(f.portFamily), fibSaddrLocal(), npKeyReload(),
			[]expr.Any{q.lookup(ref(setNPLocalMark, fam), false)}, markExprs()), "")
	}
	q.addRule(svcChainServiceIPs, []expr.Any{jump(expr.VerdictJump, setKindNames[setLocalDNAT])}, "")
	q.addRule(svcChainServiceIPs, []expr.Any{jump(expr.VerdictJump, setKindNames[setDNAT])}, "")
	q.addRule(svcChainNodePorts, []expr.Any{jump(expr.VerdictJump, setKindNames[setNPLocalDNAT])}, "")
	q.addRule(svcChainNodePorts, []expr.Any{jump(expr.VerdictJump, setKindNames[setNPDNAT])}, "")

	for fam := range 2 {
		f := svcFamilies[fam]
		q.addRule(SvcChainEndpointsCheck, slices.Concat(svcKeyLoad(f), []expr.Any{q.lookup(ref(setRejectIPs, fam), false),
			jump(expr.VerdictGoto, SvcChainReject)}), "")
		q.addRule(SvcChainEndpointsCheck, slices.Concat(svcKeyLoad(f), []expr.Any{q.lookup(ref(setDropIPs, fam), false),
			&expr.Verdict{Kind: expr.VerdictDrop}}), "")
		if cfg.nodePortsOn(fam) {
			q.addRule(SvcChainEndpointsCheck, slices.Concat(npKeyLoad(f), []expr.Any{q.lookup(ref(setRejectNP, fam), false)},
				q.nodePortAddr(fam), []expr.Any{jump(expr.VerdictGoto, SvcChainReject)}), "")
			q.addRule(SvcChainEndpointsCheck, slices.Concat(npKeyLoad(f), []expr.Any{q.lookup(ref(setDropNP, fam), false)},
				q.nodePortAddr(fam), []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}), "")
		}
	}
	for fam := range 2 {
		f := svcFamilies[fam]
		q.addRule(SvcChainEndpointsCheck, slices.Concat(nfprotoIs(f.portFamily), []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
			q.lookup(ref(setClusterIPs, fam), false),
			jump(expr.VerdictGoto, SvcChainReject),
		}), commentPrefix+": refuse other ports of ClusterIPs")
	}
	q.addRule(SvcChainReject, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	}, "")
	q.addRule(SvcChainReject, []expr.Any{
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
	}, "")
	return nil
}

func addrType(fam int) nft.SetDatatype { return typeAddrOnly[fam] }

// svcKeyLoad is "meta nfproto ipvX ip daddr . meta l4proto . th dport"
// into the registers from reg1 on.
func svcKeyLoad(f svcFamily) []expr.Any { return append(nfprotoIs(f.portFamily), svcKeyReload(f)...) }

// svcKeyReload is svcKeyLoad after the family was checked.
func svcKeyReload(f svcFamily) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32At + f.addrLen/4},
		&expr.Payload{DestRegister: reg32At + f.addrLen/4 + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// npKeyLoad is "meta nfproto ipvX meta l4proto . th dport".
func npKeyLoad(f svcFamily) []expr.Any { return append(nfprotoIs(f.portFamily), npKeyReload()...) }

func npKeyReload() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Payload{DestRegister: reg32At + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

func vmapLookup(s *nft.Set) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, IsDestRegSet: true, DestRegister: 0}
}

func ctStatusDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// nodePortAddr matches the addresses node ports answer on: "ip daddr !=
// 127.0.0.0/8 fib daddr type local", or "ip daddr @nodeport-ips-v4" with
// NodePortAddresses.
func (q *svcQueue) nodePortAddr(fam int) []expr.Any {
	f := svcFamilies[fam]
	ex := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen}}
	if q.cfg.anyNodePort {
		return append(ex,
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen, Mask: f.loopMask, Xor: make([]byte, f.addrLen)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: f.loopback},
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)})
	}
	return append(ex, &expr.Lookup{SourceRegister: reg1, SetName: nodePortIPsSet(fam), SetID: nodePortIPsSetID(fam)})
}

// countRules are the rules that DNAT with the per-count map r, in the
// chain named after r's kind (see skeleton).
func (q *svcQueue) countRules(r setRef) [][]expr.Any {
	fam := int(r.fam)
	f := svcFamilies[fam]
	load, ordReg := svcKeyReload(f), uint32(reg32At+f.addrLen/4+2)
	if r.nodePortKeyed() {
		load, ordReg = npKeyReload(), reg32At+2
	}
	m := q.set(r)
	dnat := slices.Concat(load, []expr.Any{
		&expr.Numgen{Register: ordReg, Modulus: uint32(r.n), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: reg1, SetName: m.Name, SetID: m.ID, IsDestRegSet: true, DestRegister: reg1},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.natFam, RegAddrMin: reg1, RegProtoMin: reg32At + f.addrLen/4, Specified: true},
	})
	if r.kind == setDNAT || r.kind == setNPDNAT {
		return [][]expr.Any{slices.Concat(nfprotoIs(f.portFamily), dnat)}
	}
	// The short-circuit: from a cluster CIDR, or from the node.
	var rules [][]expr.Any
	if len(q.cfg.clusterCIDRs[fam]) > 0 {
		rules = append(rules, slices.Concat(nfprotoIs(f.portFamily), []expr.Any{saddrLoad(f),
			&expr.Lookup{SourceRegister: reg1, SetName: clusterCIDRSet(fam), SetID: clusterCIDRSetID(fam)}}, dnat))
	}
	return append(rules, slices.Concat(nfprotoIs(f.portFamily), fibSaddrLocal(), dnat))
}

// countRuleHandles finds the rules of the chain of kind k that use one of
// the maps in refs.
func (q *svcQueue) countRuleHandles(k setKind, refs []setRef) ([]*nft.Rule, error) {
	names := map[string]bool{}
	for _, r := range refs {
		names[r.name()] = true
	}
	rules, err := q.c.GetRules(q.table, q.chain(setKindNames[k]))
	if err != nil {
		return nil, fmt.Errorf("list chain %s: %w", setKindNames[k], err)
	}
	var out []*nft.Rule
	for _, r := range rules {
		for _, e := range r.Exprs {
			if l, ok := e.(*expr.Lookup); ok && names[l.SetName] {
				out = append(out, r)
				break
			}
		}
	}
	return out, nil
}

// plan queues p (see svcPlan for the order).
func (q *svcQueue) plan(p *svcPlan) error {
	if err := q.elements(p.delElems, false); err != nil {
		return err
	}
	for _, name := range sortedKeys(p.flushVmaps) {
		els := vmapElements(make([]string, p.flushVmaps[name]))
		if err := q.c.SetDeleteElements(q.vmapSet(name), els); err != nil {
			return err
		}
		q.msgs++
	}
	// A dispatch map is referenced by its chain's rule and references
	// endpoint chains: empty the chains, then delete the maps, then the
	// chains.
	for _, name := range append(slices.Clone(p.flush), p.delVmaps...) {
		q.c.FlushChain(q.chain(name))
		q.msgs++
	}
	// The rules of per-count maps that go, found by the map they use.
	byKind := map[setKind][]setRef{}
	for _, r := range p.delCountSets {
		byKind[r.kind] = append(byKind[r.kind], r)
	}
	for k := setDNAT; k <= setNPLocalDNAT; k++ {
		if len(byKind[k]) == 0 {
			continue
		}
		rules, err := q.countRuleHandles(k, byKind[k])
		if err != nil {
			return err
		}
		for _, r := range rules {
			if err := q.c.DelRule(r); err != nil {
				return err
			}
			q.msgs++
		}
	}
	for _, name := range p.delVmaps {
		q.c.DelSet(q.vmapSet(name))
		q.msgs++
	}
	for _, name := range p.delChains {
		q.c.DelChain(q.chain(name))
		q.msgs++
	}
	for _, s := range p.delSets {
		q.c.DelSet(&nft.Set{Table: q.table, Name: s.name})
		q.msgs++
	}
	for _, r := range p.delCountSets {
		q.c.DelSet(&nft.Set{Table: q.table, Name: r.name()})
		q.msgs++
	}
	for _, s := range p.addSets {
		set := &nft.Set{Table: q.table, Name: s.name, ID: q.id(), KeyType: addrType(s.fam), HasTimeout: true, Dynamic: true}
		if err := q.addSet(set, nil); err != nil {
			return err
		}
	}
	for _, r := range p.addCountSets {
		if err := q.addSet(q.set(r), nil); err != nil {
			return err
		}
	}
	for _, name := range p.addChains {
		q.c.AddChain(q.chain(name))
		q.msgs++
	}
	for _, name := range sortedKeys(p.addVmaps) {
		if err := q.addSet(q.vmapSet(name), vmapElements(p.addVmaps[name])); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(p.fillVmaps) {
		if err := q.c.SetAddElements(q.vmapSet(name), vmapElements(p.fillVmaps[name])); err != nil {
			return err
		}
		q.msgs++
	}
	for _, ch := range p.rules {
		for _, r := range ch.rules {
			q.addRule(ch.name, r.exprs, "")
		}
	}
	for _, r := range p.addCountSets {
		for _, ex := range q.countRules(r) {
			q.addRule(setKindNames[r.kind], ex, "")
		}
	}
	return q.elements(p.addElems, true)
}

// elements queues the addition or deletion of els, grouped by set.
func (q *svcQueue) elements(els []renderedElem, add bool) error {
	sizes := map[setRef]int{}
	for _, e := range els {
		sizes[e.ref]++
	}
	bySet := make(map[setRef][]nft.SetElement, len(sizes))
	refs := make([]setRef, 0, len(sizes))
	for r, n := range sizes {
		bySet[r] = make([]nft.SetElement, 0, n)
		refs = append(refs, r)
	}
	for _, e := range els {
		se := nft.SetElement{Key: readOnlyBytes(e.key)}
		q.elemBytes += 48 + len(e.key) + len(e.val) // attribute headers, key, value
		switch {
		case e.ref.kind == setFirewallAllow:
			se.KeyEnd = readOnlyBytes(e.val)
		case !add:
		case e.ref.kind == setAffinityIPs || e.ref.kind == setAffinityNP:
			se.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.val}
		case e.val != "":
			se.Val = readOnlyBytes(e.val)
		}
		bySet[e.ref] = append(bySet[e.ref], se)
	}
	slices.SortFunc(refs, compareSetRefs)
	for _, r := range refs {
		s := q.set(r)
		for chunk := range slices.Chunk(bySet[r], maxElemsPerMsg) {
			var err error
			if add {
				err = q.c.SetAddElements(s, chunk)
			} else {
				err = q.c.SetDeleteElements(s, chunk)
			}
			if err != nil {
				return fmt.Errorf("elements of %s: %w", s.Name, err)
			}
			q.msgs++
		}
	}
	return nil
}

// readOnlyBytes returns the bytes of s without copying them: the netlink
// encoder only reads element keys and values, and a full sync of 10k
// services would otherwise copy 100k of each.
func readOnlyBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// vmapSet is the dispatch map of an affinity chain, named after it.
func (q *svcQueue) vmapSet(chain string) *nft.Set {
	return &nft.Set{Table: q.table, Name: chain, ID: q.id(), IsMap: true, KeyType: nft.TypeInteger,
		DataType: nft.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

func vmapElements(targets []string) []nft.SetElement {
	els := make([]nft.SetElement, len(targets))
	for i, to := range targets {
		els[i] = nft.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: to}}
	}
	return els
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (q *svcQueue) id() uint32 {
	q.nextID++
	return q.nextID
}

var svcProbe = &featureProbe{run: func() error { return netns.DoFresh(runSvcProbe) }}

// runSvcProbe builds, step by step, the service ruleset with a service of
// two endpoints, eTP Local, a source range and a service with affinity in
// the current (throwaway) namespace.
func runSvcProbe() error {
	return runProbeSteps(func(c *nft.Conn) []probeStep {
		cfg, _ := buildSvcConfig(ServiceOptions{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
		q := &svcQueue{c: c, table: &nft.Table{Family: nft.TableFamilyINet, Name: "kubewire-probe"}, nextID: firstDynamicSetID,
			cfg: &cfg, sets: map[setRef]*nft.Set{}}
		ep := func(last byte) service.Target {
			return service.Target{Addr: netip.AddrFrom4([4]byte{10, 244, 0, last}), Port: 80, Local: last == 2}
		}
		port := service.PortState{
			Name: service.PortName{Service: service.Name{Namespace: "probe", Name: "probe"}, Protocol: service.TCP}, Protocol: service.TCP,
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")}, Port: 80, NodePort: 30080,
			LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			InternalEndpoints: []service.Target{ep(2), ep(3)}, ExternalEndpoints: []service.Target{ep(2)},
			ClusterEndpoints: []service.Target{ep(2), ep(3)}, ExternalLocal: true, HasEndpoints: true,
		}
		aff := port
		aff.Name.Service.Name, aff.ClusterIPs, aff.NodePort, aff.LoadBalancerIPs = "affinity", []netip.Addr{netip.MustParseAddr("10.96.0.2")}, 30081, nil
		aff.AffinityTimeout = 10800e9
		plan := cfg.planSync(newCommitted(), &service.State{Ports: []service.PortState{aff, port}})
		return []probeStep{
			{"nftables inet family, maps with concatenated keys and data, nat and filter chains, fib, reject", "5.2",
				func() error { return q.skeleton() }},
			{"nftables numgen, dnat from a map of address . port, concatenated ranges, dynamic sets with timeouts", "5.6",
				func() error { return q.plan(plan) }},
		}
	})
}
