package kubeconv_test

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubewire/kubewire/network"
	"github.com/kubewire/kubewire/network/kubeconv"
)

func node(edit func(*v1.Node)) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node2"},
		Spec: v1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeHostName, Address: "node2"},
			{Type: v1.NodeExternalIP, Address: "203.0.113.2"},
			{Type: v1.NodeInternalIP, Address: "192.0.2.12"},
			{Type: v1.NodeInternalIP, Address: "192.0.2.99"},
			{Type: v1.NodeExternalIP, Address: "2001:db8::12"},
		}}}
	if edit != nil {
		edit(n)
	}
	return n
}

func TestNode(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name string
		in   *v1.Node
		want network.Node
	}{
		{"dual-stack: first InternalIP, else ExternalIP", node(nil), network.Node{Name: "node2",
			Addresses: []netip.Addr{a("192.0.2.12"), a("2001:db8::12")},
			PodCIDRs:  []netip.Prefix{p("10.244.1.0/24"), p("fd00:10:244:1::/64")}}},
		{"legacy podCIDR, host bits cleared", node(func(n *v1.Node) { n.Spec.PodCIDRs, n.Spec.PodCIDR = nil, "10.244.1.7/24" }),
			network.Node{Name: "node2", Addresses: []netip.Addr{a("192.0.2.12"), a("2001:db8::12")}, PodCIDRs: []netip.Prefix{p("10.244.1.0/24")}}},
		{"no CIDR allocated yet", node(func(n *v1.Node) { n.Spec.PodCIDRs = nil }),
			network.Node{Name: "node2", Addresses: []netip.Addr{a("192.0.2.12"), a("2001:db8::12")}}},
	} {
		got, err := kubeconv.Node(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		edit func(*v1.Node)
		want string
	}{
		{func(n *v1.Node) { n.Spec.PodCIDRs[1] = "fd00::/129" }, `node node2: spec.podCIDRs[1] "fd00::/129": not a CIDR`},
		{func(n *v1.Node) { n.Spec.PodCIDRs[1] = "10.245.0.0/24" }, `spec.podCIDRs[1] "10.245.0.0/24": a second range of the same family`},
		{func(n *v1.Node) { n.Spec.PodCIDRs, n.Spec.PodCIDR = nil, "x" }, `spec.podCIDR "x": not a CIDR`},
		{func(n *v1.Node) { n.Status.Addresses[2].Address = "192.0.2.300" }, `status.addresses[2].address "192.0.2.300": not an IP address`},
	} {
		_, err := kubeconv.Node(node(tc.edit))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, network.ErrInvalidTopology) {
			t.Errorf("%v, want an error with %s", err, tc.want)
		}
	}
	if _, err := kubeconv.Node(nil); !errors.Is(err, network.ErrInvalidTopology) {
		t.Errorf("nil: %v", err)
	}
}
