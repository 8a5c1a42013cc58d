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

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/service"
)

// This file holds the pure part of the service proxy: validation, naming,
// and the rendering of one service port into set and map elements (and,
// with session affinity, chains). service_plan.go turns renderings into
// incremental changes. Nothing here talks to the kernel.

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

// ServiceOptions configures a ServiceProxy.
type ServiceOptions struct {
	Options
	// NodePortAddresses are the addresses node ports answer on. Empty means
	// the node's primary addresses as the State gives them
	// (service.State.NodeAddresses, from service.NodeInfo), and every local
	// address (fib daddr type local, loopback excluded) when the State has
	// none. Either way, as with kube-proxy, a family without an address in
	// the list gets no node ports.
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
	nodePortIPs    [2][]netip.Addr // sorted
	anyNodePort    bool            // no addresses: every local one
	fixedNodePorts bool            // NodePortAddresses set
	clusterCIDRs   [2][]addrRange
	masqueradeAll  bool
}

// withNodeAddresses is cfg with the node-port addresses for a State whose
// node addresses are addrs (already validated).
func (cfg svcConfig) withNodeAddresses(addrs []netip.Addr) svcConfig {
	if cfg.fixedNodePorts {
		return cfg
	}
	cfg.nodePortIPs = [2][]netip.Addr{}
	for _, a := range addrs {
		cfg.nodePortIPs[famIndex(a)] = append(cfg.nodePortIPs[famIndex(a)], a)
	}
	for f := range 2 {
		slices.SortFunc(cfg.nodePortIPs[f], netip.Addr.Compare)
		cfg.nodePortIPs[f] = slices.Compact(cfg.nodePortIPs[f])
	}
	cfg.anyNodePort = len(addrs) == 0
	return cfg
}

// sameNodePorts reports whether two configurations put node ports on the
// same addresses (else the table is rebuilt).
func (cfg *svcConfig) sameNodePorts(o *svcConfig) bool {
	return cfg.anyNodePort == o.anyNodePort && slices.Equal(cfg.nodePortIPs[0], o.nodePortIPs[0]) &&
		slices.Equal(cfg.nodePortIPs[1], o.nodePortIPs[1])
}

func buildSvcConfig(o ServiceOptions) (svcConfig, error) {
	cfg := svcConfig{anyNodePort: len(o.NodePortAddresses) == 0, fixedNodePorts: len(o.NodePortAddresses) > 0,
		masqueradeAll: o.MasqueradeAll}
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

// validatePorts checks what the ruleset relies on in State.Ports: known
// protocols, ports, valid addresses and unique port names. Sync checks
// State.NodeAddresses (validateNodeAddresses) on every path, this one only
// when it looks at every port.
func validatePorts(st *service.State) error {
	seen := make(map[service.PortName]bool, len(st.Ports))
	for i := range st.Ports {
		p := &st.Ports[i]
		if seen[p.Name] {
			return invalid(fmt.Sprintf("State.Ports[%d].Name", i), p.Name.String(), "duplicate service port")
		}
		seen[p.Name] = true
		if err := validatePort(i, p); err != nil {
			return err
		}
	}
	return nil
}

func validateNodeAddresses(st *service.State) error {
	for i, a := range st.NodeAddresses {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" || a.Is4In6() {
			return invalid(fmt.Sprintf("State.NodeAddresses[%d]", i), a.String(), "not a unicast address")
		}
	}
	return nil
}

