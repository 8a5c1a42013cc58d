// Package nodelocal runs kubewire's DNS server as a node-local cache, the
// way Kubernetes' NodeLocal DNSCache (node-local-dns) does: the server
// listens on a link-local address (169.254.20.10 by default) held by a
// link of its own in the node's network namespace, and the queries and
// replies on that address bypass connection tracking, so DNS over UDP
// neither fills the conntrack table nor races in it (the conntrack
// insertion races behind the 5-second DNS timeouts of glibc clients).
//
// A NodeLocal sets up the three parts, in this order:
//
//  1. the link, through a LinkDriver (driver/netlink's Driver): a dummy
//     device named Config.LinkName, up, holding the addresses (that driver
//     makes a bridge without ports on kernels built without dummy);
//  2. the conntrack exemption, through a NoTracker (driver/nftables'
//     NoTrack): raw-priority rules that mark traffic to and from the
//     addresses' DNS port "notrack";
//  3. the UDP and TCP sockets, opened inside the namespace on every
//     address, which the caller hands to dns.ServerConfig.PacketConns and
//     Listeners.
//
// This package is a domain package: it defines the two driver interfaces
// it consumes and imports no driver, as the dependency test requires. The
// caller builds the drivers, bound to the same namespace, and passes them
// in Config:
//
//	links, _ := netlinkdrv.New(netlinkdrv.Options{NetNS: host})
//	notrack, _ := nftdrv.NewNoTrack(nftdrv.Options{NetNS: host, Table: "kubewire-nodelocaldns"})
//	nl, _ := nodelocal.New(nodelocal.Config{NetNS: host, Links: links, NoTrack: notrack})
//	if err := nl.Setup(ctx); err != nil { ... }
//	srv, _ := dns.NewServer(dns.ServerConfig{Records: records,
//		PacketConns: nl.PacketConns(), Listeners: nl.Listeners(), Forward: ...})
//	err := srv.Run(ctx)
//	_ = nl.Cleanup(context.Background()) // when node-local DNS is no longer wanted
//	_ = nl.Close()
//
// Pods use the cache when kubelet's --cluster-dns (or their dnsConfig)
// names the address. The node's other rules still apply to the traffic:
// a firewall with a drop policy must accept it (untracked packets match
// "ct state untracked", not "established").
//
// Lifetimes: New opens a handle on the namespace and starts nothing; Setup
// changes the kernel and opens the sockets; Sync re-applies the link and the
// rules (call it periodically to restore what others removed); Close
// releases descriptors and leaves kernel objects in place; Cleanup removes
// the link and the rules.
package nodelocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/kubewire/kubewire/internal/netns"
)

// Defaults of Config.
const (
	// DefaultLinkName is node-local-dns's link name.
	DefaultLinkName = "nodelocaldns"
	// DefaultAddress is node-local-dns's customary listen address, from
	// the IPv4 link-local range 169.254.0.0/16. There is no IPv6 default:
	// Kubernetes recommends an address of the unique local range fd00::/8
	// that nothing else in the cluster uses, which only the cluster's
	// operator can pick.
	DefaultAddress = "169.254.20.10"
	// DefaultPort is the DNS port.
	DefaultPort = 53
)

// ErrInvalid is matched (with errors.Is) by every error that rejects a
// Config, LocalLink or NoTrackRules value.
var ErrInvalid = errors.New("nodelocal: invalid argument")

type invalidError struct{ field, value, reason string }

func (e *invalidError) Error() string {
	return fmt.Sprintf("nodelocal: %s %s: %s", e.field, e.value, e.reason)
}

func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field string, value any, reason string) error {
	v := fmt.Sprint(value)
	if s, ok := value.(string); ok {
		v = strconv.Quote(s)
	}
	return &invalidError{field: field, value: v, reason: reason}
}

// LocalLink is the desired state of the link that holds the node-local
// addresses.
type LocalLink struct {
	// Name is the interface name (1-15 bytes, no '/', ':' or spaces).
	Name string
	// Addresses are assigned as /32 and /128 host addresses, without
	// duplicate address detection. None means: no link.
	Addresses []netip.Addr
}

// Validate checks the name and the addresses (see ValidAddress).
func (l LocalLink) Validate() error {
	if err := validLinkName("LocalLink.Name", l.Name); err != nil {
		return err
	}
	for i, a := range l.Addresses {
		if err := ValidAddress(fmt.Sprintf("LocalLink.Addresses[%d]", i), a); err != nil {
			return err
		}
	}
	return nil
}

