package nftables

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/service"
)

// This file holds the pure part of the service proxy: validation, the
// naming of per-service objects, the rendering of one service port into
// chains, sets and map elements, and the plan of an incremental change.
// Nothing here talks to the kernel.

// Names of the fixed objects of a ServiceProxy table.
const (
	SvcChainNatPrerouting  = "nat-prerouting"
	SvcChainNatOutput      = "nat-output"
	SvcChainNatPostrouting = "nat-postrouting"
	SvcChainFilterInput    = "filter-input"
	SvcChainFilterForward  = "filter-forward"
	SvcChainFilterOutput   = "filter-output"
	SvcChainServices       = "services"
	SvcChainEndpointsCheck = "endpoints-check"
	SvcChainReject         = "reject-chain"
)

// svcMasqMark is the packet mark bit that asks nat-postrouting to
// masquerade (kube-proxy's 0x4000).
const svcMasqMark = 0x4000

// maxChainNameLen bounds the names of per-service chains and sets.
const maxChainNameLen = 96

// map kinds, per family
const (
	mapServiceIPs    = iota // daddr . proto . port : verdict
	mapNodePorts            // proto . port : verdict
	mapNoEPIPs              // daddr . proto . port : verdict (filter)
	mapNoEPNodePorts        // proto . port : verdict (filter)
	numSvcMaps
)

var svcMapNames = [numSvcMaps]string{"service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports"}

// svcFamily holds the per-family constants of the service ruleset.
type svcFamily struct {
	portFamily
	suffix string // "v4" or "v6"
	bits   int
}

var svcFamilies = [2]svcFamily{
	{portFamily: portFamilies[0], suffix: "v4", bits: 32},
	{portFamily: portFamilies[1], suffix: "v6", bits: 128},
}

func famIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func svcMapName(kind, fam int) string { return svcMapNames[kind] + "-" + svcFamilies[fam].suffix }

func clusterCIDRSet(fam int) string   { return "cluster-cidrs-" + svcFamilies[fam].suffix }
func nodePortIPsSet(fam int) string   { return "nodeport-ips-" + svcFamilies[fam].suffix }
func svcMapID(kind, fam int) uint32   { return uint32(1 + kind*2 + fam) }
func clusterCIDRSetID(fam int) uint32 { return uint32(1 + numSvcMaps*2 + fam) }
func nodePortIPsSetID(fam int) uint32 { return uint32(3 + numSvcMaps*2 + fam) }

// firstDynamicSetID is the first set ID used for per-service sets within a
// batch (IDs only need to be unique within one batch).
const firstDynamicSetID = 64

// ServiceOptions configures a ServiceProxy.
type ServiceOptions struct {
	Options
	// NodePortAddresses are the addresses node ports answer on. Empty means
	// every local address (fib daddr type local, loopback excluded). When
	// set, a family without an address here gets no node ports.
	NodePortAddresses []netip.Addr
	// ClusterCIDRs are the pod ranges: traffic from outside them to a
	// ClusterIP is masqueraded (the local traffic detector). A family
	// without a range here is not masqueraded (unless MasqueradeAll).
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
}

// svcConfig is validated ServiceOptions.
type svcConfig struct {
	nodePortIPs   [2][]netip.Addr // sorted
	anyNodePort   bool            // NodePortAddresses empty
	clusterCIDRs  [2][]addrRange
	masqueradeAll bool
}

func buildSvcConfig(o ServiceOptions) (svcConfig, error) {
	cfg := svcConfig{anyNodePort: len(o.NodePortAddresses) == 0, masqueradeAll: o.MasqueradeAll}
	for i, a := range o.NodePortAddresses {
		f := fmt.Sprintf("ServiceOptions.NodePortAddresses[%d]", i)
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" || a.Is4In6() {
			return cfg, invalid(f, a.String(), "not a unicast address")
		}
		cfg.nodePortIPs[famIndex(a)] = append(cfg.nodePortIPs[famIndex(a)], a)
	}
	for f := range 2 {
		slices.SortFunc(cfg.nodePortIPs[f], netip.Addr.Compare)
		cfg.nodePortIPs[f] = slices.Compact(cfg.nodePortIPs[f])
	}
	v4, v6, err := splitPrefixes("ServiceOptions.ClusterCIDRs", o.ClusterCIDRs)
	if err != nil {
		return cfg, err
	}
	cfg.clusterCIDRs = [2][]addrRange{mergePrefixes(v4), mergePrefixes(v6)}
	return cfg, nil
}

