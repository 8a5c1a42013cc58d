package netlink_test

import (
	"context"
	"net"
	"sort"
	"syscall"
	"testing"

	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/driver/netlink"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/service"
	"net/netip"
)

func TestClearStaleUDP(t *testing.T) {
	sb := sandbox.New(t)
	ns := sb.Namespace("node")
	var h *vnl.Handle
	if err := ns.Do(func() error {
		var err error
		h, err = vnl.NewHandle(syscall.NETLINK_NETFILTER)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	flow := func(client, dst, reply string) *vnl.ConntrackFlow {
		c, d, r := netip.MustParseAddrPort(client), netip.MustParseAddrPort(dst), netip.MustParseAddrPort(reply)
		return &vnl.ConntrackFlow{
			FamilyType: syscall.AF_INET,
			Forward:    vnl.IPTuple{SrcIP: net.IP(c.Addr().AsSlice()), SrcPort: c.Port(), DstIP: net.IP(d.Addr().AsSlice()), DstPort: d.Port(), Protocol: syscall.IPPROTO_UDP},
			Reverse:    vnl.IPTuple{SrcIP: net.IP(r.Addr().AsSlice()), SrcPort: r.Port(), DstIP: net.IP(c.Addr().AsSlice()), DstPort: c.Port(), Protocol: syscall.IPPROTO_UDP},
			TimeOut:    120,
		}
	}
	for _, f := range []*vnl.ConntrackFlow{
		flow("10.244.1.9:5000", "10.96.0.10:53", "10.244.1.2:53"),    // old endpoint: stale
		flow("10.244.1.9:5001", "10.96.0.10:53", "10.244.1.3:53"),    // current endpoint: kept
		flow("10.244.1.9:5002", "10.96.0.11:53", "10.244.1.2:53"),    // another service: kept
		flow("198.18.5.2:5003", "198.18.0.1:30053", "10.244.1.2:53"), // node port, old endpoint: stale
		flow("10.244.1.9:5004", "10.96.0.10:53", "10.96.0.10:53"),    // rejected before any endpoint: stale
	} {
		if err := h.ConntrackCreate(vnl.ConntrackTable, syscall.AF_INET, f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	drv, err := netlink.New(netlink.Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	err = drv.ClearStaleUDP(context.Background(), []service.UDPFlowSet{{
		Dests:    []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")},
		NodePort: 30053,
		Keep:     []netip.AddrPort{netip.MustParseAddrPort("10.244.1.3:53")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	flows, err := h.ConntrackTableList(vnl.ConntrackTable, syscall.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var left []int
	for _, f := range flows {
		left = append(left, int(f.Forward.SrcPort))
	}
	sort.Ints(left)
	if len(left) != 2 || left[0] != 5001 || left[1] != 5002 {
		t.Fatalf("entries left (by client port) = %v, want [5001 5002]", left)
	}
}
