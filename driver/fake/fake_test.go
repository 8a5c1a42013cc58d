package fake_test

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/service"
)

func TestLinksConformance(t *testing.T) {
	var seq atomic.Int32
	drivertest.TestLinkDriver(t, func(t *testing.T) drivertest.LinkEnv {
		f := fake.NewLinks()
		f.StrictNetNS()
		return drivertest.LinkEnv{
			Driver: f,
			NewNetNS: func(t *testing.T) string {
				p := fmt.Sprintf("/run/netns/fake-%d", seq.Add(1))
				f.AddNetNS(p)
				return p
			},
			RemoveNetNS: func(t *testing.T, path string) { f.RemoveNetNS(path) },
		}
	})
}

func TestServicesConformance(t *testing.T) {
	node := netip.MustParseAddr("198.18.0.1")
	local := []netip.Addr{netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.1.3")}
	remote := []netip.Addr{netip.MustParseAddr("10.244.2.2")}
	addrs := map[drivertest.Peer]netip.Addr{
		drivertest.FromPod:      netip.MustParseAddr("10.244.1.100"),
		drivertest.FromEndpoint: local[0],
		drivertest.FromNode:     node,
		drivertest.FromOutside:  netip.MustParseAddr("198.18.5.2"),
	}
	drivertest.TestServiceDataplane(t, func(t *testing.T) drivertest.ServiceEnv {
		f := fake.NewServices(node)
		return drivertest.ServiceEnv{
			Dataplane: f, Node: "n1", NodeIPs: []netip.Addr{node},
			LocalEndpoints: local, RemoteEndpoints: remote,
			Addr: func(p drivertest.Peer) netip.Addr { return addrs[p] },
			Connect: func(t *testing.T, p drivertest.Peer, proto service.Protocol, dst netip.AddrPort) drivertest.Outcome {
				src := addrs[p]
				r, target := f.Connect(src, p != drivertest.FromOutside, proto, dst)
				switch r.Verdict {
				case fake.VerdictReject:
					return drivertest.Outcome{Refused: true}
				case fake.VerdictForward:
					seen := src
					if r.Masquerade {
						seen = node
					}
					return drivertest.Outcome{Backend: target.AddrPort(), Source: seen}
				}
				return drivertest.Outcome{}
			},
		}
	})
}
