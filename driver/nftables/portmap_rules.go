package nftables

import (
	"fmt"
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Names of the objects a PortMap creates in its table (ChainPostrouting is
// shared with Masquerade).
const (
	ChainPrerouting = "prerouting"
	ChainOutput     = "output"
	ChainHostPorts  = "hostports"
	MapHostPortV4   = "hostport-v4"
	MapHostPortV6   = "hostport-v6"
	MapHostPortAny4 = "hostport-any-v4"
	MapHostPortAny6 = "hostport-any-v6"
	SetHairpinV4    = "hairpin-v4"
	SetHairpinV6    = "hairpin-v6"
	SetOwnerNames   = "owner-names"
	SetGeneration   = "generation"
)

// Registers: NFT_REG_1 holds the first field of a concatenation; the next
// fields follow in the 32-bit registers NFT_REG32_01 and up.
const (
	reg1    = unix.NFT_REG_1
	reg32At = unix.NFT_REG32_00 // + n: the n-th 32-bit register, n*4 bytes into NFT_REG_1
)

// ipsDstNAT is IPS_DST_NAT of linux/netfilter/nf_conntrack_common.h: the
// connection was DNATed.
const ipsDstNAT = 1 << 5

var (
	concatV4  = nft.MustConcatSetType(nft.TypeInetProto, nft.TypeIPAddr, nft.TypeInetService)
	concatV6  = nft.MustConcatSetType(nft.TypeInetProto, nft.TypeIP6Addr, nft.TypeInetService)
	concatAny = nft.MustConcatSetType(nft.TypeInetProto, nft.TypeInetService)
	podV4     = nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeInetService)
	podV6     = nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeInetService)
	pairV4    = nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeIPAddr)
	pairV6    = nft.MustConcatSetType(nft.TypeIP6Addr, nft.TypeIP6Addr)
)

// portFamily holds the per-family constants of the ruleset.
type portFamily struct {
	name     string // "ip" or "ip6"
	nfproto  byte
	natFam   uint32
	addrLen  uint32
	saddrOff uint32
	daddrOff uint32
	loopback []byte // daddr & loopMask == loopback: never the wildcard
	loopMask []byte
}

var portFamilies = [2]portFamily{
	{name: "ip", nfproto: unix.NFPROTO_IPV4, natFam: unix.NFPROTO_IPV4, addrLen: 4, saddrOff: 12, daddrOff: 16,
		loopback: []byte{127, 0, 0, 0}, loopMask: []byte{255, 0, 0, 0}},
	{name: "ip6", nfproto: unix.NFPROTO_IPV6, natFam: unix.NFPROTO_IPV6, addrLen: 16, saddrOff: 8, daddrOff: 24,
		loopback: append(make([]byte, 15), 1), loopMask: bytesOf(16, 0xff)},
}

func bytesOf(n int, b byte) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = b
	}
	return s
}

// portObjects are the sets, maps and chains of a PortMap table.
type portObjects struct {
	table    *nft.Table
	maps     [numKinds]*nft.Set
	hairpin  [2]*nft.Set
	names    *nft.Set
	gen      *nft.Set
	chains   []*nft.Chain
	hostport *nft.Chain
}

func newPortObjects(t *nft.Table) *portObjects {
	o := &portObjects{table: t}
	newMap := func(name string, id uint32, key, data nft.SetDatatype, what string) *nft.Set {
		return &nft.Set{Table: t, Name: name, ID: id, IsMap: true, Concatenation: true,
			KeyType: key, DataType: data, Comment: commentPrefix + ": " + what}
	}
	o.maps[kindV4] = newMap(MapHostPortV4, 1, concatV4, podV4, "IPv4 host ports on one address")
	o.maps[kindV6] = newMap(MapHostPortV6, 2, concatV6, podV6, "IPv6 host ports on one address")
	o.maps[kindAnyV4] = newMap(MapHostPortAny4, 3, concatAny, podV4, "IPv4 host ports on every local address")
	o.maps[kindAnyV6] = newMap(MapHostPortAny6, 4, concatAny, podV6, "IPv6 host ports on every local address")
	o.hairpin[0] = &nft.Set{Table: t, Name: SetHairpinV4, ID: 5, KeyType: pairV4, Concatenation: true,
		Comment: commentPrefix + ": pod . pod, masqueraded when a pod reaches itself"}
	o.hairpin[1] = &nft.Set{Table: t, Name: SetHairpinV6, ID: 6, KeyType: pairV6, Concatenation: true,
		Comment: commentPrefix + ": pod . pod, masqueraded when a pod reaches itself"}
	o.names = &nft.Set{Table: t, Name: SetOwnerNames, ID: 7, KeyType: nft.TypeIP6Addr,
		Comment: commentPrefix + ": names of long owners, key digest . chunk"}
	o.gen = &nft.Set{Table: t, Name: SetGeneration, ID: 8, KeyType: nft.TypeInteger,
		Comment: commentPrefix + ": bumped by every change, guards concurrent writers"}
	o.hostport = &nft.Chain{Name: ChainHostPorts, Table: t}
	o.chains = []*nft.Chain{
		{Name: ChainPrerouting, Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookPrerouting, Priority: nft.ChainPriorityNATDest},
		{Name: ChainOutput, Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookOutput, Priority: nft.ChainPriorityNATDest},
		{Name: ChainPostrouting, Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookPostrouting, Priority: nft.ChainPriorityNATSource},
		o.hostport,
	}
	return o
}

