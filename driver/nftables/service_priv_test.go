package nftables

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	nft "github.com/google/nftables"

	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/service"
)

// svcTopology is client --veth-- node --veths-- pod-1, pod-2, pod-3. The
// node routes each pod's subnet on its veth; the pods default-route via the
// node, and the node default-routes via the client, so service traffic that
// is not DNATed leaves towards the client and is lost there.
type svcTopology struct {
	client, node *sandbox.NS
	pods         []*sandbox.NS
}

var (
	svcClient4 = netip.MustParseAddr("198.18.0.2")
	svcClient6 = netip.MustParseAddr("2001:db8::2")
	svcNode4   = netip.MustParseAddr("198.18.0.1")
	svcNode6   = netip.MustParseAddr("2001:db8::1")
	svcExt4    = netip.MustParseAddr("198.18.100.1")
	svcExt6    = netip.MustParseAddr("2001:db8:100::1")
	svcLB4     = netip.MustParseAddr("198.18.100.2")
	svcLB6     = netip.MustParseAddr("2001:db8:100::2")
	svcCIP4    = netip.MustParseAddr("10.96.0.10")
	svcCIP6    = netip.MustParseAddr("fd00:10:96::10")
)

const svcPodPort = 8080

func svcPodAddr(i, fam int) netip.Addr {
	if fam == 0 {
		return netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 2})
	}
	return netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::2", i+1))
}

func newSvcTopology(t testing.TB) *svcTopology {
	sb := sandbox.New(t)
	tp := &svcTopology{client: sb.Namespace("client"), node: sb.Namespace("node")}
	sb.Connect(tp.client, "eth0", prefixes("198.18.0.2/24", "2001:db8::2/64"),
		tp.node, "eth0", prefixes("198.18.0.1/24", "2001:db8::1/64"))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct{ dst, via string }{{"198.18.100.0/24", "198.18.0.1"}, {"2001:db8:100::/64", "2001:db8::1"}} {
		must(tp.client.AddRoute(netip.MustParsePrefix(r.dst), netip.MustParseAddr(r.via), "eth0"))
	}
	must(tp.node.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), svcClient4, "eth0"))
	must(tp.node.AddRoute(netip.MustParsePrefix("::/0"), svcClient6, "eth0"))
	for i := range 3 {
		pod := sb.Namespace(fmt.Sprintf("pod-%d", i+1))
		tp.pods = append(tp.pods, pod)
		sb.Connect(pod, "eth0", prefixes(svcPodAddr(i, 0).String()+"/24", svcPodAddr(i, 1).String()+"/64"),
			tp.node, fmt.Sprintf("pod%d", i+1), prefixes(fmt.Sprintf("10.244.%d.1/24", i+1), fmt.Sprintf("fd00:10:244:%d::1/64", i+1)))
		must(pod.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 1}), "eth0"))
		must(pod.AddRoute(netip.MustParsePrefix("::/0"), netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::1", i+1)), "eth0"))
		for fam := range 2 {
			serveWho(t, pod, fmt.Sprintf("pod-%d", i+1), netip.AddrPortFrom(svcPodAddr(i, fam), svcPodPort))
		}
	}
	tp.node.MustSysctl("net.ipv4.ip_forward", "1")
	tp.node.MustSysctl("net.ipv6.conf.all.forwarding", "1")
	// The kernel rate-limits ICMP errors per destination: an ICMP port
	// unreachable refusing UDP would otherwise be suppressed now and then.
	tp.node.MustSysctl("net.ipv4.icmp_ratelimit", "0")
	tp.node.MustSysctl("net.ipv6.icmp.ratelimit", "0")
	return tp
}

// serveWho serves TCP and UDP on addr, answering each line or datagram with
// "<name> <client address as seen>".
func serveWho(t testing.TB, ns *sandbox.NS, name string, addr netip.AddrPort) {
	ln, _, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, pc, err := ns.Listen("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", name, from)), from)
		}
	}()
}