var svcProtos = map[service.Protocol]byte{service.TCP: unix.IPPROTO_TCP, service.UDP: unix.IPPROTO_UDP, service.SCTP: unix.IPPROTO_SCTP}

// validateState checks what the ruleset relies on: known protocols, ports,
// valid addresses and unique port names.
func validateState(st *service.State) error {
	seen := make(map[service.PortName]bool, len(st.Ports))
	for i := range st.Ports {
		p := &st.Ports[i]
		f := func(name string) string { return fmt.Sprintf("State.Ports[%d].%s", i, name) }
		if _, ok := svcProtos[p.Protocol]; !ok {
			return invalid(f("Protocol"), string(p.Protocol), "must be TCP, UDP or SCTP")
		}
		if p.Port == 0 {
			return invalidNumber(f("Port"), 0, "must be 1-65535")
		}
		if seen[p.Name] {
			return invalid(f("Name"), p.Name.String(), "duplicate service port")
		}
		seen[p.Name] = true
		for _, l := range []struct {
			name  string
			addrs []netip.Addr
		}{{"ClusterIPs", p.ClusterIPs}, {"ExternalIPs", p.ExternalIPs}, {"LoadBalancerIPs", p.LoadBalancerIPs}} {
			for j, a := range l.addrs {
				if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" || a.Is4In6() {
					return invalid(f(fmt.Sprintf("%s[%d]", l.name, j)), a.String(), "not a unicast address")
				}
			}
		}
		for j, r := range p.SourceRanges {
			if !r.IsValid() || r.Addr().Is4In6() {
				return invalid(f(fmt.Sprintf("SourceRanges[%d]", j)), r.String(), "not a valid prefix")
			}
		}
		for _, l := range []struct {
			name string
			ts   []service.Target
		}{{"InternalEndpoints", p.InternalEndpoints}, {"ExternalEndpoints", p.ExternalEndpoints}, {"ClusterEndpoints", p.ClusterEndpoints}} {
			for j, t := range l.ts {
				if !t.Addr.IsValid() || t.Addr.IsUnspecified() || t.Addr.Zone() != "" || t.Addr.Is4In6() {
					return invalid(f(fmt.Sprintf("%s[%d].Addr", l.name, j)), t.Addr.String(), "not a unicast address")
				}
				if t.Port == 0 {
					return invalidNumber(f(fmt.Sprintf("%s[%d].Port", l.name, j)), 0, "must be 1-65535")
				}
			}
		}
		if p.AffinityTimeout < 0 || p.AffinityTimeout > 24*time.Hour {
			return invalid(f("AffinityTimeout"), p.AffinityTimeout.String(), "must be between 0 and 24h")
		}
	}
	return nil
}

// hashName builds a bounded, readable object name: prefix-<hash8>-<readable>,
// the hash covering the full identity, the readable part truncated.
func hashName(prefix, identity, readable string) string {
	sum := sha256.Sum256([]byte(identity))
	name := prefix + "-" + hex.EncodeToString(sum[:4]) + "-" + readable
	if len(name) > maxChainNameLen {
		name = name[:maxChainNameLen]
	}
	return name
}

// portIdentity is what the hash of a service port's objects covers.
func portIdentity(pn service.PortName, fam int) string {
	return pn.String() + "|" + svcFamilies[fam].suffix
}

// svcChainName names a per-service-port chain: kind is "svc" (ClusterIP
// traffic), "ext" (external traffic), "cls" (the cluster-wide set, for the
// short-circuit of local traffic under eTP Local) or "fw" (source ranges).
func svcChainName(kind string, pn service.PortName, fam int) string {
	return hashName(kind, portIdentity(pn, fam), pn.String())
}

func epIdentity(pn service.PortName, fam int, t service.Target) string {
	return portIdentity(pn, fam) + "|" + t.AddrPort().String()
}

func epReadable(t service.Target) string { return t.Addr.String() + "-" + strconv.Itoa(int(t.Port)) }

// epChainName names the chain of one endpoint of a service port.
func epChainName(pn service.PortName, fam int, t service.Target) string {
	return hashName("ep", epIdentity(pn, fam, t), epReadable(t))
}

// affSetName names the affinity set of one endpoint of a service port.
func affSetName(pn service.PortName, fam int, t service.Target) string {
	return hashName("aff", epIdentity(pn, fam, t), epReadable(t))
}

