package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/kubewire/kubewire/ipam"
)

func ExampleNewPodAllocator() {
	dir, _ := os.MkdirTemp("", "ipam-example")
	defer os.RemoveAll(dir)
	store, err := ipam.NewFileStore(dir, ipam.FileStoreOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	alloc, err := ipam.NewPodAllocator(ipam.PodAllocatorConfig{
		Ranges: []ipam.Range{
			{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Gateway: netip.MustParseAddr("10.244.1.1")},
			{Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")},
		},
		Store: store,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	owner := ipam.PodOwner("3f2a9c", "eth0")
	as, _ := alloc.Allocate(ctx, owner)
	for _, a := range as {
		if a.Gateway.IsValid() {
			fmt.Println(a.Address, "via", a.Gateway)
		} else {
			fmt.Println(a.Address, "(no gateway)")
		}
	}
	again, _ := alloc.Allocate(ctx, owner) // a retried CNI ADD
	fmt.Println("idempotent:", again[0] == as[0] && again[1] == as[1])

	_, err = alloc.Allocate(ctx, ipam.PodOwner("77b1e0", "eth0"), netip.MustParseAddr("10.244.1.2"))
	fmt.Println(err, errors.Is(err, ipam.ErrConflict))

	fmt.Println(alloc.Release(ctx, owner))
	_, err = alloc.Lookup(ctx, owner)
	fmt.Println(errors.Is(err, ipam.ErrNotFound))

	_, err = ipam.NewPodAllocator(ipam.PodAllocatorConfig{
		Ranges: []ipam.Range{{Subnet: netip.MustParsePrefix("10.0.0.0/24")}, {Subnet: netip.MustParsePrefix("10.0.1.0/31")}},
		Store:  store,
	})
	fmt.Println(err)
	// Output:
	// 10.244.1.2/24 via 10.244.1.1
	// fd00:10:244:1::1/64 (no gateway)
	// idempotent: true
	// ipam: 10.244.1.2 already allocated to "3f2a9c/eth0" true
	// <nil>
	// true
	// ipam: Ranges[1].Subnet "10.0.1.0/31": prefix too small: an IPv4 pod subnet needs /30 or larger
}

func ExampleNodeCIDRAllocator() {
	alloc, err := ipam.NewNodeCIDRAllocator(ipam.NodeCIDRConfig{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")},
		Store:        ipam.NewMemoryStore(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	for _, node := range []string{"node-a", "node-b"} {
		cidrs, _ := alloc.Allocate(ctx, node)
		fmt.Println(node, cidrs)
	}
	alloc.Release(ctx, "node-a")
	cidrs, _ := alloc.Allocate(ctx, "node-c", netip.MustParsePrefix("10.244.9.0/24"))
	fmt.Println("node-c", cidrs)
	// Output:
	// node-a [10.244.0.0/24 fd00:10:244::/64]
	// node-b [10.244.1.0/24 fd00:10:244:1::/64]
	// node-c [10.244.9.0/24 fd00:10:244:2::/64]
}

func ExampleClusterIPAllocator() {
	alloc, err := ipam.NewClusterIPAllocator(ipam.ClusterIPConfig{
		CIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/112")},
		Store: ipam.NewMemoryStore(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	// kube-dns asks for a well-known IP in the static band.
	dns, _ := alloc.Allocate(ctx, "kube-system/kube-dns", nil, []netip.Addr{netip.MustParseAddr("10.96.0.10")})
	fmt.Println(dns)
	// Dynamic allocation starts above the 256-address static band.
	web, _ := alloc.Allocate(ctx, "default/web", []ipam.Family{ipam.IPv4, ipam.IPv6}, nil)
	fmt.Println(web)
	_, err = alloc.Allocate(ctx, "default/other", nil, []netip.Addr{netip.MustParseAddr("10.96.0.10")})
	fmt.Println(err)
	// Output:
	// [10.96.0.10]
	// [10.96.1.1 fd00:96::101]
	// ipam: 10.96.0.10 already allocated to "kube-system/kube-dns"
}

func ExampleNodePortAllocator() {
	r, _ := ipam.ParsePortRange("30000-32767")
	alloc, err := ipam.NewNodePortAllocator(ipam.NodePortConfig{Range: r, Store: ipam.NewMemoryStore()})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	http, _ := alloc.Allocate(ctx, "default/web", 0)
	https, _ := alloc.Allocate(ctx, "default/web", 0)
	fixed, _ := alloc.Allocate(ctx, "default/db", 30007)
	ports, _ := alloc.Ports(ctx, "default/web")
	fmt.Println(http, https, fixed, ports)
	_, err = alloc.Allocate(ctx, "default/x", 80)
	fmt.Println(err, errors.Is(err, ipam.ErrOutOfRange))
	// Output:
	// 30086 30087 30007 [30086 30087]
	// ipam: requested port 80 is outside node port range 30000-32767 true
}
