package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func TestBandOffset(t *testing.T) {
	for _, tc := range []struct {
		size                 uint64
		min, max, step, want uint64
	}{
		{16, 16, 256, 16, 0},        // /28: no static band
		{32, 16, 256, 16, 16},       // /27
		{256, 16, 256, 16, 16},      // /24
		{1024, 16, 256, 16, 64},     // /22
		{1 << 16, 16, 256, 16, 256}, // /16
		{1 << 20, 16, 256, 16, 256}, // /12
		{2768, 16, 128, 32, 86},     // default node ports
		{100, 16, 128, 32, 16},
		{10, 16, 128, 32, 0},
		{65535, 16, 128, 32, 128},
	} {
		if got := bandOffset(u64(tc.size), tc.min, tc.max, tc.step); got != tc.want {
			t.Errorf("bandOffset(%d, %d, %d, %d) = %d, want %d", tc.size, tc.min, tc.max, tc.step, got, tc.want)
		}
	}
	if got := bandOffset(u128Max, 16, 256, 16); got != 256 {
		t.Errorf("huge = %d", got)
	}
}

func newCIP(t *testing.T, s Store, cidrs ...string) *ClusterIPAllocator {
	t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, pfx(c))
	}
	a, err := NewClusterIPAllocator(ClusterIPConfig{CIDRs: ps, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestClusterIPBands(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, _ func() Store) {
		ctx := context.Background()
		// /27: 30 usable (.1-.30), static band .1-.16, dynamic .17-.30.
		a := newCIP(t, s, "10.96.0.0/27")
		got := func(owner string, fams []Family, req ...netip.Addr) string {
			t.Helper()
			ips, err := a.Allocate(ctx, owner, fams, req)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(ips)
		}
		if g := got("s0", nil); g != "[10.96.0.17]" {
			t.Fatalf("first dynamic = %s", g)
		}
		if g := got("s0", nil); g != "[10.96.0.17]" {
			t.Fatalf("not idempotent: %s", g)
		}
		if g := got("dns", nil, ip("10.96.0.10")); g != "[10.96.0.10]" {
			t.Fatalf("static = %s", g)
		}
		_, err := a.Allocate(ctx, "x", nil, []netip.Addr{ip("10.96.0.10")})
		wantErr(t, err, ErrConflict, "10.96.0.10", `"dns"`)
		_, err = a.Allocate(ctx, "x", nil, []netip.Addr{ip("10.96.0.0")})
		wantErr(t, err, ErrOutOfRange, "10.96.0.0", "network or broadcast")
		_, err = a.Allocate(ctx, "x", nil, []netip.Addr{ip("10.96.0.31")})
		wantErr(t, err, ErrOutOfRange, "10.96.0.31")
		_, err = a.Allocate(ctx, "x", nil, []netip.Addr{ip("10.97.0.1")})
		wantErr(t, err, ErrOutOfRange, "10.97.0.1", "10.96.0.0/27")
		_, err = a.Allocate(ctx, "x", []Family{IPv6}, nil)
		wantErr(t, err, ErrOutOfRange, "IPv6")
		_, err = a.Allocate(ctx, "dns", nil, []netip.Addr{ip("10.96.0.11")})
		wantErr(t, err, ErrConflict, "already holds 10.96.0.10")
		// Fill the dynamic band: .18-.30 (13 more).
		for i := 1; i <= 13; i++ {
			if g := got(fmt.Sprint("d", i), nil); g != fmt.Sprintf("[10.96.0.%d]", 17+i) {
				t.Fatalf("dynamic %d = %s", i, g)
			}
		}
		// Upper band full: fall back to the static band, skipping .10.
		for i := 1; i <= 15; i++ {
			want := i
			if i >= 10 {
				want = i + 1
			}
			if g := got(fmt.Sprint("f", i), nil); g != fmt.Sprintf("[10.96.0.%d]", want) {
				t.Fatalf("fallback %d = %s", i, g)
			}
		}
		_, err = a.Allocate(ctx, "full", nil, nil)
		wantErr(t, err, ErrExhausted, "10.96.0.0/27")
		// Release and reuse in the upper band.
		if err := a.Release(ctx, "d5"); err != nil {
			t.Fatal(err)
		}
		if g := got("new", nil); g != "[10.96.0.22]" {
			t.Fatalf("after release = %s", g)
		}
		if ips, err := a.Lookup(ctx, "dns"); err != nil || fmt.Sprint(ips) != "[10.96.0.10]" {
			t.Fatalf("Lookup(dns) = %v, %v", ips, err)
		}
		if _, err := a.Lookup(ctx, "d5"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Lookup(d5): %v", err)
		}
	})
}

