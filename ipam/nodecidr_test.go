package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestNodeCIDRAllocator(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, _ func() Store) {
		ctx := context.Background()
		a, err := NewNodeCIDRAllocator(NodeCIDRConfig{
			ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/22"), pfx("fd00:10::/62")},
			Store:        s,
		})
		if err != nil {
			t.Fatal(err)
		}
		alloc := func(node string, req ...netip.Prefix) string {
			t.Helper()
			got, err := a.Allocate(ctx, node, req...)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(got)
		}
		if got := alloc("n1"); got != "[10.244.0.0/24 fd00:10::/64]" {
			t.Fatalf("n1 = %s", got)
		}
		if got := alloc("n1"); got != "[10.244.0.0/24 fd00:10::/64]" {
			t.Fatalf("n1 not idempotent: %s", got)
		}
		if got := alloc("n2", pfx("10.244.3.0/24")); got != "[10.244.3.0/24 fd00:10:0:1::/64]" {
			t.Fatalf("n2 = %s", got)
		}
		if got := alloc("n3"); got != "[10.244.1.0/24 fd00:10:0:2::/64]" {
			t.Fatalf("n3 = %s", got)
		}
		_, err = a.Allocate(ctx, "n4", pfx("10.244.3.0/24"))
		wantErr(t, err, ErrConflict, "10.244.3.0/24", `"n2"`)
		_, err = a.Allocate(ctx, "n4", pfx("10.245.0.0/24"))
		wantErr(t, err, ErrOutOfRange, "10.245.0.0/24")
		_, err = a.Allocate(ctx, "n4", pfx("10.244.2.0/25"))
		wantErr(t, err, ErrOutOfRange, "/24")
		_, err = a.Allocate(ctx, "n4", pfx("10.244.2.1/24"))
		wantErr(t, err, ErrInvalid, "requested[0]")
		_, err = a.Allocate(ctx, "n1", pfx("10.244.2.0/24"))
		wantErr(t, err, ErrConflict, "already holds 10.244.0.0/24")
		if got := alloc("n4"); got != "[10.244.2.0/24 fd00:10:0:3::/64]" {
			t.Fatalf("n4 = %s", got)
		}
		// Both families full now; a fifth node gets nothing.
		_, err = a.Allocate(ctx, "n5")
		wantErr(t, err, ErrExhausted, "/24", "10.244.0.0/22")
		if _, err := a.Lookup(ctx, "n5"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("n5 lookup: %v", err)
		}
		// Release and reuse.
		if err := a.Release(ctx, "n3"); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(ctx, "n3"); err != nil {
			t.Fatal(err)
		}
		if got := alloc("n5"); got != "[10.244.1.0/24 fd00:10:0:2::/64]" {
			t.Fatalf("n5 after release = %s", got)
		}
		got, err := a.Lookup(ctx, "n2")
		if err != nil || fmt.Sprint(got) != "[10.244.3.0/24 fd00:10:0:1::/64]" {
			t.Fatalf("Lookup(n2) = %v, %v", got, err)
		}
		if nodes, _ := a.Nodes(ctx); fmt.Sprint(nodes) != "[n1 n2 n4 n5]" {
			t.Fatalf("Nodes = %v", nodes)
		}
	})
}