// svcRule is one rule of a per-service chain. vmap, when set, holds the
// goto targets of the "numgen random mod N" verdict map that the rule's
// last lookup uses (key i: goto vmap[i]). That map is named after the chain
// (sets and chains have separate namespaces): anonymous maps would cost
// the kernel a walk of the whole transaction each (__nft_set_trans_bind),
// quadratic in a full sync.
type svcRule struct {
	exprs []expr.Any
	vmap  []string
}

type svcChainSpec struct {
	name  string
	rules []svcRule
}

// fingerprint identifies a chain's contents, for diffs.
func (c *svcChainSpec) fingerprint() string {
	var b strings.Builder
	for _, r := range c.rules {
		for _, e := range r.exprs {
			fmt.Fprintf(&b, "%T%+v;", e, e)
		}
		fmt.Fprintf(&b, "%q\n", r.vmap)
	}
	return b.String()
}

// vmap returns the goto targets of the chain's dispatch map, nil if none.
func (c *svcChainSpec) vmap() []string {
	for _, r := range c.rules {
		if r.vmap != nil {
			return r.vmap
		}
	}
	return nil
}

// svcElemKey identifies one element of one of the fixed maps.
type svcElemKey struct {
	kind, fam int
	key       string
}

// svcVerdict is a map element's value: a goto to chain, or drop.
type svcVerdict struct {
	kind  expr.VerdictKind
	chain string
}

type svcSetSpec struct {
	name string
	fam  int
}

// portRender is everything one service port owns in the table. chains are
// ordered so that a chain comes before the chains it refers to.
type portRender struct {
	chains []svcChainSpec
	sets   []svcSetSpec
	elems  map[svcElemKey]svcVerdict
}

func targetsOf(ts []service.Target, fam int) []service.Target {
	var out []service.Target
	for _, t := range ts {
		if famIndex(t.Addr) == fam {
			out = append(out, t)
		}
	}
	return out
}

func addrsOf(as []netip.Addr, fam int) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if famIndex(a) == fam {
			out = append(out, a)
		}
	}
	return out
}

// svcKey encodes addr . proto . port (addr invalid: proto . port) as a key
// of the concatenated maps, each field padded to 4 bytes.
func svcKey(addr netip.Addr, proto byte, port uint16) string {
	b := make([]byte, 0, 24)
	if addr.IsValid() {
		b = append(b, addr.AsSlice()...)
	}
	b = append(b, proto, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, port)
	return string(append(b, 0, 0))
}

