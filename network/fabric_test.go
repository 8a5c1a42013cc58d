package network_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/network"
)

func node(name string, addrs []string, cidrs ...string) network.Node {
	n := network.Node{Name: name}
	for _, a := range addrs {
		n.Addresses = append(n.Addresses, netip.MustParseAddr(a))
	}
	for _, c := range cidrs {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(c))
	}
	return n
}

func TestFabricPlans(t *testing.T) {
	local := node("n1", []string{"198.18.0.1", "2001:db8::1"}, "10.244.1.0/24", "fd00:10:244:1::/64")
	peers := []network.Node{
		node("n2", []string{"198.18.0.2", "2001:db8::2"}, "10.244.2.0/24", "fd00:10:244:2::/64"),
		node("n3", []string{"198.18.0.3", "2001:db8::3"}, "10.244.3.0/24"),
	}
	peers[1].VTEPMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 3}
	ctx := context.Background()

	links := fake.NewLinks()
	f, err := network.NewFabric(network.FabricConfig{Routes: links, Masquerade: links,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(ctx, network.Topology{Mode: network.FabricHostGW, Local: local, Peers: peers}); err != nil {
		t.Fatal(err)
	}
	want := `route 10.244.2.0/24 via 198.18.0.2
route 10.244.3.0/24 via 198.18.0.3
route fd00:10:244:2::/64 via 2001:db8::2
masquerade from 10.244.1.0/24 fd00:10:244:1::/64 except 10.244.0.0/16 fd00:10:244::/48 random-fully=false
`
	if got := links.Dump(); got != want {
		t.Fatalf("host-gw dump:\n%s\nwant:\n%s", got, want)
	}

	if err := f.Sync(ctx, network.Topology{Mode: network.FabricVXLAN, Local: local, Peers: peers, VXLAN: network.VXLANConfig{VNI: 42}}); err != nil {
		t.Fatal(err)
	}
	m1 := network.VTEPMAC(local)
	m2 := network.VTEPMAC(peers[1-1])
	want = `vxlan kw-vxlan vni=42 port=8472 local=198.18.0.1 mac=` + m1.String() + ` mtu=1450 10.244.1.0/32 fd00:10:244:1::/128
fdb ` + m2.String() + ` dst 198.18.0.2
fdb 02:00:00:00:00:03 dst 198.18.0.3
neigh 10.244.2.0 lladdr ` + m2.String() + ` dev kw-vxlan
neigh fd00:10:244:2:: lladdr ` + m2.String() + ` dev kw-vxlan
neigh 10.244.3.0 lladdr 02:00:00:00:00:03 dev kw-vxlan
route 10.244.2.0/24 via 10.244.2.0 dev kw-vxlan onlink
route 10.244.3.0/24 via 10.244.3.0 dev kw-vxlan onlink
route fd00:10:244:2::/64 via fd00:10:244:2:: dev kw-vxlan onlink
masquerade from 10.244.1.0/24 fd00:10:244:1::/64 except 10.244.0.0/16 fd00:10:244::/48 random-fully=false
`
	if got := links.Dump(); got != want {
		t.Fatalf("vxlan dump:\n%s\nwant:\n%s", got, want)
	}
	if m1.String() == m2.String() || network.VTEPMAC(local).String() != m1.String() {
		t.Fatal("VTEP MACs must be distinct per node and stable")
	}

	// Back to nothing.
	if err := f.Sync(ctx, network.Topology{Mode: network.FabricHostGW, Local: local}); err != nil {
		t.Fatal(err)
	}
	if got := links.Dump(); !strings.HasPrefix(got, "masquerade") {
		t.Fatalf("routes left after removing every peer:\n%s", got)
	}
}

func TestFabricV6Underlay(t *testing.T) {
	local := node("n1", []string{"2001:db8::1"}, "10.244.1.0/24")
	peer := node("n2", []string{"2001:db8::2"}, "10.244.2.0/24")
	plan, err := network.Topology{Mode: network.FabricVXLAN, Local: local, Peers: []network.Node{peer}}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	if plan.VXLAN.MTU != 1430 || plan.FDB[0].Dst.String() != "2001:db8::2" {
		t.Fatalf("plan = %+v", plan)
	}
	// host-gw cannot route an IPv4 pod CIDR via an IPv6-only peer.
	_, err = network.Topology{Mode: network.FabricHostGW, Local: local, Peers: []network.Node{peer}}.Plan()
	if !errors.Is(err, network.ErrInvalidTopology) {
		t.Fatalf("host-gw across families = %v, want ErrInvalidTopology", err)
	}
}

func TestTopologyValidation(t *testing.T) {
	ok := node("n1", []string{"198.18.0.1"}, "10.244.1.0/24")
	for _, tc := range []struct {
		name string
		topo network.Topology
		want string
	}{
		{"no name", network.Topology{Local: node("", nil)}, "Local.Name"},
		{"dup", network.Topology{Local: ok, Peers: []network.Node{node("n1", []string{"198.18.0.2"})}}, "duplicate node"},
		{"unmasked", network.Topology{Local: node("n1", nil, "10.244.1.1/24")}, `Local.PodCIDRs[0] 10.244.1.1/24: not a masked prefix`},
		{"overlap", network.Topology{Local: ok, Peers: []network.Node{node("n2", []string{"198.18.0.2"}, "10.244.0.0/16")}}, "overlaps 10.244.1.0/24"},
		{"peer without address", network.Topology{Local: ok, Peers: []network.Node{node("n2", nil)}}, "Peers[0].Addresses"},
		{"two v4", network.Topology{Local: node("n1", []string{"198.18.0.1", "198.18.0.9"})}, "at most one address per family"},
		{"vxlan no local", network.Topology{Mode: network.FabricVXLAN, Local: node("n1", nil)}, "Local.Addresses"},
		{"vni", network.Topology{Mode: network.FabricVXLAN, Local: ok, VXLAN: network.VXLANConfig{VNI: 1 << 24}}, "VXLAN.VNI"},
		{"mode", network.Topology{Mode: 9, Local: ok}, "Mode 9"},
	} {
		_, err := tc.topo.Plan()
		if !errors.Is(err, network.ErrInvalidTopology) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Plan = %v, want ErrInvalidTopology naming %q", tc.name, err, tc.want)
		}
	}
}

func TestFabricErrorsAreJoined(t *testing.T) {
	links := fake.NewLinks()
	f, _ := network.NewFabric(network.FabricConfig{Routes: links, Masquerade: links})
	links.FailOn("SyncNodeRoutes", errors.New("route boom"))
	links.FailOn("SyncMasquerade", errors.New("nft boom"))
	err := f.Sync(context.Background(), network.Topology{Local: node("n1", nil, "10.244.1.0/24")})
	if err == nil || !strings.Contains(err.Error(), "route boom") || !strings.Contains(err.Error(), "nft boom") {
		t.Fatalf("Sync = %v, want both errors", err)
	}
}
