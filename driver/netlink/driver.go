// Package netlink is kubewire's kernel driver for links, addresses, routes,
// neighbours, VXLAN and per-namespace sysctls, built on
// github.com/vishvananda/netlink. It implements network.LinkDriver (pod
// attachments) and network.RouteDriver (cross-node routes and the VXLAN
// overlay).
//
// A Driver is bound at construction to one network namespace, the node's:
// it opens its netlink socket there once and uses it from any goroutine. Pod
// namespaces are opened per call by path.
//
// Ownership: every object the driver makes is recognisable, and it never
// changes anything else. Host-side veths are named LinkPrefix+hash and carry
// the alias "kubewire:<container>/<ifname>"; the VXLAN device is named by the
// plan and must start with LinkPrefix; fabric routes carry the route
// protocol Options.RouteProtocol (default 187) and pod host routes
// RouteProtocol+1, so listing and cleanup find exactly its own routes.
//
// Kernel features: veth (2.6.24), bridge, VXLAN with IPv6 underlay (3.12),
// IFA_F_NODAD addresses. New probes veth, bridge and VXLAN creation inside a
// throwaway namespace and returns a *driver.UnsupportedError naming what is
// missing.
package netlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/driver"
	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/internal/probecache"
	"github.com/kubewire/kubewire/network"
)

// Options binds a Driver.
type Options struct {
	// NetNS is the path of the node namespace to program; "" means the
	// namespace of the calling thread at construction.
	NetNS string
	// LinkPrefix starts the names of the links the driver owns (default "kw").
	LinkPrefix string
	// RouteProtocol marks fabric routes (default 187); pod host routes use
	// RouteProtocol+1. Must be between 5 and 254.
	RouteProtocol int
	// DeferDelete makes TeardownPod retire attachments instead of deleting
	// them: both veth ends go down at once (routes, neighbours and the pod's
	// addresses stop working; the addresses may be reused), are renamed and
	// marked with RetiredGroup, and Reap deletes all retired links in one
	// request later. Deleting a veth makes the kernel wait for an RCU grace
	// period (15-25 ms); retiring costs well under a millisecond. Callers
	// that set it must call Reap (a CNI plugin after DEL, an agent
	// periodically); a pod namespace that is destroyed takes its retired
	// pair with it anyway.
	DeferDelete bool
	// ProbeCacheDir, when set, remembers a successful feature probe there
	// for the running kernel and boot, so short-lived programs (a CNI plugin)
	// probe once per boot instead of once per start.
	ProbeCacheDir string
	// Logger receives debug events; nil discards.
	Logger *slog.Logger
}

// Driver programs one node namespace. It is safe for concurrent use.
type Driver struct {
	opts  Options
	ns    *netns.NetNS
	nl    *vnl.Handle
	log   *slog.Logger
	alias string // alias prefix of owned veths
	ct    ctHandle
}

var (
	_ network.LinkDriver  = (*Driver)(nil)
	_ network.RouteDriver = (*Driver)(nil)
	_ network.Reaper      = (*Driver)(nil)
)

const aliasPrefix = "kubewire:"

// New opens the namespace, probes the kernel and returns a Driver.
func New(opts Options) (*Driver, error) {
	if opts.LinkPrefix == "" {
		opts.LinkPrefix = "kw"
	}
	if len(opts.LinkPrefix) > 5 || strings.ContainsAny(opts.LinkPrefix, "/ :\t\n") {
		return nil, fmt.Errorf("netlink: Options.LinkPrefix %q: want 1-5 characters valid in an interface name", opts.LinkPrefix)
	}
	if opts.RouteProtocol == 0 {
		opts.RouteProtocol = 187
	}
	if opts.RouteProtocol < 5 || opts.RouteProtocol > 254 {
		return nil, fmt.Errorf("netlink: Options.RouteProtocol %d: must be between 5 and 254", opts.RouteProtocol)
	}
	if err := probecache.Do(opts.ProbeCacheDir, "netlink-v1", probe); err != nil {
		return nil, err
	}
	ns, err := netns.OpenOrCurrent(opts.NetNS)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	h, err := handleIn(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{opts: opts, ns: ns, nl: h, log: log, alias: aliasPrefix}, nil
}

// Close releases the namespace handle and the netlink socket. Kernel objects
// stay.
func (d *Driver) Close() error {
	d.nl.Close()
	if d.ct.h != nil {
		d.ct.h.Close()
	}
	return d.ns.Close()
}

// NetNS returns the namespace the driver is bound to.
func (d *Driver) NetNS() *netns.NetNS { return d.ns }

func handleIn(ns *netns.NetNS) (*vnl.Handle, error) {
	var h *vnl.Handle
	err := ns.Do(func() error {
		var err error
		h, err = vnl.NewHandle(syscall.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink socket in %s: %w", ns.Path(), err)
	}
	return h, nil
}

// probe checks, in a throwaway namespace, that the kernel can create what
// the driver needs.
func probe() error {
	return netns.DoFresh(func() error {
		h, err := vnl.NewHandle(syscall.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink: open rtnetlink: %w", err)
		}
		defer h.Close()
		if err := h.LinkAdd(&vnl.Veth{LinkAttrs: vnl.LinkAttrs{Name: "kwprobe0"}, PeerName: "kwprobe1"}); err != nil {
			return &driver.UnsupportedError{Feature: "veth link", MinKernel: "2.6.24", Err: err}
		}
		if err := h.LinkAdd(&vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: "kwprobebr"}}); err != nil {
			return &driver.UnsupportedError{Feature: "bridge link", MinKernel: "2.6", Err: err}
		}
		vx := &vnl.Vxlan{LinkAttrs: vnl.LinkAttrs{Name: "kwprobevx"}, VxlanId: 1, Port: 8472, SrcAddr: net.ParseIP("::1")}
		if err := h.LinkAdd(vx); err != nil {
			return &driver.UnsupportedError{Feature: "vxlan link with IPv6 underlay", MinKernel: "3.12", Err: err}
		}
		return nil
	})
}

// retry repeats a netlink dump interrupted by a concurrent change.
func retry[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 5 {
		v, err = f()
		if !errors.Is(err, vnl.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func isNotFound(err error) bool {
	var nf vnl.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func toPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func toAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func family(a netip.Addr) int {
	if a.Is4() {
		return vnl.FAMILY_V4
	}
	return vnl.FAMILY_V6
}

// IFA_F_NODAD: the address is usable at once, without duplicate address
// detection (the addresses come from IPAM, so they are unique).
const ifaNoDAD = 0x02

// openPod opens a pod namespace and a netlink handle in it. A missing
// namespace gives an error matching os.ErrNotExist.
func openPod(path string) (*netns.NetNS, *vnl.Handle, error) {
	ns, err := netns.Open(path)
	if err != nil {
		return nil, nil, err
	}
	h, err := handleIn(ns)
	if err != nil {
		ns.Close()
		return nil, nil, err
	}
	return ns, h, nil
}

// goneNetNS reports whether err says a namespace path no longer exists.
func goneNetNS(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, netns.ErrNotNetNS)
}

func (d *Driver) ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	return nil
}