// who asks the server behind target who it is: the pod's name and the
// client address it saw.
func who(ns *sandbox.NS, network string, target netip.AddrPort, timeout time.Duration) (string, netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ns.Dial(ctx, network, target)
	if err != nil {
		return "", netip.Addr{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", netip.Addr{}, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", netip.Addr{}, err
	}
	name, peer, _ := strings.Cut(strings.TrimSpace(line), " ")
	ap, err := netip.ParseAddrPort(peer)
	return name, ap.Addr().Unmap(), err
}

func mustWho(t *testing.T, ns *sandbox.NS, network string, target netip.AddrPort) (string, netip.Addr) {
	t.Helper()
	name, peer, err := who(ns, network, target, 3*time.Second)
	if err != nil {
		t.Fatalf("%s -> %s %s: %v", ns.Role, network, target, err)
	}
	return name, peer
}

func podTarget(i, fam int) service.Target {
	return service.Target{Addr: svcPodAddr(i, fam), Port: svcPodPort}
}

// webPort is default/web: ClusterIPs of both families on port 80, node
// port 30080, an external and a load balancer IP per family, endpoints the
// given pods (both families), pod 0 being on this node.
func webPort(pods ...int) service.PortState {
	var eps []service.Target
	for _, i := range pods {
		for fam := range 2 {
			t := podTarget(i, fam)
			t.Local = true // every pod of the topology is on the node
			eps = append(eps, t)
		}
	}
	return service.PortState{
		Name: pname("default", "web", ""), Protocol: service.TCP, ClusterIPs: []netip.Addr{svcCIP4, svcCIP6}, Port: 80,
		NodePort: 30080, ExternalIPs: []netip.Addr{svcExt4, svcExt6}, LoadBalancerIPs: []netip.Addr{svcLB4, svcLB6},
		InternalEndpoints: eps, ExternalEndpoints: eps, ClusterEndpoints: eps, HasEndpoints: len(eps) > 0,
	}
}

func udpPort(p service.PortState) service.PortState {
	p.Name.Protocol, p.Protocol = service.UDP, service.UDP
	return p
}

func state(ps ...service.PortState) *service.State {
	service.SortPorts(ps)
	return &service.State{Ports: ps}
}

func newSvcProxy(t testing.TB, ns *sandbox.NS, table string) *ServiceProxy {
	t.Helper()
	s, err := NewService(ServiceOptions{Options: Options{NetNS: ns.Path(), Table: table},
		ClusterCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/48")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustSync(t testing.TB, s *ServiceProxy, st *service.State, hint service.Hint) {
	t.Helper()
	if err := s.Sync(context.Background(), st, hint); err != nil {
		t.Fatal(err)
	}
}

func mustDump(t testing.TB, s *ServiceProxy) string {
	t.Helper()
	d, err := s.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func ap4(fam int, a4, a6 netip.Addr, port uint16) netip.AddrPort {
	if fam == 0 {
		return netip.AddrPortFrom(a4, port)
	}
	return netip.AddrPortFrom(a6, port)
}

func famName(fam int) string { return []string{"ipv4", "ipv6"}[fam] }

func TestServicePrivileged(t *testing.T) {
	tp := newSvcTopology(t)
	s := newSvcProxy(t, tp.node, "kwtest_services")
	pod0 := tp.pods[0]

	t.Run("load balancing", func(t *testing.T) {
		mustSync(t, s, state(webPort(0, 1, 2), udpPort(webPort(0, 1, 2))), service.Hint{})
		for fam := range 2 {
			for _, network := range []string{"tcp", "udp"} {
				for _, from := range []*sandbox.NS{tp.node, pod0} {
					seen := map[string]bool{}
					for range 30 {
						name, _ := mustWho(t, from, network, ap4(fam, svcCIP4, svcCIP6, 80))
						seen[name] = true
					}
					if len(seen) != 3 {
						t.Errorf("%s %s from %s: answered by %v, want all 3 pods", famName(fam), network, from.Role, seen)
					}
				}
			}
		}
	})

	t.Run("external traffic", func(t *testing.T) {
		for fam := range 2 {
			node := [2]netip.Addr{svcNode4, svcNode6}[fam]
			client := [2]netip.Addr{svcClient4, svcClient6}[fam]
			for _, tg := range []netip.AddrPort{netip.AddrPortFrom(node, 30080), ap4(fam, svcExt4, svcExt6, 80), ap4(fam, svcLB4, svcLB6, 80)} {
				_, peer := mustWho(t, tp.client, "tcp", tg)
				if peer == client {
					t.Errorf("eTP Cluster: %s seen as the client %s, want masqueraded", tg, peer)
				}
			}
		}
		// From the node itself to its node port.
		mustWho(t, tp.node, "tcp", netip.AddrPortFrom(svcNode4, 30080))
	})

	t.Run("node ports on the node's addresses", func(t *testing.T) {
		gw := netip.MustParseAddr("10.244.1.1") // a local address, not the node's
		st := state(webPort(0, 1, 2))
		before := s.fullSyncs
		mustSync(t, s, st, service.Hint{})
		mustWho(t, tp.node, "tcp", netip.AddrPortFrom(gw, 30080)) // every local address
		st.NodeAddresses = []netip.Addr{svcNode4}
		mustSync(t, s, st, service.Hint{})
		if s.fullSyncs != before+1 {
			t.Errorf("node addresses changed: %d full syncs, want 1", s.fullSyncs-before)
		}
		mustWho(t, tp.client, "tcp", netip.AddrPortFrom(svcNode4, 30080))
		for _, c := range []struct {
			from *sandbox.NS
			tg   netip.AddrPort
		}{{tp.node, netip.AddrPortFrom(gw, 30080)}, {tp.client, netip.AddrPortFrom(svcNode6, 30080)}} {
			if name, _, err := who(c.from, "tcp", c.tg, 500*time.Millisecond); err == nil {
				t.Errorf("%s -> %s answered by %s, want no node port there", c.from.Role, c.tg, name)
			}
		}
		st.NodeAddresses = nil
		mustSync(t, s, st, service.Hint{})
		mustWho(t, tp.client, "tcp", netip.AddrPortFrom(svcNode6, 30080))
	})

	t.Run("cluster traffic keeps pod source", func(t *testing.T) {
		for fam := range 2 {
			for range 5 {
				name, peer := mustWho(t, tp.pods[1], "tcp", ap4(fam, svcCIP4, svcCIP6, 80))
				if name != "pod-2" && peer != svcPodAddr(1, fam) { // pod-2 reaching itself is masqueraded
					t.Errorf("%s: pod-2 seen as %s, want its own address", famName(fam), peer)
				}
			}
		}
	})

	t.Run("hairpin", func(t *testing.T) {
		mustSync(t, s, state(webPort(0)), service.Hint{})
		for fam := range 2 {
			name, peer := mustWho(t, pod0, "tcp", ap4(fam, svcCIP4, svcCIP6, 80))
			if name != "pod-1" || peer == svcPodAddr(0, fam) {
				t.Errorf("%s hairpin: answered by %s seeing %s, want pod-1 seeing the node", famName(fam), name, peer)
			}
		}
	})

	t.Run("affinity", func(t *testing.T) {
		p := webPort(0, 1, 2)
		p.AffinityTimeout = time.Hour
		mustSync(t, s, state(p), service.Hint{})
		for fam := range 2 {
			for _, from := range []*sandbox.NS{pod0, tp.client} {
				tg := ap4(fam, svcCIP4, svcCIP6, 80)
				if from == tp.client {
					tg = ap4(fam, svcExt4, svcExt6, 80)
				}
				seen := map[string]bool{}
				for range 15 {
					name, _ := mustWho(t, from, "tcp", tg)
					seen[name] = true
				}
				if len(seen) != 1 {
					t.Errorf("%s from %s: answered by %v, want one pod", famName(fam), from.Role, seen)
				}
			}
		}
	})

	t.Run("endpoint removed", func(t *testing.T) {
		mustSync(t, s, state(webPort(0, 1, 2)), service.Hint{})
		mustSync(t, s, state(webPort(0, 2)), service.Hint{})
		for fam := range 2 {
			seen := map[string]bool{}
			for range 30 {
				name, _ := mustWho(t, tp.node, "tcp", ap4(fam, svcCIP4, svcCIP6, 80))
				seen[name] = true
			}
			if len(seen) != 2 || seen["pod-2"] {
				t.Errorf("%s: answered by %v, want pod-1 and pod-3", famName(fam), seen)
			}
		}
	})

	t.Run("no endpoints refused", func(t *testing.T) {
		mustSync(t, s, state(webPort(), udpPort(webPort())), service.Hint{})
		refused := func(from *sandbox.NS, network string, tg netip.AddrPort) {
			t.Helper()
			start := time.Now()
			_, _, err := who(from, network, tg, 3*time.Second)
			if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
				t.Errorf("%s -> %s %s: %v after %v, want connection refused at once", from.Role, network, tg, err, time.Since(start))
			}
		}
		for fam := range 2 {
			refused(pod0, "tcp", ap4(fam, svcCIP4, svcCIP6, 80))
			refused(pod0, "udp", ap4(fam, svcCIP4, svcCIP6, 80))
			refused(tp.node, "tcp", ap4(fam, svcCIP4, svcCIP6, 80))
			refused(tp.client, "tcp", ap4(fam, svcLB4, svcLB6, 80))
			refused(tp.client, "tcp", ap4(fam, svcNode4, svcNode6, 30080))
		}
		// Another port of a live ClusterIP is refused too (the service
		// has port 80 only).
		mustSync(t, s, state(webPort(0)), service.Hint{})
		for fam := range 2 {
			mustWho(t, pod0, "tcp", ap4(fam, svcCIP4, svcCIP6, 80))
			refused(pod0, "tcp", ap4(fam, svcCIP4, svcCIP6, 81))
			refused(pod0, "udp", ap4(fam, svcCIP4, svcCIP6, 81))
			refused(tp.node, "tcp", ap4(fam, svcCIP4, svcCIP6, 81))
		}
	})

	t.Run("iTP Local without local endpoint drops", func(t *testing.T) {
		p := webPort(1, 2)
		p.InternalLocal, p.InternalEndpoints = true, nil
		mustSync(t, s, state(p), service.Hint{})
		for fam := range 2 {
			_, _, err := who(pod0, "tcp", ap4(fam, svcCIP4, svcCIP6, 80), 500*time.Millisecond)
			if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: %v, want a timeout", famName(fam), err)
			}
			// External traffic still uses the cluster endpoints.
			mustWho(t, tp.client, "tcp", ap4(fam, svcExt4, svcExt6, 80))
		}
	})

	t.Run("eTP Local", func(t *testing.T) {
		p := webPort(0, 1, 2)
		p.ExternalLocal = true
		p.ExternalEndpoints = []service.Target{podTarget(0, 0), podTarget(0, 1)}
		mustSync(t, s, state(p), service.Hint{})
		for fam := range 2 {
			node := [2]netip.Addr{svcNode4, svcNode6}[fam]
			client := [2]netip.Addr{svcClient4, svcClient6}[fam]
			for _, tg := range []netip.AddrPort{netip.AddrPortFrom(node, 30080), ap4(fam, svcLB4, svcLB6, 80)} {
				name, peer := mustWho(t, tp.client, "tcp", tg)
				if name != "pod-1" || peer != client {
					t.Errorf("eTP Local %s: answered by %s seeing %s, want pod-1 seeing the client %s", tg, name, peer, client)
				}
			}
			// Pods short-circuit to every endpoint, keeping their address.
			seen := map[string]bool{}
			for range 20 {
				name, peer := mustWho(t, tp.pods[1], "tcp", ap4(fam, svcLB4, svcLB6, 80))
				seen[name] = true
				if name != "pod-2" && peer != svcPodAddr(1, fam) {
					t.Errorf("short-circuit seen as %s", peer)
				}
			}
			if len(seen) < 2 {
				t.Errorf("short-circuit answered by %v, want the cluster endpoints", seen)
			}
		}
		// No local endpoint: external traffic dropped, not refused.
		p.ExternalEndpoints = nil
		mustSync(t, s, state(p), service.Hint{})
		for fam := range 2 {
			_, _, err := who(tp.client, "tcp", ap4(fam, svcLB4, svcLB6, 80), 500*time.Millisecond)
			if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: %v, want a timeout", famName(fam), err)
			}
			mustWho(t, tp.pods[1], "tcp", ap4(fam, svcLB4, svcLB6, 80))
		}
	})

	t.Run("source ranges", func(t *testing.T) {
		p := webPort(0, 1)
		p.SourceRanges = prefixes("203.0.113.0/24", "2001:db8:ffff::/48")
		mustSync(t, s, state(p), service.Hint{})
		for fam := range 2 {
			if _, _, err := who(tp.client, "tcp", ap4(fam, svcLB4, svcLB6, 80), 500*time.Millisecond); err == nil {
				t.Errorf("%s: client outside the source ranges reached the LB IP", famName(fam))
			}
			mustWho(t, tp.client, "tcp", ap4(fam, svcExt4, svcExt6, 80)) // not an LB IP
			mustWho(t, tp.node, "tcp", ap4(fam, svcLB4, svcLB6, 80))     // the node itself passes
			if _, _, err := who(pod0, "tcp", ap4(fam, svcLB4, svcLB6, 80), 500*time.Millisecond); err == nil {
				t.Errorf("%s: a pod outside the source ranges reached the LB IP", famName(fam))
			}
		}
		p.SourceRanges = prefixes("198.18.0.0/24", "2001:db8::/64")
		mustSync(t, s, state(p), service.Hint{})
		for fam := range 2 {
			mustWho(t, tp.client, "tcp", ap4(fam, svcLB4, svcLB6, 80))
		}
	})

	t.Run("service removed", func(t *testing.T) {
		other := clusterPort(pname("default", "other", ""), addrs("10.96.0.20"), podTarget(1, 0))
		mustSync(t, s, state(webPort(0, 1), other), service.Hint{})
		mustSync(t, s, state(other), service.Hint{})
		d := mustDump(t, s)
		if strings.Contains(d, "default/web") || strings.Contains(d, "10.96.0.10") {
			t.Errorf("removed service left objects:\n%s", d)
		}
		mustSync(t, s, state(other), service.Hint{Full: true})
		if d2 := mustDump(t, s); d2 != d {
			t.Errorf("incremental dump differs from full:\n%s\nfull:\n%s", d, d2)
		}
	})

	t.Run("idempotent and incremental", func(t *testing.T) {
		st := state(webPort(0, 1, 2))
		mustSync(t, s, st, service.Hint{})
		d1 := mustDump(t, s)
		before := s.fullSyncs
		mustSync(t, s, st, service.Hint{})
		if d2 := mustDump(t, s); d2 != d1 {
			t.Errorf("second sync changed the dump:\n%s\nwant\n%s", d2, d1)
		}
		mustSync(t, s, state(webPort(0, 1)), service.Hint{})
		if s.fullSyncs != before {
			t.Errorf("incremental syncs did %d full rebuilds", s.fullSyncs-before)
		}
	})

	t.Run("other tables and interference", func(t *testing.T) {
		st := state(webPort(0, 1, 2))
		mustSync(t, s, st, service.Hint{})
		want := mustDump(t, s)
		c := nsConn(t, tp.node)
		other := addOtherTable(t, c, "othercomponent")
		c.FlushTable(other)
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		before := s.fullSyncs
		mustSync(t, s, state(webPort(0, 1)), service.Hint{})
		mustSync(t, s, st, service.Hint{})
		if got := mustDump(t, s); got != want || s.fullSyncs != before {
			t.Errorf("after another table changed: full syncs %d, dump\n%s\nwant\n%s", s.fullSyncs-before, got, want)
		}
		// Our table deleted behind our back: repaired by the next sync.
		c.DelTable(s.table)
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		mustSync(t, s, st, service.Hint{})
		if got := mustDump(t, s); got != want {
			t.Errorf("after deletion: dump\n%s\nwant\n%s", got, want)
		}
		mustWho(t, pod0, "tcp", netip.AddrPortFrom(svcCIP4, 80))
		// Our table flushed behind our back (rules gone, chains kept).
		c.FlushTable(s.table)
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		mustSync(t, s, st, service.Hint{})
		if got := mustDump(t, s); got != want {
			t.Errorf("after flush: dump\n%s\nwant\n%s", got, want)
		}
		mustWho(t, pod0, "tcp", netip.AddrPortFrom(svcCIP6, 80))
		// An object added to our table is noticed and removed.
		c.AddChain(&nft.Chain{Name: "intruder", Table: s.table})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		mustSync(t, s, st, service.Hint{})
		if got := mustDump(t, s); got != want {
			t.Errorf("after intrusion: dump\n%s\nwant\n%s", got, want)
		}
	})

	if err := s.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := mustDump(t, s); d != "" {
		t.Errorf("table left after Cleanup:\n%s", d)
	}
}

// transitionStates is a list of states exercising every kind of change.
func transitionStates() []*service.State {
	web := webPort(0, 1, 2)
	aff := web
	aff.AffinityTimeout = time.Hour
	aff2 := aff
	aff2.AffinityTimeout = 2 * time.Hour
	local := webPort(0, 1, 2)
	local.ExternalLocal, local.ExternalEndpoints = true, []service.Target{podTarget(0, 0)}
	localNone := local
	localNone.ExternalEndpoints = nil
	fw := webPort(1)
	fw.SourceRanges = prefixes("198.18.0.0/24")
	itp := webPort(1, 2)
	itp.InternalLocal, itp.InternalEndpoints = true, nil
	masq4 := clusterPort(pname("kube-system", "dns", "dns"), addrs("10.96.0.53"), podTarget(2, 0), podTarget(1, 0))
	v6only := clusterPort(pname("kube-system", "v6", ""), addrs("fd00:10:96::6"), podTarget(2, 1))
	// Another service claiming web's external IPs and port.
	rival := webPort(2)
	rival.Name, rival.ClusterIPs, rival.NodePort = pname("default", "rival", ""), addrs("10.96.0.20", "fd00:10:96::20"), 30090
	return []*service.State{
		state(web), state(web, masq4), state(aff, masq4), state(aff2), state(local, v6only), state(localNone, v6only),
		state(fw, masq4, v6only), state(itp), state(webPort()), state(udpPort(web), web), state(), state(webPort(2), masq4),
		state(web, rival), state(rival, masq4), state(aff, rival),
	}
}

func TestServiceTransitionsPrivileged(t *testing.T) {
	sb := sandbox.New(t)
	node := sb.Namespace("node")
	s := newSvcProxy(t, node, "kwtest_transitions")
	exact := newSvcProxy(t, sb.Namespace("exact"), "kwtest_transitions")
	fresh := newSvcProxy(t, sb.Namespace("fresh"), "kwtest_transitions")
	states := transitionStates()
	order := make([]int, 0, 3*len(states))
	for i := range states {
		order = append(order, i)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 2 {
		for _, i := range rnd.Perm(len(states)) {
			order = append(order, i)
		}
	}
	prev := &service.State{}
	for step, i := range order {
		mustSync(t, s, states[i], service.Hint{})
		mustSync(t, exact, states[i], service.Hint{Changed: changedPorts(prev, states[i]), Exact: true})
		mustSync(t, fresh, states[i], service.Hint{Full: true})
		prev = states[i]
		want := countChainsSorted(mustDump(t, fresh))
		for _, p := range []*ServiceProxy{s, exact} {
			if got := countChainsSorted(mustDump(t, p)); got != want {
				t.Fatalf("step %d (state %d): incremental dump\n%s\nwant (full sync)\n%s", step, i, got, want)
			}
		}
	}
	if s.fullSyncs != 1 || exact.fullSyncs != 1 {
		t.Errorf("%d and %d full syncs, want only the first", s.fullSyncs, exact.fullSyncs)
	}
	_ = s.Cleanup(context.Background())
	_ = fresh.Cleanup(context.Background())
}

// countChainsSorted sorts the rules of the per-count chains of a dump:
// their order does not matter (their maps hold disjoint keys), and
// incremental syncs append where a full one sorts.
func countChainsSorted(d string) string {
	lines := strings.Split(d, "\n")
	var idx []int
	var rules []string
	for i, l := range lines {
		for k := setDNAT; k <= setNPLocalDNAT; k++ {
			if strings.Contains(l, " "+setKindNames[k]+" ") && strings.HasPrefix(l, "add rule ") {
				idx, rules = append(idx, i), append(rules, l)
				break
			}
		}
	}
	slices.Sort(rules)
	for j, i := range idx {
		lines[i] = rules[j]
	}
	return strings.Join(lines, "\n")
}

// changedPorts lists the ports that differ between two states, as the
// Proxier's exact hints do.
func changedPorts(a, b *service.State) []service.PortName {
	byName := map[service.PortName]*service.PortState{}
	for i := range a.Ports {
		byName[a.Ports[i].Name] = &a.Ports[i]
	}
	var out []service.PortName
	for i := range b.Ports {
		p := &b.Ports[i]
		if o := byName[p.Name]; o == nil || !o.Equal(p) {
			out = append(out, p.Name)
		}
		delete(byName, p.Name)
	}
	for n := range byName {
		out = append(out, n)
	}
	return out
}

// TestServiceDumpExample logs the dump of a small service (see the report
// in the package documentation).
func TestServiceDumpExamplePrivileged(t *testing.T) {
	sb := sandbox.New(t)
	node := sb.Namespace("node")
	s := newSvcProxy(t, node, "kubewire-services")
	p := clusterPort(pname("default", "web", "http"), addrs("10.96.0.10"), tgt("10.244.1.2", 8080), tgt("10.244.2.2", 8080))
	p.NodePort, p.AffinityTimeout = 30080, 3*time.Hour
	local := tgt("fd00:10:244:1::2", 8080)
	local.Local = true
	api := clusterPort(pname("default", "api", ""), addrs("10.96.0.12", "fd00:10:96::12"), tgt("10.244.1.3", 8443), tgt("10.244.2.3", 8443), local)
	api.NodePort, api.ExternalLocal, api.ExternalEndpoints = 30443, true, []service.Target{local}
	api.LoadBalancerIPs, api.SourceRanges = addrs("198.18.100.12"), prefixes("198.51.100.0/24")
	mustSync(t, s, state(p, api, clusterPort(pname("default", "empty", ""), addrs("10.96.0.11"))), service.Hint{})
	d := mustDump(t, s)
	for _, want := range []string{
		"numgen random mod 2 vmap @svc-", "dnat ip to 10.244.1.2:8080", "update @aff-",
		"meta mark set meta mark | 0x4000", "no-endpoints-reject-v4 { 10.96.0.11 . tcp . 80 }", "masquerade fully-random",
		"service-dnat meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-n2-v4",
		"10.96.0.12 . tcp . 80 . 1 : 10.244.2.3 . 8443",
		"local-mark-v4 { 198.18.100.12 . tcp . 80 }",
		"service-local-dnat-n2-v4 { 198.18.100.12 . tcp . 80 . 0 : 10.244.1.3 . 8443, 198.18.100.12 . tcp . 80 . 1 : 10.244.2.3 . 8443 }",
		"firewall-allow-v4 { 198.18.100.12 . tcp . 80 . 198.51.100.0-198.18.100.12 . tcp . 80 . 198.51.100.255 }",
		"hairpin-v6 { fd00:10:244:1::2 . fd00:10:244:1::2 }",
		"nodeport-dnat-n1-v6 { tcp . 30443 . 0 : fd00:10:244:1::2 . 8080 }",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("dump lacks %q", want)
		}
	}
	t.Log("\n" + d)

	// What nft itself makes of the table (the binary is optional, CI
	// installs it and sets KUBEWIRE_REQUIRE_NFT).
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("KUBEWIRE_REQUIRE_NFT") != "" {
			t.Fatalf("nft: %v", err)
		}
		t.Log("nft not installed: not checking its listing")
	} else {
		out, err := exec.Command("nsenter", "--net="+node.Path(), "nft", "list", "table", "inet", "kubewire-services").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table: %v\n%s", err, out)
		}
		for _, want := range []string{
			"chain service-dnat {\n\t\tdnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-n2-v4",
			"ip saddr @cluster-cidrs-v4 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-local-dnat-n2-v4",
			"ip6 daddr . meta l4proto . th dport @service-keys-v6 goto service-ips",
			"ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade fully-random",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("nft list table lacks %q", want)
			}
		}
		t.Log("\n" + string(out))
	}
	_ = s.Cleanup(context.Background())
}