func TestNodeCIDRDualStackRollback(t *testing.T) {
	ctx := context.Background()
	a, err := NewNodeCIDRAllocator(NodeCIDRConfig{
		ClusterCIDRs:     []netip.Prefix{pfx("10.0.0.0/16"), pfx("fd00::/63")},
		NodeMaskSizeIPv6: 64,
		Store:            NewMemoryStore(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := a.Allocate(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	_, err = a.Allocate(ctx, "c")
	wantErr(t, err, ErrExhausted, "IPv6")
	if _, err := a.Lookup(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("IPv4 CIDR of c kept after IPv6 failure: %v", err)
	}
	a.Release(ctx, "a")
	got, err := a.Allocate(ctx, "c")
	if err != nil || fmt.Sprint(got) != "[10.0.2.0/24 fd00::/64]" {
		t.Fatalf("c = %v, %v (IPv4 cursor must not have moved on failure)", got, err)
	}
}

func TestNodeCIDRHugeSpaces(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		cluster netip.Prefix
		mask    int
		first   string
		last    netip.Prefix
	}{
		{pfx("fd00:1::/48"), 64, "[fd00:1::/64]", pfx("fd00:1:0:ffff::/64")},
		{pfx("2001:db8::/32"), 64, "[2001:db8::/64]", pfx("2001:db8:ffff:ffff::/64")},
		{pfx("::/0"), 126, "[::/126]", pfx("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126")},
		{pfx("10.0.0.0/8"), 30, "[10.0.0.0/30]", pfx("10.255.255.252/30")},
	} {
		t.Run(tc.cluster.String(), func(t *testing.T) {
			start := time.Now()
			a, err := NewNodeCIDRAllocator(NodeCIDRConfig{ClusterCIDRs: []netip.Prefix{tc.cluster},
				NodeMaskSizeIPv4: tc.mask, NodeMaskSizeIPv6: tc.mask, Store: NewMemoryStore()})
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Allocate(ctx, "n0")
			if err != nil || fmt.Sprint(got) != tc.first {
				t.Fatalf("first = %v, %v; want %s", got, err, tc.first)
			}
			// The very last subnet can be requested and allocation then
			// wraps around past it without enumerating the space.
			if _, err := a.Allocate(ctx, "last", tc.last); err != nil {
				t.Fatal(err)
			}
			for i := 1; i < 100; i++ {
				if _, err := a.Allocate(ctx, fmt.Sprint("n", i)); err != nil {
					t.Fatal(err)
				}
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("too slow: %v", time.Since(start))
			}
		})
	}
}

func TestNodeCIDRConfigValidation(t *testing.T) {
	s := NewMemoryStore()
	for _, tc := range []struct {
		name      string
		cfg       NodeCIDRConfig
		fragments []string
	}{
		{"no store", NodeCIDRConfig{ClusterCIDRs: []netip.Prefix{pfx("10.0.0.0/8")}}, []string{"Store"}},
		{"no cidrs", NodeCIDRConfig{Store: s}, []string{"ClusterCIDRs"}},
		{"unmasked", NodeCIDRConfig{Store: s, ClusterCIDRs: []netip.Prefix{pfx("10.0.0.1/8")}}, []string{`ClusterCIDRs[0] "10.0.0.1/8"`}},
		{"mask shorter than cluster", NodeCIDRConfig{Store: s, ClusterCIDRs: []netip.Prefix{pfx("10.0.0.0/16")}, NodeMaskSizeIPv4: 12},
			[]string{`NodeMaskSizeIPv4 "12"`, "10.0.0.0/16"}},
		{"v6 mask shorter", NodeCIDRConfig{Store: s, ClusterCIDRs: []netip.Prefix{pfx("fd00::/80")}},
			[]string{`NodeMaskSizeIPv6 "64"`, "fd00::/80"}},
		{"v4 mask too long", NodeCIDRConfig{Store: s, ClusterCIDRs: []netip.Prefix{pfx("10.0.0.0/8")}, NodeMaskSizeIPv4: 31},
			[]string{`NodeMaskSizeIPv4 "31"`}},
		{"v6 mask too long", NodeCIDRConfig{Store: s, ClusterCIDRs: []netip.Prefix{pfx("fd00::/8")}, NodeMaskSizeIPv6: 128},
			[]string{`NodeMaskSizeIPv6 "128"`}},
		{"negative", NodeCIDRConfig{Store: s, ClusterCIDRs: []netip.Prefix{pfx("10.0.0.0/8")}, NodeMaskSizeIPv4: -1},
			[]string{`NodeMaskSizeIPv4 "-1"`}},
		{"overlap", NodeCIDRConfig{Store: s, ClusterCIDRs: []netip.Prefix{pfx("10.0.0.0/8"), pfx("10.1.0.0/16")}},
			[]string{`ClusterCIDRs[1] "10.1.0.0/16": overlaps ClusterCIDRs[0]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewNodeCIDRAllocator(tc.cfg)
			wantErr(t, err, ErrInvalid, tc.fragments...)
		})
	}
}
