package nftables

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/dns/nodelocal"
	"github.com/kubewire/kubewire/internal/netns"
)

// Names of the chains a NoTrack creates in its table.
const (
	NoTrackChainPrerouting = "prerouting"
	NoTrackChainOutput     = "output"
)

// NoTrack exempts the traffic of local servers (node-local DNS) from
// connection tracking, as node-local-dns's NOTRACK iptables rules do. It
// implements nodelocal.NoTracker. For a table T and rules with address A
// and port P the ruleset is:
//
//	table inet T {
//		chain prerouting {
//			type filter hook prerouting priority raw;
//			ip daddr A udp dport P notrack    # queries from pods and other hosts
//			ip daddr A tcp dport P notrack
//		}
//		chain output {
//			type filter hook output priority raw;
//			ip daddr A udp dport P notrack    # queries from the node itself
//			ip daddr A tcp dport P notrack
//			ip saddr A udp sport P notrack    # the server's replies
//			ip saddr A tcp sport P notrack
//		}
//	}
//
// (ip6 for IPv6 addresses; rules are written as "meta nfproto ... meta
// l4proto ... th dport", one per address, protocol and port). Priority raw
// (-300) runs before conntrack (-200), so the packets get the untracked
// template and no entry is created, in either direction: replies leave the
// server untracked, and loopback packets keep the mark when they come back
// through prerouting. Packets arriving with source A are not exempted in
// prerouting: only the local server sends from A.
//
// Like Masquerade, a NoTrack owns its whole table and rebuilds it in one
// transaction when it differs from the desired rules; all methods are safe
// for concurrent use.
type NoTrack struct {
	tableConn
}

var _ nodelocal.NoTracker = (*NoTrack)(nil)

// NewNoTrack validates opts, probes (once per process, in a throwaway
// namespace) that the kernel has the notrack expression (Linux 4.10) and
// opens a connection bound to the namespace. It changes nothing: the table
// is created by the first SyncNoTrack.
func NewNoTrack(opts Options) (*NoTrack, error) {
	n := &NoTrack{}
	if err := n.open(opts, "notrack-v1", noTrackProbe.check); err != nil {
		return nil, err
	}
	return n, nil
}

// SyncNoTrack makes the table hold exactly the exemption rules describes
// (Ports default to 53). When the table already holds it, nothing is
// written; otherwise the table is deleted and rebuilt within one netlink
// transaction, removing anything else found in it. A table deleted by
// someone else is recreated. No Addresses removes the table. Invalid rules
// are rejected (errors.Is(err, ErrInvalid)) before anything is sent.
func (n *NoTrack) SyncNoTrack(ctx context.Context, rules nodelocal.NoTrackRules) error {
	p, err := buildNoTrackPlan(rules)
	if err != nil {
		return err
	}
	err = n.withConn(ctx, func(c *nft.Conn) error {
		if n.noTrackInSync(c, p) {
			return nil
		}
		n.removeTable(c)
		if len(p.addrs) > 0 {
			n.addNoTrackRuleset(c, p)
		}
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("nftables: sync notrack in table inet %s: %w", n.table.Name, err)
	}
	n.log.DebugContext(ctx, "notrack synced", "addresses", p.addrs, "ports", p.ports)
	return nil
}

// Dump renders the table as text, one object per line, in nft syntax
// without handles (as Masquerade.Dump does); a missing table dumps as "".
func (n *NoTrack) Dump(ctx context.Context) (string, error) {
	d, err := n.tableConn.Dump(ctx)
	return d, err
}

// noTrackPlan is validated NoTrackRules: sorted, without duplicates.
type noTrackPlan struct {
	addrs []netip.Addr
	ports []uint16
}

func buildNoTrackPlan(rules nodelocal.NoTrackRules) (noTrackPlan, error) {
	var p noTrackPlan
	for i, a := range rules.Addresses {
		f := fmt.Sprintf("NoTrackRules.Addresses[%d]", i)
		switch {
		case !a.IsValid():
			return p, invalid(f, a.String(), "not a valid address")
		case a.Zone() != "":
			return p, invalid(f, a.String(), "addresses with a zone are not supported")
		case a.Is4In6():
			return p, invalid(f, a.String(), "IPv4-mapped IPv6 address: write it as an IPv4 address")
		case a.IsUnspecified():
			return p, invalid(f, a.String(), "the unspecified address matches no server")
		}
		p.addrs = append(p.addrs, a)
	}
	for i, port := range rules.Ports {
		if port == 0 {
			return p, invalidNumber(fmt.Sprintf("NoTrackRules.Ports[%d]", i), 0, "must be 1-65535")
		}
		p.ports = append(p.ports, port)
	}
	if len(p.ports) == 0 {
		p.ports = []uint16{53}
	}
	slices.SortFunc(p.addrs, netip.Addr.Compare)
	p.addrs = slices.Compact(p.addrs)
	slices.Sort(p.ports)
	p.ports = slices.Compact(p.ports)
	return p, nil
}

func (p noTrackPlan) fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "notrack|%v|%v", p.addrs, p.ports)
	return fmt.Sprintf("[%x]", h.Sum(nil)[:6])
}