// validatePort checks State.Ports[i].
func validatePort(i int, p *service.PortState) error {
	f := func(name string) string { return fmt.Sprintf("State.Ports[%d].%s", i, name) }
	if _, ok := svcProtos[p.Protocol]; !ok {
		return invalid(f("Protocol"), string(p.Protocol), "must be TCP, UDP or SCTP")
	}
	if p.Port == 0 {
		return invalidNumber(f("Port"), 0, "must be 1-65535")
	}
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
		if len(l.ts) > maxEndpoints {
			return invalidNumber(f(l.name), uint64(len(l.ts)), fmt.Sprintf("at most %d endpoints per port", maxEndpoints))
		}
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

// The table is flat: a service port is a handful of set and map elements,
// never a chain of its own (ports with session affinity excepted, see
// affinityChains). Adding, changing or removing a service therefore only
// adds and deletes elements: the kernel neither looks sets up by name nor
// revalidates the table's jump graph, so a change costs the same with 10
// services or 10,000.
//
// Keys, each field padded to 4 bytes as in nft concatenations:
//
//	service key:   daddr . l4proto . dport       (ClusterIPs, external and LB IPs)
//	node port key: l4proto . dport               (on the node-port addresses)
//
// The endpoints of a service key with N of them are the elements
// "key . 0" ... "key . N-1" of the map service-dnat-nN-vX, and one rule per
// N in use DNATs to the value of "key . numgen random mod N" there (a key
// not in the map makes the lookup, and so the rule, fail). The map and its
// rule come and go with the first and last key of that count: a rule that
// looks up a map makes the kernel walk the map's elements, so one map per
// count keeps that walk to a new, empty map.

// setKind names one kind of set or map of the table; with a family (and,
// for the per-count kinds, an endpoint count) it names one object.
type setKind uint8

const (
	setClusterIPs    setKind = iota // ClusterIPs (refcounted): unknown ports are refused
	setHairpin                      // local endpoint . same endpoint (refcounted): masquerade
	setServiceKeys                  // service keys the nat chains act on
	setNodePortKeys                 // node port keys the nat chains act on
	setMarkOutside                  // service keys masqueraded unless from a cluster CIDR
	setMark                         // service keys always masqueraded
	setNPMark                       // node port keys always masqueraded
	setLocalMark                    // service keys of the short-circuit: masqueraded from the node
	setNPLocalMark                  // node port keys of the short-circuit: masqueraded from the node
	setFirewall                     // LB service keys with loadBalancerSourceRanges
	setFirewallAllow                // LB service key . allowed source range (interval)
	setRejectIPs                    // service keys without endpoints: refuse
	setDropIPs                      // service keys without endpoints on this node: drop
	setRejectNP                     // node port keys: refuse
	setDropNP                       // node port keys: drop
	setAffinityIPs                  // vmap service key : goto chain (session affinity)
	setAffinityNP                   // vmap node port key : goto chain (session affinity)
	// Maps key . ordinal : endpoint address . port, per endpoint count N,
	// present while in use.
	setDNAT        // service keys
	setLocalDNAT   // service keys, the cluster endpoints of the eTP Local short-circuit
	setNPDNAT      // node port keys
	setNPLocalDNAT // node port keys, short-circuit
)

// numFixedSetKinds counts the kinds that are one set per family.
const numFixedSetKinds = int(setDNAT)

// maxEndpoints bounds the endpoints of one port (the kernel's limit for a
// numgen modulus is far above).
const maxEndpoints = 1<<16 - 1

var setKindNames = [...]string{
	setClusterIPs: "cluster-ips", setHairpin: "hairpin", setServiceKeys: "service-keys", setNodePortKeys: "nodeport-keys",
	setMarkOutside: "mark-outside", setMark: "mark", setNPMark: "nodeport-mark", setLocalMark: "local-mark",
	setNPLocalMark: "nodeport-local-mark", setFirewall: "firewall", setFirewallAllow: "firewall-allow",
	setRejectIPs: "no-endpoints-reject", setDropIPs: "no-endpoints-drop", setRejectNP: "nodeport-no-endpoints-reject",
	setDropNP: "nodeport-no-endpoints-drop", setAffinityIPs: "affinity-ips", setAffinityNP: "affinity-nodeports",
	setDNAT: "service-dnat", setLocalDNAT: "service-local-dnat", setNPDNAT: "nodeport-dnat", setNPLocalDNAT: "nodeport-local-dnat",
}

// setRef identifies one set or map: kind, family and, for the per-count
// kinds, the endpoint count.
type setRef struct {
	kind setKind
	fam  uint8
	n    uint16
}

func (r setRef) perCount() bool { return r.kind >= setDNAT }

func (r setRef) name() string {
	if r.perCount() {
		return setKindNames[r.kind] + "-n" + strconv.Itoa(int(r.n)) + "-" + svcFamilies[r.fam].suffix
	}
	return setKindNames[r.kind] + "-" + svcFamilies[r.fam].suffix
}

// fixedSetID is the batch ID of a fixed set (per-count and per-service sets
// get IDs from svcQueue.id, above firstDynamicSetID).
func (r setRef) fixedSetID() uint32 { return uint32(1 + int(r.kind)*2 + int(r.fam)) }

func clusterCIDRSet(fam int) string   { return "cluster-cidrs-" + svcFamilies[fam].suffix }
func nodePortIPsSet(fam int) string   { return "nodeport-ips-" + svcFamilies[fam].suffix }
func clusterCIDRSetID(fam int) uint32 { return uint32(1 + numFixedSetKinds*2 + fam) }
func nodePortIPsSetID(fam int) uint32 { return uint32(3 + numFixedSetKinds*2 + fam) }

// firstDynamicSetID is the first set ID used for per-count and per-service
// sets within a batch (IDs only need to be unique within one batch).
const firstDynamicSetID = 64

// nodePortKeyed reports whether the set's keys are node port keys.
func (r setRef) nodePortKeyed() bool {
	switch r.kind {
	case setNodePortKeys, setNPMark, setNPLocalMark, setRejectNP, setDropNP, setAffinityNP, setNPDNAT, setNPLocalDNAT:
		return true
	}
	return false
}

var (
	typeSvcKey = [2]nft.SetDatatype{nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeInetProto, nft.TypeInetService), nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeInetProto, nft.TypeInetService)}
	typeNPKey  = nft.MustConcatSetType(nft.TypeInetProto, nft.TypeInetService)
	// The ordinal (numgen's result) is typed as a mark: a 4-byte integer in
	// host byte order that nft can print.
	typeBackKey  = [2]nft.SetDatatype{nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeInetProto, nft.TypeInetService, nft.TypeMark), nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeInetProto, nft.TypeInetService, nft.TypeMark)}
	typeNPBack   = nft.MustConcatSetType(nft.TypeInetProto, nft.TypeInetService, nft.TypeMark)
	typeBackVal  = [2]nft.SetDatatype{nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeInetService), nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeInetService)}
	typeHairpin  = [2]nft.SetDatatype{nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeIPAddr), nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeIP6Addr)}
	typeFwAllow  = [2]nft.SetDatatype{nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeInetProto, nft.TypeInetService, nft.TypeIPAddr), nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeInetProto, nft.TypeInetService, nft.TypeIP6Addr)}
	typeAddrOnly = [2]nft.SetDatatype{nft.TypeIPAddr, nft.TypeIP6Addr}
)

