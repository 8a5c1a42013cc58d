package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/internal/netns"
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

// commentPrefix starts the comment of every rule and set a Masquerade
// writes.
const commentPrefix = "kubewire"

// Options binds a driver to a network namespace and names its table.
type Options struct {
	// NetNS is the path of the network namespace to program (a bind mount
	// such as /run/netns/NAME, or /proc/PID/ns/net). "" means the namespace
	// of the calling OS thread when the driver is constructed.
	NetNS string
	// Table is the name of the nftables table (family inet) the instance
	// owns. Required: 1 to MaxTableNameLen letters, digits, '-' and '_',
	// starting with a letter or '_'.
	Table string
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

// Masquerade programs egress masquerade into one nftables table it owns. It
// implements network.Masquerader. All methods are safe for concurrent use;
// they are serialised.
type Masquerade struct {
	table *nft.Table
	log   *slog.Logger

	mu     sync.Mutex
	ns     *netns.NetNS
	conn   *nft.Conn     // lasting connection bound to ns; nil after an error
	sock   *netlink.Conn // conn's socket, for deadlines
	closed bool
}

var _ network.Masquerader = (*Masquerade)(nil)

// ErrClosed is returned by methods of a closed Masquerade.
var ErrClosed = errors.New("nftables: masquerade driver closed")

// NewMasquerade validates opts, probes (once per process, in a throwaway
// namespace) that the kernel has what the ruleset needs, and opens an
// nftables netlink connection bound to the namespace. A missing kernel
// feature is reported as a *driver.UnsupportedError. It changes nothing in
// the namespace: the table is created by the first SyncMasquerade.
func NewMasquerade(opts Options) (*Masquerade, error) {
	if err := validateTableName(opts.Table); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		ns  *netns.NetNS
		err error
	)
	if opts.NetNS == "" {
		ns, err = netns.Current()
	} else {
		ns, err = netns.Open(opts.NetNS)
	}
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	if err := probeFeatures(); err != nil {
		ns.Close()
		return nil, err
	}
	m := &Masquerade{
		table: &nft.Table{Family: nft.TableFamilyINet, Name: opts.Table},
		log:   log.With("table", "inet "+opts.Table, "netns", ns.Path()),
		ns:    ns,
	}
	// Dial now, and list tables once: it fails early when the namespace
	// cannot be programmed (no CAP_NET_ADMIN in its user namespace).
	err = m.withConn(context.Background(), func(c *nft.Conn) error {
		_, err := c.ListTablesOfFamily(nft.TableFamilyINet)
		return err
	})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables: connect in netns %s: %w", ns.Path(), err)
	}
	return m, nil
}

// Table returns the name of the table the instance owns.
func (m *Masquerade) Table() string { return m.table.Name }

// dial opens a lasting nftables connection whose socket is created inside
// the namespace, so it stays bound to it whatever thread uses it later.
func (m *Masquerade) dial() error {
	var (
		conn *nft.Conn
		sock *netlink.Conn
	)
	err := m.ns.Do(func() error {
		var err error
		conn, err = nft.New(nft.AsLasting(), nft.WithSockOptions(func(c *netlink.Conn) error {
			sock = c
			return nil
		}))
		return err
	})
	if err != nil {
		return err
	}
	m.conn, m.sock = conn, sock
	return nil
}

// withConn runs fn with the connection under m.mu, applying ctx's deadline
// to the socket. After any error the connection is dropped (a failed batch
// or an expired deadline can leave unread replies behind) and the next call
// dials a fresh one.
func (m *Masquerade) withConn(ctx context.Context, fn func(*nft.Conn) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.conn == nil {
		if err := m.dial(); err != nil {
			return err
		}
	}
	deadline, _ := ctx.Deadline() // zero: no deadline
	if m.sock != nil {
		if err := m.sock.SetDeadline(deadline); err != nil {
			m.dropConn()
			return err
		}
	}
	err := fn(m.conn)
	if err != nil {
		m.dropConn()
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
	}
	return err
}

func (m *Masquerade) dropConn() {
	if m.conn != nil {
		_ = m.conn.CloseLasting()
	}
	m.conn, m.sock = nil, nil
}

// SyncMasquerade makes the table hold exactly the masquerade rules says, in
// one netlink transaction: the table is deleted and rebuilt within the
// batch, so packets see either the old or the new ruleset, and anything
// else found in the table is removed. A table deleted by someone else is
// recreated. Empty Sources removes the table. Invalid rules are rejected
// (errors.Is(err, ErrInvalid)) before anything is sent.
func (m *Masquerade) SyncMasquerade(ctx context.Context, rules network.MasqueradeRules) error {
	p, err := buildPlan(rules)
	if err != nil {
		return err
	}
	err = m.withConn(ctx, func(c *nft.Conn) error {
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

// Cleanup removes the table and everything in it. Removing a table that is
// not there is not an error. Other tables are never touched.
func (m *Masquerade) Cleanup(ctx context.Context) error {
	err := m.withConn(ctx, func(c *nft.Conn) error {
		m.removeTable(c)
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("nftables: remove table inet %s: %w", m.table.Name, err)
	}
	m.log.DebugContext(ctx, "masquerade table removed")
	return nil
}

// Close releases the connection and the namespace handle. It leaves the
// table in place (call Cleanup first to remove it).
func (m *Masquerade) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.dropConn()
	return m.ns.Close()
}

// removeTable queues the deletion of the table with all it holds. Adding it
// first makes the deletion valid whether or not the table exists, all in
// the same transaction.
func (m *Masquerade) removeTable(c *nft.Conn) {
	c.AddTable(m.table)
	c.DelTable(m.table)
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
			UserData: userdata.AppendString(nil, userdata.TypeComment, ruleComment(f.name)),
		})
	}
	return nil
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

// Dump renders the table as text: the table, its chains, sets with their
// elements (as merged prefixes or ranges) and rules, in nft-like syntax
// without handles, so two dumps of the same ruleset are equal. A missing
// table dumps as "".
func (m *Masquerade) Dump(ctx context.Context) (string, error) {
	var out string
	err := m.withConn(ctx, func(c *nft.Conn) error {
		var err error
		out, err = dumpTable(c, m.table)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("nftables: dump table inet %s: %w", m.table.Name, err)
	}
	return out, nil
}
