package nftables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/kubewire/kubewire/driver"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/network"
)

// topology is pod --veth-- node --veth-- remote, plus a second pod ("peer",
// another node's pod as far as the test is concerned) behind the node. The
// remote host has no route back to the pod ranges: only masqueraded traffic
// gets a reply.
type topology struct {
	pod, node, remote, peer *sandbox.NS

	remoteTCP4, remoteTCP6, remoteUDP4, remoteUDP6 netip.AddrPort
	peerTCP4, peerTCP6, peerUDP4, peerUDP6         netip.AddrPort
}

var (
	podAddr4    = netip.MustParseAddr("10.244.1.2")
	podAddr6    = netip.MustParseAddr("fd00:10:244:1::2")
	nodeAddr4   = netip.MustParseAddr("198.18.0.1")
	nodeAddr6   = netip.MustParseAddr("2001:db8:1::1")
	remoteAddr4 = netip.MustParseAddr("198.18.0.2")
	remoteAddr6 = netip.MustParseAddr("2001:db8:1::2")
	peerAddr4   = netip.MustParseAddr("10.244.2.2")
	peerAddr6   = netip.MustParseAddr("fd00:10:244:2::2")

	podRules = network.MasqueradeRules{
		Sources: prefixes("10.244.1.0/24", "fd00:10:244:1::/64"),
		Except:  prefixes("10.244.0.0/16", "fd00:10:244::/48"),
	}
)

