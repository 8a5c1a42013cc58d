package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

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
	prev      map[service.PortName]*service.PortState // last committed; nil: next sync is full
	objects   int                                     // chains and sets the table should count
	fullSyncs int                                     // full rebuilds done, for tests
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
	if err := s.open(opts.Options, "service-v1", svcProbe.check); err != nil {
		return nil, err
	}
	return s, nil
}

// Sync makes the table serve exactly st, in one netlink transaction. The
// last committed State is kept: unless hint.Full is set, the previous sync
// failed, or the table was deleted, flushed or added to from outside, only
// the chains, sets and map elements of the service ports that changed are
// written. Otherwise the table is deleted and rebuilt within the batch.
// An invalid State is refused (errors.Is(err, ErrInvalid)) before anything
// is sent.
func (s *ServiceProxy) Sync(ctx context.Context, st *service.State, hint service.Hint) error {
	if err := validateState(st); err != nil {
		return err
	}
	var (
		full bool
		plan svcPlan
	)
	err := s.withConn(ctx, func(c *nft.Conn) error {
		full = hint.Full || s.prev == nil || !s.intact(c)
		if full {
			s.prev = nil // a failure below leaves the next sync full
			plan = s.cfg.planFull(st)
		} else {
			plan = s.cfg.planSync(s.prev, st)
			if plan.empty() {
				return nil
			}
		}
		q := svcQueue{c: c, table: s.table, nextID: firstDynamicSetID}
		if full {
			s.removeTable(c)
			if err := q.skeleton(&s.cfg); err != nil {
				return err
			}
		}
		if err := q.plan(&plan); err != nil {
			return err
		}
		if err := s.growBuffers(q.msgs*1024 + 1<<20); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			s.prev = nil
			return err
		}
		if full {
			s.objects = q.skeletonObjects
			s.fullSyncs++
		}
		s.objects += plan.objDelta
		s.prev = make(map[service.PortName]*service.PortState, len(st.Ports))
		for i := range st.Ports {
			s.prev[st.Ports[i].Name] = clonePort(&st.Ports[i])
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nftables: sync services in table inet %s: %w", s.table.Name, err)
	}
	s.log.DebugContext(ctx, "services synced", "ports", len(st.Ports), "full", full,
		"chainsAdded", len(plan.addChains), "chainsRewritten", len(plan.flush), "chainsDeleted", len(plan.delChains),
		"elementsAdded", len(plan.addElems), "elementsDeleted", len(plan.delElems))
	return nil
}

// intact reports whether the table still holds what the last sync left:
// it exists, counts the objects we made, and its rules were not flushed
// (nat-postrouting still has its rule). Any error means "rebuild".
func (s *ServiceProxy) intact(c *nft.Conn) bool {
	exists, use, err := s.tableUse(c)
	if err != nil || !exists || !useIs(use, uint32(s.objects)) {
		return false
	}
	rules, err := c.GetRules(s.table, &nft.Chain{Name: SvcChainNatPostrouting, Table: s.table})
	return err == nil && len(rules) == 1
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

// Cleanup removes the table and forgets the last sync.
func (s *ServiceProxy) Cleanup(ctx context.Context) error {
	if err := s.tableConn.Cleanup(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.prev = nil
	s.mu.Unlock()
	return nil
}

// svcQueue queues objects on a connection, counting the messages (to size
// the socket buffers) and allocating set IDs within the batch.
type svcQueue struct {
	c               *nft.Conn
	table           *nft.Table
	nextID          uint32
	msgs            int
	skeletonObjects int
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

var (
	svcKeyV4    = nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeInetProto, nft.TypeInetService)
	svcKeyV6    = nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeInetProto, nft.TypeInetService)
	svcKeyPorts = nft.MustConcatSetType(nft.TypeInetProto, nft.TypeInetService)
)

func (q *svcQueue) fixedMap(kind, fam int) *nft.Set {
	key := svcKeyPorts
	if kind == mapServiceIPs || kind == mapNoEPIPs {
		key = [2]nft.SetDatatype{svcKeyV4, svcKeyV6}[fam]
	}
	return &nft.Set{Table: q.table, Name: svcMapName(kind, fam), ID: svcMapID(kind, fam), IsMap: true,
		Concatenation: true, KeyType: key, DataType: nft.TypeVerdict}
}

func addrType(fam int) nft.SetDatatype {
	return [2]nft.SetDatatype{nft.TypeIPAddr, nft.TypeIP6Addr}[fam]
}

// skeleton queues the table, its fixed maps, sets, chains and rules:
//
//	chain nat-prerouting  { type nat hook prerouting priority dstnat; jump services }
//	chain nat-output      { type nat hook output priority dstnat; jump services }
//	chain nat-postrouting { type nat hook postrouting priority srcnat;
//		meta mark & 0x4000 != 0 meta mark set meta mark & ~0x4000 masquerade fully-random }
//	chain filter-input, filter-forward, filter-output { type filter hook ... priority -1;
//		ct state new jump endpoints-check }
//	chain services {
//		meta nfproto ipv4 ip daddr . meta l4proto . th dport vmap @service-ips-v4
//		meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
//		(ipv6 likewise; "ip daddr @nodeport-ips-v4" instead of fib with NodePortAddresses)
//	}
//	chain endpoints-check { the same lookups in @no-endpoint-services-v4 and @no-endpoint-nodeports-v4 }
//	chain reject-chain { meta l4proto tcp reject with tcp reset; reject }
//
// The filter chains run after DNAT: a new connection still addressed to a
// service address was not DNATed, because the service has no endpoint
// (for this traffic on this node): it is refused or dropped there.
func (q *svcQueue) skeleton(cfg *svcConfig) error {
	q.c.AddTable(q.table)
	q.msgs += 3 // the table deleted and added
	for fam := range 2 {
		for kind := range numSvcMaps {
			if err := q.addSet(q.fixedMap(kind, fam), nil); err != nil {
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
		{Name: SvcChainServices}, {Name: SvcChainEndpointsCheck}, {Name: SvcChainReject},
	} {
		ch.Table = q.table
		q.c.AddChain(ch)
		q.msgs++
		q.skeletonObjects++
	}
	jump := func(to string) []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: to}} }
	q.addRule(SvcChainNatPrerouting, jump(SvcChainServices), commentPrefix+": services")
	q.addRule(SvcChainNatOutput, jump(SvcChainServices), commentPrefix+": services")
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
	ctNew := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: SvcChainEndpointsCheck},
	}
	for _, ch := range []string{SvcChainFilterInput, SvcChainFilterForward, SvcChainFilterOutput} {
		q.addRule(ch, ctNew, commentPrefix+": refuse or drop service traffic without endpoints")
	}
	for fam := range 2 {
		f := svcFamilies[fam]
		q.addRule(SvcChainServices, q.vmapByAddr(f, q.fixedMap(mapServiceIPs, fam)), "")
		q.addRule(SvcChainEndpointsCheck, q.vmapByAddr(f, q.fixedMap(mapNoEPIPs, fam)), "")
	}
	for fam := range 2 {
		f := svcFamilies[fam]
		if !cfg.anyNodePort && len(cfg.nodePortIPs[fam]) == 0 {
			continue
		}
		q.addRule(SvcChainServices, q.vmapByPort(cfg, fam, q.fixedMap(mapNodePorts, fam)), commentPrefix+": node ports "+f.name)
		q.addRule(SvcChainEndpointsCheck, q.vmapByPort(cfg, fam, q.fixedMap(mapNoEPNodePorts, fam)), "")
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

// vmapByAddr is "meta nfproto ipvX ip daddr . meta l4proto . th dport vmap @m".
func (q *svcQueue) vmapByAddr(f svcFamily, m *nft.Set) []expr.Any {
	return append(nfprotoIs(f.portFamily),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32At + f.addrLen/4},
		&expr.Payload{DestRegister: reg32At + f.addrLen/4 + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, SetName: m.Name, SetID: m.ID, IsDestRegSet: true, DestRegister: 0},
	)
}