// nftSet describes the set or map r (without ID).
func (q *svcQueue) nftSet(r setRef) *nft.Set {
	s := &nft.Set{Table: q.table, Name: r.name()}
	switch r.kind {
	case setClusterIPs:
		s.KeyType = typeAddrOnly[r.fam]
	case setHairpin:
		s.KeyType = typeHairpin[r.fam]
	case setDNAT, setLocalDNAT:
		s.KeyType, s.IsMap, s.DataType = typeBackKey[r.fam], true, typeBackVal[r.fam]
	case setNPDNAT, setNPLocalDNAT:
		s.KeyType, s.IsMap, s.DataType = typeNPBack, true, typeBackVal[r.fam]
	case setFirewallAllow:
		s.KeyType, s.Interval = typeFwAllow[r.fam], true
	case setAffinityIPs:
		s.KeyType, s.IsMap, s.DataType = typeSvcKey[r.fam], true, nft.TypeVerdict
	case setAffinityNP:
		s.KeyType, s.IsMap, s.DataType = typeNPKey, true, nft.TypeVerdict
	default:
		s.KeyType = typeSvcKey[r.fam]
		if r.nodePortKeyed() {
			s.KeyType = typeNPKey
		}
	}
	s.Concatenation = strings.Contains(s.KeyType.Name, " . ")
	if r.perCount() {
		s.ID = q.id()
	} else {
		s.ID = r.fixedSetID()
	}
	return s
}