// LinkDriver makes the link (driver/netlink's Driver implements it).
type LinkDriver interface {
	// SyncLocalLink makes the namespace hold a link named l.Name that is
	// up and carries exactly l.Addresses (as host addresses), creating it
	// when missing. It is idempotent. With no Addresses it removes the
	// link (a missing link is not an error). It fails, changing nothing,
	// when a link of that name exists that the driver did not create.
	SyncLocalLink(ctx context.Context, l LocalLink) error
}

// NoTrackRules is the desired conntrack exemption: TCP and UDP traffic to
// each address on each port, and its replies, bypass connection tracking.
type NoTrackRules struct {
	Addresses []netip.Addr
	Ports     []uint16
}

// NoTracker installs the conntrack exemption (driver/nftables' NoTrack
// implements it).
type NoTracker interface {
	// SyncNoTrack makes the exemption match rules exactly, in one
	// transaction; it is idempotent. No Addresses removes it.
	SyncNoTrack(ctx context.Context, rules NoTrackRules) error
}

// ValidAddress accepts an address a node-local server can own: a valid
// unicast address without zone, not unspecified, not IPv4-mapped IPv6 and
// not IPv6 link-local (fe80::/10 needs a zone to be reached). field names
// the value in the error.
func ValidAddress(field string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return invalid(field, a, "not a valid address")
	case a.Zone() != "":
		return invalid(field, a, "addresses with a zone are not supported")
	case a.Is4In6():
		return invalid(field, a, "IPv4-mapped IPv6 address: write it as an IPv4 address")
	case a.IsUnspecified(), a.IsMulticast():
		return invalid(field, a, "not a unicast address")
	case a.Is6() && a.IsLinkLocalUnicast():
		return invalid(field, a, "IPv6 link-local addresses need a zone: use one of fd00::/8")
	}
	return nil
}

func validLinkName(field, name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\x00") {
		return invalid(field, name, "not a valid interface name (1-15 bytes, no '/', ':' or spaces)")
	}
	return nil
}

// Config configures a NodeLocal.
type Config struct {
	// NetNS is the path of the network namespace (the node's) where the
	// sockets are opened; "" is the namespace of the calling thread when
	// New is called. Links and NoTrack must be bound to the same one.
	NetNS string
	// LinkName names the link that holds the addresses (default
	// DefaultLinkName).
	LinkName string
	// Addresses to listen on (default: DefaultAddress alone). IPv4 and IPv6
	// may be mixed; see ValidAddress.
	Addresses []netip.Addr
	// Port to listen on, over UDP and TCP (default 53).
	Port uint16
	// Links makes the link (required).
	Links LinkDriver
	// NoTrack exempts the traffic from conntrack (required).
	NoTrack NoTracker
	// Logger gets debug events; nil discards.
	Logger *slog.Logger
}

// NodeLocal owns the link, the conntrack exemption and the listening
// sockets of a node-local DNS server. Its methods are safe for concurrent
// use.
type NodeLocal struct {
	link    LocalLink
	rules   NoTrackRules
	links   LinkDriver
	notrack NoTracker
	log     *slog.Logger

	mu     sync.Mutex
	ns     *netns.NetNS
	pcs    []net.PacketConn
	lns    []net.Listener
	setup  bool
	closed bool
}

// New validates cfg, applies its defaults and opens a handle on the
// namespace. It changes nothing in the kernel and starts nothing.
func New(cfg Config) (*NodeLocal, error) {
	if cfg.Links == nil {
		return nil, invalid("Config.Links", nil, "a LinkDriver is required")
	}
	if cfg.NoTrack == nil {
		return nil, invalid("Config.NoTrack", nil, "a NoTracker is required")
	}
	if cfg.LinkName == "" {
		cfg.LinkName = DefaultLinkName
	}
	if err := validLinkName("Config.LinkName", cfg.LinkName); err != nil {
		return nil, err
	}
	addrs := slices.Clone(cfg.Addresses)
	if len(addrs) == 0 {
		addrs = []netip.Addr{netip.MustParseAddr(DefaultAddress)}
	}
	for i, a := range addrs {
		if err := ValidAddress(fmt.Sprintf("Config.Addresses[%d]", i), a); err != nil {
			return nil, err
		}
		if slices.Contains(addrs[:i], a) {
			return nil, invalid(fmt.Sprintf("Config.Addresses[%d]", i), a, "given twice")
		}
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.OpenOrCurrent(cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("nodelocal: %w", err)
	}
	return &NodeLocal{
		link:    LocalLink{Name: cfg.LinkName, Addresses: addrs},
		rules:   NoTrackRules{Addresses: addrs, Ports: []uint16{cfg.Port}},
		links:   cfg.Links,
		notrack: cfg.NoTrack,
		log:     log.With("link", cfg.LinkName, "netns", ns.Path()),
		ns:      ns,
	}, nil
}

// Addrs returns the address:port pairs the server listens on, in the
// order of Config.Addresses.
func (n *NodeLocal) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(n.link.Addresses))
	for _, a := range n.link.Addresses {
		out = append(out, netip.AddrPortFrom(a, n.rules.Ports[0]))
	}
	return out
}

