package ipam

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"testing"
)

func newPod(t *testing.T, s Store, ranges ...Range) *PodAllocator {
	t.Helper()
	a, err := NewPodAllocator(PodAllocatorConfig{Ranges: ranges, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func addrsOf(as []Allocation) string {
	var s []string
	for _, a := range as {
		s = append(s, a.Address.String())
	}
	return fmt.Sprint(s)
}

// step is one operation of a scripted allocator scenario.
type step struct {
	op    string // alloc, release, lookup
	owner string
	req   []netip.Addr
	want  string // addrsOf result, for alloc/lookup
	err   error
}

func runSteps(t *testing.T, a *PodAllocator, steps []step) {
	t.Helper()
	ctx := context.Background()
	for i, st := range steps {
		var got []Allocation
		var err error
		switch st.op {
		case "alloc":
			got, err = a.Allocate(ctx, st.owner, st.req...)
		case "release":
			err = a.Release(ctx, st.owner)
		case "lookup":
			got, err = a.Lookup(ctx, st.owner)
		}
		if st.err != nil {
			if !errors.Is(err, st.err) {
				t.Fatalf("step %d %s(%s): err %v, want %v", i, st.op, st.owner, err, st.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d %s(%s): %v", i, st.op, st.owner, err)
		}
		if st.want != "" && addrsOf(got) != st.want {
			t.Fatalf("step %d %s(%s) = %s, want %s", i, st.op, st.owner, addrsOf(got), st.want)
		}
	}
}

func TestPodAllocatorScenarios(t *testing.T) {
	small := Range{Subnet: pfx("10.0.0.0/29"), Gateway: ip("10.0.0.1"), Exclude: []netip.Prefix{pfx("10.0.0.4/31")}}
	tests := []struct {
		name   string
		ranges []Range
		steps  []step
	}{
		{
			name:   "skips network broadcast gateway excluded; wraps round-robin",
			ranges: []Range{small},
			steps: []step{
				{op: "alloc", owner: "a", want: "[10.0.0.2/29]"},
				{op: "alloc", owner: "b", want: "[10.0.0.3/29]"},
				{op: "alloc", owner: "c", want: "[10.0.0.6/29]"},
				{op: "alloc", owner: "d", err: ErrExhausted},
				{op: "alloc", owner: "a", want: "[10.0.0.2/29]"}, // idempotent
				{op: "release", owner: "b"},
				{op: "release", owner: "b"}, // idempotent
				{op: "alloc", owner: "e", want: "[10.0.0.3/29]"},
				{op: "release", owner: "a"},
				{op: "alloc", owner: "f", want: "[10.0.0.2/29]"}, // wrap from .3 past .6
				{op: "lookup", owner: "e", want: "[10.0.0.3/29]"},
				{op: "lookup", owner: "a", err: ErrNotFound},
			},
		},
		{
			name:   "round-robin does not reuse a just-released address",
			ranges: []Range{{Subnet: pfx("10.1.0.0/28")}},
			steps: []step{
				{op: "alloc", owner: "a", want: "[10.1.0.1/28]"},
				{op: "release", owner: "a"},
				{op: "alloc", owner: "b", want: "[10.1.0.2/28]"},
				{op: "alloc", owner: "a", want: "[10.1.0.3/28]"},
			},
		},
		{
			name:   "start and end bound the range",
			ranges: []Range{{Subnet: pfx("10.0.0.0/24"), Start: ip("10.0.0.10"), End: ip("10.0.0.12")}},
			steps: []step{
				{op: "alloc", owner: "a", want: "[10.0.0.10/24]"},
				{op: "alloc", owner: "b", want: "[10.0.0.11/24]"},
				{op: "alloc", owner: "c", want: "[10.0.0.12/24]"},
				{op: "alloc", owner: "d", err: ErrExhausted},
				{op: "alloc", owner: "d", req: []netip.Addr{ip("10.0.0.13")}, err: ErrOutOfRange},
			},
		},
		{
			name:   "ipv6 skips only the subnet-router anycast address",
			ranges: []Range{{Subnet: pfx("fd00::/126")}},
			steps: []step{
				{op: "alloc", owner: "a", want: "[fd00::1/126]"},
				{op: "alloc", owner: "b", want: "[fd00::2/126]"},
				{op: "alloc", owner: "c", want: "[fd00::3/126]"},
				{op: "alloc", owner: "d", err: ErrExhausted},
				{op: "alloc", owner: "d", req: []netip.Addr{ip("fd00::")}, err: ErrOutOfRange},
			},
		},
		{
			name:   "requested addresses",
			ranges: []Range{small, {Subnet: pfx("fd00::/64")}},
			steps: []step{
				{op: "alloc", owner: "a", req: []netip.Addr{ip("10.0.0.6")}, want: "[10.0.0.6/29 fd00::1/64]"},
				{op: "alloc", owner: "a", req: []netip.Addr{ip("10.0.0.6")}, want: "[10.0.0.6/29 fd00::1/64]"},
				{op: "alloc", owner: "a", req: []netip.Addr{ip("10.0.0.3")}, err: ErrConflict},
				{op: "alloc", owner: "b", req: []netip.Addr{ip("10.0.0.6")}, err: ErrConflict},
				{op: "alloc", owner: "b", req: []netip.Addr{ip("10.0.0.1")}, err: ErrOutOfRange}, // gateway
				{op: "alloc", owner: "b", req: []netip.Addr{ip("10.0.0.5")}, err: ErrOutOfRange}, // excluded
				{op: "alloc", owner: "b", req: []netip.Addr{ip("10.0.0.7")}, err: ErrOutOfRange}, // broadcast
				{op: "alloc", owner: "b", req: []netip.Addr{ip("10.0.1.1")}, err: ErrOutOfRange},
				{op: "alloc", owner: "b", req: []netip.Addr{ip("fd01::1")}, err: ErrOutOfRange},
				{op: "alloc", owner: "b", req: []netip.Addr{ip("10.0.0.2"), ip("10.0.0.3")}, err: ErrInvalid},
				{op: "alloc", owner: "b", req: []netip.Addr{ip("fd00::1")}, err: ErrConflict},
				{op: "alloc", owner: "b", req: []netip.Addr{ip("::ffff:10.0.0.3"), ip("fd00::beef")}, want: "[10.0.0.3/29 fd00::beef/64]"},
				{op: "lookup", owner: "b", want: "[10.0.0.3/29 fd00::beef/64]"},
			},
		},
		{
			name:   "range set continues across ranges and wraps",
			ranges: []Range{{Subnet: pfx("10.0.0.0/30")}, {Subnet: pfx("10.0.1.0/30")}},
			steps: []step{
				{op: "alloc", owner: "a", want: "[10.0.0.1/30]"},
				{op: "alloc", owner: "b", want: "[10.0.0.2/30]"},
				{op: "alloc", owner: "c", want: "[10.0.1.1/30]"},
				{op: "release", owner: "a"},
				{op: "alloc", owner: "d", want: "[10.0.1.2/30]"},
				{op: "alloc", owner: "e", want: "[10.0.0.1/30]"},
				{op: "alloc", owner: "f", err: ErrExhausted},
			},
		},
		{
			name:   "dual-stack rollback when IPv6 is exhausted",
			ranges: []Range{{Subnet: pfx("10.0.0.0/24")}, {Subnet: pfx("fd00::/126")}},
			steps: []step{
				{op: "alloc", owner: "a", want: "[10.0.0.1/24 fd00::1/126]"},
				{op: "alloc", owner: "b", want: "[10.0.0.2/24 fd00::2/126]"},
				{op: "alloc", owner: "c", want: "[10.0.0.3/24 fd00::3/126]"},
				{op: "alloc", owner: "d", err: ErrExhausted},
				{op: "lookup", owner: "d", err: ErrNotFound},
				{op: "release", owner: "b"},
				// The failed attempt did not advance the IPv4 cursor either.
				{op: "alloc", owner: "d", want: "[10.0.0.4/24 fd00::2/126]"},
			},
		},
		{
			name:   "dual-stack rollback when IPv4 is exhausted",
			ranges: []Range{{Subnet: pfx("fd00::/64")}, {Subnet: pfx("10.0.0.0/30")}},
			steps: []step{
				{op: "alloc", owner: "a", want: "[10.0.0.1/30 fd00::1/64]"},
				{op: "alloc", owner: "b", want: "[10.0.0.2/30 fd00::2/64]"},
				{op: "alloc", owner: "c", err: ErrExhausted},
				{op: "lookup", owner: "c", err: ErrNotFound},
				{op: "release", owner: "a"},
				{op: "alloc", owner: "c", want: "[10.0.0.1/30 fd00::3/64]"},
			},
		},
		{
			name: "huge excluded blocks are jumped over, not walked",
			ranges: []Range{{Subnet: pfx("fd00::/64"), Exclude: []netip.Prefix{
				pfx("fd00::/65"), pfx("fd00::8000:0:0:0/66")}}},
			steps: []step{
				{op: "alloc", owner: "a", want: "[fd00::c000:0:0:0/64]"},
				{op: "alloc", owner: "b", want: "[fd00::c000:0:0:1/64]"},
			},
		},
		{
			name:   "cursor at the very last IPv6 address wraps",
			ranges: []Range{{Subnet: pfx("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126")}},
			steps: []step{
				{op: "alloc", owner: "a", req: []netip.Addr{ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")}},
				{op: "alloc", owner: "b", want: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd/126]"},
				{op: "alloc", owner: "c", want: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/126]"},
				{op: "alloc", owner: "d", err: ErrExhausted},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s Store, _ func() Store) {
				runSteps(t, newPod(t, s, tc.ranges...), tc.steps)
			})
		})
	}
}

func TestPodAllocatorGateway(t *testing.T) {
	a := newPod(t, NewMemoryStore(), Range{Subnet: pfx("10.0.0.0/24"), Gateway: ip("10.0.0.1")}, Range{Subnet: pfx("fd00::/64")})
	got := must[[]Allocation](t)(a.Allocate(context.Background(), PodOwner("c1", "eth0")))
	want := []Allocation{
		{Address: pfx("10.0.0.2/24"), Gateway: ip("10.0.0.1")},
		{Address: pfx("fd00::1/64")},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestPodAllocatorErrorsNameValues(t *testing.T) {
	ctx := context.Background()
	a := newPod(t, NewMemoryStore(), Range{Subnet: pfx("10.0.0.0/29")})
	must[[]Allocation](t)(a.Allocate(ctx, "holder", ip("10.0.0.3")))
	_, err := a.Allocate(ctx, "other", ip("10.0.0.3"))
	wantErr(t, err, ErrConflict, "10.0.0.3", `"holder"`)
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Holder != "holder" || ce.Resource != "10.0.0.3" {
		t.Fatalf("ConflictError = %+v", ce)
	}
	_, err = a.Allocate(ctx, "other", ip("10.9.0.3"))
	wantErr(t, err, ErrOutOfRange, "10.9.0.3")
	_, err = a.Allocate(ctx, "other", ip("fd00::3"))
	wantErr(t, err, ErrOutOfRange, "fd00::3", "IPv6")
	_, err = a.Allocate(ctx, "other", netip.Addr{})
	wantErr(t, err, ErrInvalid, "requested[0]")
	_, err = a.Allocate(ctx, "other", ip("fe80::1%eth0"))
	wantErr(t, err, ErrInvalid, "zone")
	for i := 0; i < 5; i++ {
		a.Allocate(ctx, fmt.Sprint("fill", i))
	}
	_, err = a.Allocate(ctx, "late")
	wantErr(t, err, ErrExhausted, "IPv4", "10.0.0.0/29")
}

func TestPodAllocatorOwnerValidation(t *testing.T) {
	ctx := context.Background()
	a := newPod(t, NewMemoryStore(), Range{Subnet: pfx("10.0.0.0/24")})
	for _, o := range []string{"", "bad\nowner", string(make([]byte, MaxOwnerLen+1)), "\xff\xfe"} {
		if _, err := a.Allocate(ctx, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("Allocate(%q): %v, want ErrInvalid", o, err)
		}
		if err := a.Release(ctx, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("Release(%q): %v, want ErrInvalid", o, err)
		}
	}
	if o := PodOwner("abc123", "eth0"); o != "abc123/eth0" {
		t.Fatalf("PodOwner = %q", o)
	}
}

func TestPodAllocatorGC(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, _ func() Store) {
		ctx := context.Background()
		a := newPod(t, s, Range{Subnet: pfx("10.0.0.0/24")}, Range{Subnet: pfx("fd00::/64")})
		for _, o := range []string{"p1", "p2", "p3", "p4"} {
			must[[]Allocation](t)(a.Allocate(ctx, o))
		}
		keep := map[string]bool{"p2": true, "p4": true, "ghost": true}
		released := must[[]string](t)(a.GC(ctx, func(o string) bool { return keep[o] }))
		if fmt.Sprint(released) != "[p1 p3]" {
			t.Fatalf("released %v", released)
		}
		if owners := must[[]string](t)(a.Owners(ctx)); fmt.Sprint(owners) != "[p2 p4]" {
			t.Fatalf("owners after GC %v", owners)
		}
		if _, err := a.Lookup(ctx, "p1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("p1 after GC: %v", err)
		}
		us := must[[]RangeUsage](t)(a.Usage(ctx))
		if us[0].Used != 2 || us[1].Used != 2 {
			t.Fatalf("usage after GC %+v", us)
		}
		if r := must[[]string](t)(a.GC(ctx, func(string) bool { return true })); len(r) != 0 {
			t.Fatalf("GC keeping all released %v", r)
		}
		if _, err := a.GC(ctx, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("GC(nil): %v", err)
		}
	})
}

func TestPodAllocatorUsageAvailable(t *testing.T) {
	ctx := context.Background()
	a := newPod(t, NewMemoryStore(),
		Range{Subnet: pfx("10.0.0.0/29"), Gateway: ip("10.0.0.1"), Exclude: []netip.Prefix{pfx("10.0.0.4/31")}},
		Range{Subnet: pfx("fd00::/64")})
	us := must[[]RangeUsage](t)(a.Usage(ctx))
	want := []RangeUsage{
		{Subnet: pfx("10.0.0.0/29"), Family: IPv4, Capacity: 3},
		{Subnet: pfx("fd00::/64"), Family: IPv6, Capacity: math.MaxUint64},
	}
	if !slices.Equal(us, want) {
		t.Fatalf("Usage = %+v, want %+v", us, want)
	}
	for i := 0; i < 3; i++ {
		if ok := must[bool](t)(a.Available(ctx)); !ok {
			t.Fatalf("not available after %d allocations", i)
		}
		must[[]Allocation](t)(a.Allocate(ctx, fmt.Sprint("o", i)))
	}
	if ok := must[bool](t)(a.Available(ctx)); ok {
		t.Fatal("available although IPv4 is full")
	}
	us = must[[]RangeUsage](t)(a.Usage(ctx))
	if us[0].Used != 3 || us[0].Free() != 0 || us[1].Used != 3 {
		t.Fatalf("Usage = %+v", us)
	}
	if fams := a.Families(); fmt.Sprint(fams) != "[IPv4 IPv6]" {
		t.Fatalf("Families = %v", fams)
	}
}

func TestPodAllocatorConfigValidation(t *testing.T) {
	s := NewMemoryStore()
	tests := []struct {
		name      string
		cfg       PodAllocatorConfig
		fragments []string
	}{
		{"no store", PodAllocatorConfig{Ranges: []Range{{Subnet: pfx("10.0.0.0/24")}}}, []string{"Store"}},
		{"no ranges", PodAllocatorConfig{Store: s}, []string{"Ranges"}},
		{"bad space", PodAllocatorConfig{Store: s, Space: "a\nb", Ranges: []Range{{Subnet: pfx("10.0.0.0/24")}}}, []string{"Space"}},
		{"zero subnet", PodAllocatorConfig{Store: s, Ranges: []Range{{}}}, []string{"Ranges[0].Subnet"}},
		{"unmasked", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.5/24")}}},
			[]string{"Ranges[0].Subnet", `"10.0.0.5/24"`, "10.0.0.0/24"}},
		{"v4 /31", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24")}, {Subnet: pfx("10.0.1.0/31")}}},
			[]string{`Ranges[1].Subnet "10.0.1.0/31": prefix too small`}},
		{"v4 /32", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.1/32")}}}, []string{"prefix too small"}},
		{"v6 /127", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("fd00::/127")}}}, []string{`"fd00::/127": prefix too small`}},
		{"v6 /128", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("fd00::1/128")}}}, []string{"prefix too small"}},
		{"mapped", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("::ffff:10.0.0.0/120")}}}, []string{"IPv4-mapped"}},
		{"start outside", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24"), Start: ip("10.0.1.1")}}},
			[]string{`Ranges[0].Start "10.0.1.1": outside Subnet 10.0.0.0/24`}},
		{"end outside", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24"), End: ip("fd00::1")}}},
			[]string{`Ranges[0].End "fd00::1"`}},
		{"end before start", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24"), Start: ip("10.0.0.9"), End: ip("10.0.0.3")}}},
			[]string{"Ranges[0].End", "10.0.0.3", "before Start"}},
		{"gateway outside", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24"), Gateway: ip("10.0.1.1")}}},
			[]string{`Ranges[0].Gateway "10.0.1.1"`}},
		{"exclude outside", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24"), Exclude: []netip.Prefix{pfx("10.0.0.0/28"), pfx("10.1.0.0/28")}}}},
			[]string{`Ranges[0].Exclude[1] "10.1.0.0/28": outside Subnet`}},
		{"exclude unmasked", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24"), Exclude: []netip.Prefix{pfx("10.0.0.3/28")}}}},
			[]string{"Ranges[0].Exclude[0]", "10.0.0.3/28"}},
		{"all excluded", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/30"), Gateway: ip("10.0.0.1"), Exclude: []netip.Prefix{pfx("10.0.0.2/32")}}}},
			[]string{`Ranges[0] "10.0.0.0/30": no usable addresses`}},
		{"overlap", PodAllocatorConfig{Store: s, Ranges: []Range{{Subnet: pfx("10.0.0.0/24")}, {Subnet: pfx("fd00::/64")}, {Subnet: pfx("10.0.0.128/25")}}},
			[]string{`Ranges[2].Subnet "10.0.0.128/25": overlaps Ranges[0]`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewPodAllocator(tc.cfg)
			if a != nil {
				t.Fatal("allocator returned with error")
			}
			wantErr(t, err, ErrInvalid, tc.fragments...)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field == "" {
				t.Fatalf("not a *ConfigError with a field: %#v", err)
			}
		})
	}
	// Disjoint Start/End pieces of one subnet are fine.
	_, err := NewPodAllocator(PodAllocatorConfig{Store: s, Ranges: []Range{
		{Subnet: pfx("10.0.0.0/24"), End: ip("10.0.0.99")},
		{Subnet: pfx("10.0.0.0/24"), Start: ip("10.0.0.100")},
	}})
	if err != nil {
		t.Fatal(err)
	}
}
