package netlink

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"

	"github.com/hashicorp/go-multierror"
	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/network"
)

var (
	defaultV4 = netip.MustParsePrefix("0.0.0.0/0")
	defaultV6 = netip.MustParsePrefix("::/0")
)

// ntfSelf marks an FDB entry of the VXLAN device itself (NTF_SELF).
const ntfSelf = 0x02

// SyncNodeRoutes implements network.RouteDriver. Objects are added before
// stale ones are removed, in the order a packet needs them (device, FDB,
// neighbours, routes), so traffic to peers that stay is never interrupted.
// Per-object failures are aggregated; the next call retries everything.
func (d *Driver) SyncNodeRoutes(ctx context.Context, want network.NodeRoutes) error {
	if err := d.ctxErr(ctx); err != nil {
		return err
	}
	var errs *multierror.Error
	vxIndex := 0
	if v := want.VXLAN; v != nil {
		if !strings.HasPrefix(v.Name, d.opts.LinkPrefix) {
			return fmt.Errorf("netlink: VXLAN device %q must start with the link prefix %q", v.Name, d.opts.LinkPrefix)
		}
		idx, err := d.ensureVXLAN(v)
		if err != nil {
			return err // nothing else can work without the device
		}
		vxIndex = idx
		errs = multierror.Append(errs, d.syncVXLANEntries(vxIndex, want))
	}
	// Remove VXLAN devices we own that the plan no longer has.
	links, err := retry(d.nl.LinkList)
	if err != nil {
		return fmt.Errorf("netlink: list links: %w", err)
	}
	for _, l := range links {
		if _, ok := l.(*vnl.Vxlan); !ok || !strings.HasPrefix(l.Attrs().Name, d.opts.LinkPrefix) || l.Attrs().Index == vxIndex {
			continue
		}
		if err := d.nl.LinkDel(l); err != nil && !isNotFound(err) {
			errs = multierror.Append(errs, fmt.Errorf("netlink: delete %s: %w", l.Attrs().Name, err))
		}
	}
	errs = multierror.Append(errs, d.syncRoutes(want.Routes))
	return errs.ErrorOrNil()
}

func (d *Driver) ensureVXLAN(v *network.VXLANDevice) (int, error) {
	l, err := d.nl.LinkByName(v.Name)
	if err != nil && !isNotFound(err) {
		return 0, fmt.Errorf("netlink: %s: %w", v.Name, err)
	}
	if l != nil {
		vx, ok := l.(*vnl.Vxlan)
		if !ok {
			return 0, fmt.Errorf("netlink: %s exists and is a %s, not a vxlan device", v.Name, l.Type())
		}
		if vx.VxlanId != int(v.VNI) || vx.Port != int(v.Port) || toAddr(vx.SrcAddr) != v.Local || vx.Learning {
			// Parameters of an existing device cannot change: recreate.
			if err := d.nl.LinkDel(l); err != nil {
				return 0, fmt.Errorf("netlink: replace %s: %w", v.Name, err)
			}
			l = nil
		}
	}
	if l == nil {
		attrs := vnl.NewLinkAttrs()
		attrs.Name = v.Name
		attrs.MTU = v.MTU
		attrs.HardwareAddr = v.MAC
		attrs.Alias = d.alias + "vxlan"
		vx := &vnl.Vxlan{LinkAttrs: attrs, VxlanId: int(v.VNI), Port: int(v.Port), SrcAddr: v.Local.AsSlice(), Learning: false}
		if v.Local.Is6() {
			vx.UDP6ZeroCSumRx = false
		}
		if err := d.nl.LinkAdd(vx); err != nil {
			return 0, fmt.Errorf("netlink: create %s: %w", v.Name, err)
		}
		if l, err = d.nl.LinkByName(v.Name); err != nil {
			return 0, fmt.Errorf("netlink: %s: %w", v.Name, err)
		}
	}
	a := l.Attrs()
	if v.MTU != 0 && a.MTU != v.MTU {
		if err := d.nl.LinkSetMTU(l, v.MTU); err != nil {
			return 0, fmt.Errorf("netlink: MTU of %s: %w", v.Name, err)
		}
	}
	if a.HardwareAddr.String() != v.MAC.String() {
		if err := d.nl.LinkSetHardwareAddr(l, v.MAC); err != nil {
			return 0, fmt.Errorf("netlink: MAC of %s: %w", v.Name, err)
		}
	}
	have, err := retry(func() ([]vnl.Addr, error) { return d.nl.AddrList(l, vnl.FAMILY_ALL) })
	if err != nil {
		return 0, fmt.Errorf("netlink: addresses of %s: %w", v.Name, err)
	}
	want := map[netip.Prefix]bool{}
	for _, p := range v.Addresses {
		want[p] = true
		if err := d.nl.AddrReplace(l, &vnl.Addr{IPNet: ipNet(p), Flags: ifaNoDAD}); err != nil {
			return 0, fmt.Errorf("netlink: address %s on %s: %w", p, v.Name, err)
		}
	}
	for _, h := range have {
		p := toPrefix(h.IPNet)
		if !want[p] && !p.Addr().IsLinkLocalUnicast() {
			if err := d.nl.AddrDel(l, &h); err != nil {
				return 0, fmt.Errorf("netlink: remove address %s from %s: %w", p, v.Name, err)
			}
		}
	}
	if err := d.nl.LinkSetUp(l); err != nil {
		return 0, fmt.Errorf("netlink: set %s up: %w", v.Name, err)
	}
	return a.Index, nil
}

