package network_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/ipam"
	"github.com/kubewire/kubewire/network"
)

func newManager(t *testing.T, mode network.Mode, gateway bool) (*network.Manager, *fake.Links, *ipam.PodAllocator) {
	t.Helper()
	r4 := ipam.Range{Subnet: netip.MustParsePrefix("10.244.1.0/24")}
	r6 := ipam.Range{Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
	if gateway {
		r4.Gateway = netip.MustParseAddr("10.244.1.1")
		r6.Gateway = netip.MustParseAddr("fd00:10:244:1::1")
	}
	alloc, err := ipam.NewPodAllocator(ipam.PodAllocatorConfig{Ranges: []ipam.Range{r4, r6}, Store: ipam.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	links := fake.NewLinks()
	m, err := network.NewManager(network.Config{Links: links, IPAM: alloc, Mode: mode, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	return m, links, alloc
}

func TestAttachRendersRoutedPod(t *testing.T) {
	m, links, _ := newManager(t, network.ModeRouted, false)
	res, err := m.Attach(context.Background(), network.Attachment{ContainerID: "c1", NetNS: "/run/netns/p1"})
	if err != nil {
		t.Fatal(err)
	}
	h := res.HostIfName
	mac := res.PodMAC
	want := fmt.Sprintf(`node mode=routed mtu=1450 ipv4=true ipv6=true
pod c1/eth0 host=%[1]s hostmac=ee:ee:ee:ee:ee:ee netns=/run/netns/p1 mtu=1450 mac=%[2]s
  host route 10.244.1.1/32 dev %[1]s
  host route fd00:10:244:1::1/128 dev %[1]s
  host neigh 10.244.1.1 lladdr %[2]s dev %[1]s
  host neigh fd00:10:244:1::1 lladdr %[2]s dev %[1]s
  addr 10.244.1.1/32
  addr fd00:10:244:1::1/128
  route 169.254.1.1/32 dev eth0
  route 0.0.0.0/0 via 169.254.1.1 dev eth0
  route ::/0 via fe80::1 dev eth0
  neigh 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0
  neigh fe80::1 lladdr ee:ee:ee:ee:ee:ee dev eth0
`, h, mac)
	if got := links.Dump(); got != want {
		t.Fatalf("dump:\n%s\nwant:\n%s", got, want)
	}
	if len(h) > 15 || !strings.HasPrefix(h, "kw") {
		t.Fatalf("host interface name %q", h)
	}
	if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Fatalf("pod MAC %s is not locally administered unicast", mac)
	}
}

func TestAttachBridgeNeedsGateway(t *testing.T) {
	m, links, alloc := newManager(t, network.ModeBridge, false)
	_, err := m.Attach(context.Background(), network.Attachment{ContainerID: "c1", NetNS: "/p"})
	if err == nil || !strings.Contains(err.Error(), "needs a gateway") {
		t.Fatalf("Attach = %v, want a missing-gateway error", err)
	}
	if owners, _ := alloc.Owners(context.Background()); len(owners) != 0 {
		t.Fatalf("addresses left allocated: %v", owners)
	}
	if links.Dump() != "" {
		t.Fatalf("state left: %s", links.Dump())
	}
}

func TestAttachBridge(t *testing.T) {
	m, links, _ := newManager(t, network.ModeBridge, true)
	res, err := m.Attach(context.Background(), network.Attachment{ContainerID: "c1", NetNS: "/p", IfName: "net1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.IPs; len(got) != 2 || got[0].Address.String() != "10.244.1.2/24" || got[0].Gateway.String() != "10.244.1.1" ||
		got[1].Address.String() != "fd00:10:244:1::2/64" {
		t.Fatalf("IPs = %+v", got)
	}
	d := links.Dump()
	for _, want := range []string{
		"bridge kw-br0 10.244.1.1/24 fd00:10:244:1::1/64\n",
		"pod c1/net1 host=" + res.HostIfName,
		"bridge=kw-br0",
		"  route 0.0.0.0/0 via 10.244.1.1 dev net1\n",
		"  route ::/0 via fd00:10:244:1::1 dev net1\n",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("dump lacks %q:\n%s", want, d)
		}
	}
}

func TestAttachRollback(t *testing.T) {
	ctx := context.Background()
	m, links, alloc := newManager(t, network.ModeRouted, false)
	links.FailOn("SetupPod", errors.New("injected"))
	if _, err := m.Attach(ctx, network.Attachment{ContainerID: "c1", NetNS: "/p"}); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Attach = %v, want the injected error", err)
	}
	if owners, _ := alloc.Owners(ctx); len(owners) != 0 {
		t.Fatalf("addresses left: %v", owners)
	}
	if links.Calls("TeardownPod") != 1 {
		t.Fatalf("TeardownPod called %d times, want 1 (rollback)", links.Calls("TeardownPod"))
	}
	// A failed repair of an existing attachment keeps its addresses.
	res, err := m.Attach(ctx, network.Attachment{ContainerID: "c2", NetNS: "/p2"})
	if err != nil {
		t.Fatal(err)
	}
	links.FailOn("SetupPod", errors.New("injected"))
	if _, err := m.Attach(ctx, network.Attachment{ContainerID: "c2", NetNS: "/p2"}); err == nil {
		t.Fatal("want error")
	}
	got, err := alloc.Lookup(ctx, ipam.PodOwner("c2", "eth0"))
	if err != nil || got[0].Address.Addr() != res.IPs[0].Address.Addr() {
		t.Fatalf("existing attachment lost its address: %v %v", got, err)
	}
	// A failing teardown keeps the address (it may still be configured).
	links.FailOn("TeardownPod", errors.New("busy"))
	if err := m.Detach(ctx, network.Attachment{ContainerID: "c2"}); err == nil {
		t.Fatal("Detach with a failing teardown succeeded")
	}
	if _, err := alloc.Lookup(ctx, ipam.PodOwner("c2", "eth0")); err != nil {
		t.Fatalf("address released although teardown failed: %v", err)
	}
	if err := m.Detach(ctx, network.Attachment{ContainerID: "c2"}); err != nil {
		t.Fatal(err)
	}
}

func TestValidation(t *testing.T) {
	m, _, _ := newManager(t, network.ModeRouted, false)
	ctx := context.Background()
	for _, tc := range []struct {
		a    network.Attachment
		want string
	}{
		{network.Attachment{NetNS: "/p"}, "ContainerID is empty"},
		{network.Attachment{ContainerID: "a/b", NetNS: "/p"}, `ContainerID "a/b"`},
		{network.Attachment{ContainerID: "c", NetNS: "/p", IfName: "this-name-is-too-long"}, `IfName "this-name-is-too-long"`},
		{network.Attachment{ContainerID: "c"}, "NetNS is empty"},
		{network.Attachment{ContainerID: "c", NetNS: "/p", RequestedIPs: []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.1.6")}}, "at most one address per family"},
	} {
		_, err := m.Attach(ctx, tc.a)
		if !errors.Is(err, network.ErrInvalidAttachment) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Attach(%+v) = %v, want ErrInvalidAttachment naming %q", tc.a, err, tc.want)
		}
	}
	for _, cfg := range []network.Config{
		{IPAM: nil},
		{Links: fake.NewLinks()},
	} {
		if _, err := network.NewManager(cfg); err == nil {
			t.Errorf("NewManager(%+v) accepted", cfg)
		}
	}
	_, err := network.NewManager(network.Config{Links: fake.NewLinks(), IPAM: dummyIPAM{}, MTU: 100})
	if err == nil || !strings.Contains(err.Error(), "MTU 100") {
		t.Errorf("MTU 100 error = %v", err)
	}
}

type dummyIPAM struct{ network.IPAM }

func TestRequestedIP(t *testing.T) {
	m, _, _ := newManager(t, network.ModeRouted, false)
	ctx := context.Background()
	res, err := m.Attach(ctx, network.Attachment{ContainerID: "c1", NetNS: "/p", RequestedIPs: []netip.Addr{netip.MustParseAddr("10.244.1.77")}})
	if err != nil || res.IPs[0].Address.String() != "10.244.1.77/32" {
		t.Fatalf("Attach with a requested IP = %+v, %v", res, err)
	}
	_, err = m.Attach(ctx, network.Attachment{ContainerID: "c2", NetNS: "/p2", RequestedIPs: []netip.Addr{netip.MustParseAddr("10.244.1.77")}})
	if !errors.Is(err, ipam.ErrConflict) {
		t.Fatalf("conflicting request = %v, want ErrConflict", err)
	}
}

func TestCheckDrift(t *testing.T) {
	m, links, _ := newManager(t, network.ModeRouted, false)
	ctx := context.Background()
	att := network.Attachment{ContainerID: "c1", NetNS: "/p"}
	res, err := m.Attach(ctx, att)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx, att); err != nil {
		t.Fatalf("Check of a fresh attachment: %v", err)
	}
	links.Mutate(res.HostIfName, func(p *network.PodSpec) {
		p.MTU = 1300
		p.Routes = p.Routes[:1]
		p.Addresses = p.Addresses[1:]
	})
	err = m.Check(ctx, att)
	var d *network.DriftError
	if !errors.As(err, &d) || !errors.Is(err, network.ErrDrift) {
		t.Fatalf("Check = %v, want *DriftError", err)
	}
	want := []string{"pod MTU 1300, want 1450", "pod address 10.244.1.1/32 missing", "pod route 0.0.0.0/0 via 169.254.1.1 dev eth0 missing", "pod route ::/0 via fe80::1 dev eth0 missing"}
	if !slices.Equal(d.Problems, want) {
		t.Fatalf("problems = %q\nwant %q", d.Problems, want)
	}
	if err := m.Check(ctx, network.Attachment{ContainerID: "unknown", NetNS: "/p"}); !errors.Is(err, network.ErrDrift) {
		t.Fatalf("Check of an unknown attachment = %v, want drift", err)
	}
}

func TestDetachWhenNetNSGone(t *testing.T) {
	m, links, alloc := newManager(t, network.ModeRouted, false)
	ctx := context.Background()
	att := network.Attachment{ContainerID: "c1", NetNS: "/p"}
	if _, err := m.Attach(ctx, att); err != nil {
		t.Fatal(err)
	}
	links.RemoveNetNS("/p")
	for i := 0; i < 2; i++ {
		if err := m.Detach(ctx, att); err != nil {
			t.Fatalf("Detach %d: %v", i, err)
		}
	}
	if owners, _ := alloc.Owners(ctx); len(owners) != 0 {
		t.Fatalf("addresses left: %v", owners)
	}
}

func TestGCRemovesDeadAttachmentsAndOrphanAddresses(t *testing.T) {
	m, links, alloc := newManager(t, network.ModeRouted, false)
	ctx := context.Background()
	for _, c := range []string{"keep", "drop"} {
		if _, err := m.Attach(ctx, network.Attachment{ContainerID: c, NetNS: "/" + c}); err != nil {
			t.Fatal(err)
		}
	}
	// An allocation whose ADD was killed before the link was made.
	if _, err := alloc.Allocate(ctx, ipam.PodOwner("killed", "eth0")); err != nil {
		t.Fatal(err)
	}
	removed, err := m.GC(ctx, func(k network.PodKey) bool { return k.ContainerID == "keep" })
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].ContainerID != "drop" {
		t.Fatalf("removed %v", removed)
	}
	owners, _ := alloc.Owners(ctx)
	if !slices.Equal(owners, []string{"keep/eth0"}) {
		t.Fatalf("owners after GC = %v", owners)
	}
	if d := links.Dump(); strings.Contains(d, "drop/") || !strings.Contains(d, "keep/eth0") {
		t.Fatalf("dump after GC:\n%s", d)
	}
}

func TestConcurrentAttach(t *testing.T) {
	m, _, _ := newManager(t, network.ModeRouted, false)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	errs := make(chan error, 100)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("c%d", i%25) // every key attached twice at once
			res, err := m.Attach(ctx, network.Attachment{ContainerID: id, NetNS: "/" + id})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, ip := range res.IPs {
				if o, ok := seen[ip.Address.Addr()]; ok && o != id {
					errs <- fmt.Errorf("%s given to %s and %s", ip.Address, o, id)
				}
				seen[ip.Address.Addr()] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != 50 {
		t.Fatalf("%d distinct addresses for 25 dual-stack pods, want 50", len(seen))
	}
}

func TestModeText(t *testing.T) {
	for _, s := range []string{"routed", "bridge"} {
		var m network.Mode
		if err := m.UnmarshalText([]byte(s)); err != nil || m.String() != s {
			t.Errorf("round trip %q: %v %v", s, m, err)
		}
	}
	var m network.Mode
	if err := m.UnmarshalText([]byte("macvlan")); err == nil {
		t.Error("macvlan accepted")
	}
}

func ExampleManager_Attach() {
	alloc, _ := ipam.NewPodAllocator(ipam.PodAllocatorConfig{
		Ranges: []ipam.Range{{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Gateway: netip.MustParseAddr("10.244.1.1")}},
		Store:  ipam.NewMemoryStore(),
	})
	// fake.NewLinks stands in for driver/netlink here, so the example runs
	// without root.
	pods, _ := network.NewManager(network.Config{Links: fake.NewLinks(), IPAM: alloc, Mode: network.ModeBridge})
	res, err := pods.Attach(context.Background(), network.Attachment{ContainerID: "abc123", NetNS: "/run/netns/pod"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.IPs[0].Address, "via", res.IPs[0].Gateway)
	// Output: 10.244.1.2/24 via 10.244.1.1
}
