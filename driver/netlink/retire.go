package netlink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/kubewire/kubewire/network"
)

// RetiredGroup is the link group (IFLA_GROUP) of retired pod veths. Reap
// deletes every link of this group in the driver's namespace; no other
// component should put links in it.
const RetiredGroup = 0x6b770001

const retiredAlias = "kubewire-retired:"

// retire takes an attachment out of service at once, without waiting for
// the kernel to unregister the veth (15-25 ms, an RCU barrier): both ends
// go down (the kernel drops their routes and neighbours, so the pod's
// addresses can be handed out again immediately), are renamed out of the
// way (the pod's interface name is free for a new attachment) and join
// RetiredGroup. Reap deletes them later, all in one request.
//
// Once the host end is in RetiredGroup, a concurrent Reap (another
// process's) may delete the pair at any moment: a vanished link from then on
// means the work is done.
func (d *Driver) retire(host vnl.Link, key network.PodKey, netnsPath string) error {
	err := d.retireSteps(host, key, netnsPath)
	if isNotFound(err) {
		return nil
	}
	return err
}

func (d *Driver) retireSteps(host vnl.Link, key network.PodKey, netnsPath string) error {
	name := d.retiredName(host.Attrs().Name)
	if err := d.nl.LinkSetDown(host); err != nil {
		return fmt.Errorf("netlink: retire %s: down: %w", host.Attrs().Name, err)
	}
	if err := d.nl.LinkSetGroup(host, RetiredGroup); err != nil {
		return fmt.Errorf("netlink: retire %s: group: %w", host.Attrs().Name, err)
	}
	if err := d.nl.LinkSetAlias(host, retiredAlias+key.String()); err != nil {
		return fmt.Errorf("netlink: retire %s: alias: %w", host.Attrs().Name, err)
	}
	if err := d.nl.LinkSetName(host, name); err != nil {
		return fmt.Errorf("netlink: retire %s: rename: %w", host.Attrs().Name, err)
	}
	return d.withOwnPodLink(netnsPath, key, host.Attrs().ParentIndex, func(podNL *vnl.Handle, pod vnl.Link) error {
		if err := podNL.LinkSetDown(pod); err != nil {
			return fmt.Errorf("netlink: retire pod %s: down: %w", key.IfName, err)
		}
		if err := podNL.LinkSetAlias(pod, retiredAlias+key.String()); err != nil {
			return fmt.Errorf("netlink: retire pod %s: alias: %w", key.IfName, err)
		}
		if err := podNL.LinkSetName(pod, name); err != nil {
			return fmt.Errorf("netlink: retire pod %s: rename: %w", key.IfName, err)
		}
		return nil
	})
}

// retireOnce retires host; if an earlier retirement of the same attachment
// still waits for Reap (same retired name), that one is deleted first.
func (d *Driver) retireOnce(host vnl.Link, key network.PodKey, netnsPath string) error {
	err := d.retire(host, key, netnsPath)
	if err == nil || !errors.Is(err, syscall.EEXIST) {
		return err
	}
	if old, lerr := d.nl.LinkByName(d.retiredName(host.Attrs().Name)); lerr == nil && old.Attrs().Group == RetiredGroup {
		if derr := d.nl.LinkDel(old); derr != nil && !isNotFound(derr) {
			return errors.Join(err, derr)
		}
	}
	if host, err = d.nl.LinkByIndex(host.Attrs().Index); err != nil {
		return fmt.Errorf("netlink: retire: %w", err)
	}
	return d.retire(host, key, netnsPath)
}

func (d *Driver) retiredName(hostIfName string) string {
	return d.opts.LinkPrefix + "x" + hostIfName[len(d.opts.LinkPrefix)+1:]
}

// Retired reports how many retired links wait in the namespace for Reap.
func (d *Driver) Retired(ctx context.Context) (int, error) {
	if err := d.ctxErr(ctx); err != nil {
		return 0, err
	}
	links, err := retry(d.nl.LinkList)
	if err != nil {
		return 0, fmt.Errorf("netlink: list links: %w", err)
	}
	n := 0
	for _, l := range links {
		if l.Attrs().Group == RetiredGroup && strings.HasPrefix(l.Attrs().Alias, retiredAlias) {
			n++
		}
	}
	return n, nil
}

// Reap deletes every retired link of the namespace (with its peer) in one
// netlink request, so the kernel's unregister cost is paid once for all of
// them. It is safe to call at any time and from several processes.
func (d *Driver) Reap(ctx context.Context) error {
	if err := d.ctxErr(ctx); err != nil {
		return err
	}
	return d.ns.Do(func() error {
		req := nl.NewNetlinkRequest(syscall.RTM_DELLINK, syscall.NLM_F_ACK)
		req.AddData(nl.NewIfInfomsg(syscall.AF_UNSPEC))
		group := make([]byte, 4)
		binary.NativeEndian.PutUint32(group, RetiredGroup)
		req.AddData(nl.NewRtAttr(iflaGroup, group))
		if _, err := req.Execute(syscall.NETLINK_ROUTE, 0); err != nil && !isNotFound(err) {
			return fmt.Errorf("netlink: reap retired links: %w", err)
		}
		return nil
	})
}

// iflaGroup is IFLA_GROUP (linux/if_link.h).
const iflaGroup = 27
