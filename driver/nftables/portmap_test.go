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
	"testing"
	"time"

	nft "github.com/google/nftables"

	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/network"
)

// pmTopology is client --veth-- node --veth-- pod. The client only knows
// the node's subnet: it reaches the pod only through a host port.
type pmTopology struct {
	client, node, pod *sandbox.NS
}

var (
	pmNode4   = netip.MustParseAddr("198.18.0.1")
	pmNode4b  = netip.MustParseAddr("198.18.0.3") // second node address, for HostIP mappings
	pmClient4 = netip.MustParseAddr("198.18.0.2")
	pmNode6   = netip.MustParseAddr("2001:db8::1")
	pmClient6 = netip.MustParseAddr("2001:db8::2")
	pmPod4    = netip.MustParseAddr("10.244.1.2")
	pmPod6    = netip.MustParseAddr("fd00:10:244:1::2")
	pmGw4     = netip.MustParseAddr("10.244.1.1")
	pmGw6     = netip.MustParseAddr("fd00:10:244:1::1")
)

// pod echo servers: tcp 80, 81, 90 and udp 53 on both pod addresses.
func newPMTopology(t testing.TB) *pmTopology {
	sb := sandbox.New(t)
	tp := &pmTopology{client: sb.Namespace("client"), node: sb.Namespace("node"), pod: sb.Namespace("pod")}
	sb.Connect(tp.client, "eth0", prefixes("198.18.0.2/24", "2001:db8::2/64"),
		tp.node, "eth0", prefixes("198.18.0.1/24", "198.18.0.3/24", "2001:db8::1/64"))
	sb.Connect(tp.pod, "eth0", prefixes("10.244.1.2/24", "fd00:10:244:1::2/64"),
		tp.node, "pod0", prefixes("10.244.1.1/24", "fd00:10:244:1::1/64"))
	for _, r := range []struct{ dst, via string }{{"0.0.0.0/0", "10.244.1.1"}, {"::/0", "fd00:10:244:1::1"}} {
		if err := tp.pod.AddRoute(netip.MustParsePrefix(r.dst), netip.MustParseAddr(r.via), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	tp.node.MustSysctl("net.ipv4.ip_forward", "1")
	tp.node.MustSysctl("net.ipv6.conf.all.forwarding", "1")
	for _, a := range []netip.Addr{pmPod4, pmPod6} {
		for _, port := range []uint16{80, 81, 90} {
			tp.pod.ServeEcho("tcp", netip.AddrPortFrom(a, port))
		}
		tp.pod.ServeEcho("udp", netip.AddrPortFrom(a, 53))
	}
	return tp
}

func tcp(host netip.Addr, hostPort uint16, pod netip.Addr, podPort uint16) network.PortMapping {
	return network.PortMapping{Protocol: "tcp", HostPort: hostPort, PodIP: pod, PodPort: podPort, HostIP: host}
}

func udp(host netip.Addr, hostPort uint16, pod netip.Addr, podPort uint16) network.PortMapping {
	m := tcp(host, hostPort, pod, podPort)
	m.Protocol = "udp"
	return m
}

var anyIP = netip.Addr{} // any local address

// ownerA's mappings: tcp 8080 -> pod:80 and udp 8053 -> pod:53, both
// families, on every node address.
var ownerAMaps = []network.PortMapping{
	tcp(anyIP, 8080, pmPod4, 80), udp(anyIP, 8053, pmPod4, 53),
	tcp(anyIP, 8080, pmPod6, 80), udp(anyIP, 8053, pmPod6, 53),
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// seenAs checks that ns reaches target and is seen there from want.
func seenAs(t *testing.T, ns *sandbox.NS, network string, target netip.AddrPort, want netip.Addr) {
	t.Helper()
	from := reach(t, ns, target2(network, target))
	if from.IsValid() && from.Addr() != want {
		t.Errorf("%s -> %s %s: seen as %s, want %s", ns.Role, network, target, from.Addr(), want)
	}
}

func target2(network string, a netip.AddrPort) target { return target{network, a} }

func TestPortMapPrivileged(t *testing.T) {
	tp := newPMTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	table := fmt.Sprintf("kwtest_hostports_%d", os.Getpid())

	rootConn, err := nft.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if slices.Contains(tableNames(t, rootConn), "inet "+table) {
			t.Errorf("table inet %s appeared in the test's own namespace", table)
		}
	})
	nodeConn := nsConn(t, tp.node)
	other := addOtherTable(t, nodeConn, "othercomponent")
	otherBefore := rawSnapshot(t, nodeConn, other.Name)
	checkOther := func(t *testing.T) {
		t.Helper()
		if got := rawSnapshot(t, nodeConn, other.Name); got != otherBefore {
			t.Errorf("other table changed:\n%s\nwant\n%s", got, otherBefore)
		}
	}

	p, err := NewPortMap(Options{NetNS: tp.node.Path(), Table: table})
	if err != nil {
		t.Fatalf("NewPortMap: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	owners := func(t *testing.T, p *PortMap, want ...string) {
		t.Helper()
		got, err := p.PortMappingOwners(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("PortMappingOwners = %q, want %q", got, want)
		}
	}
	dump := func(t *testing.T) string {
		t.Helper()
		d, err := p.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	t.Run("nothing before sync", func(t *testing.T) {
		if d := dump(t); d != "" {
			t.Fatalf("Dump before sync = %q", d)
		}
		owners(t, p)
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 8080)))
		// Removing mappings of an unknown owner creates nothing.
		if err := p.SyncPortMappings(ctx, "nobody/eth0", nil); err != nil {
			t.Fatal(err)
		}
		if d := dump(t); d != "" {
			t.Fatalf("Dump after empty sync = %q", d)
		}
	})

	var dumpA string
	t.Run("client reaches the pod through host ports", func(t *testing.T) {
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", ownerAMaps); err != nil {
			t.Fatalf("SyncPortMappings: %v", err)
		}
		dumpA = dump(t)
		t.Logf("dump:\n%s", dumpA)
		for _, want := range []string{
			"add chain inet " + table + " prerouting { type nat hook prerouting priority -100 ; }\n",
			"add chain inet " + table + " output { type nat hook output priority -100 ; }\n",
			"add chain inet " + table + " postrouting { type nat hook postrouting priority 100 ; }\n",
			"add map inet " + table + " hostport-any-v4 { type inet_proto . inet_service : ipv4_addr . inet_service ; }\n",
			`add element inet ` + table + ` hostport-any-v4 { tcp . 8080 : 10.244.1.2 . 80 comment "ctr-a/eth0", udp . 8053 : 10.244.1.2 . 53 comment "ctr-a/eth0" }` + "\n",
			`add element inet ` + table + ` hostport-any-v6 { tcp . 8080 : fd00:10:244:1::2 . 80 comment "ctr-a/eth0", udp . 8053 : fd00:10:244:1::2 . 53 comment "ctr-a/eth0" }` + "\n",
			"add element inet " + table + " hairpin-v4 { 10.244.1.2 . 10.244.1.2 }\n",
			"add element inet " + table + " hairpin-v6 { fd00:10:244:1::2 . fd00:10:244:1::2 }\n",
			"add rule inet " + table + ` prerouting jump hostports comment "kubewire: host ports of traffic entering the node"` + "\n",
			"add rule inet " + table + ` output jump hostports comment "kubewire: host ports of connections from the node"` + "\n",
			"add rule inet " + table + ` hostports meta nfproto ipv4 dnat ip to meta l4proto . ip daddr . th dport map @hostport-v4 comment "kubewire: dnat ip host ports of one address"` + "\n",
			"add rule inet " + table + ` hostports meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostport-any-v4 comment "kubewire: dnat ip host ports of every local address"` + "\n",
			"add rule inet " + table + ` hostports meta nfproto ipv6 dnat ip6 to meta l4proto . ip6 daddr . th dport map @hostport-v6 comment "kubewire: dnat ip6 host ports of one address"` + "\n",
			"add rule inet " + table + ` hostports meta nfproto ipv6 ip6 daddr != ::1/128 fib daddr type local dnat ip6 to meta l4proto . th dport map @hostport-any-v6 comment "kubewire: dnat ip6 host ports of every local address"` + "\n",
			"add rule inet " + table + ` postrouting meta nfproto ipv4 ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade comment "kubewire: masquerade ip hairpin"` + "\n",
			"add rule inet " + table + ` postrouting meta nfproto ipv6 ct status dnat ip6 saddr . ip6 daddr @hairpin-v6 masquerade comment "kubewire: masquerade ip6 hairpin"` + "\n",
		} {
			if !strings.Contains(dumpA, want) {
				t.Errorf("dump lacks %q", want)
			}
		}
		for _, tg := range []struct {
			network string
			to      netip.AddrPort
			from    netip.Addr
		}{
			{"tcp", ap(pmNode4, 8080), pmClient4},
			{"udp", ap(pmNode4, 8053), pmClient4},
			{"tcp", ap(pmNode6, 8080), pmClient6},
			{"udp", ap(pmNode6, 8053), pmClient6},
			{"tcp", ap(pmNode4b, 8080), pmClient4}, // any local address
		} {
			seenAs(t, tp.client, tg.network, tg.to, tg.from)
		}
		// Ports not mapped stay closed; the pod is not routable from the client.
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 8053)))
		notReach(t, tp.client, target2("tcp", ap(pmPod4, 80)))
		owners(t, p, "ctr-a/eth0")
		checkOther(t)
	})

	t.Run("node reaches its own host ports", func(t *testing.T) {
		seenAs(t, tp.node, "tcp", ap(pmNode4, 8080), pmNode4)
		seenAs(t, tp.node, "udp", ap(pmNode4, 8053), pmNode4)
		seenAs(t, tp.node, "tcp", ap(pmNode6, 8080), pmNode6)
	})

	t.Run("hairpin", func(t *testing.T) {
		// The pod reaches itself through the node address, masqueraded
		// to the node's address on the pod link so the reply comes back.
		seenAs(t, tp.pod, "tcp", ap(pmNode4, 8080), pmGw4)
		seenAs(t, tp.pod, "udp", ap(pmNode4, 8053), pmGw4)
		seenAs(t, tp.pod, "tcp", ap(pmNode6, 8080), pmGw6)
	})

	t.Run("sync is idempotent", func(t *testing.T) {
		raw := rawSnapshot(t, nodeConn, table)
		for range 2 {
			if err := p.SyncPortMappings(ctx, "ctr-a/eth0", ownerAMaps); err != nil {
				t.Fatal(err)
			}
		}
		// The same mappings in another order, with a duplicate and an
		// explicit unspecified host address, are the same.
		same := append([]network.PortMapping{tcp(netip.IPv4Unspecified(), 8080, pmPod4, 80)}, ownerAMaps...)
		slices.Reverse(same)
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", same); err != nil {
			t.Fatal(err)
		}
		if d := dump(t); d != dumpA {
			t.Errorf("repeated sync changed the dump:\n%s\nwant\n%s", d, dumpA)
		}
		if r := rawSnapshot(t, nodeConn, table); r != raw {
			t.Errorf("repeated sync changed the table:\n%s\nwant\n%s", r, raw)
		}
	})

	t.Run("host IP mapping answers only on that address", func(t *testing.T) {
		if err := p.SyncPortMappings(ctx, "ctr-c/eth0", []network.PortMapping{
			tcp(pmNode4b, 7070, pmPod4, 80),
			tcp(pmNode6, 7070, pmPod6, 80),
		}); err != nil {
			t.Fatal(err)
		}
		seenAs(t, tp.client, "tcp", ap(pmNode4b, 7070), pmClient4)
		seenAs(t, tp.client, "tcp", ap(pmNode6, 7070), pmClient6)
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 7070)))
		d := dump(t)
		if want := `add element inet ` + table + ` hostport-v4 { tcp . 198.18.0.3 . 7070 : 10.244.1.2 . 80 comment "ctr-c/eth0" }`; !strings.Contains(d, want) {
			t.Errorf("dump lacks %q:\n%s", want, d)
		}
		owners(t, p, "ctr-a/eth0", "ctr-c/eth0")
	})

	t.Run("conflicts are refused and apply nothing", func(t *testing.T) {
		before := dump(t)
		for _, maps := range [][]network.PortMapping{
			{tcp(anyIP, 9191, pmPod4, 90), tcp(anyIP, 8080, pmPod4, 90)},   // same wildcard
			{tcp(pmNode4, 8080, pmPod4, 90), tcp(anyIP, 9191, pmPod4, 90)}, // address under a wildcard
			{tcp(anyIP, 7070, pmPod4, 90)},                                 // wildcard over an address
			{tcp(pmNode6, 7070, pmPod6, 90)},                               // same address
		} {
			err := p.SyncPortMappings(ctx, "ctr-b/eth0", maps)
			if !errors.Is(err, network.ErrPortConflict) {
				t.Errorf("SyncPortMappings(%v) = %v, want ErrPortConflict", maps, err)
				continue
			}
			t.Logf("conflict: %v", err)
		}
		if d := dump(t); d != before {
			t.Errorf("refused sync changed the table:\n%s\nwant\n%s", d, before)
		}
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 9191)))
		owners(t, p, "ctr-a/eth0", "ctr-c/eth0")
		// Other protocols, families and ports are free.
		if err := p.SyncPortMappings(ctx, "ctr-b/eth0", []network.PortMapping{
			tcp(anyIP, 9090, pmPod4, 90), udp(anyIP, 8080, pmPod4, 53), tcp(pmNode6, 8081, pmPod6, 90),
		}); err != nil {
			t.Fatal(err)
		}
		seenAs(t, tp.client, "tcp", ap(pmNode4, 9090), pmClient4)
		seenAs(t, tp.client, "udp", ap(pmNode4, 8080), pmClient4)
		seenAs(t, tp.client, "tcp", ap(pmNode6, 8081), pmClient6)
		owners(t, p, "ctr-a/eth0", "ctr-b/eth0", "ctr-c/eth0")
	})

	t.Run("invalid input applies nothing", func(t *testing.T) {
		before := dump(t)
		err := p.SyncPortMappings(ctx, "ctr-a/eth0", []network.PortMapping{ownerAMaps[0], tcp(anyIP, 0, pmPod4, 80)})
		if !errors.Is(err, ErrInvalid) || err.Error() != "nftables: PortMapping[1].HostPort 0: must be 1-65535" {
			t.Errorf("err = %v", err)
		}
		if err := p.SyncPortMappings(ctx, "bad owner", nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad owner: err = %v", err)
		}
		if d := dump(t); d != before {
			t.Errorf("invalid sync changed the table")
		}
	})

	t.Run("changing a target", func(t *testing.T) {
		maps := slices.Clone(ownerAMaps)
		maps[0].PodPort = 81
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", maps); err != nil {
			t.Fatal(err)
		}
		if d := dump(t); !strings.Contains(d, "tcp . 8080 : 10.244.1.2 . 81 ") {
			t.Errorf("dump lacks the new target:\n%s", d)
		}
		seenAs(t, tp.client, "tcp", ap(pmNode4, 8080), pmClient4)
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", ownerAMaps); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("sctp is rendered", func(t *testing.T) {
		if err := p.SyncPortMappings(ctx, "ctr-s/eth0", []network.PortMapping{
			{Protocol: "SCTP", HostPort: 3868, PodIP: pmPod4, PodPort: 3868},
		}); err != nil {
			t.Fatal(err)
		}
		if d := dump(t); !strings.Contains(d, `sctp . 3868 : 10.244.1.2 . 3868 comment "ctr-s/eth0"`) {
			t.Errorf("dump lacks the sctp mapping:\n%s", d)
		}
		if err := p.SyncPortMappings(ctx, "ctr-s/eth0", nil); err != nil {
			t.Fatal(err)
		}
	})

	long := strings.Repeat("0123456789abcdef", 15) + "/" + strings.Repeat("x", MaxOwnerLen-241)
	t.Run("long owner", func(t *testing.T) {
		if len(long) != MaxOwnerLen {
			t.Fatalf("len %d", len(long))
		}
		if err := p.SyncPortMappings(ctx, long, []network.PortMapping{tcp(anyIP, 6060, pmPod4, 90)}); err != nil {
			t.Fatal(err)
		}
		seenAs(t, tp.client, "tcp", ap(pmNode4, 6060), pmClient4)
		owners(t, p, long, "ctr-a/eth0", "ctr-b/eth0", "ctr-c/eth0")
		err := p.SyncPortMappings(ctx, "ctr-x", []network.PortMapping{tcp(anyIP, 6060, pmPod4, 90)})
		if !errors.Is(err, network.ErrPortConflict) || !strings.Contains(err.Error(), long) {
			t.Errorf("conflict with a long owner: %v", err)
		}
	})

	t.Run("removing one owner keeps the others", func(t *testing.T) {
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", nil); err != nil {
			t.Fatal(err)
		}
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 8080)))
		notReach(t, tp.client, target2("udp", ap(pmNode4, 8053)))
		notReach(t, tp.client, target2("tcp", ap(pmNode6, 8080)))
		seenAs(t, tp.client, "tcp", ap(pmNode4, 9090), pmClient4)
		seenAs(t, tp.client, "tcp", ap(pmNode4b, 7070), pmClient4)
		owners(t, p, long, "ctr-b/eth0", "ctr-c/eth0")
		// The pod is still mapped by others: its hairpin stays.
		seenAs(t, tp.pod, "tcp", ap(pmNode4, 9090), pmGw4)
		if d := dump(t); strings.Contains(d, "ctr-a/eth0") {
			t.Errorf("ctr-a left elements:\n%s", d)
		}
		checkOther(t)
	})

	t.Run("rules deleted behind our back are restored", func(t *testing.T) {
		before := dump(t)
		tb := &nft.Table{Family: nft.TableFamilyINet, Name: table}
		nodeConn.FlushChain(&nft.Chain{Name: ChainHostPorts, Table: tb})
		if err := nodeConn.Flush(); err != nil {
			t.Fatal(err)
		}
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 9090)))
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", ownerAMaps); err != nil {
			t.Fatal(err)
		}
		seenAs(t, tp.client, "tcp", ap(pmNode4, 9090), pmClient4)
		seenAs(t, tp.client, "tcp", ap(pmNode4, 8080), pmClient4)
		owners(t, p, long, "ctr-a/eth0", "ctr-b/eth0", "ctr-c/eth0")
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", nil); err != nil {
			t.Fatal(err)
		}
		if d := withoutGeneration(dump(t)); d != withoutGeneration(before) {
			t.Errorf("after rebuild:\n%s\nwant\n%s", d, before)
		}
	})

	t.Run("concurrent writers", func(t *testing.T) {
		// Separate instances stand for separate CNI processes.
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 8 {
			wg.Go(func() {
				q, err := NewPortMap(Options{NetNS: tp.node.Path(), Table: table})
				if err != nil {
					errs <- err
					return
				}
				defer q.Close()
				owner := fmt.Sprintf("ctr-%d/eth0", i)
				errs <- q.SyncPortMappings(ctx, owner, []network.PortMapping{tcp(anyIP, 5000+uint16(i), pmPod4, 80)})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		got, _ := p.PortMappingOwners(ctx)
		for i := range 8 {
			if !slices.Contains(got, fmt.Sprintf("ctr-%d/eth0", i)) {
				t.Errorf("owner ctr-%d/eth0 missing from %q", i, got)
			}
		}
		seenAs(t, tp.client, "tcp", ap(pmNode4, 5007), pmClient4)
	})

	t.Run("a new instance sees and removes the owners", func(t *testing.T) {
		q, err := NewPortMap(Options{NetNS: tp.node.Path(), Table: table})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		got, err := q.PortMappingOwners(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 11 {
			t.Errorf("owners = %q", got)
		}
		for _, o := range got {
			if err := q.SyncPortMappings(ctx, o, nil); err != nil {
				t.Fatal(err)
			}
		}
		owners(t, q)
		owners(t, p)
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 9090)))
		d := dump(t)
		for _, set := range []string{MapHostPortV4, MapHostPortAny4, MapHostPortV6, MapHostPortAny6, SetHairpinV4, SetHairpinV6, SetOwnerNames} {
			if strings.Contains(d, "add element inet "+table+" "+set+" ") {
				t.Errorf("%s not empty:\n%s", set, d)
			}
		}
	})

	t.Run("cleanup removes only our table", func(t *testing.T) {
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", ownerAMaps); err != nil {
			t.Fatal(err)
		}
		cleanupTwice(t, p, nodeConn, table)
		notReach(t, tp.client, target2("tcp", ap(pmNode4, 8080)))
		owners(t, p)
		checkOther(t)
	})

	t.Run("closed", func(t *testing.T) {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.SyncPortMappings(ctx, "ctr-a/eth0", nil); !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v", err)
		}
	})
}