// entryKey is what one service port claims: a service key or a node port
// key of one family. When several ports claim the same key (two services
// with the same external IP and port), the first by name owns it.
type entryKey struct {
	fam uint8
	np  bool
	key string
}

// renderedElem is one element: key, and the map value (data bytes, the
// goto target of a verdict map, or the end of an interval).
type renderedElem struct {
	ref      setRef
	key, val string
}

// portRender is everything one service port puts in the table.
type portRender struct {
	elems  []renderedElem // of the entries this port owns
	shared []renderedElem // refcounted across ports, no value
	chains []svcChainSpec // session affinity only: ordered so a chain precedes those it refers to
	sets   []svcSetSpec   // affinity sets
}

type svcSetSpec struct {
	name string
	fam  int
}

// svcKey encodes addr . proto . port (addr invalid: proto . port).
func svcKey(addr netip.Addr, proto byte, port uint16) string {
	b := make([]byte, 0, 24)
	if addr.IsValid() {
		b = append(b, addr.AsSlice()...)
	}
	b = append(b, proto, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, port)
	return string(append(b, 0, 0))
}

// ordinalKey appends the ordinal (host byte order, like numgen's result).
func ordinalKey(key string, ord int) string {
	return key + string(binaryutil.NativeEndian.PutUint32(uint32(ord)))
}

// backendValue encodes an endpoint as address . port.
func backendValue(t service.Target) string {
	b := append(t.Addr.AsSlice(), byte(t.Port>>8), byte(t.Port), 0, 0)
	return string(b)
}

// portEntries lists the keys a port claims.
func portEntries(ps *service.PortState, cfg *svcConfig) []entryKey {
	proto := svcProtos[ps.Protocol]
	var out []entryKey
	for fam := range 2 {
		if len(addrsOf(ps.ClusterIPs, fam)) == 0 {
			continue
		}
		for _, l := range [][]netip.Addr{ps.ClusterIPs, ps.ExternalIPs, ps.LoadBalancerIPs} {
			for _, a := range addrsOf(l, fam) {
				out = append(out, entryKey{fam: uint8(fam), key: svcKey(a, proto, ps.Port)})
			}
		}
		if cfg.nodePorts(ps, fam) {
			out = append(out, entryKey{fam: uint8(fam), np: true, key: svcKey(netip.Addr{}, proto, ps.NodePort)})
		}
	}
	return out
}

// nodePorts reports whether the port has a node port in family fam.
func (cfg *svcConfig) nodePorts(ps *service.PortState, fam int) bool {
	return ps.NodePort != 0 && cfg.nodePortsOn(fam)
}

func (cfg *svcConfig) nodePortsOn(fam int) bool {
	return cfg.anyNodePort || len(cfg.nodePortIPs[fam]) > 0
}

// keyKinds are the sets a key goes to, by kind of key.
type keyKinds struct {
	gate, mark, localMark, dnat, local, reject, drop, aff setKind
}

var (
	ipKinds = keyKinds{setServiceKeys, setMark, setLocalMark, setDNAT, setLocalDNAT, setRejectIPs, setDropIPs, setAffinityIPs}
	npKinds = keyKinds{setNodePortKeys, setNPMark, setNPLocalMark, setNPDNAT, setNPLocalDNAT, setRejectNP, setDropNP, setAffinityNP}
)

