package nftables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/dns/nodelocal"
	"github.com/kubewire/kubewire/internal/sandbox"
)

var (
	localDNS4 = netip.MustParseAddr("169.254.20.10")
	localDNS6 = netip.MustParseAddr("fd00::a9fe:140a")
	otherDNS4 = netip.MustParseAddr("169.254.20.11")
	otherDNS6 = netip.MustParseAddr("fd00::a9fe:140b")
)

func TestNoTrackPlan(t *testing.T) {
	p, err := buildNoTrackPlan(nodelocal.NoTrackRules{
		Addresses: []netip.Addr{localDNS6, localDNS4, localDNS6},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.addrs, []netip.Addr{localDNS4, localDNS6}) || !slices.Equal(p.ports, []uint16{53}) {
		t.Fatalf("plan = %v %v, want sorted unique addresses and the default port 53", p.addrs, p.ports)
	}
	q, err := buildNoTrackPlan(nodelocal.NoTrackRules{Addresses: []netip.Addr{localDNS4, localDNS6}, Ports: []uint16{53, 53}})
	if err != nil || q.fingerprint() != p.fingerprint() {
		t.Errorf("equivalent rules: fingerprint %s, want %s (err %v)", q.fingerprint(), p.fingerprint(), err)
	}
	r, _ := buildNoTrackPlan(nodelocal.NoTrackRules{Addresses: []netip.Addr{localDNS4, localDNS6}, Ports: []uint16{5353}})
	if r.fingerprint() == p.fingerprint() {
		t.Errorf("other port, same fingerprint %s", r.fingerprint())
	}

	for _, tc := range []struct {
		rules nodelocal.NoTrackRules
		want  string
	}{
		{nodelocal.NoTrackRules{Addresses: []netip.Addr{localDNS4, {}}}, `NoTrackRules.Addresses[1] "invalid IP": not a valid address`},
		{nodelocal.NoTrackRules{Addresses: []netip.Addr{netip.MustParseAddr("::ffff:169.254.20.10")}}, `NoTrackRules.Addresses[0] "::ffff:169.254.20.10": IPv4-mapped`},
		{nodelocal.NoTrackRules{Addresses: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}}, `NoTrackRules.Addresses[0] "fe80::1%eth0": addresses with a zone`},
		{nodelocal.NoTrackRules{Addresses: []netip.Addr{netip.IPv4Unspecified()}}, `NoTrackRules.Addresses[0] "0.0.0.0": the unspecified address`},
		{nodelocal.NoTrackRules{Addresses: []netip.Addr{localDNS4}, Ports: []uint16{53, 0}}, `NoTrackRules.Ports[1] 0: must be 1-65535`},
	} {
		_, err := buildNoTrackPlan(tc.rules)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("buildNoTrackPlan(%v) = %v, want ErrInvalid with %q", tc.rules, err, tc.want)
		}
	}

	// The rules as nft would print them (rendered by the package's dump
	// code from the expressions sent to the kernel).
	render := func(chain string) []string {
		var out []string
		for _, r := range p.rules(chain) {
			out = append(out, ruleString(&nft.Rule{Exprs: r.exprs()}))
		}
		return out
	}
	wantPre := []string{
		"meta nfproto ipv4 ip daddr 169.254.20.10 meta l4proto udp th dport 53 notrack",
		"meta nfproto ipv4 ip daddr 169.254.20.10 meta l4proto tcp th dport 53 notrack",
		"meta nfproto ipv6 ip6 daddr fd00::a9fe:140a meta l4proto udp th dport 53 notrack",
		"meta nfproto ipv6 ip6 daddr fd00::a9fe:140a meta l4proto tcp th dport 53 notrack",
	}
	wantOut := append(slices.Clone(wantPre),
		"meta nfproto ipv4 ip saddr 169.254.20.10 meta l4proto udp th sport 53 notrack",
		"meta nfproto ipv4 ip saddr 169.254.20.10 meta l4proto tcp th sport 53 notrack",
		"meta nfproto ipv6 ip6 saddr fd00::a9fe:140a meta l4proto udp th sport 53 notrack",
		"meta nfproto ipv6 ip6 saddr fd00::a9fe:140a meta l4proto tcp th sport 53 notrack",
	)
	if got := render(NoTrackChainPrerouting); !slices.Equal(got, wantPre) {
		t.Errorf("prerouting rules:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantPre, "\n"))
	}
	if got := render(NoTrackChainOutput); !slices.Equal(got, wantOut) {
		t.Errorf("output rules:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantOut, "\n"))
	}
}

func TestNoTrackInvalidOptions(t *testing.T) {
	if _, err := NewNoTrack(Options{Table: "bad name"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewNoTrack(bad table) = %v, want ErrInvalid", err)
	}
}

// addConntrackUser creates, as another component (kube-proxy, a firewall)
// would, a table whose rule needs connection tracking, which enables
// conntrack in the namespace:
//
//	chain input { type filter hook input priority filter; ct state established,related accept }
func addConntrackUser(t *testing.T, c *nft.Conn, name string) *nft.Table {
	t.Helper()
	tb := c.AddTable(&nft.Table{Family: nft.TableFamilyINet, Name: name})
	ch := c.AddChain(&nft.Chain{Name: "input", Table: tb, Type: nft.ChainTypeFilter,
		Hooknum: nft.ChainHookInput, Priority: nft.ChainPriorityFilter})
	c.AddRule(&nft.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("create conntrack user table: %v", err)
	}
	return tb
}

// flowsWith lists the conntrack entries of ns whose original tuple has a
// as source or destination.
func flowsWith(t *testing.T, h *vnl.Handle, a netip.Addr) []string {
	t.Helper()
	fam := vnl.InetFamily(syscall.AF_INET)
	if a.Is6() {
		fam = syscall.AF_INET6
	}
	flows, err := h.ConntrackTableList(vnl.ConntrackTable, fam)
	if err != nil {
		t.Fatalf("list conntrack: %v", err)
	}
	var out []string
	for _, f := range flows {
		src, _ := netip.AddrFromSlice(f.Forward.SrcIP)
		dst, _ := netip.AddrFromSlice(f.Forward.DstIP)
		if src.Unmap() == a || dst.Unmap() == a {
			out = append(out, f.String())
		}
	}
	return out
}

func TestNoTrackPrivileged(t *testing.T) {
	sb := sandbox.New(t)
	node := sb.Namespace("node")
	ctx := context.Background()
	table := fmt.Sprintf("kwtest_notrack_%d", os.Getpid())

	// The local server's addresses and, as a control, other ones.
	if err := node.SetupLink("lo", prefixes("169.254.20.10/32", "169.254.20.11/32", "fd00::a9fe:140a/128", "fd00::a9fe:140b/128")...); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{localDNS4, localDNS6, otherDNS4, otherDNS6} {
		node.ServeEcho("udp", netip.AddrPortFrom(a, 53))
		node.ServeEcho("tcp", netip.AddrPortFrom(a, 53))
	}

	rootConn, err := nft.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if slices.Contains(tableNames(t, rootConn), "inet "+table) {
			t.Errorf("table inet %s appeared in the test's own namespace", table)
		}
	})

	nodeConn := nsConn(t, node)
	other := addConntrackUser(t, nodeConn, "othercomponent")
	otherBefore := rawSnapshot(t, nodeConn, other.Name)
	checkOther := func(t *testing.T) {
		t.Helper()
		if got := rawSnapshot(t, nodeConn, other.Name); got != otherBefore {
			t.Errorf("other table changed:\n%s\nwant\n%s", got, otherBefore)
		}
	}

	var ct *vnl.Handle
	if err := node.Do(func() error {
		var err error
		ct, err = vnl.NewHandle(syscall.NETLINK_NETFILTER)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ct.Close)

	n, err := NewNoTrack(Options{NetNS: node.Path(), Table: table})
	if err != nil {
		t.Fatalf("NewNoTrack: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	rules := nodelocal.NoTrackRules{Addresses: []netip.Addr{localDNS4, localDNS6}}

	// query sends one message over network to a:53 and reports the
	// conntrack entries that involve a afterwards.
	query := func(t *testing.T, network string, a netip.Addr) []string {
		t.Helper()
		if _, err := node.Probe(network, netip.AddrPortFrom(a, 53), 3*time.Second); err != nil {
			t.Fatalf("%s query to %s: %v", network, a, err)
		}
		return flowsWith(t, ct, a)
	}

	t.Run("tracked before sync", func(t *testing.T) {
		if d, err := n.Dump(ctx); err != nil || d != "" {
			t.Fatalf("Dump before sync = %q, %v; want empty", d, err)
		}
		// The control: without the table, a query to the address is tracked.
		if f := query(t, "udp", localDNS4); len(f) == 0 {
			t.Fatal("no conntrack entry for a UDP query without notrack rules: conntrack is not active, the test proves nothing")
		}
		if err := ct.ConntrackTableFlush(vnl.ConntrackTable); err != nil {
			t.Fatal(err)
		}
	})

	var dump1 string
	t.Run("sync installs the rules", func(t *testing.T) {
		if err := n.SyncNoTrack(ctx, rules); err != nil {
			t.Fatalf("SyncNoTrack: %v", err)
		}
		dump1, err = n.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("dump:\n%s", dump1)
		p, _ := buildNoTrackPlan(rules)
		fp := p.fingerprint()
		head := "add rule inet " + table + " "
		q := ` comment "kubewire: notrack queries to local server ` + fp + `"`
		r := ` comment "kubewire: notrack replies from local server ` + fp + `"`
		want := strings.Join([]string{
			"add table inet " + table,
			"add chain inet " + table + " output { type filter hook output priority -300 ; }",
			"add chain inet " + table + " prerouting { type filter hook prerouting priority -300 ; }",
			head + "output meta nfproto ipv4 ip daddr 169.254.20.10 meta l4proto udp th dport 53 notrack" + q,
			head + "output meta nfproto ipv4 ip daddr 169.254.20.10 meta l4proto tcp th dport 53 notrack" + q,
			head + "output meta nfproto ipv6 ip6 daddr fd00::a9fe:140a meta l4proto udp th dport 53 notrack" + q,
			head + "output meta nfproto ipv6 ip6 daddr fd00::a9fe:140a meta l4proto tcp th dport 53 notrack" + q,
			head + "output meta nfproto ipv4 ip saddr 169.254.20.10 meta l4proto udp th sport 53 notrack" + r,
			head + "output meta nfproto ipv4 ip saddr 169.254.20.10 meta l4proto tcp th sport 53 notrack" + r,
			head + "output meta nfproto ipv6 ip6 saddr fd00::a9fe:140a meta l4proto udp th sport 53 notrack" + r,
			head + "output meta nfproto ipv6 ip6 saddr fd00::a9fe:140a meta l4proto tcp th sport 53 notrack" + r,
			head + "prerouting meta nfproto ipv4 ip daddr 169.254.20.10 meta l4proto udp th dport 53 notrack" + q,
			head + "prerouting meta nfproto ipv4 ip daddr 169.254.20.10 meta l4proto tcp th dport 53 notrack" + q,
			head + "prerouting meta nfproto ipv6 ip6 daddr fd00::a9fe:140a meta l4proto udp th dport 53 notrack" + q,
			head + "prerouting meta nfproto ipv6 ip6 daddr fd00::a9fe:140a meta l4proto tcp th dport 53 notrack" + q,
		}, "\n") + "\n"
		if dump1 != want {
			t.Errorf("dump:\n%s\nwant\n%s", dump1, want)
		}
		checkOther(t)
	})

	t.Run("queries to the address are not tracked", func(t *testing.T) {
		for _, network := range []string{"udp", "tcp"} {
			for _, a := range []netip.Addr{localDNS4, localDNS6} {
				if f := query(t, network, a); len(f) != 0 {
					t.Errorf("%s query to %s created conntrack entries:\n%s", network, a, strings.Join(f, "\n"))
				}
			}
			for _, a := range []netip.Addr{otherDNS4, otherDNS6} {
				if f := query(t, network, a); len(f) == 0 {
					t.Errorf("%s query to %s (not exempted) created no conntrack entry", network, a)
				}
			}
		}
	})

	t.Run("sync is idempotent", func(t *testing.T) {
		raw1 := rawSnapshot(t, nodeConn, table)
		equiv := nodelocal.NoTrackRules{Addresses: []netip.Addr{localDNS6, localDNS4, localDNS4}, Ports: []uint16{53}}
		if n := rulesetChanges(t, node, func() error { return n.SyncNoTrack(ctx, equiv) }); n != 0 {
			t.Errorf("equivalent sync changed the ruleset (%d events)", n)
		}
		if raw2 := rawSnapshot(t, nodeConn, table); raw2 != raw1 {
			t.Errorf("second sync changed the table:\n%s\nwant\n%s", raw2, raw1)
		}
		changed := nodelocal.NoTrackRules{Addresses: rules.Addresses, Ports: []uint16{53, 5353}}
		if n := rulesetChanges(t, node, func() error { return n.SyncNoTrack(ctx, changed) }); n == 0 {
			t.Fatal("a changed sync reported no ruleset change: the monitor sees nothing")
		}
		// Per address and protocol: one query rule in each chain, one reply rule in output.
		if d, _ := n.Dump(ctx); strings.Count(d, "dport 5353 notrack") != 8 || strings.Count(d, "sport 5353 notrack") != 4 {
			t.Errorf("port 5353 not in every rule:\n%s", d)
		}
		if err := n.SyncNoTrack(ctx, rules); err != nil {
			t.Fatal(err)
		}
		if d, _ := n.Dump(ctx); d != dump1 {
			t.Errorf("back to the first rules:\n%s\nwant\n%s", d, dump1)
		}
	})

	t.Run("invalid rules apply nothing", func(t *testing.T) {
		bad := nodelocal.NoTrackRules{Addresses: []netip.Addr{localDNS4, netip.MustParseAddr("::ffff:10.0.0.1")}}
		err := n.SyncNoTrack(ctx, bad)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `NoTrackRules.Addresses[1] "::ffff:10.0.0.1"`) {
			t.Fatalf("SyncNoTrack(invalid) = %v", err)
		}
		if d, _ := n.Dump(ctx); d != dump1 {
			t.Errorf("invalid rules changed the table:\n%s", d)
		}
	})

	t.Run("table deleted or changed behind our back is restored", func(t *testing.T) {
		tb := &nft.Table{Family: nft.TableFamilyINet, Name: table}
		nodeConn.DelTable(tb)
		if err := nodeConn.Flush(); err != nil {
			t.Fatal(err)
		}
		if f := query(t, "udp", localDNS4); len(f) == 0 {
			t.Error("query tracked no entry with the table deleted")
		}
		if err := n.SyncNoTrack(ctx, rules); err != nil {
			t.Fatal(err)
		}
		if d, _ := n.Dump(ctx); d != dump1 {
			t.Errorf("restored table differs:\n%s\nwant\n%s", d, dump1)
		}
		nodeConn.AddChain(&nft.Chain{Name: "intruder", Table: tb})
		if err := nodeConn.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := n.SyncNoTrack(ctx, rules); err != nil {
			t.Fatal(err)
		}
		if d, _ := n.Dump(ctx); d != dump1 {
			t.Errorf("foreign chain not removed:\n%s\nwant\n%s", d, dump1)
		}
		if err := ct.ConntrackTableFlush(vnl.ConntrackTable); err != nil {
			t.Fatal(err)
		}
		if f := query(t, "udp", localDNS4); len(f) != 0 {
			t.Errorf("query tracked after the restore:\n%s", strings.Join(f, "\n"))
		}
		checkOther(t)
	})

	t.Run("no addresses removes the table", func(t *testing.T) {
		if err := n.SyncNoTrack(ctx, nodelocal.NoTrackRules{}); err != nil {
			t.Fatal(err)
		}
		if d, _ := n.Dump(ctx); d != "" {
			t.Errorf("table left:\n%s", d)
		}
		if err := n.SyncNoTrack(ctx, rules); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("cleanup", func(t *testing.T) {
		cleanupTwice(t, n, nodeConn, table)
		checkOther(t)
	})
}