func TestClusterIPRoundRobin(t *testing.T) {
	ctx := context.Background()
	a := newCIP(t, NewMemoryStore(), "10.0.0.0/24") // static .1-.16, dynamic .17-.254
	first, _ := a.Allocate(ctx, "a", nil, nil)
	a.Release(ctx, "a")
	second, _ := a.Allocate(ctx, "b", nil, nil)
	if fmt.Sprint(first, second) != "[10.0.0.17] [10.0.0.18]" {
		t.Fatalf("got %v then %v; a released IP must not be reused at once", first, second)
	}
	// Wrap at the end of the upper band.
	a.Allocate(ctx, "top", nil, []netip.Addr{ip("10.0.0.254")})
	a2 := newCIP(t, NewMemoryStore(), "10.0.0.0/28") // no static band (size 16)
	ips, _ := a2.Allocate(ctx, "x", nil, nil)
	if fmt.Sprint(ips) != "[10.0.0.1]" {
		t.Fatalf("/28 first = %v", ips)
	}
}

func TestClusterIPDualStack(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	a := newCIP(t, s, "fd00:96::/124", "10.96.0.0/24") // IPv6 primary; /124: 15 usable, no static band
	ips, err := a.Allocate(ctx, "svc", nil, nil)
	if err != nil || fmt.Sprint(ips) != "[fd00:96::1]" {
		t.Fatalf("single-stack default = %v, %v", ips, err)
	}
	ips, err = a.Allocate(ctx, "svc", []Family{IPv6, IPv4}, nil)
	if err != nil || fmt.Sprint(ips) != "[fd00:96::1 10.96.0.17]" {
		t.Fatalf("upgrade to dual-stack = %v, %v", ips, err)
	}
	ips, err = a.Allocate(ctx, "req", []Family{IPv4, IPv6}, []netip.Addr{ip("fd00:96::f"), ip("10.96.0.5")})
	if err != nil || fmt.Sprint(ips) != "[10.96.0.5 fd00:96::f]" {
		t.Fatalf("requested dual = %v, %v", ips, err)
	}
	ips, err = a.Allocate(ctx, "impl", nil, []netip.Addr{ip("10.96.0.6")})
	if err != nil || fmt.Sprint(ips) != "[10.96.0.6]" {
		t.Fatalf("families from requested = %v, %v", ips, err)
	}
	// Exhaust IPv6 (13 left), then a dual-stack request must leave no IPv4.
	for i := 0; i < 13; i++ {
		if _, err := a.Allocate(ctx, fmt.Sprint("v6-", i), []Family{IPv6}, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err = a.Allocate(ctx, "dual", []Family{IPv4, IPv6}, nil)
	wantErr(t, err, ErrExhausted, "IPv6", "fd00:96::/124")
	if _, err := a.Lookup(ctx, "dual"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("IPv4 left allocated after IPv6 failure: %v", err)
	}
	ips, _ = a.Allocate(ctx, "v4only", []Family{IPv4}, nil)
	if fmt.Sprint(ips) != "[10.96.0.18]" {
		t.Fatalf("IPv4 cursor moved by failed allocation: %v", ips)
	}
	for _, bad := range []struct {
		fams []Family
		req  []netip.Addr
		frag string
	}{
		{[]Family{IPv4, IPv4}, nil, "families[1]"},
		{[]Family{Family(5)}, nil, "Family(5)"},
		{[]Family{IPv4}, []netip.Addr{ip("fd00:96::3")}, "requested"},
		{nil, []netip.Addr{ip("10.96.0.7"), ip("10.96.0.8")}, "requested[1]"},
	} {
		_, err := a.Allocate(ctx, "bad", bad.fams, bad.req)
		wantErr(t, err, ErrInvalid, bad.frag)
	}
	owners, _ := a.Owners(ctx)
	if len(owners) != 17 {
		t.Fatalf("owners = %v", owners)
	}
}

func TestClusterIPConfigValidation(t *testing.T) {
	s := NewMemoryStore()
	for _, tc := range []struct {
		cfg       ClusterIPConfig
		fragments []string
	}{
		{ClusterIPConfig{CIDRs: []netip.Prefix{pfx("10.0.0.0/24")}}, []string{"Store"}},
		{ClusterIPConfig{Store: s}, []string{"CIDRs"}},
		{ClusterIPConfig{Store: s, CIDRs: []netip.Prefix{pfx("10.0.0.0/24"), pfx("10.1.0.0/24")}}, []string{`CIDRs[1] "10.1.0.0/24"`, "one per family"}},
		{ClusterIPConfig{Store: s, CIDRs: []netip.Prefix{pfx("10.0.0.0/31")}}, []string{`CIDRs[0] "10.0.0.0/31": prefix too small`}},
		{ClusterIPConfig{Store: s, CIDRs: []netip.Prefix{pfx("fd00::/127")}}, []string{"prefix too small"}},
		{ClusterIPConfig{Store: s, CIDRs: []netip.Prefix{pfx("10.0.0.1/24")}}, []string{`"10.0.0.1/24"`, "host bits"}},
	} {
		_, err := NewClusterIPAllocator(tc.cfg)
		wantErr(t, err, ErrInvalid, tc.fragments...)
	}
}