// sets lists every set and map of the table.
func (o *portObjects) sets() []*nft.Set {
	return []*nft.Set{o.maps[0], o.maps[1], o.maps[2], o.maps[3], o.hairpin[0], o.hairpin[1], o.names, o.gen}
}

// portRule is one rule of the skeleton; its comment identifies it.
type portRule struct {
	chain   string
	comment string
	exprs   []expr.Any
}

// rules returns the constant ruleset:
//
//	chain prerouting { type nat hook prerouting priority dstnat; jump hostports }
//	chain output     { type nat hook output priority dstnat; jump hostports }
//	chain hostports {
//		meta nfproto ipv4 dnat ip to meta l4proto . ip daddr . th dport map @hostport-v4
//		meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostport-any-v4
//		(the same for ip6, with ::1)
//	}
//	chain postrouting {
//		type nat hook postrouting priority srcnat;
//		meta nfproto ipv4 ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade
//		(the same for ip6)
//	}
//
// A lookup that misses ends the rule, so the maps need no verdicts; a dnat
// accepts the packet, so a specific host address wins over the wildcard.
func (o *portObjects) rules() []portRule {
	jump := []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ChainHostPorts}}
	out := []portRule{
		{ChainPrerouting, commentPrefix + ": host ports of traffic entering the node", jump},
		{ChainOutput, commentPrefix + ": host ports of connections from the node", jump},
	}
	var masq []portRule
	for fi, f := range portFamilies {
		specific, wildcard := o.maps[kindOf(fi == 1, false)], o.maps[kindOf(fi == 1, true)]
		out = append(out,
			portRule{ChainHostPorts, commentPrefix + ": dnat " + f.name + " host ports of one address",
				dnatExprs(f, specific, false)},
			portRule{ChainHostPorts, commentPrefix + ": dnat " + f.name + " host ports of every local address",
				dnatExprs(f, wildcard, true)})
		masq = append(masq, portRule{ChainPostrouting, commentPrefix + ": masquerade " + f.name + " hairpin",
			hairpinExprs(f, o.hairpin[fi])})
	}
	return append(out, masq...)
}

func nfprotoIs(f portFamily) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.nfproto}},
	}
}

func dnatExprs(f portFamily, m *nft.Set, wildcard bool) []expr.Any {
	ex := nfprotoIs(f)
	port := uint32(reg32At + 1)
	if wildcard {
		ex = append(ex,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen, Mask: f.loopMask, Xor: make([]byte, f.addrLen)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: f.loopback},
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		)
	} else {
		ex = append(ex,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Payload{DestRegister: reg32At + 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
		)
		port += f.addrLen / 4
	}
	return append(ex,
		&expr.Payload{DestRegister: port, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.natFam, RegAddrMin: reg1, RegProtoMin: reg32At + f.addrLen/4},
	)
}

func hairpinExprs(f portFamily, s *nft.Set) []expr.Any {
	dnat := binaryutil.NativeEndian.PutUint32(ipsDstNAT)
	return append(nfprotoIs(f),
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: dnat, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
		&expr.Payload{DestRegister: reg32At + f.addrLen/4, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
		&expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID},
		&expr.Masq{},
	)
}

// addSkeleton queues the table's sets, chains and rules (the table itself
// must be queued first).
func (o *portObjects) addSkeleton(c *nft.Conn) error {
	if err := o.addSets(c); err != nil {
		return err
	}
	o.addChains(c)
	o.addRules(c)
	return nil
}

func (o *portObjects) addSets(c *nft.Conn) error {
	for _, s := range o.sets() {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	return nil
}

func (o *portObjects) addChains(c *nft.Conn) {
	for _, ch := range o.chains {
		c.AddChain(ch)
	}
}

func (o *portObjects) addRules(c *nft.Conn) {
	for _, r := range o.rules() {
		c.AddRule(&nft.Rule{Table: o.table, Chain: &nft.Chain{Name: r.chain, Table: o.table}, Exprs: r.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
	}
}

// maxElemsPerMsg bounds the elements of one netlink message, so a large
// rebuild stays well below the socket buffer.
const maxElemsPerMsg = 256

// queueChange queues ch: deletions first, so a key whose pod changes is
// deleted and added back within the batch.
func (o *portObjects) queueChange(c *nft.Conn, ch *portChange) error {
	type op struct {
		s   *nft.Set
		els []nft.SetElement
		add bool
	}
	var ops []op
	for k := range numKinds {
		ops = append(ops, op{o.maps[k], ch.del[k], false})
	}
	for f := range 2 {
		ops = append(ops, op{o.hairpin[f], ch.hairpinDel[f], false})
	}
	ops = append(ops, op{o.names, ch.namesDel, false}, op{o.names, ch.namesAdd, true})
	for f := range 2 {
		ops = append(ops, op{o.hairpin[f], ch.hairpinAdd[f], true})
	}
	for k := range numKinds {
		ops = append(ops, op{o.maps[k], ch.add[k], true})
	}
	for _, x := range ops {
		for chunk := range slices.Chunk(x.els, maxElemsPerMsg) {
			var err error
			if x.add {
				err = c.SetAddElements(x.s, chunk)
			} else {
				err = c.SetDeleteElements(x.s, chunk)
			}
			if err != nil {
				return fmt.Errorf("elements of %s: %w", x.s.Name, err)
			}
		}
	}
	return nil
}