// renderPort computes the objects of one service port.
func (cfg *svcConfig) renderPort(ps *service.PortState) portRender {
	r := portRender{elems: map[svcElemKey]svcVerdict{}}
	proto := svcProtos[ps.Protocol]
	anyEP := len(ps.InternalEndpoints)+len(ps.ExternalEndpoints)+len(ps.ClusterEndpoints) > 0
	seenChain := map[string]bool{}
	seenSet := map[string]bool{}
	seenEP := map[string]bool{}
	addChain := func(c svcChainSpec) {
		if !seenChain[c.name] {
			seenChain[c.name] = true
			r.chains = append(r.chains, c)
		}
	}
	for fam := range 2 {
		cips := addrsOf(ps.ClusterIPs, fam)
		if len(cips) == 0 {
			continue
		}
		f := svcFamilies[fam]
		internal := targetsOf(ps.InternalEndpoints, fam)
		external := targetsOf(ps.ExternalEndpoints, fam)
		cluster := targetsOf(ps.ClusterEndpoints, fam)
		// No endpoint of this family anywhere: refuse; endpoints exist
		// but not for this traffic on this node: drop.
		noEP := svcVerdict{kind: expr.VerdictGoto, chain: SvcChainReject}
		if ps.HasEndpoints && (!anyEP || len(internal)+len(external)+len(cluster) > 0) {
			noEP = svcVerdict{kind: expr.VerdictDrop}
		}
		var epChains []svcChainSpec
		dispatch := func(chain string, eps []service.Target) []svcRule {
			var rules []svcRule
			targets := make([]string, len(eps))
			for i, t := range eps {
				targets[i] = epChainName(ps.Name, fam, t)
				if !seenEP[targets[i]] {
					epChains = append(epChains, cfg.endpointChain(ps, fam, t))
					seenEP[targets[i]] = true
				}
			}
			if ps.AffinityTimeout > 0 {
				for i, t := range eps {
					set := affSetName(ps.Name, fam, t)
					if !seenSet[set] {
						seenSet[set] = true
						r.sets = append(r.sets, svcSetSpec{name: set, fam: fam})
					}
					rules = append(rules, svcRule{exprs: []expr.Any{
						saddrLoad(f),
						&expr.Lookup{SourceRegister: reg1, SetName: set},
						&expr.Verdict{Kind: expr.VerdictGoto, Chain: targets[i]},
					}})
				}
			}
			rules = append(rules, svcRule{exprs: []expr.Any{
				&expr.Numgen{Register: reg1, Modulus: uint32(len(eps)), Type: unix.NFT_NG_RANDOM},
				&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: chain},
			}, vmap: targets})
			return rules
		}
		// ClusterIP traffic.
		if len(internal) > 0 {
			svc := svcChainSpec{name: svcChainName("svc", ps.Name, fam)}
			if cfg.masqueradeAll {
				svc.rules = append(svc.rules, svcRule{exprs: markExprs()})
			} else if len(cfg.clusterCIDRs[fam]) > 0 {
				svc.rules = append(svc.rules, svcRule{exprs: append([]expr.Any{saddrLoad(f),
					&expr.Lookup{SourceRegister: reg1, SetName: clusterCIDRSet(fam), SetID: clusterCIDRSetID(fam), Invert: true},
				}, markExprs()...)})
			}
			svc.rules = append(svc.rules, dispatch(svc.name, internal)...)
			addChain(svc)
			for _, a := range cips {
				r.elems[svcElemKey{mapServiceIPs, fam, svcKey(a, proto, ps.Port)}] = svcVerdict{expr.VerdictGoto, svc.name}
			}
		} else {
			for _, a := range cips {
				r.elems[svcElemKey{mapNoEPIPs, fam, svcKey(a, proto, ps.Port)}] = noEP
			}
		}
		// External traffic: external and load balancer IPs, node port.
		extIPs := addrsOf(ps.ExternalIPs, fam)
		lbIPs := addrsOf(ps.LoadBalancerIPs, fam)
		nodePort := ps.NodePort != 0 && (cfg.anyNodePort || len(cfg.nodePortIPs[fam]) > 0)
		if len(extIPs)+len(lbIPs) == 0 && !nodePort {
			addChainsOf(addChain, epChains)
			continue
		}
		shortCircuit := ps.ExternalLocal && len(cluster) > 0
		if len(external) > 0 || shortCircuit {
			ext := svcChainSpec{name: svcChainName("ext", ps.Name, fam)}
			var cls svcChainSpec
			if !ps.ExternalLocal {
				ext.rules = append(ext.rules, svcRule{exprs: markExprs()})
			} else if shortCircuit {
				cls = svcChainSpec{name: svcChainName("cls", ps.Name, fam)}
				if len(cfg.clusterCIDRs[fam]) > 0 {
					ext.rules = append(ext.rules, svcRule{exprs: []expr.Any{saddrLoad(f),
						&expr.Lookup{SourceRegister: reg1, SetName: clusterCIDRSet(fam), SetID: clusterCIDRSetID(fam)},
						&expr.Verdict{Kind: expr.VerdictGoto, Chain: cls.name},
					}})
				}
				ext.rules = append(ext.rules,
					svcRule{exprs: append(fibSaddrLocal(), markExprs()...)},
					svcRule{exprs: append(fibSaddrLocal(), &expr.Verdict{Kind: expr.VerdictGoto, Chain: cls.name})})
			}
			if len(external) > 0 {
				ext.rules = append(ext.rules, dispatch(ext.name, external)...)
			}
			if shortCircuit {
				cls.rules = dispatch(cls.name, cluster)
			}
			target := svcVerdict{expr.VerdictGoto, ext.name}
			if ranges := prefixesOf(ps.SourceRanges, fam); len(ranges) > 0 && len(lbIPs) > 0 {
				fw := svcChainSpec{name: svcChainName("fw", ps.Name, fam)}
				for _, p := range ranges {
					fw.rules = append(fw.rules, svcRule{exprs: append(saddrPrefix(f, p),
						&expr.Verdict{Kind: expr.VerdictGoto, Chain: ext.name})})
				}
				fw.rules = append(fw.rules, svcRule{exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
				addChain(fw)
				for _, a := range lbIPs {
					r.elems[svcElemKey{mapServiceIPs, fam, svcKey(a, proto, ps.Port)}] = svcVerdict{expr.VerdictGoto, fw.name}
				}
				lbIPs = nil
			}
			addChain(ext)
			if cls.name != "" {
				addChain(cls)
			}
			for _, a := range append(extIPs, lbIPs...) {
				r.elems[svcElemKey{mapServiceIPs, fam, svcKey(a, proto, ps.Port)}] = target
			}
			if nodePort {
				r.elems[svcElemKey{mapNodePorts, fam, svcKey(netip.Addr{}, proto, ps.NodePort)}] = target
			}
		}
		if len(external) == 0 {
			// Traffic not short-circuited is not DNATed: the filter
			// chains refuse or drop it.
			for _, a := range append(extIPs, addrsOf(ps.LoadBalancerIPs, fam)...) {
				r.elems[svcElemKey{mapNoEPIPs, fam, svcKey(a, proto, ps.Port)}] = noEP
			}
			if nodePort {
				r.elems[svcElemKey{mapNoEPNodePorts, fam, svcKey(netip.Addr{}, proto, ps.NodePort)}] = noEP
			}
		}
		addChainsOf(addChain, epChains)
	}
	return r
}

func addChainsOf(add func(svcChainSpec), cs []svcChainSpec) {
	for _, c := range cs {
		add(c)
	}
}

func prefixesOf(ps []netip.Prefix, fam int) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if famIndex(p.Addr()) == fam {
			out = append(out, p.Masked())
		}
	}
	return out
}

