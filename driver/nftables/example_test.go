package nftables_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"

	"github.com/kubewire/kubewire/driver/nftables"
	"github.com/kubewire/kubewire/network"
)

// Masquerade the egress of a node's pods, except towards the cluster's pod
// ranges. The example needs root and a namespace at /run/netns/node1, so it
// is compiled but not run by go test.
func ExampleNewMasquerade() {
	m, err := nftables.NewMasquerade(nftables.Options{
		NetNS: "/run/netns/node1", // "" programs the caller's namespace
		Table: "kubewire-masq",
	})
	if err != nil {
		log.Fatal(err) // errors.Is(err, driver.ErrNotSupported) on old kernels
	}
	defer m.Close()

	ctx := context.Background()
	err = m.SyncMasquerade(ctx, network.MasqueradeRules{
		Sources: []netip.Prefix{
			netip.MustParsePrefix("10.244.1.0/24"),
			netip.MustParsePrefix("fd00:10:244:1::/64"),
		},
		Except: []netip.Prefix{
			netip.MustParsePrefix("10.244.0.0/16"),
			netip.MustParsePrefix("fd00:10:244::/48"),
		},
		RandomFully: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	dump, err := m.Dump(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(dump)

	// On shutdown, when masquerade is no longer wanted:
	if err := m.Cleanup(ctx); err != nil {
		log.Fatal(err)
	}
}

// Forward port 8080 of every node address to port 80 of a pod, as a CNI
// plugin does for a container's portMappings. Every CNI call is a new
// process: the owners live in the table, so a later call (or a garbage
// collector) finds and removes them. Compiled, not run: it needs root and
// /run/netns/node1.
func ExampleNewPortMap() {
	p, err := nftables.NewPortMap(nftables.Options{
		NetNS: "/run/netns/node1",
		Table: "kubewire-cni-hostports",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	ctx := context.Background()
	owner := "6f1c0ffee/eth0" // container ID and interface
	err = p.SyncPortMappings(ctx, owner, []network.PortMapping{
		{Protocol: "tcp", HostPort: 8080, PodIP: netip.MustParseAddr("10.244.1.2"), PodPort: 80},
		{Protocol: "tcp", HostPort: 8080, PodIP: netip.MustParseAddr("fd00:10:244:1::2"), PodPort: 80},
	})
	if errors.Is(err, network.ErrPortConflict) {
		log.Fatalf("host port taken: %v", err)
	} else if err != nil {
		log.Fatal(err)
	}

	// CNI DEL: remove the container's mappings.
	if err := p.SyncPortMappings(ctx, owner, nil); err != nil {
		log.Fatal(err)
	}
	// CNI GC: remove the mappings of containers that no longer exist.
	owners, err := p.PortMappingOwners(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range owners {
		if !containerExists(o) {
			_ = p.SyncPortMappings(ctx, o, nil)
		}
	}
}

func containerExists(owner string) bool { return false }
