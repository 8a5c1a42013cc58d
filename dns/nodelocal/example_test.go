package nodelocal_test

import (
	"context"
	"log"
	"net/netip"

	"github.com/kubewire/kubewire/dns"
	"github.com/kubewire/kubewire/dns/nodelocal"
	netlinkdrv "github.com/kubewire/kubewire/driver/netlink"
	nftdrv "github.com/kubewire/kubewire/driver/nftables"
)

// Serve the cluster zone as a node-local cache on 169.254.20.10:53 in the
// node namespace /run/netns/node1. It needs root, so it is compiled but not
// run by go test.
func ExampleNew() {
	const host = "/run/netns/node1" // "" is the caller's namespace
	links, err := netlinkdrv.New(netlinkdrv.Options{NetNS: host})
	if err != nil {
		log.Fatal(err)
	}
	defer links.Close()
	notrack, err := nftdrv.NewNoTrack(nftdrv.Options{NetNS: host, Table: "kubewire-nodelocaldns"})
	if err != nil {
		log.Fatal(err) // errors.Is(err, driver.ErrNotSupported) before Linux 4.10
	}
	defer notrack.Close()

	nl, err := nodelocal.New(nodelocal.Config{NetNS: host, Links: links, NoTrack: notrack})
	if err != nil {
		log.Fatal(err)
	}
	defer nl.Close()
	ctx := context.Background()
	if err := nl.Setup(ctx); err != nil { // link, NOTRACK rules, sockets
		log.Fatal(err)
	}

	records, _ := dns.NewRecords(dns.Config{})
	// ... fed by the caller's event source, then records.MarkSynced().
	srv, err := dns.NewServer(dns.ServerConfig{
		Records:     records,
		PacketConns: nl.PacketConns(),
		Listeners:   nl.Listeners(),
		Forward:     dns.ForwardConfig{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")}},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Run(ctx); err != nil { // until ctx ends
		log.Fatal(err)
	}
	// When node-local DNS is no longer wanted on this node:
	if err := nl.Cleanup(context.Background()); err != nil {
		log.Fatal(err)
	}
}
