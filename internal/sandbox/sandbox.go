// Package sandbox builds throwaway network namespaces for privileged tests
// and examples: uniquely named namespaces ("nodes", "pods", "remote hosts"),
// veth pairs between them, and Go helpers to serve and dial TCP/UDP inside
// them. Nothing it creates is ever joined to the namespace the test runs in,
// and everything is removed in t.Cleanup, also when the test fails. A test
// binary killed before its cleanup runs leaves namespaces named after its PID;
// the next New removes them.
//
// Tests call New(t), which skips when the process cannot create network
// namespaces, or fails instead when KUBEWIRE_REQUIRE_PRIVILEGED=1 so CI cannot
// skip silently.
package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/internal/netns"
)

// EnvRequirePrivileged, when set to 1, turns "skipped for lack of privilege"
// into a test failure.
const EnvRequirePrivileged = "KUBEWIRE_REQUIRE_PRIVILEGED"

// namePrefix starts every namespace name this package creates.
const namePrefix = "kwt-"

// RequirePrivileged skips the test unless the process can create network
// namespaces (root or CAP_SYS_ADMIN+CAP_NET_ADMIN), and fails it instead when
// KUBEWIRE_REQUIRE_PRIVILEGED=1.
func RequirePrivileged(t TB) {
	t.Helper()
	if err := Privileged(); err != nil {
		if os.Getenv(EnvRequirePrivileged) == "1" {
			t.Fatalf("privileged test cannot run (%s=1): %v", EnvRequirePrivileged, err)
		}
		t.Skipf("needs privileges to create network namespaces: %v", err)
	}
}

// Privileged reports why this process cannot create network namespaces, or
// nil when it can.
func Privileged() error {
	if os.Geteuid() != 0 {
		return errors.New("not running as root")
	}
	return netns.DoFresh(func() error { return nil })
}

// TB is the part of testing.TB the sandbox uses; programs (the sandbox
// example) can supply their own.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// Sandbox owns the namespaces of one test.
type Sandbox struct {
	tb  TB
	id  string
	seq atomic.Int32

	mu     sync.Mutex
	nss    []*NS
	closed bool           // cleanup began: no new namespace
	making sync.WaitGroup // namespaces being made; cleanup waits for them
}

var sandboxSeq atomic.Int32

// New returns an empty sandbox for the test. It skips or fails the test as
// RequirePrivileged does.
func New(tb TB) *Sandbox {
	tb.Helper()
	RequirePrivileged(tb)
	RemoveStale()
	s := &Sandbox{tb: tb, id: fmt.Sprintf("%d-%d", os.Getpid(), sandboxSeq.Add(1))}
	tb.Cleanup(s.close)
	return s
}

// RemoveStale deletes namespaces left by sandboxes of processes that no
// longer exist (a test binary killed before its cleanup ran).
func RemoveStale() {
	names, _ := netns.ListNamed()
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, namePrefix)
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if syscall.Kill(pid, 0) == nil || pid == os.Getpid() {
			continue // its owner still runs
		}
		_ = netns.DeleteNamed(name)
	}
}

// NS is one namespace of a sandbox.
type NS struct {
	*netns.NetNS
	// Name is the namespace's name under /run/netns.
	Name string
	// Role is the readable part given to Namespace ("node1", "pod-a").
	Role string

	sb *Sandbox
	nl *netlink.Handle
}

// Namespace creates a new namespace with loopback up. role must be short and
// made of letters, digits and '-'.
func (s *Sandbox) Namespace(role string) *NS {
	s.tb.Helper()
	n, err := s.newNS(role)
	if err != nil {
		s.tb.Fatalf("sandbox: %v", err)
	}
	return n
}