// endpointChain is, for an IPv4 endpoint A:P of a TCP port:
//
//	ip saddr A <mark for masquerade>        (hairpin)
//	[update @aff-... { ip saddr timeout T }] meta l4proto tcp dnat ip to A:P
func (cfg *svcConfig) endpointChain(ps *service.PortState, fam int, t service.Target) svcChainSpec {
	f := svcFamilies[fam]
	c := svcChainSpec{name: epChainName(ps.Name, fam, t)}
	c.rules = append(c.rules, svcRule{exprs: append([]expr.Any{saddrLoad(f),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: t.Addr.AsSlice()}}, markExprs()...)})
	var ex []expr.Any
	if ps.AffinityTimeout > 0 {
		ex = append(ex, saddrLoad(f), &expr.Dynset{SrcRegKey: reg1, SetName: affSetName(ps.Name, fam, t),
			Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: ps.AffinityTimeout})
	}
	portReg := uint32(reg32At + f.addrLen/4)
	ex = append(ex,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{svcProtos[ps.Protocol]}},
		&expr.Immediate{Register: reg1, Data: t.Addr.AsSlice()},
		&expr.Immediate{Register: portReg, Data: binary.BigEndian.AppendUint16(nil, t.Port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.natFam, RegAddrMin: reg1, RegProtoMin: portReg, Specified: true},
	)
	c.rules = append(c.rules, svcRule{exprs: ex})
	return c
}

func saddrLoad(f svcFamily) *expr.Payload {
	return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen}
}

func saddrPrefix(f svcFamily, p netip.Prefix) []expr.Any {
	mask := make([]byte, f.addrLen)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{saddrLoad(f),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen, Mask: mask, Xor: make([]byte, f.addrLen)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: p.Addr().AsSlice()},
	}
}

// markExprs is "meta mark set meta mark | 0x4000".
func markExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(svcMasqMark)), Xor: binaryutil.NativeEndian.PutUint32(svcMasqMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true},
	}
}

func fibSaddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// svcPlan is the change that turns the table from one rendering into
// another. Queued in this order: element deletions, chain flushes, chain
// deletions, set deletions, set additions, chain additions, rules of the
// added and flushed chains, element additions.
type svcPlan struct {
	delElems  []svcElemKey
	flush     []string // chains kept whose rules are rewritten
	delChains []string
	delSets   []svcSetSpec
	addSets   []svcSetSpec
	addChains []string
	rules     []svcChainSpec // rules to write: chains added or flushed
	addElems  map[svcElemKey]svcVerdict
	// Dispatch maps (named after their chain): emptied before chains are
	// deleted, refilled or added with their elements after chains are added.
	flushVmaps map[string]int // emptied: element count before
	delVmaps   []string
	addVmaps   map[string][]string // created with these goto targets
	fillVmaps  map[string][]string // emptied and refilled
	// objDelta is the change in the number of objects (chains and named
	// sets; the anonymous maps bound to rules are not counted) the kernel
	// counts in the table.
	objDelta int
}

