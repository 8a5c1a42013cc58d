package netlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"

	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/dns/nodelocal"
)

var _ nodelocal.LinkDriver = (*Driver)(nil)

// localAlias marks the links SyncLocalLink creates.
const localAlias = aliasPrefix + "local"

// SyncLocalLink implements nodelocal.LinkDriver: it makes a link named
// l.Name that is up and holds exactly l.Addresses as host addresses
// (/32, /128, without duplicate address detection). The link is a dummy
// device; on kernels built without the dummy driver it is a bridge without
// ports, which holds local addresses the same way and forwards nothing.
// The link carries the alias "kubewire:local": a link of that name without
// it is not the driver's, and SyncLocalLink fails (matching os.ErrExist)
// without touching it. The kernel's own IPv6 link-local address on the
// link is left alone. With no Addresses the link is deleted.
func (d *Driver) SyncLocalLink(ctx context.Context, l nodelocal.LocalLink) error {
	if err := d.ctxErr(ctx); err != nil {
		return err
	}
	if err := l.Validate(); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	link, err := d.nl.LinkByName(l.Name)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("netlink: link %s: %w", l.Name, err)
	}
	if link != nil && link.Attrs().Alias != localAlias {
		return fmt.Errorf("netlink: link %s (%s, alias %q) was not created by kubewire: %w",
			l.Name, link.Type(), link.Attrs().Alias, os.ErrExist)
	}
	if len(l.Addresses) == 0 {
		if link == nil {
			return nil
		}
		if err := d.nl.LinkDel(link); err != nil && !isNotFound(err) {
			return fmt.Errorf("netlink: delete link %s: %w", l.Name, err)
		}
		d.log.DebugContext(ctx, "local link deleted", "link", l.Name)
		return nil
	}
	if link == nil {
		if link, err = d.addLocalLink(l.Name); err != nil {
			return err
		}
		d.log.DebugContext(ctx, "local link created", "link", l.Name, "type", link.Type())
	}
	if err := d.syncLocalAddrs(link, l.Addresses); err != nil {
		return err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := d.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("netlink: set %s up: %w", l.Name, err)
		}
	}
	return nil
}

// addLocalLink creates a dummy link, or a bridge where the kernel has no
// dummy driver, and marks it with the ownership alias. The kernel ignores
// an alias in the creation request, so it is set right after; if that
// fails the link is deleted again.
func (d *Driver) addLocalLink(name string) (vnl.Link, error) {
	attrs := vnl.NewLinkAttrs()
	attrs.Name = name
	err := d.nl.LinkAdd(&vnl.Dummy{LinkAttrs: attrs})
	if errors.Is(err, syscall.EOPNOTSUPP) {
		// "Unknown device type": no dummy driver in this kernel.
		err = d.nl.LinkAdd(&vnl.Bridge{LinkAttrs: attrs})
	}
	if err != nil {
		return nil, fmt.Errorf("netlink: create link %s: %w", name, err)
	}
	link, err := d.nl.LinkByName(name)
	if err == nil {
		if err = d.nl.LinkSetAlias(link, localAlias); err != nil {
			if derr := d.nl.LinkDel(link); derr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", derr))
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("netlink: link %s: %w", name, err)
	}
	return link, nil
}

// syncLocalAddrs adds the missing host addresses and removes the others,
// except IPv6 link-local ones (the kernel's).
func (d *Driver) syncLocalAddrs(link vnl.Link, want []netip.Addr) error {
	name := link.Attrs().Name
	have, err := retry(func() ([]vnl.Addr, error) { return d.nl.AddrList(link, vnl.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("netlink: addresses of %s: %w", name, err)
	}
	var present []netip.Prefix
	for _, a := range have {
		p := toPrefix(a.IPNet)
		if p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if p.IsSingleIP() && slices.Contains(want, p.Addr()) {
			present = append(present, p)
			continue
		}
		if err := d.nl.AddrDel(link, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("netlink: remove address %s from %s: %w", p, name, err)
		}
	}
	for _, a := range want {
		p := netip.PrefixFrom(a, a.BitLen())
		if slices.Contains(present, p) {
			continue
		}
		if err := d.nl.AddrReplace(link, &vnl.Addr{IPNet: ipNet(p), Flags: ifaNoDAD}); err != nil {
			return fmt.Errorf("netlink: address %s on %s: %w", p, name, err)
		}
	}
	return nil
}