// renderPort computes the elements (and, with session affinity, the
// chains) of one service port. owns says which of its entries it owns.
func (cfg *svcConfig) renderPort(ps *service.PortState, owns func(entryKey) bool) portRender {
	var r portRender
	proto := svcProtos[ps.Protocol]
	anyEP := len(ps.InternalEndpoints)+len(ps.ExternalEndpoints)+len(ps.ClusterEndpoints) > 0
	aff := ps.AffinityTimeout > 0
	done := map[entryKey]bool{} // a key listed twice is rendered once
	owns0 := owns
	owns = func(e entryKey) bool {
		if done[e] || !owns0(e) {
			return false
		}
		done[e] = true
		return true
	}
	var ac *affinityChains
	if aff {
		ac = &affinityChains{cfg: cfg, ps: ps, r: &r, seenChain: map[string]bool{}, seenSet: map[string]bool{}, seenEP: map[string]bool{}}
	}
	for fam := range 2 {
		cips := addrsOf(ps.ClusterIPs, fam)
		if len(cips) == 0 {
			continue
		}
		f8 := uint8(fam)
		internal := targetsOf(ps.InternalEndpoints, fam)
		external := targetsOf(ps.ExternalEndpoints, fam)
		cluster := targetsOf(ps.ClusterEndpoints, fam)
		// No endpoint of this family anywhere: refuse; endpoints exist
		// but not for this traffic on this node: drop.
		refuse := !ps.HasEndpoints || (anyEP && len(internal)+len(external)+len(cluster) == 0)
		add := func(kind setKind, n int, key, val string) {
			r.elems = append(r.elems, renderedElem{ref: setRef{kind: kind, fam: f8, n: uint16(n)}, key: key, val: val})
		}
		noEP := func(kk keyKinds, key string) {
			if refuse {
				add(kk.reject, 0, key, "")
			} else {
				add(kk.drop, 0, key, "")
			}
		}
		// dnat adds the endpoints of key to the map of their count.
		dnat := func(kind setKind, key string, eps []service.Target) {
			for i, t := range eps {
				add(kind, len(eps), ordinalKey(key, i), backendValue(t))
			}
		}
		seenCIP := map[netip.Addr]bool{}
		for _, a := range cips {
			if !seenCIP[a] {
				seenCIP[a] = true
				r.shared = append(r.shared, renderedElem{ref: setRef{kind: setClusterIPs, fam: f8}, key: string(a.AsSlice())})
			}
		}
		seenLocal := map[netip.Addr]bool{}
		for _, l := range [][]service.Target{internal, external, cluster} {
			for _, t := range l {
				if t.Local && !seenLocal[t.Addr] {
					seenLocal[t.Addr] = true
					r.shared = append(r.shared, renderedElem{ref: setRef{kind: setHairpin, fam: f8}, key: string(t.Addr.AsSlice()) + string(t.Addr.AsSlice())})
				}
			}
		}
		var svcChain, extChain string
		if aff {
			svcChain, extChain = ac.build(fam, internal, external, cluster)
		}
		// ClusterIP traffic.
		for _, a := range cips {
			key := svcKey(a, proto, ps.Port)
			if !owns(entryKey{fam: f8, key: key}) {
				continue
			}
			switch {
			case len(internal) == 0:
				noEP(ipKinds, key)
			case aff:
				add(setServiceKeys, 0, key, "")
				add(setAffinityIPs, 0, key, svcChain)
			default:
				add(setServiceKeys, 0, key, "")
				dnat(setDNAT, key, internal)
				if cfg.masqueradeAll {
					add(setMark, 0, key, "")
				} else if len(cfg.clusterCIDRs[fam]) > 0 {
					add(setMarkOutside, 0, key, "")
				}
			}
		}
		// External traffic: external and load balancer IPs, node port.
		shortCircuit := ps.ExternalLocal && len(cluster) > 0
		ranges := prefixesOf(ps.SourceRanges, fam)
		external1 := func(kk keyKinds, key string, lb bool) {
			if len(external) > 0 || shortCircuit {
				add(kk.gate, 0, key, "")
				if aff {
					add(kk.aff, 0, key, extChain)
				} else {
					if len(external) > 0 {
						dnat(kk.dnat, key, external)
						if !ps.ExternalLocal {
							add(kk.mark, 0, key, "")
						}
					}
					if shortCircuit {
						add(kk.localMark, 0, key, "")
						dnat(kk.local, key, cluster)
					}
				}
			}
			if len(external) == 0 {
				// Traffic not short-circuited is not DNATed: the filter
				// chains refuse or drop it.
				noEP(kk, key)
			}
			if lb && len(ranges) > 0 {
				add(setFirewall, 0, key, "")
				for _, p := range ranges {
					first, last := prefixBounds(p)
					add(setFirewallAllow, 0, key+string(first.AsSlice()), key+string(last.AsSlice()))
				}
			}
		}
		for i, l := range [][]netip.Addr{ps.ExternalIPs, ps.LoadBalancerIPs} {
			for _, a := range addrsOf(l, fam) {
				if key := svcKey(a, proto, ps.Port); owns(entryKey{fam: f8, key: key}) {
					external1(ipKinds, key, i == 1)
				}
			}
		}
		if cfg.nodePorts(ps, fam) {
			if key := svcKey(netip.Addr{}, proto, ps.NodePort); owns(entryKey{fam: f8, np: true, key: key}) {
				external1(npKinds, key, false)
			}
		}
	}
	return r
}

