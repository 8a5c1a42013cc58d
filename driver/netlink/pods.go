package netlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/network"
)

// SetupNode implements network.LinkDriver: it enables forwarding for the
// families in spec and, in bridge mode, makes the bridge with its gateway
// addresses. It only adds: addresses and families are never removed.
func (d *Driver) SetupNode(ctx context.Context, spec network.NodeSpec) error {
	if err := d.ctxErr(ctx); err != nil {
		return err
	}
	if spec.IPv4 {
		if err := d.ns.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
	}
	if spec.IPv6 {
		if err := d.ns.SetSysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
	}
	if spec.Mode != network.ModeBridge {
		return nil
	}
	if spec.Bridge == "" {
		return errors.New("netlink: NodeSpec.Bridge is empty in bridge mode")
	}
	br, err := d.nl.LinkByName(spec.Bridge)
	if isNotFound(err) {
		attrs := vnl.NewLinkAttrs()
		attrs.Name = spec.Bridge
		attrs.MTU = spec.MTU
		// A fixed MAC: otherwise the bridge takes the lowest port's MAC and
		// changes it as pods come and go, breaking pods' neighbour caches.
		attrs.HardwareAddr = network.PodKey{ContainerID: "bridge", IfName: spec.Bridge}.StableMAC("bridge")
		attrs.Alias = d.alias + "bridge"
		if err := d.nl.LinkAdd(&vnl.Bridge{LinkAttrs: attrs}); err != nil {
			return fmt.Errorf("netlink: create bridge %s: %w", spec.Bridge, err)
		}
		br, err = d.nl.LinkByName(spec.Bridge)
	}
	if err != nil {
		return fmt.Errorf("netlink: bridge %s: %w", spec.Bridge, err)
	}
	if _, ok := br.(*vnl.Bridge); !ok {
		return fmt.Errorf("netlink: %s exists and is a %s, not a bridge", spec.Bridge, br.Type())
	}
	// Without DAD the bridge's link-local address is usable at once: the node
	// needs it to solicit pods' addresses for traffic it forwards.
	if err := d.ns.SetSysctl("net/ipv6/conf/"+spec.Bridge+"/accept_dad", "0"); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	// Pods' IPv4 traffic comes in on the bridge: see configurePod.
	if spec.IPv4 {
		if err := d.ns.SetSysctl("net.ipv4.conf."+spec.Bridge+".forwarding", "1"); err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
	}
	for _, a := range spec.BridgeAddrs {
		if err := d.nl.AddrReplace(br, &vnl.Addr{IPNet: ipNet(a), Flags: ifaNoDAD}); err != nil {
			return fmt.Errorf("netlink: address %s on %s: %w", a, spec.Bridge, err)
		}
	}
	if err := d.nl.LinkSetUp(br); err != nil {
		return fmt.Errorf("netlink: set %s up: %w", spec.Bridge, err)
	}
	return nil
}

func (d *Driver) aliasOf(k network.PodKey) string { return d.alias + k.ContainerID + "/" + k.IfName }

// SetupPod implements network.LinkDriver.
func (d *Driver) SetupPod(ctx context.Context, spec network.PodSpec) (network.PodLink, error) {
	if err := d.ctxErr(ctx); err != nil {
		return network.PodLink{}, err
	}
	podNS, podNL, err := openPod(spec.NetNS)
	if err != nil {
		return network.PodLink{}, fmt.Errorf("netlink: pod netns: %w", err)
	}
	defer podNS.Close()
	defer podNL.Close()

	alias := d.aliasOf(spec.PodKey)
	host, err := d.nl.LinkByName(spec.HostIfName)
	if err != nil && !isNotFound(err) {
		return network.PodLink{}, fmt.Errorf("netlink: %s: %w", spec.HostIfName, err)
	}
	podLink, perr := podNL.LinkByName(spec.IfName)
	if perr != nil && !isNotFound(perr) {
		return network.PodLink{}, fmt.Errorf("netlink: pod %s: %w", spec.IfName, perr)
	}
	if host != nil && (podLink == nil || podLink.Attrs().Alias != alias) {
		// A leftover from an earlier sandbox of this container: its peer is
		// not in this namespace. Replace it.
		if err := d.nl.LinkDel(host); err != nil && !isNotFound(err) {
			return network.PodLink{}, fmt.Errorf("netlink: remove stale %s: %w", spec.HostIfName, err)
		}
		host = nil
		podLink, _ = podNL.LinkByName(spec.IfName)
	}
	if host == nil && podLink != nil {
		return network.PodLink{}, fmt.Errorf("netlink: interface %s already exists in %s", spec.IfName, spec.NetNS)
	}
	created := false
	if host == nil {
		attrs := vnl.NewLinkAttrs()
		attrs.Name = spec.HostIfName
		attrs.MTU = spec.MTU
		attrs.HardwareAddr = spec.HostMAC
		attrs.Alias = alias
		veth := &vnl.Veth{
			LinkAttrs:        attrs,
			PeerName:         spec.IfName,
			PeerHardwareAddr: spec.PodMAC,
			PeerNamespace:    vnl.NsFd(podNS.Fd()),
		}
		if err := d.nl.LinkAdd(veth); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: create veth %s/%s: %w", spec.HostIfName, spec.IfName, err)
		}
		created = true
	}
	link, err := d.configurePod(spec, alias, podNL)
	if err != nil && created {
		if h, lerr := d.nl.LinkByName(spec.HostIfName); lerr == nil {
			if derr := d.nl.LinkDel(h); derr != nil {
				err = errors.Join(err, fmt.Errorf("roll back veth: %w", derr))
			}
		}
	}
	return link, err
}

