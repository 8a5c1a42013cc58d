package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// dumpTable renders table t as text, one object per line, in nft syntax
// close to what knftables' fake Dump prints:
//
//	add table inet T
//	add chain inet T C { type nat hook postrouting priority 100 ; }
//	add set inet T S { type ipv4_addr ; flags interval ; comment "..." ; }
//	add element inet T S { 10.0.0.0/8, 192.168.0.0-192.168.1.127 }
//	add rule inet T C meta nfproto ipv4 ip saddr @S masquerade comment "..."
//
// Handles are left out, so equal rulesets dump equal. A missing table dumps
// as "".
func dumpTable(c *nft.Conn, t *nft.Table) (string, error) {
	tables, err := c.ListTablesOfFamily(t.Family)
	if err != nil {
		return "", fmt.Errorf("list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nft.Table) bool { return x.Name == t.Name }) {
		return "", nil
	}
	fam := familyName(t.Family)
	var b strings.Builder
	fmt.Fprintf(&b, "add table %s %s\n", fam, t.Name)

	allChains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return "", fmt.Errorf("list chains: %w", err)
	}
	var chains []*nft.Chain
	for _, ch := range allChains {
		if ch.Table != nil && ch.Table.Name == t.Name {
			chains = append(chains, ch)
		}
	}
	slices.SortFunc(chains, func(a, b *nft.Chain) int { return strings.Compare(a.Name, b.Name) })
	for _, ch := range chains {
		fmt.Fprintf(&b, "add chain %s %s %s%s\n", fam, t.Name, ch.Name, chainSpec(ch))
	}

	sets, err := c.GetSets(t)
	if err != nil {
		return "", fmt.Errorf("list sets: %w", err)
	}
	slices.SortFunc(sets, func(a, b *nft.Set) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		fmt.Fprintf(&b, "add set %s %s %s { type %s ;", fam, t.Name, s.Name, s.KeyType.Name)
		if s.Interval {
			b.WriteString(" flags interval ;")
		}
		if s.Comment != "" {
			fmt.Fprintf(&b, " comment %q ;", s.Comment)
		}
		b.WriteString(" }\n")
		els, err := c.GetSetElements(s)
		if err != nil {
			return "", fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		if items := elementStrings(s, els); len(items) > 0 {
			fmt.Fprintf(&b, "add element %s %s %s { %s }\n", fam, t.Name, s.Name, strings.Join(items, ", "))
		}
	}

	for _, ch := range chains {
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return "", fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			fmt.Fprintf(&b, "add rule %s %s %s %s\n", fam, t.Name, ch.Name, ruleString(r))
		}
	}
	return b.String(), nil
}

