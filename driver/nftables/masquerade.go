package nftables

import (
	"context"
	"crypto/sha256"
	"fmt"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/network"
)

// Names of the objects a Masquerade creates in its table.
const (
	ChainPostrouting = "postrouting"
	SetMasqSrcV4     = "masq-src-v4"
	SetMasqSrcV6     = "masq-src-v6"
	SetNoMasqDstV4   = "no-masq-dst-v4"
	SetNoMasqDstV6   = "no-masq-dst-v6"
)

// Masquerade programs egress masquerade into one nftables table it owns. It
// implements network.Masquerader. All methods are safe for concurrent use;
// they are serialised.
type Masquerade struct {
	tableConn
}

var _ network.Masquerader = (*Masquerade)(nil)

// NewMasquerade validates opts, probes (once per process, in a throwaway
// namespace) that the kernel has what the ruleset needs, and opens an
// nftables netlink connection bound to the namespace. A missing kernel
// feature is reported as a *driver.UnsupportedError. It changes nothing in
// the namespace: the table is created by the first SyncMasquerade.
func NewMasquerade(opts Options) (*Masquerade, error) {
	m := &Masquerade{}
	if err := m.open(opts, "masquerade-v1", probeFeatures); err != nil {
		return nil, err
	}
	return m, nil
}