func (s *Sandbox) newNS(role string) (*NS, error) {
	name := fmt.Sprintf("%s%s-%d-%s", namePrefix, s.id, s.seq.Add(1), role)
	// Cleanup may begin at any time (a program interrupted while it
	// builds): it waits for namespaces being made, and none starts after.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("sandbox closed: %s not made", name)
	}
	s.making.Add(1)
	s.mu.Unlock()
	defer s.making.Done()
	h, err := netns.NewNamed(name)
	if err != nil {
		return nil, err
	}
	n := &NS{NetNS: h, Name: name, Role: role, sb: s}
	s.mu.Lock()
	s.nss = append(s.nss, n)
	s.mu.Unlock()
	err = h.Do(func() error {
		var err error
		n.nl, err = netlink.NewHandle(syscall.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err == nil {
		err = n.nl.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("loopback up in %s: %w", name, err)
	}
	return n, nil
}

func (s *Sandbox) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.making.Wait()
	s.mu.Lock()
	nss := s.nss
	s.nss = nil
	s.mu.Unlock()
	for i := len(nss) - 1; i >= 0; i-- {
		n := nss[i]
		if n.nl != nil {
			n.nl.Close()
		}
		n.NetNS.Close()
		if err := netns.DeleteNamed(n.Name); err != nil {
			s.tb.Errorf("sandbox cleanup: %v", err)
		}
	}
}

// Netlink returns a netlink handle bound to the namespace; do not close it.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Connect creates a veth pair with one end (aIf) in a and the other (bIf) in
// b, assigns the given addresses (without duplicate address detection) and
// brings both ends up. a and b must both belong to the sandbox.
func (s *Sandbox) Connect(a *NS, aIf string, aAddrs []netip.Prefix, b *NS, bIf string, bAddrs []netip.Prefix) {
	s.tb.Helper()
	if a.sb != s || b.sb != s {
		s.tb.Fatal("sandbox: Connect needs two namespaces of this sandbox")
	}
	tmp := fmt.Sprintf("kwtmp%d", s.seq.Add(1))
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: tmp},
		PeerName:      bIf,
		PeerNamespace: netlink.NsFd(b.Fd()),
	}
	if err := a.nl.LinkAdd(veth); err != nil {
		s.tb.Fatalf("sandbox: veth %s/%s <-> %s/%s: %v", a.Role, aIf, b.Role, bIf, err)
	}
	link, err := a.nl.LinkByName(tmp)
	if err == nil {
		err = a.nl.LinkSetName(link, aIf)
	}
	if err != nil {
		s.tb.Fatalf("sandbox: rename veth in %s: %v", a.Role, err)
	}
	a.mustSetup(s.tb, aIf, aAddrs)
	b.mustSetup(s.tb, bIf, bAddrs)
}

func (n *NS) mustSetup(tb TB, ifName string, addrs []netip.Prefix) {
	tb.Helper()
	if err := n.SetupLink(ifName, addrs...); err != nil {
		tb.Fatalf("sandbox: %v", err)
	}
}

// SetupLink assigns addresses (no DAD) to an existing link and sets it up.
// Duplicate address detection is off on the link, so its IPv6 link-local
// address is usable at once (neighbour solicitations for forwarded packets
// need it), as on a long-running real node.
func (n *NS) SetupLink(ifName string, addrs ...netip.Prefix) error {
	link, err := n.nl.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", n.Role, ifName, err)
	}
	if ifName != "lo" {
		if err := n.SetSysctl("net/ipv6/conf/"+ifName+"/accept_dad", "0"); err != nil {
			return fmt.Errorf("%s: %w", n.Role, err)
		}
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: prefixToIPNet(p), Flags: 0x2 /* IFA_F_NODAD */}
		if err := n.nl.AddrReplace(link, a); err != nil {
			return fmt.Errorf("%s: address %s on %s: %w", n.Role, p, ifName, err)
		}
	}
	if err := n.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s: set %s up: %w", n.Role, ifName, err)
	}
	return nil
}

// AddRoute adds dst via gw (or directly on ifName when gw is invalid).
func (n *NS) AddRoute(dst netip.Prefix, gw netip.Addr, ifName string) error {
	r := &netlink.Route{Dst: prefixToIPNet(dst)}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	}
	if ifName != "" {
		link, err := n.nl.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("%s: link %s: %w", n.Role, ifName, err)
		}
		r.LinkIndex = link.Attrs().Index
	}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("%s: route %s via %s: %w", n.Role, dst, gw, err)
	}
	return nil
}

// MustSysctl is (*netns.NetNS).SetSysctl failing the test on error.
func (n *NS) MustSysctl(key, value string) {
	n.sb.tb.Helper()
	if err := n.SetSysctl(key, value); err != nil {
		n.sb.tb.Fatalf("sandbox: %s: %v", n.Role, err)
	}
}