// prefixBounds returns the first and last address of p.
func prefixBounds(p netip.Prefix) (first, last netip.Addr) {
	first = p.Masked().Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ = netip.AddrFromSlice(b)
	return first, last
}

func targetsOf(ts []service.Target, fam int) []service.Target {
	n := 0
	for _, t := range ts {
		if famIndex(t.Addr) == fam {
			n++
		}
	}
	if n == len(ts) {
		return ts // single-stack: no copy (read only)
	}
	out := make([]service.Target, 0, n)
	for _, t := range ts {
		if famIndex(t.Addr) == fam {
			out = append(out, t)
		}
	}
	return out
}

func addrsOf(as []netip.Addr, fam int) []netip.Addr {
	n := 0
	for _, a := range as {
		if famIndex(a) == fam {
			n++
		}
	}
	if n == len(as) {
		return as // no copy (read only)
	}
	out := make([]netip.Addr, 0, n)
	for _, a := range as {
		if famIndex(a) == fam {
			out = append(out, a)
		}
	}
	return out
}

// affinityChains builds the chains of a port with session affinity, the
// way kube-proxy does for every port: a chain per kind of traffic that
// first sends clients found in an endpoint's affinity set to that
// endpoint's chain, else picks one at random; a chain per endpoint that
// records the client (update @aff-... { ip saddr }) and DNATs.
type affinityChains struct {
	cfg                        *svcConfig
	ps                         *service.PortState
	r                          *portRender
	seenChain, seenSet, seenEP map[string]bool
}

func (ac *affinityChains) addChain(c svcChainSpec) {
	if !ac.seenChain[c.name] {
		ac.seenChain[c.name] = true
		ac.r.chains = append(ac.r.chains, c)
	}
}