func familyName(f nft.TableFamily) string {
	switch f {
	case nft.TableFamilyINet:
		return "inet"
	case nft.TableFamilyIPv4:
		return "ip"
	case nft.TableFamilyIPv6:
		return "ip6"
	case nft.TableFamilyARP:
		return "arp"
	case nft.TableFamilyBridge:
		return "bridge"
	case nft.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}

var hookNames = map[nft.ChainHook]string{
	*nft.ChainHookPrerouting:  "prerouting",
	*nft.ChainHookInput:       "input",
	*nft.ChainHookForward:     "forward",
	*nft.ChainHookOutput:      "output",
	*nft.ChainHookPostrouting: "postrouting",
}

func chainSpec(ch *nft.Chain) string {
	if ch.Hooknum == nil {
		return "" // regular chain
	}
	hook, ok := hookNames[*ch.Hooknum]
	if !ok {
		hook = strconv.Itoa(int(*ch.Hooknum))
	}
	spec := fmt.Sprintf(" { type %s hook %s", ch.Type, hook)
	if ch.Priority != nil {
		spec += fmt.Sprintf(" priority %d", int32(*ch.Priority))
	}
	spec += " ;"
	if ch.Policy != nil && *ch.Policy == nft.ChainPolicyDrop {
		spec += " policy drop ;"
	}
	return spec + " }"
}

// elementStrings renders set elements: interval sets of addresses as
// merged prefixes or ranges, other sets key by key.
func elementStrings(s *nft.Set, els []nft.SetElement) []string {
	var bits int
	switch s.KeyType.Name {
	case nft.TypeIPAddr.Name:
		bits = 32
	case nft.TypeIP6Addr.Name:
		bits = 128
	}
	var out []string
	if s.Interval && bits != 0 {
		for _, r := range elementRanges(els, bits) {
			out = append(out, r.String())
		}
		return out
	}
	for _, e := range els {
		if a, ok := netip.AddrFromSlice(e.Key); ok && bits != 0 {
			out = append(out, a.String())
		} else {
			out = append(out, fmt.Sprintf("0x%x", e.Key))
		}
	}
	slices.Sort(out)
	return out
}

// ruleString renders the expressions this package writes (and a few common
// others) in nft syntax; anything else is shown as its Go type and value.
func ruleString(r *nft.Rule) string {
	regs := map[uint32]string{} // what each register holds: "ip saddr", "meta nfproto"
	var parts []string
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				parts = append(parts, fmt.Sprintf("meta %s set reg%d", metaName(e.Key), e.Register))
				continue
			}
			regs[e.Register] = "meta " + metaName(e.Key)
		case *expr.Payload:
			regs[e.DestRegister] = payloadName(e)
		case *expr.Cmp:
			op := cmpOp(e.Op)
			lhs := regs[e.Register]
			parts = append(parts, strings.TrimSpace(fmt.Sprintf("%s %s%s", lhs, op, valueString(lhs, e.Data))))
		case *expr.Lookup:
			op := ""
			if e.Invert {
				op = "!= "
			}
			parts = append(parts, fmt.Sprintf("%s %s@%s", regs[e.SourceRegister], op, e.SetName))
		case *expr.Masq:
			s := "masquerade"
			if e.Random {
				s += " random"
			}
			if e.FullyRandom {
				s += " fully-random"
			}
			if e.Persistent {
				s += " persistent"
			}
			parts = append(parts, s)
		case *expr.Counter:
			parts = append(parts, "counter")
		case *expr.Verdict:
			parts = append(parts, verdictString(e))
		default:
			parts = append(parts, fmt.Sprintf("%T%+v", e, e))
		}
	}
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
		parts = append(parts, fmt.Sprintf("comment %q", c))
	}
	return strings.Join(parts, " ")
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyNFPROTO:
		return "nfproto"
	case expr.MetaKeyL4PROTO:
		return "l4proto"
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyMARK:
		return "mark"
	}
	return fmt.Sprintf("key%d", k)
}

func payloadName(p *expr.Payload) string {
	if p.Base == expr.PayloadBaseNetworkHeader {
		switch {
		case p.Offset == 12 && p.Len == 4:
			return "ip saddr"
		case p.Offset == 16 && p.Len == 4:
			return "ip daddr"
		case p.Offset == 8 && p.Len == 16:
			return "ip6 saddr"
		case p.Offset == 24 && p.Len == 16:
			return "ip6 daddr"
		}
	}
	return fmt.Sprintf("@base%d,%d,%d", p.Base, p.Offset*8, p.Len*8)
}

func cmpOp(op expr.CmpOp) string {
	switch op {
	case expr.CmpOpEq:
		return ""
	case expr.CmpOpNeq:
		return "!= "
	case expr.CmpOpLt:
		return "< "
	case expr.CmpOpLte:
		return "<= "
	case expr.CmpOpGt:
		return "> "
	case expr.CmpOpGte:
		return ">= "
	}
	return fmt.Sprintf("op%d ", op)
}

func valueString(lhs string, data []byte) string {
	switch {
	case lhs == "meta nfproto" && len(data) == 1:
		switch data[0] {
		case unix.NFPROTO_IPV4:
			return "ipv4"
		case unix.NFPROTO_IPV6:
			return "ipv6"
		}
	case strings.HasSuffix(lhs, "addr"):
		if a, ok := netip.AddrFromSlice(data); ok {
			return a.String()
		}
	}
	return fmt.Sprintf("0x%x", data)
}

func verdictString(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictContinue:
		return "continue"
	}
	return fmt.Sprintf("verdict%d", v.Kind)
}