// noTrackRule is one rule: traffic to (dst) or from the address and port.
type noTrackRule struct {
	addr  netip.Addr
	proto byte
	port  uint16
	dst   bool
}

func (r noTrackRule) comment(fp string) string {
	what := "queries to"
	if !r.dst {
		what = "replies from"
	}
	return fmt.Sprintf("%s: notrack %s local server %s", commentPrefix, what, fp)
}

// rules lists the rules of a chain in order.
func (p noTrackPlan) rules(chain string) []noTrackRule {
	var out []noTrackRule
	dirs := []bool{true}
	if chain == NoTrackChainOutput {
		dirs = append(dirs, false)
	}
	for _, dst := range dirs {
		for _, a := range p.addrs {
			for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
				for _, port := range p.ports {
					out = append(out, noTrackRule{addr: a, proto: proto, port: port, dst: dst})
				}
			}
		}
	}
	return out
}

// exprs is, for an IPv4 destination rule:
//
//	meta nfproto ipv4 ip daddr A meta l4proto udp th dport P notrack
func (r noTrackRule) exprs() []expr.Any {
	nfproto, addrOff, addrLen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if r.addr.Is6() {
		nfproto, addrOff, addrLen = unix.NFPROTO_IPV6, 24, 16
	}
	portOff := uint32(2) // th dport
	if !r.dst {
		addrOff -= addrLen // saddr precedes daddr in both headers
		portOff = 0        // th sport
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.addr.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, r.port)},
		&expr.Notrack{},
	}
}

var noTrackChains = []struct {
	name string
	hook *nft.ChainHook
}{
	{NoTrackChainPrerouting, nft.ChainHookPrerouting},
	{NoTrackChainOutput, nft.ChainHookOutput},
}

// addNoTrackRuleset queues the table, its two chains and their rules.
func (n *NoTrack) addNoTrackRuleset(c *nft.Conn, p noTrackPlan) {
	t := c.AddTable(n.table)
	fp := p.fingerprint()
	for _, ch := range noTrackChains {
		chain := c.AddChain(&nft.Chain{Name: ch.name, Table: t, Type: nft.ChainTypeFilter,
			Hooknum: ch.hook, Priority: nft.ChainPriorityRaw})
		for _, r := range p.rules(ch.name) {
			c.AddRule(&nft.Rule{Table: t, Chain: chain, Exprs: r.exprs(),
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment(fp))})
		}
	}
}

// noTrackInSync reports whether the kernel already holds p: the table with
// its two chains (and nothing else), each with its rules tagged with p's
// fingerprint. Any error or difference means "rebuild". Rules changed
// behind our back without changing their comments are not detected.
func (n *NoTrack) noTrackInSync(c *nft.Conn, p noTrackPlan) bool {
	exists, objects, err := n.tableUse(c)
	if err != nil {
		return false
	}
	if !exists || len(p.addrs) == 0 {
		return !exists && len(p.addrs) == 0
	}
	if !useIs(objects, uint32(len(noTrackChains))) {
		return false
	}
	fp := p.fingerprint()
	for _, ch := range noTrackChains {
		got, err := c.GetRules(n.table, &nft.Chain{Name: ch.name, Table: n.table})
		if err != nil {
			return false
		}
		want := p.rules(ch.name)
		if len(got) != len(want) {
			return false
		}
		for i, r := range got {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if comment != want[i].comment(fp) || len(r.Exprs) != len(want[i].exprs()) {
				return false
			}
		}
	}
	return true
}

var noTrackProbe = &featureProbe{run: func() error { return netns.DoFresh(runNoTrackProbe) }}

// runNoTrackProbe builds, step by step, a NoTrack ruleset for one IPv4 and
// one IPv6 address in the current (throwaway) namespace.
func runNoTrackProbe() error {
	return runProbeSteps(func(c *nft.Conn) []probeStep {
		n := &NoTrack{tableConn{table: &nft.Table{Family: nft.TableFamilyINet, Name: "kubewire-probe"}}}
		p := noTrackPlan{addrs: []netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("fd00::a9fe:140a")},
			ports: []uint16{53}}
		return []probeStep{
			{"nftables inet family", "3.14", func() error {
				c.AddTable(n.table)
				return nil
			}},
			{"nftables notrack statement", "4.10", func() error {
				n.addNoTrackRuleset(c, p)
				return nil
			}},
		}
	})
}
