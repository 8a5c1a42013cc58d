package nodelocal_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
	"github.com/kubewire/kubewire/dns/nodelocal"
	netlinkdrv "github.com/kubewire/kubewire/driver/netlink"
	nftdrv "github.com/kubewire/kubewire/driver/nftables"
	"github.com/kubewire/kubewire/internal/sandbox"
)

// TestNodeLocalPrivileged composes the real drivers in a throwaway
// namespace, serves the cluster zone on 169.254.20.10:53 and
// [fd00::a9fe:140a]:53, and resolves a service from a client in the same
// namespace over UDP and TCP.
func TestNodeLocalPrivileged(t *testing.T) {
	sb := sandbox.New(t)
	node := sb.Namespace("node")
	ctx := context.Background()
	table := fmt.Sprintf("kwtest_nodelocal_%d", os.Getpid())
	a4, a6 := netip.MustParseAddr(nodelocal.DefaultAddress), netip.MustParseAddr("fd00::a9fe:140a")

	links, err := netlinkdrv.New(netlinkdrv.Options{NetNS: node.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer links.Close()
	notrack, err := nftdrv.NewNoTrack(nftdrv.Options{NetNS: node.Path(), Table: table})
	if err != nil {
		t.Fatal(err)
	}
	defer notrack.Close()
	nl, err := nodelocal.New(nodelocal.Config{NetNS: node.Path(), Links: links, NoTrack: notrack,
		Addresses: []netip.Addr{a4, a6}})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if err := nl.Setup(ctx); err != nil {
		t.Fatalf("Setup: %v", err)
	}

	records, err := dns.NewRecords(dns.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := records.OnServiceAdd(&dns.Service{Namespace: "default", Name: "web",
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.20")}}); err != nil {
		t.Fatal(err)
	}
	records.MarkSynced()
	srv, err := dns.NewServer(dns.ServerConfig{Records: records, PacketConns: nl.PacketConns(), Listeners: nl.Listeners()})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// The link and the rules are there.
	l, err := node.Netlink().LinkByName(nodelocal.DefaultLinkName)
	if err != nil {
		t.Fatalf("link %s: %v", nodelocal.DefaultLinkName, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("link %s is down", nodelocal.DefaultLinkName)
	}
	d, err := notrack.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"prerouting meta nfproto ipv4 ip daddr 169.254.20.10 meta l4proto udp th dport 53 notrack",
		"output meta nfproto ipv6 ip6 saddr fd00::a9fe:140a meta l4proto tcp th sport 53 notrack",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("notrack table lacks %q:\n%s", want, d)
		}
	}

	// A client in the namespace resolves the service through each address.
	for _, a := range []netip.Addr{a4, a6} {
		for _, network := range []string{"udp", "tcp"} {
			server := netip.AddrPortFrom(a, 53).String()
			q := new(mdns.Msg)
			q.SetQuestion("web.default.svc.cluster.local.", mdns.TypeA)
			var r *mdns.Msg
			err := node.Do(func() error {
				var err error
				// The client's socket is made on this thread, in the namespace.
				r, _, err = (&mdns.Client{Net: network, Timeout: 3 * time.Second}).Exchange(q, server)
				return err
			})
			if err != nil {
				t.Errorf("%s query to %s: %v", network, server, err)
				continue
			}
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || !strings.HasSuffix(r.Answer[0].String(), "A\t10.96.0.20") {
				t.Errorf("%s query to %s: %v", network, server, r)
			}
		}
	}

	// Sync again changes nothing; Cleanup removes link and table.
	if err := nl.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if d2, _ := notrack.Dump(ctx); d2 != d {
		t.Errorf("Sync changed the rules:\n%s\nwant\n%s", d2, d)
	}
	if err := nl.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Netlink().LinkByName(nodelocal.DefaultLinkName); err == nil {
		t.Error("link left after Cleanup")
	}
	if d, _ := notrack.Dump(ctx); d != "" {
		t.Errorf("notrack table left after Cleanup:\n%s", d)
	}
}
