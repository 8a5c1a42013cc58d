package netlink

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/service"
)

var _ service.Conntrack = (*Driver)(nil)

// ctHandle is a netlink handle with a netfilter socket in the driver's
// namespace, opened on first use (conntrack is not needed by pod drivers).
type ctHandle struct {
	once sync.Once
	h    *vnl.Handle
	err  error
}

func (d *Driver) conntrack() (*vnl.Handle, error) {
	d.ct.once.Do(func() {
		d.ct.err = d.ns.Do(func() error {
			var err error
			d.ct.h, err = vnl.NewHandle(syscall.NETLINK_NETFILTER)
			return err
		})
	})
	return d.ct.h, d.ct.err
}

// ClearStaleUDP implements service.Conntrack: it deletes, in the driver's
// namespace, UDP conntrack entries whose original destination belongs to a
// set and whose reply source is not one of the set's endpoints.
func (d *Driver) ClearStaleUDP(ctx context.Context, sets []service.UDPFlowSet) error {
	if err := d.ctxErr(ctx); err != nil {
		return err
	}
	if len(sets) == 0 {
		return nil
	}
	h, err := d.conntrack()
	if err != nil {
		return fmt.Errorf("netlink: conntrack socket: %w", err)
	}
	f := newStaleFilter(sets)
	for _, fam := range []vnl.InetFamily{syscall.AF_INET, syscall.AF_INET6} {
		if _, err := h.ConntrackDeleteFilters(vnl.ConntrackTable, fam, f); err != nil {
			return fmt.Errorf("netlink: delete stale conntrack entries: %w", err)
		}
	}
	return nil
}

// staleFilter matches flows of the sets that no endpoint answers.
type staleFilter struct {
	dest     map[netip.AddrPort]int // destination → set index
	nodePort map[uint16]int
	keep     []map[netip.AddrPort]bool
}

func newStaleFilter(sets []service.UDPFlowSet) *staleFilter {
	f := &staleFilter{dest: map[netip.AddrPort]int{}, nodePort: map[uint16]int{}}
	for i, s := range sets {
		for _, d := range s.Dests {
			f.dest[d] = i
		}
		if s.NodePort != 0 {
			f.nodePort[s.NodePort] = i
		}
		k := map[netip.AddrPort]bool{}
		for _, ap := range s.Keep {
			k[ap] = true
		}
		f.keep = append(f.keep, k)
	}
	return f
}

// MatchConntrackFlow implements vnl.CustomConntrackFilter.
func (f *staleFilter) MatchConntrackFlow(flow *vnl.ConntrackFlow) bool {
	if flow.Forward.Protocol != syscall.IPPROTO_UDP {
		return false
	}
	dst := netip.AddrPortFrom(toAddr(flow.Forward.DstIP), flow.Forward.DstPort)
	i, ok := f.dest[dst]
	if !ok {
		if i, ok = f.nodePort[dst.Port()]; !ok {
			return false
		}
	}
	reply := netip.AddrPortFrom(toAddr(flow.Reverse.SrcIP), flow.Reverse.SrcPort)
	return !f.keep[i][reply]
}
