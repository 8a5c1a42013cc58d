package ipam

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{
		"30000-32767": {30000, 2768},
		" 100 - 200 ": {100, 101},
		"30000+10":    {30000, 11},
		"8080":        {8080, 1},
		"1-65535":     {1, 65535},
	} {
		got, err := ParsePortRange(in)
		if err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "10-5", "0-10", "65000-70000", "-5", "5-", "1+-3", "1-2-3"} {
		_, err := ParsePortRange(in)
		if in == "" {
			wantErr(t, err, ErrInvalid, "PortRange", "empty")
			continue
		}
		wantErr(t, err, ErrInvalid, "PortRange", fmt.Sprintf("%q", in))
	}
	if s := DefaultNodePortRange.String(); s != "30000-32767" {
		t.Fatalf("default = %s", s)
	}
	if r, _ := ParsePortRange(DefaultNodePortRange.String()); r != DefaultNodePortRange {
		t.Fatal("String/Parse do not round-trip")
	}
}

func TestNodePortAllocator(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, _ func() Store) {
		ctx := context.Background()
		// 40 ports: static band 30000-30015, dynamic 30016-30039.
		a, err := NewNodePortAllocator(NodePortConfig{Range: PortRange{30000, 40}, Store: s})
		if err != nil {
			t.Fatal(err)
		}
		p := must[int](t)
		if got := p(a.Allocate(ctx, "svc-a", 0)); got != 30016 {
			t.Fatalf("first dynamic = %d", got)
		}
		if got := p(a.Allocate(ctx, "svc-a", 0)); got != 30017 {
			t.Fatalf("second port of same owner = %d", got)
		}
		if got := p(a.Allocate(ctx, "svc-b", 30005)); got != 30005 {
			t.Fatalf("requested = %d", got)
		}
		if got := p(a.Allocate(ctx, "svc-b", 30005)); got != 30005 {
			t.Fatalf("requested again by holder = %d", got)
		}
		_, err = a.Allocate(ctx, "svc-c", 30005)
		wantErr(t, err, ErrConflict, "30005", `"svc-b"`)
		_, err = a.Allocate(ctx, "svc-c", 29999)
		wantErr(t, err, ErrOutOfRange, "29999", "30000-30039")
		_, err = a.Allocate(ctx, "", 0)
		wantErr(t, err, ErrInvalid, "owner")
		// Fill the dynamic band (22 left), then fall back to static.
		for i := 0; i < 22; i++ {
			if got := p(a.Allocate(ctx, "fill", 0)); got != 30018+i {
				t.Fatalf("fill %d = %d", i, got)
			}
		}
		if got := p(a.Allocate(ctx, "late", 0)); got != 30000 {
			t.Fatalf("static fallback = %d", got)
		}
		for i := 0; i < 14; i++ { // 30001-30015 minus 30005
			p(a.Allocate(ctx, "late", 0))
		}
		_, err = a.Allocate(ctx, "late", 0)
		wantErr(t, err, ErrExhausted, "30000-30039")
		if ports := must[[]int](t)(a.Ports(ctx, "svc-a")); fmt.Sprint(ports) != "[30016 30017]" {
			t.Fatalf("Ports = %v", ports)
		}
		if err := a.ReleasePort(ctx, 30017); err != nil {
			t.Fatal(err)
		}
		if err := a.ReleasePort(ctx, 30017); err != nil {
			t.Fatal(err)
		}
		wantErr(t, a.ReleasePort(ctx, 80), ErrOutOfRange, "80")
		if got := p(a.Allocate(ctx, "new", 0)); got != 30017 {
			t.Fatalf("reuse = %d", got)
		}
		if err := a.Release(ctx, "fill"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Ports(ctx, "fill"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Ports after Release: %v", err)
		}
		// Round-robin: next dynamic continues after 30017, not at 30018's
		// neighbour just freed... it is 30018, the next after the cursor.
		if got := p(a.Allocate(ctx, "rr", 0)); got != 30018 {
			t.Fatalf("round-robin after release = %d", got)
		}
		if got := p(a.Allocate(ctx, "rr", 0)); got != 30019 {
			t.Fatalf("round-robin = %d", got)
		}
	})
}

func TestNodePortDefaults(t *testing.T) {
	a, err := NewNodePortAllocator(NodePortConfig{Store: NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	if a.Range() != DefaultNodePortRange {
		t.Fatalf("Range = %v", a.Range())
	}
	got, err := a.Allocate(context.Background(), "svc", 0)
	if err != nil || got != 30086 { // static band is 2768/32 = 86 ports
		t.Fatalf("first = %d, %v", got, err)
	}
	_, err = NewNodePortAllocator(NodePortConfig{Store: NewMemoryStore(), Range: PortRange{65000, 1000}})
	wantErr(t, err, ErrInvalid, "Range", "65000-65999")
	_, err = NewNodePortAllocator(NodePortConfig{})
	wantErr(t, err, ErrInvalid, "Store")
}