func (d *Driver) configurePod(spec network.PodSpec, alias string, podNL *vnl.Handle) (network.PodLink, error) {
	host, err := d.nl.LinkByName(spec.HostIfName)
	if err != nil {
		return network.PodLink{}, fmt.Errorf("netlink: %s: %w", spec.HostIfName, err)
	}
	pod, err := podNL.LinkByName(spec.IfName)
	if err != nil {
		return network.PodLink{}, fmt.Errorf("netlink: pod %s: %w", spec.IfName, err)
	}

	// Pod side first: addresses, neighbours and routes are in place before
	// either end is up, so the first packet finds a complete path.
	if pod.Attrs().Alias != alias {
		if err := podNL.LinkSetAlias(pod, alias); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: alias on pod %s: %w", spec.IfName, err)
		}
	}
	if spec.MTU != 0 && pod.Attrs().MTU != spec.MTU {
		if err := podNL.LinkSetMTU(pod, spec.MTU); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: MTU on pod %s: %w", spec.IfName, err)
		}
	}
	if spec.PodMAC != nil && pod.Attrs().HardwareAddr.String() != spec.PodMAC.String() {
		if err := podNL.LinkSetHardwareAddr(pod, spec.PodMAC); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: MAC on pod %s: %w", spec.IfName, err)
		}
	}
	for _, a := range spec.Addresses {
		if err := podNL.AddrReplace(pod, &vnl.Addr{IPNet: ipNet(a), Flags: ifaNoDAD}); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: address %s on pod %s: %w", a, spec.IfName, err)
		}
	}
	if err := podNL.LinkSetUp(pod); err != nil {
		return network.PodLink{}, fmt.Errorf("netlink: set pod %s up: %w", spec.IfName, err)
	}
	if lo, err := podNL.LinkByName("lo"); err == nil {
		if err := podNL.LinkSetUp(lo); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: set pod lo up: %w", err)
		}
	}
	for _, n := range spec.Neighbors {
		if err := setNeigh(podNL, pod.Attrs().Index, n); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: pod neighbour %s: %w", n, err)
		}
	}
	for _, r := range spec.Routes {
		if err := d.replaceRoute(podNL, pod.Attrs().Index, r, d.opts.RouteProtocol+1); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: pod route %s: %w", r, err)
		}
	}

	// Host side. IPv4 forwarding is decided by the device a packet comes
	// in on: set it on the host end itself. net.ipv4.ip_forward (set by
	// SetupNode) should have done it through the namespace's default, but
	// concurrent first writes of ip_forward can leave it set with no device
	// forwarding (seen with 50 parallel CNI ADDs on a fresh node).
	if spec.Bridge == "" && slices.ContainsFunc(spec.Addresses, func(p netip.Prefix) bool { return p.Addr().Is4() }) {
		if err := d.ns.SetSysctl("net.ipv4.conf."+spec.HostIfName+".forwarding", "1"); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: %w", err)
		}
	}
	if host.Attrs().Alias != alias {
		if err := d.nl.LinkSetAlias(host, alias); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: alias on %s: %w", spec.HostIfName, err)
		}
	}
	if spec.MTU != 0 && host.Attrs().MTU != spec.MTU {
		if err := d.nl.LinkSetMTU(host, spec.MTU); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: MTU on %s: %w", spec.HostIfName, err)
		}
	}
	if spec.Bridge != "" {
		br, err := d.nl.LinkByName(spec.Bridge)
		if err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: bridge %s: %w", spec.Bridge, err)
		}
		if host.Attrs().MasterIndex != br.Attrs().Index {
			if err := d.nl.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
				return network.PodLink{}, fmt.Errorf("netlink: attach %s to %s: %w", spec.HostIfName, spec.Bridge, err)
			}
		}
		// Hairpin lets a pod reach itself through a service address.
		if err := d.nl.LinkSetHairpin(host, true); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: hairpin on %s: %w", spec.HostIfName, err)
		}
	}
	for _, n := range spec.HostNeighbors {
		if err := setNeigh(d.nl, host.Attrs().Index, n); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: host neighbour %s: %w", n, err)
		}
	}
	if err := d.nl.LinkSetUp(host); err != nil {
		return network.PodLink{}, fmt.Errorf("netlink: set %s up: %w", spec.HostIfName, err)
	}
	for _, r := range spec.HostRoutes {
		if err := d.replaceRoute(d.nl, host.Attrs().Index, r, d.opts.RouteProtocol+1); err != nil {
			return network.PodLink{}, fmt.Errorf("netlink: host route %s: %w", r, err)
		}
	}
	return network.PodLink{
		PodKey:     spec.PodKey,
		HostIfName: spec.HostIfName,
		HostMAC:    host.Attrs().HardwareAddr,
		PodIfIndex: pod.Attrs().Index,
	}, nil
}