// Setup makes the link and the conntrack exemption (as Sync), then opens a
// UDP socket and a TCP listener on every address inside the namespace. On
// failure it closes what it opened and removes the link and the rules
// (Cleanup), so a failed Setup leaves nothing behind. It may be called
// once.
func (n *NodeLocal) Setup(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return errors.New("nodelocal: closed")
	case n.setup:
		return errors.New("nodelocal: Setup called twice")
	}
	err := n.syncLocked(ctx)
	if err == nil {
		err = n.listenLocked()
	}
	if err != nil {
		if cerr := n.cleanupLocked(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, fmt.Errorf("roll back: %w", cerr))
		}
		return err
	}
	n.setup = true
	n.log.DebugContext(ctx, "node-local DNS set up", "addrs", n.Addrs())
	return nil
}

// Sync makes the link and the conntrack exemption match the Config again,
// restoring whatever someone else removed; it is idempotent and changes
// nothing when both are intact. Sockets stay bound while the link is gone,
// and receive again once Sync restored it.
func (n *NodeLocal) Sync(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("nodelocal: closed")
	}
	return n.syncLocked(ctx)
}

func (n *NodeLocal) syncLocked(ctx context.Context) error {
	if err := n.links.SyncLocalLink(ctx, n.link); err != nil {
		return fmt.Errorf("nodelocal: link %s: %w", n.link.Name, err)
	}
	if err := n.notrack.SyncNoTrack(ctx, n.rules); err != nil {
		return fmt.Errorf("nodelocal: conntrack exemption: %w", err)
	}
	return nil
}

// listenLocked opens the sockets inside the namespace. The sockets keep
// the namespace they were created in, whichever thread uses them later.
func (n *NodeLocal) listenLocked() error {
	var pcs []net.PacketConn
	var lns []net.Listener
	err := n.inNS(func() error {
		for _, ap := range n.Addrs() {
			pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				return fmt.Errorf("nodelocal: listen udp %s: %w", ap, err)
			}
			pcs = append(pcs, pc)
			ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
			if err != nil {
				return fmt.Errorf("nodelocal: listen tcp %s: %w", ap, err)
			}
			lns = append(lns, ln)
		}
		return nil
	})
	if err != nil {
		closeAll(pcs, lns)
		return err
	}
	n.pcs, n.lns = pcs, lns
	return nil
}

// inNS runs fn in the namespace: on the calling thread when it is already
// there (no privilege needed), else through netns.Do on a locked thread.
func (n *NodeLocal) inNS(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cur, err := netns.Current(); err == nil {
		same := cur.Equal(n.ns)
		cur.Close()
		if same {
			return fn()
		}
	}
	return n.ns.Do(fn)
}

// PacketConns returns the UDP sockets Setup opened, one per address, for
// dns.ServerConfig.PacketConns. The server closes them when its Run ends;
// Close closes them too.
func (n *NodeLocal) PacketConns() []net.PacketConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.pcs)
}

// Listeners returns the TCP listeners Setup opened, one per address, for
// dns.ServerConfig.Listeners.
func (n *NodeLocal) Listeners() []net.Listener {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.lns)
}

// Cleanup removes the conntrack exemption and the link. Sockets stay open
// (Close closes them). Removing what is not there is not an error.
func (n *NodeLocal) Cleanup(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cleanupLocked(ctx)
}

func (n *NodeLocal) cleanupLocked(ctx context.Context) error {
	var errs []error
	if err := n.notrack.SyncNoTrack(ctx, NoTrackRules{}); err != nil {
		errs = append(errs, fmt.Errorf("nodelocal: remove conntrack exemption: %w", err))
	}
	if err := n.links.SyncLocalLink(ctx, LocalLink{Name: n.link.Name}); err != nil {
		errs = append(errs, fmt.Errorf("nodelocal: remove link %s: %w", n.link.Name, err))
	}
	return errors.Join(errs...)
}

// Close closes the sockets (those a server already closed are skipped) and
// the namespace handle. The link and the rules stay: a restarting process
// keeps them (call Cleanup first to remove them). It is idempotent.
func (n *NodeLocal) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	err := closeAll(n.pcs, n.lns)
	return errors.Join(err, n.ns.Close())
}

func closeAll(pcs []net.PacketConn, lns []net.Listener) error {
	var errs []error
	for _, pc := range pcs {
		if err := pc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
