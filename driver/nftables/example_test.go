package nftables_test

import (
	"context"
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
