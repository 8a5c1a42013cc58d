package nftables

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/service"
)

// The conformance topology: outside (198.18.0.2) --veth-- node (198.18.0.1)
// and, on veths of the node, pods with routed /32 addresses that
// default-route via the node IP (onlink): two local endpoints, a client pod
// that is no endpoint, and the "remote" endpoint, remote only because the
// State puts it on node "other". The node default-routes via outside, so
// service traffic that is not DNATed is lost there (dropped, not refused).
var (
	confLocal  = []netip.Addr{netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.1.3")}
	confRemote = []netip.Addr{netip.MustParseAddr("10.244.2.2")}
	confPod    = netip.MustParseAddr("10.244.1.100")
)

// confDialTimeout bounds each connection: past it, the attempt was dropped.
const confDialTimeout = 700 * time.Millisecond

func TestServiceConformancePrivileged(t *testing.T) {
	drivertest.TestServiceDataplane(t, newConformanceEnv)
}

func newConformanceEnv(t *testing.T) drivertest.ServiceEnv {
	sb := sandbox.New(t)
	node, outside := sb.Namespace("node"), sb.Namespace("outside")
	sb.Connect(outside, "eth0", prefixes(svcClient4.String()+"/24"), node, "eth0", prefixes(svcNode4.String()+"/24"))
	confMust(t, outside.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), svcNode4, "eth0"))
	confMust(t, node.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), svcClient4, "eth0"))

	peers := map[drivertest.Peer]*sandbox.NS{drivertest.FromNode: node, drivertest.FromOutside: outside}
	addrs := map[drivertest.Peer]netip.Addr{drivertest.FromNode: svcNode4, drivertest.FromOutside: svcClient4}
	for i, a := range append(append([]netip.Addr{confPod}, confLocal...), confRemote...) {
		pod := confRoutedPod(t, sb, node, fmt.Sprintf("pod%d", i), a)
		if a == confPod {
			peers[drivertest.FromPod], addrs[drivertest.FromPod] = pod, a
			continue
		}
		if a == confLocal[0] {
			peers[drivertest.FromEndpoint], addrs[drivertest.FromEndpoint] = pod, a
		}
		// The name answered is the endpoint itself, address and port.
		ep := netip.AddrPortFrom(a, svcPodPort)
		serveWho(t, pod, ep.String(), ep)
	}
	node.MustSysctl("net.ipv4.ip_forward", "1")
	node.MustSysctl("net.ipv4.icmp_ratelimit", "0")

	return drivertest.ServiceEnv{
		Dataplane:      newSvcProxy(t, node, "kwtest_conformance"),
		Node:           "n1",
		NodeIPs:        []netip.Addr{svcNode4},
		LocalEndpoints: confLocal, RemoteEndpoints: confRemote,
		Addr: func(p drivertest.Peer) netip.Addr { return addrs[p] },
		Connect: func(t *testing.T, p drivertest.Peer, proto service.Protocol, dst netip.AddrPort) drivertest.Outcome {
			t.Helper()
			network := map[service.Protocol]string{service.TCP: "tcp4", service.UDP: "udp4"}[proto]
			if network == "" {
				t.Fatalf("conformance env: protocol %s not supported", proto)
			}
			name, seen, err := who(peers[p], network, dst, confDialTimeout)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					return drivertest.Outcome{Refused: true}
				}
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Logf("%s -> %s %s: %v (counted as dropped)", peers[p].Role, network, dst, err)
				}
				return drivertest.Outcome{}
			}
			backend, err := netip.ParseAddrPort(name)
			if err != nil {
				t.Fatalf("%s -> %s %s: bad reply %q: %v", peers[p].Role, network, dst, name, err)
			}
			return drivertest.Outcome{Backend: backend, Source: seen}
		},
	}
}

// confRoutedPod makes a pod namespace with addr/32 on its eth0, the node
// routing addr/32 on its end of the veth (which has no address) and the pod
// default-routing via the node IP, onlink.
func confRoutedPod(t *testing.T, sb *sandbox.Sandbox, node *sandbox.NS, ifName string, addr netip.Addr) *sandbox.NS {
	t.Helper()
	pod := sb.Namespace(ifName)
	sb.Connect(pod, "eth0", []netip.Prefix{netip.PrefixFrom(addr, 32)}, node, ifName, nil)
	confMust(t, node.AddRoute(netip.PrefixFrom(addr, 32), netip.Addr{}, ifName))
	link, err := pod.Netlink().LinkByName("eth0")
	confMust(t, err)
	confMust(t, pod.Netlink().RouteReplace(&netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        svcNode4.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
	}))
	return pod
}

func confMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