// withoutGeneration drops the generation element, which every change bumps.
func withoutGeneration(dump string) string {
	var keep []string
	for _, l := range strings.SplitAfter(dump, "\n") {
		if !strings.Contains(l, " "+SetGeneration+" { ") || !strings.HasPrefix(l, "add element ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// BenchmarkSyncPortMappings adds and removes one owner's two mappings
// while N other owners hold two mappings each. The batch sent holds only
// the owner's elements (and the generation element); the read of the
// current elements, needed for conflict detection, is what grows with N.
func BenchmarkSyncPortMappings(b *testing.B) {
	for _, others := range []int{0, 1000} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) { benchSync(b, others) })
	}
}

func benchSync(b *testing.B, others int) {
	tp := newPMTopology(b)
	ctx := context.Background()
	p, err := NewPortMap(Options{NetNS: tp.node.Path(), Table: "kwbench_hostports"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	pod := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, byte(2 + i/250), byte(1 + i%250)}) }
	for i := range others {
		err := p.SyncPortMappings(ctx, fmt.Sprintf("bench-%04d/eth0", i), []network.PortMapping{
			tcp(anyIP, uint16(10000+i), pod(i), 80), udp(anyIP, uint16(10000+i), pod(i), 53),
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	on := []network.PortMapping{tcp(anyIP, 8080, pmPod4, 80), udp(anyIP, 8053, pmPod4, 53)}
	for i := 0; b.Loop(); i++ {
		maps := on
		if i%2 == 1 {
			maps = nil
		}
		if err := p.SyncPortMappings(ctx, "ctr-bench/eth0", maps); err != nil {
			b.Fatal(err)
		}
	}
}