// peakRSS reads the process's peak resident set size (VmHWM).
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

func benchPorts(n, eps int) []service.PortState {
	ps := make([]service.PortState, n)
	for i := range n {
		var ts []service.Target
		for j := range eps {
			ts = append(ts, service.Target{Addr: netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(1 + (i*eps+j)%250)}), Port: uint16(8000 + j)})
		}
		ps[i] = clusterPort(pname("bench", fmt.Sprintf("svc-%05d", i), ""),
			[]netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(128 + i>>8), byte(i)})}, ts...)
	}
	service.SortPorts(ps)
	return ps
}

func BenchmarkServiceSync(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("full-%d", n), func(b *testing.B) {
			sb := sandbox.New(b)
			s := newSvcProxy(b, sb.Namespace("node"), "kwbench")
			st := &service.State{Ports: benchPorts(n, 10)}
			for b.Loop() {
				if err := s.Sync(ctx, st, service.Hint{Full: true}); err != nil {
					b.Fatal(err)
				}
			}
			// What stays: the driver's view of the table and the State.
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MB")
			b.ReportMetric(float64(ms.HeapAlloc)/float64(n), "heap-B/service")
			if hwm, err := peakRSS(); err == nil {
				b.ReportMetric(float64(hwm)/(1<<20), "peak-RSS-MB")
			}
		})
	}
	for _, n := range []int{1000, 10000} {
		benchIncremental(b, n)
	}
}

