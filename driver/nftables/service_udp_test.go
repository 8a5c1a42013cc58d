package nftables

import (
	"bufio"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	netlinkdrv "github.com/kubewire/kubewire/driver/netlink"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/service"
)

// TestUDPBackendReplacementPrivileged: a long-lived UDP socket keeps
// talking to a replaced endpoint through its conntrack entry, unless the
// Proxier clears stale entries after the sync (driver/netlink's conntrack
// cleanup). The first half shows the problem without cleanup, the second
// that one sync with cleanup fixes it.
func TestUDPBackendReplacementPrivileged(t *testing.T) {
	sb := sandbox.New(t)
	node, outside := sb.Namespace("node"), sb.Namespace("outside")
	sb.Connect(outside, "eth0", prefixes(svcClient4.String()+"/24"), node, "eth0", prefixes(svcNode4.String()+"/24"))
	node.MustSysctl("net.ipv4.ip_forward", "1")
	client := confRoutedPod(t, sb, node, "client", netip.MustParseAddr("10.244.1.100"))
	epA, epB := netip.MustParseAddrPort("10.244.1.2:53"), netip.MustParseAddrPort("10.244.1.3:53")
	serveWho(t, confRoutedPod(t, sb, node, "a", epA.Addr()), "a", epA)
	serveWho(t, confRoutedPod(t, sb, node, "b", epB.Addr()), "b", epB)

	dp := newSvcProxy(t, node, "kwtest_udp")
	links, err := netlinkdrv.New(netlinkdrv.Options{NetNS: node.Path()})
	confMust(t, err)
	t.Cleanup(func() { links.Close() })

	dns := &service.Service{
		Name:       service.Name{Namespace: "kube-system", Name: "dns"},
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.53")},
		Ports:      []service.Port{{Name: "dns", Protocol: service.UDP, Port: 53, TargetPort: 53}},
	}
	slice := func(ep netip.AddrPort) *service.EndpointSlice {
		return &service.EndpointSlice{Name: "dns-1", Service: dns.Name,
			Ports:     []service.SlicePort{{Name: "dns", Protocol: service.UDP, Port: 53}},
			Endpoints: []service.Endpoint{{Addresses: []netip.Addr{ep.Addr()}, Ready: true, Serving: true, NodeName: "n1"}}}
	}
	ctx := context.Background()
	conn, err := client.Dial(ctx, "udp4", netip.MustParseAddrPort("10.96.0.53:53"))
	confMust(t, err)
	defer conn.Close()
	r := bufio.NewReader(conn)
	ask := func() string {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write([]byte("who\n")); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no answer on the long-lived UDP socket: %v", err)
		}
		name, _, _ := strings.Cut(line, " ")
		return name
	}

	for _, tc := range []struct {
		name      string
		conntrack service.Conntrack
		after     string // who answers the old socket after the swap
	}{
		{"without cleanup the socket sticks to the old endpoint", nil, "a"},
		{"with cleanup it reaches the new endpoint within one sync", links, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := service.NewProxier(service.Config{Dataplane: dp, Conntrack: tc.conntrack, Node: service.NodeInfo{Name: "n1"}})
			confMust(t, err)
			confMust(t, p.OnServiceAdd(dns))
			confMust(t, p.OnEndpointSliceAdd(slice(epA)))
			confMust(t, p.Sync(ctx))
			for i := 0; i < 3; i++ {
				if got := ask(); got != "a" {
					t.Fatalf("before the swap %q answered, want a", got)
				}
			}
			confMust(t, p.OnEndpointSliceUpdate(nil, slice(epB)))
			confMust(t, p.Sync(ctx))
			if got := ask(); got != tc.after {
				t.Fatalf("after the swap %q answered the old socket, want %s", got, tc.after)
			}
		})
	}
}