// dispatch is the rules that pick an endpoint of eps from chain.
func (ac *affinityChains) dispatch(chain string, fam int, eps []service.Target, epChains *[]svcChainSpec) []svcRule {
	ps, f := ac.ps, svcFamilies[fam]
	var rules []svcRule
	targets := make([]string, len(eps))
	for i, t := range eps {
		targets[i] = epChainName(ps.Name, fam, t)
		if !ac.seenEP[targets[i]] {
			*epChains = append(*epChains, ac.cfg.endpointChain(ps, fam, t))
			ac.seenEP[targets[i]] = true
		}
	}
	for i, t := range eps {
		set := affSetName(ps.Name, fam, t)
		if !ac.seenSet[set] {
			ac.seenSet[set] = true
			ac.r.sets = append(ac.r.sets, svcSetSpec{name: set, fam: fam})
		}
		rules = append(rules, svcRule{exprs: []expr.Any{
			saddrLoad(f),
			&expr.Lookup{SourceRegister: reg1, SetName: set},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: targets[i]},
		}})
	}
	rules = append(rules, svcRule{exprs: []expr.Any{
		&expr.Numgen{Register: reg1, Modulus: uint32(len(eps)), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: chain},
	}, vmap: targets})
	return rules
}

// build adds the chains of family fam and returns the names of the chains
// ClusterIP traffic and external traffic go to ("" when none).
func (ac *affinityChains) build(fam int, internal, external, cluster []service.Target) (svcName, extName string) {
	cfg, ps, f := ac.cfg, ac.ps, svcFamilies[fam]
	var epChains []svcChainSpec
	if len(internal) > 0 {
		svc := svcChainSpec{name: svcChainName("svc", ps.Name, fam)}
		if cfg.masqueradeAll {
			svc.rules = append(svc.rules, svcRule{exprs: markExprs()})
		} else if len(cfg.clusterCIDRs[fam]) > 0 {
			svc.rules = append(svc.rules, svcRule{exprs: append([]expr.Any{saddrLoad(f),
				&expr.Lookup{SourceRegister: reg1, SetName: clusterCIDRSet(fam), SetID: clusterCIDRSetID(fam), Invert: true},
			}, markExprs()...)})
		}
		svc.rules = append(svc.rules, ac.dispatch(svc.name, fam, internal, &epChains)...)
		ac.addChain(svc)
		svcName = svc.name
	}
	shortCircuit := ps.ExternalLocal && len(cluster) > 0
	external1 := len(ps.ExternalIPs)+len(ps.LoadBalancerIPs) > 0 || cfg.nodePorts(ps, fam)
	if external1 && (len(external) > 0 || shortCircuit) {
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
			ext.rules = append(ext.rules, ac.dispatch(ext.name, fam, external, &epChains)...)
		}
		ac.addChain(ext)
		if shortCircuit {
			cls.rules = ac.dispatch(cls.name, fam, cluster, &epChains)
			ac.addChain(cls)
		}
		extName = ext.name
	}
	for _, c := range epChains {
		ac.addChain(c)
	}
	return svcName, extName
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

// endpointChain is, for an IPv4 endpoint A:P of a TCP port with affinity:
//
//	update @aff-... { ip saddr timeout T } meta l4proto tcp dnat ip to A:P
//
// (hairpin traffic is masqueraded by the hairpin set in nat-postrouting).
func (cfg *svcConfig) endpointChain(ps *service.PortState, fam int, t service.Target) svcChainSpec {
	f := svcFamilies[fam]
	portReg := uint32(reg32At + f.addrLen/4)
	return svcChainSpec{name: epChainName(ps.Name, fam, t), rules: []svcRule{{exprs: []expr.Any{
		saddrLoad(f),
		&expr.Dynset{SrcRegKey: reg1, SetName: affSetName(ps.Name, fam, t), Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: ps.AffinityTimeout},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{svcProtos[ps.Protocol]}},
		&expr.Immediate{Register: reg1, Data: t.Addr.AsSlice()},
		&expr.Immediate{Register: portReg, Data: binary.BigEndian.AppendUint16(nil, t.Port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.natFam, RegAddrMin: reg1, RegProtoMin: portReg, Specified: true},
	}}}}
}

func saddrLoad(f svcFamily) *expr.Payload {
	return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen}
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