func setNeigh(h *vnl.Handle, index int, n network.Neighbor) error {
	return h.NeighSet(&vnl.Neigh{
		LinkIndex:    index,
		Family:       family(n.IP),
		State:        vnl.NUD_PERMANENT,
		IP:           n.IP.AsSlice(),
		HardwareAddr: n.MAC,
	})
}

func (d *Driver) replaceRoute(h *vnl.Handle, index int, r network.Route, proto int) error {
	nr := &vnl.Route{
		LinkIndex: index,
		Dst:       ipNet(r.Dst),
		Protocol:  vnl.RouteProtocol(proto),
		Family:    family(r.Dst.Addr()),
	}
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
		nr.Scope = vnl.SCOPE_UNIVERSE
	} else {
		nr.Scope = vnl.SCOPE_LINK
	}
	if r.OnLink {
		nr.Flags |= int(vnl.FLAG_ONLINK)
	}
	return h.RouteReplace(nr)
}

// TeardownPod implements network.LinkDriver. It deletes the host veth (the
// kernel removes its peer, routes and neighbours with it) and, when the pod
// namespace still exists, any pod interface of this key left without a peer.
func (d *Driver) TeardownPod(ctx context.Context, key network.PodKey, hostIfName, netnsPath string) error {
	if err := d.ctxErr(ctx); err != nil {
		return err
	}
	alias := d.aliasOf(key)
	if !strings.HasPrefix(hostIfName, d.opts.LinkPrefix) {
		return fmt.Errorf("netlink: %s is not a link this driver owns (prefix %q)", hostIfName, d.opts.LinkPrefix)
	}
	host, err := d.nl.LinkByName(hostIfName)
	switch {
	case err == nil:
		if a := host.Attrs().Alias; a != alias && a != "" {
			return fmt.Errorf("netlink: %s belongs to %q, not %q", hostIfName, a, alias)
		}
		if d.opts.DeferDelete {
			return d.retireOnce(host, key, netnsPath)
		}
		if err := d.nl.LinkDel(host); err != nil && !isNotFound(err) {
			return fmt.Errorf("netlink: delete %s: %w", hostIfName, err)
		}
	case !isNotFound(err):
		return fmt.Errorf("netlink: %s: %w", hostIfName, err)
	}
	return d.withOwnPodLink(netnsPath, key, 0, func(podNL *vnl.Handle, pod vnl.Link) error {
		if err := podNL.LinkDel(pod); err != nil && !isNotFound(err) {
			return fmt.Errorf("netlink: delete pod %s: %w", key.IfName, err)
		}
		return nil
	})
}

// withOwnPodLink calls fn with the pod-side link of key in the namespace at
// netnsPath: the peer with index parentIndex when it is ours, else the link
// named key.IfName when it is ours. A missing namespace or link, or one
// that is not ours, is nothing to do.
func (d *Driver) withOwnPodLink(netnsPath string, key network.PodKey, parentIndex int, fn func(*vnl.Handle, vnl.Link) error) error {
	if netnsPath == "" {
		return nil
	}
	podNS, podNL, err := openPod(netnsPath)
	if err != nil {
		if goneNetNS(err) {
			return nil
		}
		return fmt.Errorf("netlink: pod netns: %w", err)
	}
	defer podNS.Close()
	defer podNL.Close()
	alias := d.aliasOf(key)
	var pod vnl.Link
	if parentIndex > 0 {
		pod, err = podNL.LinkByIndex(parentIndex)
	}
	if parentIndex == 0 || err != nil || pod.Attrs().Alias != alias {
		pod, err = podNL.LinkByName(key.IfName)
	}
	if isNotFound(err) || (err == nil && pod.Attrs().Alias != alias) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netlink: pod %s: %w", key.IfName, err)
	}
	return fn(podNL, pod)
}

