package netlink_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/dns/nodelocal"
	"github.com/kubewire/kubewire/driver/netlink"
	"github.com/kubewire/kubewire/internal/sandbox"
)

// hostAddrs lists the addresses of a link, without IPv6 link-local ones.
func hostAddrs(t *testing.T, h *vnl.Handle, name string) []string {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	as, err := h.AddrList(l, vnl.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if a.IP.To4() == nil && a.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, a.IPNet.String())
	}
	slices.Sort(out)
	return out
}

func TestSyncLocalLink(t *testing.T) {
	sb := sandbox.New(t)
	ns := sb.Namespace("node")
	h := ns.Netlink()
	drv, err := netlink.New(netlink.Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	ctx := context.Background()
	a4, a6 := netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("fd00::a9fe:140a")

	if err := drv.SyncLocalLink(ctx, nodelocal.LocalLink{Name: "nodelocaldns", Addresses: []netip.Addr{a4, a6}}); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("nodelocaldns")
	if err != nil {
		t.Fatal(err)
	}
	// A dummy where the kernel has the driver, else a port-less bridge.
	if typ := l.Type(); typ != "dummy" && typ != "bridge" {
		t.Errorf("link type %s, want dummy or bridge", typ)
	}
	t.Logf("link type: %s", l.Type())
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Error("link is not up")
	}
	if got, want := hostAddrs(t, h, "nodelocaldns"), []string{"169.254.20.10/32", "fd00::a9fe:140a/128"}; !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}
	// The addresses are local: a socket binds to each at once (no DAD).
	for _, a := range []netip.Addr{a4, a6} {
		if _, pc, err := ns.Listen("udp", netip.AddrPortFrom(a, 0)); err != nil {
			t.Errorf("bind %s: %v", a, err)
		} else {
			pc.Close()
		}
	}

	// Idempotent, and the addresses follow the desired state.
	idx := l.Attrs().Index
	a4b := netip.MustParseAddr("169.254.20.11")
	for _, want := range [][]netip.Addr{{a4, a6}, {a4b}, {a4b, a6}} {
		if err := drv.SyncLocalLink(ctx, nodelocal.LocalLink{Name: "nodelocaldns", Addresses: want}); err != nil {
			t.Fatal(err)
		}
		var ws []string
		for _, a := range want {
			ws = append(ws, netip.PrefixFrom(a, a.BitLen()).String())
		}
		slices.Sort(ws)
		if got := hostAddrs(t, h, "nodelocaldns"); !slices.Equal(got, ws) {
			t.Errorf("addresses %v, want %v", got, ws)
		}
	}
	if l2, _ := h.LinkByName("nodelocaldns"); l2 == nil || l2.Attrs().Index != idx {
		t.Error("sync recreated the link")
	}

	// Someone else's link of the same name is left alone.
	other := vnl.NewLinkAttrs()
	other.Name = "notours"
	if err := h.LinkAdd(&vnl.Bridge{LinkAttrs: other}); err != nil {
		t.Fatal(err)
	}
	err = drv.SyncLocalLink(ctx, nodelocal.LocalLink{Name: "notours", Addresses: []netip.Addr{a4}})
	if !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), "not created by kubewire") {
		t.Errorf("SyncLocalLink(foreign link) = %v, want os.ErrExist", err)
	}
	if err := drv.SyncLocalLink(ctx, nodelocal.LocalLink{Name: "notours"}); !errors.Is(err, os.ErrExist) {
		t.Errorf("removing a foreign link = %v, want os.ErrExist", err)
	}
	if got := hostAddrs(t, h, "notours"); len(got) != 0 {
		t.Errorf("foreign link got addresses %v", got)
	}

	// Invalid input changes nothing.
	err = drv.SyncLocalLink(ctx, nodelocal.LocalLink{Name: "nodelocaldns", Addresses: []netip.Addr{netip.MustParseAddr("fe80::1")}})
	if !errors.Is(err, nodelocal.ErrInvalid) {
		t.Errorf("SyncLocalLink(fe80::1) = %v, want ErrInvalid", err)
	}

	// No addresses: removed, twice.
	for range 2 {
		if err := drv.SyncLocalLink(ctx, nodelocal.LocalLink{Name: "nodelocaldns"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.LinkByName("nodelocaldns"); err == nil {
		t.Error("link still there after removal")
	}
}