func newTopology(t *testing.T) *topology {
	sb := sandbox.New(t)
	tp := &topology{
		pod:    sb.Namespace("pod"),
		node:   sb.Namespace("node"),
		remote: sb.Namespace("remote"),
		peer:   sb.Namespace("peer"),
	}
	sb.Connect(tp.pod, "eth0", prefixes("10.244.1.2/24", "fd00:10:244:1::2/64"),
		tp.node, "pod0", prefixes("10.244.1.1/24", "fd00:10:244:1::1/64"))
	sb.Connect(tp.node, "eth0", prefixes("198.18.0.1/24", "2001:db8:1::1/64"),
		tp.remote, "eth0", prefixes("198.18.0.2/24", "2001:db8:1::2/64"))
	sb.Connect(tp.peer, "eth0", prefixes("10.244.2.2/24", "fd00:10:244:2::2/64"),
		tp.node, "peer0", prefixes("10.244.2.1/24", "fd00:10:244:2::1/64"))
	for _, r := range []struct {
		ns  *sandbox.NS
		dst string
		via string
	}{
		{tp.pod, "0.0.0.0/0", "10.244.1.1"},
		{tp.pod, "::/0", "fd00:10:244:1::1"},
		{tp.peer, "0.0.0.0/0", "10.244.2.1"},
		{tp.peer, "::/0", "fd00:10:244:2::1"},
	} {
		if err := r.ns.AddRoute(netip.MustParsePrefix(r.dst), netip.MustParseAddr(r.via), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	tp.node.MustSysctl("net.ipv4.ip_forward", "1")
	tp.node.MustSysctl("net.ipv6.conf.all.forwarding", "1")

	tp.remoteTCP4 = tp.remote.ServeEcho("tcp", netip.AddrPortFrom(remoteAddr4, 0))
	tp.remoteTCP6 = tp.remote.ServeEcho("tcp", netip.AddrPortFrom(remoteAddr6, 0))
	tp.remoteUDP4 = tp.remote.ServeEcho("udp", netip.AddrPortFrom(remoteAddr4, 0))
	tp.remoteUDP6 = tp.remote.ServeEcho("udp", netip.AddrPortFrom(remoteAddr6, 0))
	tp.peerTCP4 = tp.peer.ServeEcho("tcp", netip.AddrPortFrom(peerAddr4, 0))
	tp.peerTCP6 = tp.peer.ServeEcho("tcp", netip.AddrPortFrom(peerAddr6, 0))
	tp.peerUDP4 = tp.peer.ServeEcho("udp", netip.AddrPortFrom(peerAddr4, 0))
	tp.peerUDP6 = tp.peer.ServeEcho("udp", netip.AddrPortFrom(peerAddr6, 0))
	return tp
}

type target struct {
	network string
	addr    netip.AddrPort
}

func (tp *topology) remoteTargets(fams ...string) []target {
	all := []target{{"tcp", tp.remoteTCP4}, {"tcp", tp.remoteTCP6}, {"udp", tp.remoteUDP4}, {"udp", tp.remoteUDP6}}
	var out []target
	for _, tg := range all {
		fam := "4"
		if tg.addr.Addr().Is6() {
			fam = "6"
		}
		if len(fams) == 0 || slices.Contains(fams, fam) {
			out = append(out, tg)
		}
	}
	return out
}

func (tp *topology) peerTargets() []target {
	return []target{{"tcp", tp.peerTCP4}, {"tcp", tp.peerTCP6}, {"udp", tp.peerUDP4}, {"udp", tp.peerUDP6}}
}

// The sandbox's MustReach and MustNotReach report to the test that built the
// sandbox; these report to the (sub)test given.
func reach(t *testing.T, ns *sandbox.NS, tg target) netip.AddrPort {
	t.Helper()
	from, err := ns.Probe(tg.network, tg.addr, 3*time.Second)
	if err != nil {
		t.Errorf("%s cannot reach %s %s: %v", ns.Role, tg.network, tg.addr, err)
	}
	return from
}

func notReach(t *testing.T, ns *sandbox.NS, tg target) {
	t.Helper()
	if from, err := ns.Probe(tg.network, tg.addr, 300*time.Millisecond); err == nil {
		t.Errorf("%s reached %s %s (seen as %s), want no connectivity", ns.Role, tg.network, tg.addr, from)
	}
}

// mustBeMasqueraded checks that the pod reaches every remote server of the
// given families ("4", "6"; none means both) and is seen there with the
// node's address.
func (tp *topology) mustBeMasqueraded(t *testing.T, fams ...string) {
	t.Helper()
	for _, tg := range tp.remoteTargets(fams...) {
		from := reach(t, tp.pod, tg)
		if !from.IsValid() {
			continue
		}
		want := nodeAddr4
		if tg.addr.Addr().Is6() {
			want = nodeAddr6
		}
		if from.Addr() != want {
			t.Errorf("%s %s saw the pod as %s, want the node address %s", tg.network, tg.addr, from, want)
		}
	}
}

func (tp *topology) mustNotReachRemote(t *testing.T, fams ...string) {
	t.Helper()
	for _, tg := range tp.remoteTargets(fams...) {
		notReach(t, tp.pod, tg)
	}
}

// mustReachPeerUnNATed checks that pod-to-pod traffic keeps the pod's address.
func (tp *topology) mustReachPeerUnNATed(t *testing.T) {
	t.Helper()
	for _, tg := range tp.peerTargets() {
		from := reach(t, tp.pod, tg)
		if !from.IsValid() {
			continue
		}
		want := podAddr4
		if tg.addr.Addr().Is6() {
			want = podAddr6
		}
		if from.Addr() != want {
			t.Errorf("peer %s %s saw the pod as %s, want its own address %s", tg.network, tg.addr, from, want)
		}
	}
}

// nsConn returns an nftables connection bound to the sandbox namespace ns.
func nsConn(t *testing.T, ns *sandbox.NS) *nft.Conn {
	t.Helper()
	var c *nft.Conn
	err := ns.Do(func() error {
		var err error
		c, err = nft.New(nft.AsLasting())
		return err
	})
	if err != nil {
		t.Fatalf("nftables conn in %s: %v", ns.Role, err)
	}
	t.Cleanup(func() { c.CloseLasting() })
	return c
}

// rawSnapshot lists a table through google/nftables, without going through
// Dump: chains, sets, sorted elements and rule expressions (no handles).
func rawSnapshot(t *testing.T, c *nft.Conn, table string) string {
	t.Helper()
	tb := &nft.Table{Family: nft.TableFamilyINet, Name: table}
	var b strings.Builder
	chains, err := c.ListChainsOfTableFamily(nft.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		fmt.Fprintf(&b, "chain %s type=%s hook=%v prio=%v\n", ch.Name, ch.Type, deref(ch.Hooknum), deref(ch.Priority))
		rules, err := c.GetRules(tb, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			fmt.Fprintf(&b, "  rule udata=%x", r.UserData)
			for _, e := range r.Exprs {
				fmt.Fprintf(&b, " %T%+v", e, e)
			}
			b.WriteString("\n")
		}
	}
	sets, err := c.GetSets(tb)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(sets, func(a, b *nft.Set) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range sets {
		fmt.Fprintf(&b, "set %s key=%s interval=%v comment=%q\n", s.Name, s.KeyType.Name, s.Interval, s.Comment)
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		var ss []string
		for _, e := range els {
			ss = append(ss, fmt.Sprintf("%x/%v", e.Key, e.IntervalEnd))
		}
		slices.Sort(ss)
		fmt.Fprintf(&b, "  elements %v\n", ss)
	}
	return b.String()
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func tableNames(t *testing.T, c *nft.Conn) []string {
	t.Helper()
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, familyName(tb.Family)+" "+tb.Name)
	}
	slices.Sort(names)
	return names
}

// addOtherTable creates, as "another component" would, a table of its own
// in the node namespace: a filter chain, a named set and a rule.
func addOtherTable(t *testing.T, c *nft.Conn, name string) *nft.Table {
	t.Helper()
	tb := c.AddTable(&nft.Table{Family: nft.TableFamilyINet, Name: name})
	ch := c.AddChain(&nft.Chain{Name: "forward", Table: tb, Type: nft.ChainTypeFilter,
		Hooknum: nft.ChainHookForward, Priority: nft.ChainPriorityFilter})
	s := &nft.Set{Table: tb, Name: "allowed", KeyType: nft.TypeIPAddr, ID: 77}
	if err := c.AddSet(s, []nft.SetElement{{Key: []byte{192, 0, 2, 1}}}); err != nil {
		t.Fatal(err)
	}
	c.AddRule(&nft.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{2}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("create other table: %v", err)
	}
	return tb
}

func TestMasqueradePrivileged(t *testing.T) {
	tp := newTopology(t)
	ctx := context.Background()
	table := fmt.Sprintf("kwtest_masq_%d", os.Getpid())

	// The namespace the test runs in (the root namespace here): read only.
	rootConn, err := nft.New()
	if err != nil {
		t.Fatal(err)
	}
	rootBefore := tableNames(t, rootConn)
	t.Cleanup(func() {
		rootAfter := tableNames(t, rootConn)
		if slices.Contains(rootAfter, "inet "+table) {
			t.Errorf("table inet %s appeared in the test's own namespace", table)
		}
		if !slices.Equal(rootBefore, rootAfter) {
			t.Logf("note: tables of the test's namespace changed during the test (%v -> %v); not by this driver", rootBefore, rootAfter)
		}
	})

	nodeConn := nsConn(t, tp.node)
	other := addOtherTable(t, nodeConn, "othercomponent")
	otherBefore := rawSnapshot(t, nodeConn, other.Name)

	m, err := NewMasquerade(Options{NetNS: tp.node.Path(), Table: table})
	if err != nil {
		t.Fatalf("NewMasquerade: %v", err)
	}
	t.Cleanup(func() { m.Close() })

	checkOther := func(t *testing.T) {
		t.Helper()
		if got := rawSnapshot(t, nodeConn, other.Name); got != otherBefore {
			t.Errorf("other table changed:\n%s\nwant\n%s", got, otherBefore)
		}
	}

	t.Run("no egress before sync", func(t *testing.T) {
		if d, err := m.Dump(ctx); err != nil || d != "" {
			t.Fatalf("Dump before sync = %q, %v; want empty", d, err)
		}
		tp.mustNotReachRemote(t)
		tp.mustReachPeerUnNATed(t)
	})

	var dump1 string
	t.Run("sync masquerades egress", func(t *testing.T) {
		if err := m.SyncMasquerade(ctx, podRules); err != nil {
			t.Fatalf("SyncMasquerade: %v", err)
		}
		dump1, err = m.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("dump:\n%s", dump1)
		for _, want := range []string{
			"add table inet " + table + "\n",
			"add chain inet " + table + " postrouting { type nat hook postrouting priority 100 ; }\n",
			"add set inet " + table + ` masq-src-v4 { type ipv4_addr ; flags interval ; }` + "\n",
			"add element inet " + table + " masq-src-v4 { 10.244.1.0/24 }\n",
			"add element inet " + table + " masq-src-v6 { fd00:10:244:1::/64 }\n",
			"add element inet " + table + " no-masq-dst-v4 { 10.244.0.0/16 }\n",
			"add element inet " + table + " no-masq-dst-v6 { fd00:10:244::/48 }\n",
			"add rule inet " + table + ` postrouting meta nfproto ipv4 ip saddr @masq-src-v4 ip daddr != @masq-src-v4 ip daddr != @no-masq-dst-v4 masquerade comment "kubewire: masquerade ip pod egress [`,
			"add rule inet " + table + ` postrouting meta nfproto ipv6 ip6 saddr @masq-src-v6 ip6 daddr != @masq-src-v6 ip6 daddr != @no-masq-dst-v6 masquerade comment "kubewire: masquerade ip6 pod egress [`,
		} {
			if !strings.Contains(dump1, want) {
				t.Errorf("dump lacks %q", want)
			}
		}
		tp.mustBeMasqueraded(t)
		checkOther(t)
	})

	t.Run("except is not masqueraded", func(t *testing.T) {
		tp.mustReachPeerUnNATed(t)
	})

	t.Run("sync is idempotent", func(t *testing.T) {
		raw1 := rawSnapshot(t, nodeConn, table)
		if err := m.SyncMasquerade(ctx, podRules); err != nil {
			t.Fatal(err)
		}
		dump2, err := m.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if dump2 != dump1 {
			t.Errorf("second sync changed the dump:\n%s\nwant\n%s", dump2, dump1)
		}
		if raw2 := rawSnapshot(t, nodeConn, table); raw2 != raw1 {
			t.Errorf("second sync changed the table:\n%s\nwant\n%s", raw2, raw1)
		}
		// Same rules written differently (order, duplicates, split prefixes)
		// give the same table.
		equiv := network.MasqueradeRules{
			Sources: prefixes("fd00:10:244:1::/64", "10.244.1.0/25", "10.244.1.128/25", "10.244.1.0/24"),
			Except:  prefixes("fd00:10:244::/48", "10.244.0.0/17", "10.244.128.0/17"),
		}
		if err := m.SyncMasquerade(ctx, equiv); err != nil {
			t.Fatal(err)
		}
		if dump3, _ := m.Dump(ctx); dump3 != dump1 {
			t.Errorf("equivalent rules gave a different dump:\n%s\nwant\n%s", dump3, dump1)
		}
		tp.mustBeMasqueraded(t)
		// A second sync with the same rules writes nothing (the kernel
		// reports no ruleset change), while a real change does.
		if n := rulesetChanges(t, tp.node, func() error { return m.SyncMasquerade(ctx, podRules) }); n != 0 {
			t.Fatalf("no-op sync changed the ruleset (%d events)", n)
		}
		changed := podRules
		changed.RandomFully = !changed.RandomFully
		if n := rulesetChanges(t, tp.node, func() error { return m.SyncMasquerade(ctx, changed) }); n == 0 {
			t.Fatal("a changed sync reported no ruleset change: the monitor sees nothing")
		}
		if err := m.SyncMasquerade(ctx, podRules); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("invalid rules apply nothing", func(t *testing.T) {
		bad := network.MasqueradeRules{Sources: prefixes("10.244.1.0/24", "10.0.0.1/8")}
		err := m.SyncMasquerade(ctx, bad)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `MasqueradeRules.Sources[1] "10.0.0.1/8": not a masked prefix`) {
			t.Fatalf("SyncMasquerade(invalid) = %v", err)
		}
		if d, _ := m.Dump(ctx); d != dump1 {
			t.Errorf("invalid rules changed the table:\n%s", d)
		}
	})

	t.Run("cancelled context applies nothing", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := m.SyncMasquerade(cctx, network.MasqueradeRules{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("SyncMasquerade(cancelled) = %v, want context.Canceled", err)
		}
		if d, _ := m.Dump(ctx); d != dump1 {
			t.Errorf("cancelled sync changed the table:\n%s", d)
		}
	})

	t.Run("random-fully", func(t *testing.T) {
		r := podRules
		r.RandomFully = true
		if err := m.SyncMasquerade(ctx, r); err != nil {
			t.Fatal(err)
		}
		d, _ := m.Dump(ctx)
		if strings.Count(d, "masquerade fully-random") != 2 {
			t.Errorf("dump lacks fully-random masquerade:\n%s", d)
		}
		tp.mustBeMasqueraded(t)
	})

	t.Run("interval edges", func(t *testing.T) {
		for _, tc := range []struct {
			except     string
			masq, none []string // remote families masqueraded / not reachable
		}{
			// A range reaching the top of the space (no end element) and /0.
			{"128.0.0.0/1 ::/0", nil, []string{"4", "6"}},
			{"0.0.0.0/0 8000::/1", []string{"6"}, []string{"4"}},
			// Ranges starting at the zero address (no gap marker).
			{"0.0.0.0/1 ::/1", []string{"4"}, []string{"6"}},
			// Ranges just around the remote addresses, merged from adjacent prefixes.
			{"198.18.0.0/32 198.18.0.1/32 198.18.0.3/32 2001:db8:1::/127 2001:db8:1::3/128", []string{"4", "6"}, nil},
			{"198.18.0.2/31 198.18.0.0/31 2001:db8:1::2/128", nil, []string{"4", "6"}},
		} {
			r := network.MasqueradeRules{Sources: podRules.Sources, Except: prefixes(strings.Fields(tc.except)...)}
			if err := m.SyncMasquerade(ctx, r); err != nil {
				t.Fatal(err)
			}
			if len(tc.masq) > 0 {
				tp.mustBeMasqueraded(t, tc.masq...)
			}
			if len(tc.none) > 0 {
				tp.mustNotReachRemote(t, tc.none...)
			}
			if t.Failed() {
				d, _ := m.Dump(ctx)
				t.Fatalf("Except %s:\n%s", tc.except, d)
			}
		}
		if err := m.SyncMasquerade(ctx, podRules); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("other table flushed by its owner", func(t *testing.T) {
		nodeConn.FlushTable(other)
		if err := nodeConn.Flush(); err != nil {
			t.Fatal(err)
		}
		if d, _ := m.Dump(ctx); d != dump1 {
			t.Errorf("flushing another table changed ours:\n%s", d)
		}
		tp.mustBeMasqueraded(t)
		// Put the other table's rule back for the following checks.
		nodeConn.DelTable(other)
		if err := nodeConn.Flush(); err != nil {
			t.Fatal(err)
		}
		addOtherTable(t, nodeConn, other.Name)
		checkOther(t)
	})

	t.Run("table deleted behind our back is restored", func(t *testing.T) {
		nodeConn.DelTable(&nft.Table{Family: nft.TableFamilyINet, Name: table})
		if err := nodeConn.Flush(); err != nil {
			t.Fatal(err)
		}
		if d, _ := m.Dump(ctx); d != "" {
			t.Fatalf("table still there after deletion:\n%s", d)
		}
		tp.mustNotReachRemote(t)
		if err := m.SyncMasquerade(ctx, podRules); err != nil {
			t.Fatal(err)
		}
		if d, _ := m.Dump(ctx); d != dump1 {
			t.Errorf("restored table differs:\n%s\nwant\n%s", d, dump1)
		}
		tp.mustBeMasqueraded(t)
	})

	t.Run("foreign objects in our table are removed", func(t *testing.T) {
		tb := &nft.Table{Family: nft.TableFamilyINet, Name: table}
		nodeConn.AddChain(&nft.Chain{Name: "intruder", Table: tb})
		if err := nodeConn.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := m.SyncMasquerade(ctx, podRules); err != nil {
			t.Fatal(err)
		}
		if d, _ := m.Dump(ctx); d != dump1 {
			t.Errorf("table after sync:\n%s\nwant\n%s", d, dump1)
		}
	})

	t.Run("concurrent syncs", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() { errs <- m.SyncMasquerade(ctx, podRules) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if d, _ := m.Dump(ctx); d != dump1 {
			t.Errorf("table after concurrent syncs:\n%s", d)
		}
	})

	t.Run("empty rules remove masquerade", func(t *testing.T) {
		if err := m.SyncMasquerade(ctx, network.MasqueradeRules{Except: podRules.Except}); err != nil {
			t.Fatal(err)
		}
		if d, _ := m.Dump(ctx); d != "" {
			t.Errorf("dump after empty sync = %q, want empty", d)
		}
		if slices.Contains(tableNames(t, nodeConn), "inet "+table) {
			t.Errorf("table still listed after empty sync")
		}
		tp.mustNotReachRemote(t)
		tp.mustReachPeerUnNATed(t)
		// Twice is fine too.
		if err := m.SyncMasquerade(ctx, network.MasqueradeRules{}); err != nil {
			t.Fatal(err)
		}
		checkOther(t)
	})

	t.Run("cleanup removes only our table", func(t *testing.T) {
		if err := m.SyncMasquerade(ctx, podRules); err != nil {
			t.Fatal(err)
		}
		tp.mustBeMasqueraded(t)
		cleanupTwice(t, m, nodeConn, table)
		checkOther(t)
		tp.mustNotReachRemote(t)
	})

	t.Run("closed", func(t *testing.T) {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.SyncMasquerade(ctx, podRules); !errors.Is(err, ErrClosed) {
			t.Errorf("SyncMasquerade after Close = %v, want ErrClosed", err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// Two instances with different tables in one namespace do not disturb each
// other.
func TestTwoInstancesPrivileged(t *testing.T) {
	tp := newTopology(t)
	ctx := context.Background()
	a, err := NewMasquerade(Options{NetNS: tp.node.Path(), Table: "kw_a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewMasquerade(Options{NetNS: tp.node.Path(), Table: "kw_b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.SyncMasquerade(ctx, network.MasqueradeRules{Sources: prefixes("10.244.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncMasquerade(ctx, network.MasqueradeRules{Sources: prefixes("fd00:10:244:1::/64")}); err != nil {
		t.Fatal(err)
	}
	da, _ := a.Dump(ctx)
	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := a.Dump(ctx); d != da || d == "" {
		t.Errorf("b.Cleanup changed a's table:\n%s\nwant\n%s", d, da)
	}
	from := tp.pod.MustReach(t, "tcp", tp.remoteTCP4)
	if from.Addr() != nodeAddr4 {
		t.Errorf("remote saw %s, want %s", from, nodeAddr4)
	}
	tp.pod.MustNotReach(t, "tcp", tp.remoteTCP6)
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}

// With NetNS "", the driver binds to the namespace of the calling thread.
func TestCurrentNamespacePrivileged(t *testing.T) {
	sb := sandbox.New(t)
	ns := sb.Namespace("node")
	var m *Masquerade
	err := ns.Do(func() error {
		var err error
		m, err = NewMasquerade(Options{Table: "kw_current"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.SyncMasquerade(ctx, podRules); err != nil {
		t.Fatal(err)
	}
	c := nsConn(t, ns)
	if !slices.Contains(tableNames(t, c), "inet kw_current") {
		t.Errorf("table not created in the namespace the driver was built in")
	}
	root, err := nft.New()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tableNames(t, root), "inet kw_current") {
		t.Errorf("table created in the test's own namespace")
	}
}

// The feature probe runs in a throwaway namespace: it succeeds on this
// kernel and leaves no table behind in the test's own namespace.
func TestProbeFeaturesPrivileged(t *testing.T) {
	sandbox.RequirePrivileged(t)
	if err := runProbeFresh(); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if err := probeFeatures(); err != nil {
		t.Fatalf("cached probe: %v", err)
	}
	root, err := nft.New()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tableNames(t, root), "inet kubewire-probe") {
		t.Errorf("probe table left in the test's own namespace")
	}
}

func TestUnsupportedError(t *testing.T) {
	err := unsupported("nftables nat chain in the inet family", "5.2", syscall.EOPNOTSUPP)
	if !errors.Is(err, driver.ErrNotSupported) || !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("%v does not match driver.ErrNotSupported and its cause", err)
	}
	want := "nftables nat chain in the inet family not supported (requires Linux 5.2 or later): operation not supported"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// rulesetChanges counts the nftables change events the kernel reports in
// ns while fn runs.
func rulesetChanges(t *testing.T, ns *sandbox.NS, fn func() error) int {
	t.Helper()
	c := nsConn(t, ns)
	mon := nft.NewMonitor(nft.WithMonitorAction(nft.MonitorActionAny), nft.WithMonitorObject(nft.MonitorObjectAny))
	var events chan *nft.MonitorEvent
	if err := ns.Do(func() error {
		var err error
		events, err = c.AddMonitor(mon)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := fn(); err != nil {
		t.Fatal(err)
	}
	n := 0
	timeout := time.After(200 * time.Millisecond)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return n
			}
			if ev.Type != nft.MonitorEventTypeOOB {
				n++
			}
		case <-timeout:
			mon.Close()
			return n
		}
	}
}

// cleanupTwice calls Cleanup, checks the table is gone, and calls it again
// (removing a missing table is not an error).
func cleanupTwice(t *testing.T, d interface{ Cleanup(context.Context) error }, c *nft.Conn, table string) {
	t.Helper()
	ctx := context.Background()
	if err := d.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tableNames(t, c), "inet "+table) {
		t.Errorf("table still listed after Cleanup")
	}
	if err := d.Cleanup(ctx); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}