func (p *svcPlan) empty() bool {
	return len(p.delElems)+len(p.flush)+len(p.delChains)+len(p.delSets)+len(p.addSets)+len(p.addChains)+len(p.addElems)+
		len(p.flushVmaps)+len(p.delVmaps)+len(p.addVmaps)+len(p.fillVmaps) == 0
}

// diffPort adds to p what turns old into new (either may be empty).
func (p *svcPlan) diffPort(old, new *portRender) {
	for k, v := range old.elems {
		if nv, ok := new.elems[k]; !ok || nv != v {
			p.delElems = append(p.delElems, k)
		}
	}
	for k, v := range new.elems {
		if ov, ok := old.elems[k]; !ok || ov != v {
			p.addElems[k] = v
		}
	}
	oldChains := make(map[string]*svcChainSpec, len(old.chains))
	for i := range old.chains {
		oldChains[old.chains[i].name] = &old.chains[i]
	}
	newNames := make(map[string]bool, len(new.chains))
	for i := range new.chains {
		c := &new.chains[i]
		newNames[c.name] = true
		oc, ok := oldChains[c.name]
		switch {
		case !ok:
			p.addChains = append(p.addChains, c.name)
			p.rules = append(p.rules, *c)
			p.objDelta++
			if v := c.vmap(); v != nil {
				p.addVmaps[c.name] = v
				p.objDelta++
			}
		case oc.fingerprint() != c.fingerprint():
			p.flush = append(p.flush, c.name)
			p.rules = append(p.rules, *c)
			ov, nv := oc.vmap(), c.vmap()
			switch {
			case ov == nil && nv != nil:
				p.addVmaps[c.name] = nv
				p.objDelta++
			case ov != nil && nv == nil:
				p.delVmaps = append(p.delVmaps, c.name)
				p.objDelta--
			case ov != nil && !slices.Equal(ov, nv):
				p.flushVmaps[c.name] = len(ov)
				p.fillVmaps[c.name] = nv
			}
		}
	}
	for _, c := range old.chains {
		if !newNames[c.name] {
			p.delChains = append(p.delChains, c.name)
			p.objDelta--
			if c.vmap() != nil {
				p.delVmaps = append(p.delVmaps, c.name)
				p.objDelta--
			}
		}
	}
	newSets := map[string]bool{}
	for _, s := range new.sets {
		newSets[s.name] = true
	}
	oldSets := map[string]bool{}
	for _, s := range old.sets {
		oldSets[s.name] = true
		if !newSets[s.name] {
			p.delSets = append(p.delSets, s)
			p.objDelta--
		}
	}
	for _, s := range new.sets {
		if !oldSets[s.name] {
			p.addSets = append(p.addSets, s)
			p.objDelta++
		}
	}
}

// planSync computes the incremental change from the ports of old to those
// of st. old maps port names to the last committed port states.
func (cfg *svcConfig) planSync(old map[service.PortName]*service.PortState, st *service.State) svcPlan {
	p := svcPlan{addElems: map[svcElemKey]svcVerdict{}, addVmaps: map[string][]string{}, fillVmaps: map[string][]string{},
		flushVmaps: map[string]int{}}
	empty := portRender{}
	seen := make(map[service.PortName]bool, len(st.Ports))
	for i := range st.Ports {
		ps := &st.Ports[i]
		seen[ps.Name] = true
		o, ok := old[ps.Name]
		if ok && o.Equal(ps) {
			continue
		}
		nr := cfg.renderPort(ps)
		if !ok {
			p.diffPort(&empty, &nr)
			continue
		}
		or := cfg.renderPort(o)
		p.diffPort(&or, &nr)
	}
	names := make([]service.PortName, 0)
	for n := range old {
		if !seen[n] {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b service.PortName) int { return strings.Compare(a.String(), b.String()) })
	for _, n := range names {
		or := cfg.renderPort(old[n])
		p.diffPort(&or, &empty)
	}
	slices.SortFunc(p.delElems, compareElemKey)
	return p
}

func compareElemKey(a, b svcElemKey) int {
	if a.kind != b.kind {
		return a.kind - b.kind
	}
	if a.fam != b.fam {
		return a.fam - b.fam
	}
	return strings.Compare(a.key, b.key)
}

// planFull is the plan that builds st in an empty table.
func (cfg *svcConfig) planFull(st *service.State) svcPlan {
	return cfg.planSync(nil, st)
}