func (d *Driver) syncVXLANEntries(index int, want network.NodeRoutes) error {
	var errs *multierror.Error
	fdb := map[string]bool{}
	for _, e := range want.FDB {
		fdb[e.MAC.String()+" "+e.Dst.String()] = true
		err := d.nl.NeighSet(&vnl.Neigh{
			LinkIndex:    index,
			Family:       syscall.AF_BRIDGE,
			State:        vnl.NUD_PERMANENT,
			Flags:        ntfSelf,
			IP:           e.Dst.AsSlice(),
			HardwareAddr: e.MAC,
		})
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("netlink: fdb %s dst %s: %w", e.MAC, e.Dst, err))
		}
	}
	neigh := map[string]bool{}
	for _, n := range want.Neighbors {
		neigh[n.IP.String()+" "+n.MAC.String()] = true
		if err := setNeigh(d.nl, index, n); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("netlink: neighbour %s: %w", n, err))
		}
	}
	// Remove stale entries.
	haveFDB, err := retry(func() ([]vnl.Neigh, error) { return d.nl.NeighList(index, syscall.AF_BRIDGE) })
	if err != nil {
		return multierror.Append(errs, fmt.Errorf("netlink: list fdb: %w", err))
	}
	for _, n := range haveFDB {
		if n.IP == nil || n.State&vnl.NUD_PERMANENT == 0 || fdb[n.HardwareAddr.String()+" "+toAddr(n.IP).String()] {
			continue
		}
		n := n
		if err := d.nl.NeighDel(&n); err != nil && !isNotFound(err) {
			errs = multierror.Append(errs, fmt.Errorf("netlink: delete fdb %s: %w", n.HardwareAddr, err))
		}
	}
	haveNeigh, err := retry(func() ([]vnl.Neigh, error) { return d.nl.NeighList(index, vnl.FAMILY_ALL) })
	if err != nil {
		return multierror.Append(errs, fmt.Errorf("netlink: list neighbours: %w", err))
	}
	for _, n := range haveNeigh {
		if n.State&vnl.NUD_PERMANENT == 0 || n.Family == syscall.AF_BRIDGE || neigh[toAddr(n.IP).String()+" "+n.HardwareAddr.String()] {
			continue
		}
		n := n
		if err := d.nl.NeighDel(&n); err != nil && !isNotFound(err) {
			errs = multierror.Append(errs, fmt.Errorf("netlink: delete neighbour %s: %w", toAddr(n.IP), err))
		}
	}
	return errs.ErrorOrNil()
}

func (d *Driver) syncRoutes(want []network.Route) error {
	var errs *multierror.Error
	proto := vnl.RouteProtocol(d.opts.RouteProtocol)
	keep := map[string]bool{}
	for _, r := range want {
		index := 0
		if r.Dev != "" {
			l, err := d.nl.LinkByName(r.Dev)
			if err != nil {
				errs = multierror.Append(errs, fmt.Errorf("netlink: route %s: device: %w", r, err))
				continue
			}
			index = l.Attrs().Index
		}
		if err := d.replaceRoute(d.nl, index, r, int(proto)); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("netlink: route %s: %w", r, err))
			continue
		}
		keep[r.Dst.String()] = true
	}
	have, err := retry(func() ([]vnl.Route, error) {
		return d.nl.RouteListFiltered(vnl.FAMILY_ALL, &vnl.Route{Protocol: proto}, vnl.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return multierror.Append(errs, fmt.Errorf("netlink: list routes: %w", err))
	}
	for _, r := range have {
		dst := toPrefix(r.Dst)
		if !dst.IsValid() {
			dst = defaultV4
			if r.Family == vnl.FAMILY_V6 {
				dst = defaultV6
			}
		}
		if keep[dst.String()] {
			continue
		}
		r := r
		if err := d.nl.RouteDel(&r); err != nil && !isNotFound(err) {
			errs = multierror.Append(errs, fmt.Errorf("netlink: delete route %s: %w", dst, err))
		}
	}
	return errs.ErrorOrNil()
}

// Cleanup removes every fabric object the driver owns in its namespace: its
// VXLAN devices and the routes marked with its protocol. Pod attachments are
// left to network.Manager's GC.
func (d *Driver) Cleanup(ctx context.Context) error {
	return d.SyncNodeRoutes(ctx, network.NodeRoutes{})
}