// SyncMasquerade makes the table hold exactly the masquerade rules says.
// When the table already holds it (same objects, rules carrying the
// fingerprint of these rules), nothing is written: a write costs the kernel an RCU grace period
// (milliseconds), and a CNI plugin syncs on every ADD. Otherwise, in one
// netlink transaction, the table is deleted and rebuilt within the batch,
// so packets see either the old or the new ruleset, and anything else found
// in the table is removed. A table deleted or emptied by someone else is
// recreated. Empty Sources removes the table. Invalid rules are rejected
// (errors.Is(err, ErrInvalid)) before anything is sent.
func (m *Masquerade) SyncMasquerade(ctx context.Context, rules network.MasqueradeRules) error {
	p, err := buildPlan(rules)
	if err != nil {
		return err
	}
	err = m.withConn(ctx, func(c *nft.Conn) error {
		if m.inSync(c, p) {
			return nil
		}
		m.removeTable(c)
		if !p.empty() {
			if err := m.addRuleset(c, p); err != nil {
				return err
			}
		}
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("nftables: sync masquerade in table inet %s: %w", m.table.Name, err)
	}
	m.log.DebugContext(ctx, "masquerade synced",
		"sources", len(rules.Sources), "except", len(rules.Except), "randomFully", rules.RandomFully, "removed", p.empty())
	return nil
}

// Set IDs only need to be unique within one batch; fixed ones avoid the
// package-global counter of google/nftables.
const (
	idMasqSrcV4 = iota + 1
	idMasqSrcV6
	idNoMasqDstV4
	idNoMasqDstV6
)

// family describes the per-family parts of the ruleset.
type family struct {
	name             string // "ip" or "ip6"
	nfproto          byte
	saddrOff, addrLn uint32
	daddrOff         uint32
	src, dst         *nft.Set
}

// addRuleset queues the table, chain, sets and rules of p.
func (m *Masquerade) addRuleset(c *nft.Conn, p plan) error {
	t := c.AddTable(m.table)
	chain := c.AddChain(&nft.Chain{
		Name:     ChainPostrouting,
		Table:    t,
		Type:     nft.ChainTypeNAT,
		Hooknum:  nft.ChainHookPostrouting,
		Priority: nft.ChainPriorityNATSource,
	})
	newSet := func(name string, id uint32, kt nft.SetDatatype, what string) *nft.Set {
		return &nft.Set{Table: t, Name: name, ID: id, KeyType: kt, Interval: true,
			Comment: commentPrefix + ": " + what}
	}
	fams := []family{
		{name: "ip", nfproto: unix.NFPROTO_IPV4, saddrOff: 12, daddrOff: 16, addrLn: 4,
			src: newSet(SetMasqSrcV4, idMasqSrcV4, nft.TypeIPAddr, "pod ranges masqueraded on egress"),
			dst: newSet(SetNoMasqDstV4, idNoMasqDstV4, nft.TypeIPAddr, "destinations reached without masquerade")},
		{name: "ip6", nfproto: unix.NFPROTO_IPV6, saddrOff: 8, daddrOff: 24, addrLn: 16,
			src: newSet(SetMasqSrcV6, idMasqSrcV6, nft.TypeIP6Addr, "pod ranges masqueraded on egress"),
			dst: newSet(SetNoMasqDstV6, idNoMasqDstV6, nft.TypeIP6Addr, "destinations reached without masquerade")},
	}
	srcs := [][]addrRange{p.src4, p.src6}
	dsts := [][]addrRange{p.dst4, p.dst6}
	for i, f := range fams {
		if err := c.AddSet(f.src, intervalElements(srcs[i])); err != nil {
			return fmt.Errorf("set %s: %w", f.src.Name, err)
		}
		if err := c.AddSet(f.dst, intervalElements(dsts[i])); err != nil {
			return fmt.Errorf("set %s: %w", f.dst.Name, err)
		}
	}
	for i, f := range fams {
		if len(srcs[i]) == 0 {
			continue
		}
		c.AddRule(&nft.Rule{
			Table:    t,
			Chain:    chain,
			Exprs:    masqExprs(f, p.randomFully),
			UserData: userdata.AppendString(nil, userdata.TypeComment, ruleComment(f.name)+" "+fingerprint(p)),
		})
	}
	return nil
}

// inSync reports whether the kernel already holds p: the table with its
// one chain and four sets, and the rules tagged with p's fingerprint (the
// sets are only ever written together with those rules). Two reads; any
// error or difference means "rebuild". Elements changed behind our back
// inside our own table are not detected until the rules change.
func (m *Masquerade) inSync(c *nft.Conn, p plan) bool {
	exists, objects, err := m.tableUse(c)
	if err != nil {
		return false
	}
	if !exists || p.empty() {
		return !exists && p.empty()
	}
	// The kernel counts the chains and sets a table holds: ours has one
	// chain and four sets; more means someone added objects to our table.
	if !useIs(objects, 5) {
		return false
	}
	rules, err := c.GetRules(m.table, &nft.Chain{Name: ChainPostrouting, Table: m.table})
	if err != nil {
		return false
	}
	var want []string
	for _, f := range []struct {
		name   string
		ranges []addrRange
	}{{"ip", p.src4}, {"ip6", p.src6}} {
		if len(f.ranges) > 0 {
			want = append(want, ruleComment(f.name)+" "+fingerprint(p))
		}
	}
	if len(rules) != len(want) {
		return false
	}
	for i, r := range rules {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if comment != want[i] {
			return false
		}
	}
	return true
}

// fingerprint identifies a plan; the rules carry it in their comment, so a
// rule set built for other rules is never taken as current.
func fingerprint(p plan) string {
	h := sha256.New()
	fmt.Fprintf(h, "%v|%v|%v|%v|%t", p.src4, p.src6, p.dst4, p.dst6, p.randomFully)
	return fmt.Sprintf("[%x]", h.Sum(nil)[:6])
}

func ruleComment(fam string) string {
	return commentPrefix + ": masquerade " + fam + " pod egress"
}

// masqExprs is, for f = ip:
//
//	meta nfproto ipv4 ip saddr @masq-src-v4 ip daddr != @masq-src-v4 ip daddr != @no-masq-dst-v4 masquerade [fully-random]
//
// Traffic to the pod ranges themselves is never masqueraded.
func masqExprs(f family, randomFully bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLn},
		&expr.Lookup{SourceRegister: 1, SetName: f.src.Name, SetID: f.src.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLn},
		&expr.Lookup{SourceRegister: 1, SetName: f.src.Name, SetID: f.src.ID, Invert: true},
		&expr.Lookup{SourceRegister: 1, SetName: f.dst.Name, SetID: f.dst.ID, Invert: true},
		&expr.Masq{FullyRandom: randomFully},
	}
}