// Listen opens a TCP listener or UDP packet socket inside the namespace.
// network is "tcp" or "udp" ("tcp4", "udp6" ... also work).
func (n *NS) Listen(network string, addr netip.AddrPort) (net.Listener, net.PacketConn, error) {
	var (
		ln net.Listener
		pc net.PacketConn
	)
	err := n.Do(func() error {
		var err error
		if strings.HasPrefix(network, "udp") {
			pc, err = net.ListenPacket(network, addr.String())
		} else {
			ln, err = net.Listen(network, addr.String())
		}
		return err
	})
	return ln, pc, err
}

// Dial connects from inside the namespace. The connection can be used from
// any goroutine.
func (n *NS) Dial(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr.String())
		return err
	})
	return c, err
}

// ServeEcho starts an echo server inside the namespace on addr (port 0 picks
// one) and returns the address it listens on. Each TCP line or UDP datagram
// "X" is answered with "<peer> X", where <peer> is the client address as the
// server sees it (so tests can check NAT). The server stops at test cleanup.
func (n *NS) ServeEcho(network string, addr netip.AddrPort) netip.AddrPort {
	tb := n.sb.tb
	tb.Helper()
	ln, pc, err := n.Listen(network, addr)
	if err != nil {
		tb.Fatalf("sandbox: listen %s %s in %s: %v", network, addr, n.Role, err)
	}
	if pc != nil {
		tb.Cleanup(func() { pc.Close() })
		go serveUDP(pc)
		return pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveTCP(ln, &wg)
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func serveTCP(ln net.Listener, wg *sync.WaitGroup) {
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); c.Close() }()
			peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().String()
			r := bufio.NewReaderSize(c, 64<<10)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := c.Write([]byte(peer + " " + line)); err != nil {
					return
				}
			}
		}()
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		peer := from.(*net.UDPAddr).AddrPort().String()
		_, _ = pc.WriteTo(append([]byte(peer+" "), buf[:k]...), from)
	}
}

// Transfer sends size bytes over TCP from inside n to an echo server at
// target and checks that all of them come back, so paths with a wrong MTU
// (which pass small probes) fail.
func (n *NS) Transfer(target netip.AddrPort, size int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := n.Dial(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("%s: dial %s: %w", n.Role, target, err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	payload[size-1] = '\n'
	werr := make(chan error, 1)
	go func() { _, err := c.Write(payload); werr <- err }()
	// The reply is "<peer> " + payload.
	line, err := bufio.NewReaderSize(c, 64<<10).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s: transfer %d bytes to %s: %w", n.Role, size, target, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("%s: write to %s: %w", n.Role, target, err)
	}
	_, body, _ := strings.Cut(line, " ")
	if body != string(payload) {
		return fmt.Errorf("%s: transfer to %s: got %d bytes back, want %d", n.Role, target, len(body), size)
	}
	return nil
}

// Probe sends one message from inside n to an echo server at target and
// returns the client address the server saw. It fails after timeout.
func (n *NS) Probe(network string, target netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := n.Dial(ctx, network, target)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s: dial %s %s: %w", n.Role, network, target, err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	msg := "probe-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s: write to %s: %w", n.Role, target, err)
	}
	buf := make([]byte, 512)
	got := 0
	for got == 0 || !strings.HasSuffix(string(buf[:got]), "\n") {
		k, err := c.Read(buf[got:])
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%s: read from %s %s: %w", n.Role, network, target, err)
		}
		got += k
		if got == len(buf) {
			break
		}
	}
	peer, rest, ok := strings.Cut(string(buf[:got]), " ")
	if !ok || rest != msg {
		return netip.AddrPort{}, fmt.Errorf("%s: unexpected reply %q from %s", n.Role, buf[:got], target)
	}
	return netip.ParseAddrPort(peer)
}

// MustReach fails tb unless a probe from n to target succeeds; it returns
// the client address the server saw. tb may be a subtest of the test that
// made the sandbox.
func (n *NS) MustReach(tb TB, network string, target netip.AddrPort) netip.AddrPort {
	tb.Helper()
	from, err := n.Probe(network, target, 3*time.Second)
	if err != nil {
		tb.Fatalf("%s cannot reach %s %s: %v", n.Role, network, target, err)
	}
	return from
}

// MustNotReach fails tb if a probe from n to target succeeds.
func (n *NS) MustNotReach(tb TB, network string, target netip.AddrPort) {
	tb.Helper()
	if from, err := n.Probe(network, target, 300*time.Millisecond); err == nil {
		tb.Fatalf("%s reached %s %s (seen from %s), want no connectivity", n.Role, network, target, from)
	}
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