// benchIncremental measures one-service changes with n services present.
func benchIncremental(b *testing.B, n int) {
	ctx := context.Background()
	sb := sandbox.New(b)
	s := newSvcProxy(b, sb.Namespace("node"), "kwbench")
	base := benchPorts(n, 10)
	if err := s.Sync(ctx, &service.State{Ports: base}, service.Hint{Full: true}); err != nil {
		b.Fatal(err)
	}
	b.Run(fmt.Sprintf("add-one-with-%d", n), func(b *testing.B) {
		extra := clusterPort(pname("bench", "zzz-extra", ""), addrs("10.96.250.1"), tgt("10.244.250.1", 80))
		with := &service.State{Ports: append(append([]service.PortState(nil), base...), extra)}
		without := &service.State{Ports: base}
		for i := 0; b.Loop(); i++ {
			st := with
			if i%2 == 1 {
				st = without
			}
			if err := s.Sync(ctx, st, service.Hint{Changed: []service.PortName{extra.Name}, Exact: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("change-endpoint-with-%d", n), func(b *testing.B) {
		changed := append([]service.PortState(nil), base...)
		p := changed[n/2]
		p.InternalEndpoints = append(append([]service.Target(nil), p.InternalEndpoints[:9]...), tgt("10.244.251.1", 80))
		p.ExternalEndpoints, p.ClusterEndpoints = p.InternalEndpoints, p.InternalEndpoints
		changed[n/2] = p
		for i := 0; b.Loop(); i++ {
			st := &service.State{Ports: changed}
			if i%2 == 1 {
				st = &service.State{Ports: base}
			}
			if err := s.Sync(ctx, st, service.Hint{Changed: []service.PortName{p.Name}, Exact: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	if s.fullSyncs != 1 {
		b.Errorf("%d full syncs in incremental benchmarks", s.fullSyncs)
	}
}

// BenchmarkFirstPacket times a new TCP connection from a pod to a ClusterIP
// whose endpoint is another pod of the node, with the service alone in the
// table and with 10k others: the first packet of each connection goes
// through the nat chains (later ones follow conntrack).
func BenchmarkFirstPacket(b *testing.B) {
	tp := newSvcTopology(b)
	s := newSvcProxy(b, tp.node, "kwbench")
	web := webPort(1)
	target := netip.AddrPortFrom(svcCIP4, 80).String()
	for _, n := range []int{1, 10000} {
		mustSync(b, s, state(append(benchPorts(n-1, 10), web)...), service.Hint{Full: true})
		b.Run(fmt.Sprintf("services-%d", n), func(b *testing.B) {
			err := tp.pods[0].Do(func() error {
				for b.Loop() {
					c, err := net.DialTimeout("tcp", target, time.Second)
					if err != nil {
						return err
					}
					c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT: ports are not exhausted
					c.Close()
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