// vmapByPort is "meta nfproto ipvX <node port address> meta l4proto . th
// dport vmap @m", the address being "ip daddr != 127.0.0.0/8 fib daddr
// type local" or "ip daddr @nodeport-ips-vX".
func (q *svcQueue) vmapByPort(cfg *svcConfig, fam int, m *nft.Set) []expr.Any {
	f := svcFamilies[fam]
	ex := nfprotoIs(f.portFamily)
	ex = append(ex, &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen})
	if cfg.anyNodePort {
		ex = append(ex,
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen, Mask: f.loopMask, Xor: make([]byte, f.addrLen)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: f.loopback},
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)})
	} else {
		ex = append(ex, &expr.Lookup{SourceRegister: reg1, SetName: nodePortIPsSet(fam), SetID: nodePortIPsSetID(fam)})
	}
	return append(ex,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Payload{DestRegister: reg32At + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, SetName: m.Name, SetID: m.ID, IsDestRegSet: true, DestRegister: 0},
	)
}

// plan queues p (see svcPlan for the order).
func (q *svcQueue) plan(p *svcPlan) error {
	byMap := func(keys []svcElemKey, vals map[svcElemKey]svcVerdict) [numSvcMaps][2][]nft.SetElement {
		var out [numSvcMaps][2][]nft.SetElement
		for _, k := range keys {
			e := nft.SetElement{Key: []byte(k.key)}
			if vals != nil {
				v := vals[k]
				e.VerdictData = &expr.Verdict{Kind: v.kind, Chain: v.chain}
			}
			out[k.kind][k.fam] = append(out[k.kind][k.fam], e)
		}
		return out
	}
	elemOps := func(els [numSvcMaps][2][]nft.SetElement, add bool) error {
		for kind := range numSvcMaps {
			for fam := range 2 {
				m := q.fixedMap(kind, fam)
				for chunk := range slices.Chunk(els[kind][fam], maxElemsPerMsg) {
					var err error
					if add {
						err = q.c.SetAddElements(m, chunk)
					} else {
						err = q.c.SetDeleteElements(m, chunk)
					}
					if err != nil {
						return fmt.Errorf("elements of %s: %w", m.Name, err)
					}
					q.msgs++
				}
			}
		}
		return nil
	}
	if err := elemOps(byMap(p.delElems, nil), false); err != nil {
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
	for _, s := range p.addSets {
		set := &nft.Set{Table: q.table, Name: s.name, ID: q.id(), KeyType: addrType(s.fam), HasTimeout: true, Dynamic: true}
		if err := q.addSet(set, nil); err != nil {
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
	keys := make([]svcElemKey, 0, len(p.addElems))
	for k := range p.addElems {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareElemKey)
	return elemOps(byMap(keys, p.addElems), true)
}

// vmapSet is the dispatch map of a chain, named after it.
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

// runSvcProbe builds, step by step, the service ruleset with one service
// of two endpoints and affinity in the current (throwaway) namespace.
func runSvcProbe() error {
	return runProbeSteps(func(c *nft.Conn) []probeStep {
		cfg, _ := buildSvcConfig(ServiceOptions{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
		q := &svcQueue{c: c, table: &nft.Table{Family: nft.TableFamilyINet, Name: "kubewire-probe"}, nextID: firstDynamicSetID}
		ep := func(last byte) service.Target {
			return service.Target{Addr: netip.AddrFrom4([4]byte{10, 244, 0, last}), Port: 80}
		}
		st := &service.State{Ports: []service.PortState{{
			Name: service.PortName{Service: service.Name{Namespace: "probe", Name: "probe"}, Protocol: service.TCP}, Protocol: service.TCP,
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")}, Port: 80, NodePort: 30080, AffinityTimeout: 10800e9,
			InternalEndpoints: []service.Target{ep(2), ep(3)}, ExternalEndpoints: []service.Target{ep(2)},
			ClusterEndpoints: []service.Target{ep(2), ep(3)}, ExternalLocal: true, HasEndpoints: true,
		}}}
		plan := cfg.planFull(st)
		return []probeStep{
			{"nftables inet family, verdict maps with concatenated keys, nat and filter chains, fib, reject", "5.2",
				func() error { return q.skeleton(&cfg) }},
			{"nftables numgen, dynamic sets with timeouts, dnat in the inet family", "5.2",
				func() error { return q.plan(&plan) }},
		}
	})
}
