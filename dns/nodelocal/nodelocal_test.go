package nodelocal_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kubewire/kubewire/dns/nodelocal"
)

// fakeDrivers records the desired states it is given, as the kernel
// drivers would apply them.
type fakeDrivers struct {
	mu        sync.Mutex
	calls     []string
	link      *nodelocal.LocalLink // nil: no link
	rules     *nodelocal.NoTrackRules
	failRules error
}

func (f *fakeDrivers) SyncLocalLink(_ context.Context, l nodelocal.LocalLink) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := l.Validate(); err != nil {
		return err
	}
	f.calls = append(f.calls, fmt.Sprintf("link %s %v", l.Name, l.Addresses))
	if len(l.Addresses) == 0 {
		f.link = nil
	} else {
		f.link = &l
	}
	return nil
}

func (f *fakeDrivers) SyncNoTrack(_ context.Context, r nodelocal.NoTrackRules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("notrack %v %v", r.Addresses, r.Ports))
	if f.failRules != nil && len(r.Addresses) > 0 {
		return f.failRules
	}
	if len(r.Addresses) == 0 {
		f.rules = nil
	} else {
		f.rules = &r
	}
	return nil
}

// freePort returns a port free for both UDP and TCP on 127.0.0.1 (a
// moment ago).
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			ln.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

func TestNewValidates(t *testing.T) {
	f := &fakeDrivers{}
	for _, tc := range []struct {
		cfg  nodelocal.Config
		want string
	}{
		{nodelocal.Config{NoTrack: f}, "Config.Links <nil>: a LinkDriver is required"},
		{nodelocal.Config{Links: f}, "Config.NoTrack <nil>: a NoTracker is required"},
		{nodelocal.Config{Links: f, NoTrack: f, LinkName: "much-too-long-name"}, `Config.LinkName "much-too-long-name": not a valid interface name`},
		{nodelocal.Config{Links: f, NoTrack: f, LinkName: "a/b"}, `Config.LinkName "a/b"`},
		{nodelocal.Config{Links: f, NoTrack: f, Addresses: []netip.Addr{netip.MustParseAddr("169.254.20.10"), {}}}, "Config.Addresses[1] invalid IP: not a valid address"},
		{nodelocal.Config{Links: f, NoTrack: f, Addresses: []netip.Addr{netip.MustParseAddr("fe80::1")}}, "Config.Addresses[0] fe80::1: IPv6 link-local"},
		{nodelocal.Config{Links: f, NoTrack: f, Addresses: []netip.Addr{netip.MustParseAddr("::ffff:169.254.20.10")}}, "IPv4-mapped"},
		{nodelocal.Config{Links: f, NoTrack: f, Addresses: []netip.Addr{netip.MustParseAddr("0.0.0.0")}}, "not a unicast address"},
		{nodelocal.Config{Links: f, NoTrack: f, Addresses: []netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("169.254.20.10")}}, "Config.Addresses[1] 169.254.20.10: given twice"},
	} {
		_, err := nodelocal.New(tc.cfg)
		if !errors.Is(err, nodelocal.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want ErrInvalid with %q", tc.cfg, err, tc.want)
		}
	}
	if f.calls != nil {
		t.Errorf("New called the drivers: %v", f.calls)
	}

	n, err := nodelocal.New(nodelocal.Config{Links: f, NoTrack: f})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got, want := n.Addrs(), []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:53")}; !slices.Equal(got, want) {
		t.Errorf("default Addrs = %v, want %v", got, want)
	}
}

func TestSetupSyncCleanup(t *testing.T) {
	ctx := context.Background()
	f := &fakeDrivers{}
	port := freePort(t)
	lo := netip.MustParseAddr("127.0.0.1")
	n, err := nodelocal.New(nodelocal.Config{Links: f, NoTrack: f, LinkName: "kwdns", Addresses: []netip.Addr{lo}, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if f.link == nil || f.link.Name != "kwdns" || !slices.Equal(f.link.Addresses, []netip.Addr{lo}) {
		t.Errorf("link state %+v", f.link)
	}
	if f.rules == nil || !slices.Equal(f.rules.Addresses, []netip.Addr{lo}) || !slices.Equal(f.rules.Ports, []uint16{port}) {
		t.Errorf("notrack state %+v", f.rules)
	}
	want := netip.AddrPortFrom(lo, port)
	pcs, lns := n.PacketConns(), n.Listeners()
	if len(pcs) != 1 || pcs[0].LocalAddr().(*net.UDPAddr).AddrPort() != want {
		t.Fatalf("PacketConns %v, want one on %s", pcs, want)
	}
	if len(lns) != 1 || lns[0].Addr().(*net.TCPAddr).AddrPort() != want {
		t.Fatalf("Listeners %v, want one on %s", lns, want)
	}
	if err := n.Setup(ctx); err == nil {
		t.Error("second Setup succeeded")
	}

	// Sync restores what someone removed.
	f.link, f.rules = nil, nil
	if err := n.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if f.link == nil || f.rules == nil {
		t.Errorf("Sync did not restore: link %+v, rules %+v", f.link, f.rules)
	}

	if err := n.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if f.link != nil || f.rules != nil {
		t.Errorf("Cleanup left link %+v, rules %+v", f.link, f.rules)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The sockets are closed: the port can be bound again.
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(want))
	if err != nil {
		t.Fatalf("port still bound after Close: %v", err)
	}
	pc.Close()
	if err := n.Sync(ctx); err == nil {
		t.Error("Sync after Close succeeded")
	}
}

func TestSetupRollsBack(t *testing.T) {
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")

	t.Run("rules fail", func(t *testing.T) {
		f := &fakeDrivers{failRules: errors.New("no nftables")}
		n, err := nodelocal.New(nodelocal.Config{Links: f, NoTrack: f, Addresses: []netip.Addr{lo}, Port: freePort(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		err = n.Setup(ctx)
		if err == nil || !strings.Contains(err.Error(), "conntrack exemption: no nftables") {
			t.Fatalf("Setup = %v", err)
		}
		if f.link != nil || len(n.PacketConns()) != 0 {
			t.Errorf("failed Setup left link %+v, sockets %v", f.link, n.PacketConns())
		}
	})

	t.Run("port taken", func(t *testing.T) {
		f := &fakeDrivers{}
		busy, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		port := uint16(busy.Addr().(*net.TCPAddr).Port)
		n, err := nodelocal.New(nodelocal.Config{Links: f, NoTrack: f, Addresses: []netip.Addr{lo}, Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		err = n.Setup(ctx)
		if err == nil || !strings.Contains(err.Error(), "listen tcp 127.0.0.1:") {
			t.Fatalf("Setup = %v", err)
		}
		if f.link != nil || f.rules != nil {
			t.Errorf("failed Setup left link %+v, rules %+v", f.link, f.rules)
		}
		// The UDP socket opened before the failure was closed.
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			t.Fatalf("UDP port left bound: %v", err)
		}
		pc.Close()
	})
}