// Pods implements network.LinkDriver: every host veth with the owner alias.
func (d *Driver) Pods(ctx context.Context) ([]network.PodLink, error) {
	if err := d.ctxErr(ctx); err != nil {
		return nil, err
	}
	links, err := retry(d.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("netlink: list links: %w", err)
	}
	var out []network.PodLink
	for _, l := range links {
		a := l.Attrs()
		if _, ok := l.(*vnl.Veth); !ok || !strings.HasPrefix(a.Name, d.opts.LinkPrefix) {
			continue
		}
		rest, ok := strings.CutPrefix(a.Alias, d.alias)
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, '/')
		if i <= 0 || i == len(rest)-1 {
			continue
		}
		out = append(out, network.PodLink{
			PodKey:     network.PodKey{ContainerID: rest[:i], IfName: rest[i+1:]},
			HostIfName: a.Name,
			HostMAC:    a.HardwareAddr,
			PodIfIndex: a.ParentIndex,
		})
	}
	return out, nil
}

// InspectPod implements network.LinkDriver.
func (d *Driver) InspectPod(ctx context.Context, key network.PodKey, hostIfName, netnsPath string) (network.PodState, error) {
	if err := d.ctxErr(ctx); err != nil {
		return network.PodState{}, err
	}
	var st network.PodState
	host, err := d.nl.LinkByName(hostIfName)
	switch {
	case err == nil:
		st.HostIfName = hostIfName
		st.HostUp = host.Attrs().Flags&net.FlagUp != 0
		if m := host.Attrs().MasterIndex; m != 0 {
			if ml, err := d.nl.LinkByIndex(m); err == nil {
				st.HostMaster = ml.Attrs().Name
			}
		}
		st.HostRoutes, err = listRoutes(d.nl, host)
		if err != nil {
			return st, err
		}
	case !isNotFound(err):
		return st, fmt.Errorf("netlink: %s: %w", hostIfName, err)
	}
	podNS, podNL, err := openPod(netnsPath)
	if err != nil {
		return st, fmt.Errorf("netlink: pod netns: %w", err)
	}
	defer podNS.Close()
	defer podNL.Close()
	pod, err := podNL.LinkByName(key.IfName)
	if isNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("netlink: pod %s: %w", key.IfName, err)
	}
	a := pod.Attrs()
	st.IfName, st.PodUp, st.PodMAC, st.MTU = a.Name, a.Flags&net.FlagUp != 0, a.HardwareAddr, a.MTU
	addrs, err := retry(func() ([]vnl.Addr, error) { return podNL.AddrList(pod, vnl.FAMILY_ALL) })
	if err != nil {
		return st, fmt.Errorf("netlink: pod addresses: %w", err)
	}
	for _, ad := range addrs {
		if p := toPrefix(ad.IPNet); p.IsValid() && !p.Addr().IsLinkLocalUnicast() {
			st.Addresses = append(st.Addresses, p)
		}
	}
	if st.Routes, err = listRoutes(podNL, pod); err != nil {
		return st, err
	}
	neighs, err := retry(func() ([]vnl.Neigh, error) { return podNL.NeighList(a.Index, vnl.FAMILY_ALL) })
	if err != nil {
		return st, fmt.Errorf("netlink: pod neighbours: %w", err)
	}
	for _, n := range neighs {
		if n.State&vnl.NUD_PERMANENT != 0 {
			st.Neighbors = append(st.Neighbors, network.Neighbor{IP: toAddr(n.IP), MAC: n.HardwareAddr, Dev: a.Name})
		}
	}
	return st, nil
}

func listRoutes(h *vnl.Handle, l vnl.Link) ([]network.Route, error) {
	rs, err := retry(func() ([]vnl.Route, error) { return h.RouteList(l, vnl.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("netlink: routes of %s: %w", l.Attrs().Name, err)
	}
	out := make([]network.Route, 0, len(rs))
	for _, r := range rs {
		nr := network.Route{Dst: toPrefix(r.Dst), Via: toAddr(r.Gw), Dev: l.Attrs().Name, OnLink: r.Flags&int(vnl.FLAG_ONLINK) != 0}
		if !nr.Dst.IsValid() { // default route
			if r.Family == vnl.FAMILY_V6 {
				nr.Dst = defaultV6
			} else {
				nr.Dst = defaultV4
			}
		}
		out = append(out, nr)
	}
	return out, nil
}
