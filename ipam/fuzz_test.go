package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"
)

// FuzzAllocator drives a small PodAllocator with allocate / request /
// release / GC sequences and checks it against a map model: no address is
// held twice, allocation is idempotent, exhaustion happens exactly at
// capacity, and failures change nothing.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 0, 4, 8, 12, 16, 20, 1, 2, 6, 3, 0x55})
	f.Add([]byte{1, 0, 4, 8, 12, 16, 20, 24, 28, 2, 3, 0xff, 10, 14})
	f.Add([]byte{1, 4, 9, 14, 19, 24, 29, 34, 39, 44, 49, 3, 0, 0, 4, 8})
	f.Add([]byte{0, 4, 4, 4, 9, 9, 13, 13, 2, 6, 10, 3, 1, 0, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		ctx := context.Background()
		dual := data[0]&1 == 1
		ranges := []Range{{Subnet: pfx("10.0.0.0/29"), Gateway: ip("10.0.0.1"), Exclude: []netip.Prefix{pfx("10.0.0.4/31")}}}
		usable := []string{"10.0.0.2", "10.0.0.3", "10.0.0.6"}
		if dual {
			ranges = append(ranges, Range{Subnet: pfx("fd00::/126"), Start: ip("fd00::2")})
			usable = append(usable, "fd00::2", "fd00::3")
		}
		capacity := 3
		if dual {
			capacity = 2 // the IPv6 range is the limit
		}
		a, err := NewPodAllocator(PodAllocatorConfig{Ranges: ranges, Store: NewMemoryStore()})
		if err != nil {
			t.Fatal(err)
		}
		all := []string{"10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.1.1"}
		model := map[string][]string{} // owner -> addrs (v4 first)
		holder := func(addr string) string {
			for o, as := range model {
				if slices.Contains(as, addr) {
					return o
				}
			}
			return ""
		}
		for i := 1; i < len(data); i++ {
			b := data[i]
			owner := fmt.Sprint("o", (b>>3)%6)
			switch b % 8 {
			case 0, 1, 2: // dynamic allocate
				got, err := a.Allocate(ctx, owner)
				if prev, ok := model[owner]; ok {
					if err != nil || fmt.Sprint(addrList(got)) != fmt.Sprint(prev) {
						t.Fatalf("op %d: re-allocate %s = %v, %v; want %v", i, owner, got, err, prev)
					}
					continue
				}
				if len(model) >= capacity {
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("op %d: allocate beyond capacity: %v, %v", i, got, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("op %d: allocate %s with %d/%d used: %v", i, owner, len(model), capacity, err)
				}
				as := addrList(got)
				if len(as) != len(a.Families()) {
					t.Fatalf("op %d: got %v", i, as)
				}
				for _, ad := range as {
					if h := holder(ad); h != "" {
						t.Fatalf("op %d: %s given to %s but held by %s", i, ad, owner, h)
					}
					if !slices.Contains(usable, ad) {
						t.Fatalf("op %d: unusable address %s handed out", i, ad)
					}
				}
				model[owner] = as
			case 3, 4: // requested IPv4 address
				if i+1 >= len(data) {
					continue
				}
				i++
				req := all[int(data[i])%len(all)]
				got, err := a.Allocate(ctx, owner, ip(req))
				prev, has := model[owner]
				switch {
				case !slices.Contains(usable, req):
					if !errors.Is(err, ErrOutOfRange) {
						t.Fatalf("op %d: request reserved %s: %v", i, req, err)
					}
				case has && prev[0] != req:
					if !errors.Is(err, ErrConflict) {
						t.Fatalf("op %d: %s holds %v, requested %s: %v", i, owner, prev, req, err)
					}
				case has:
					if err != nil || fmt.Sprint(addrList(got)) != fmt.Sprint(prev) {
						t.Fatalf("op %d: re-request = %v, %v", i, got, err)
					}
				case holder(req) != "":
					if !errors.Is(err, ErrConflict) {
						t.Fatalf("op %d: request held %s: %v", i, req, err)
					}
				case len(model) >= capacity:
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("op %d: request %s with IPv6 full: %v, %v", i, req, got, err)
					}
				default:
					if err != nil || addrList(got)[0] != req {
						t.Fatalf("op %d: request free %s = %v, %v", i, req, got, err)
					}
					model[owner] = addrList(got)
				}
			case 5, 6: // release
				if err := a.Release(ctx, owner); err != nil {
					t.Fatal(err)
				}
				delete(model, owner)
			case 7: // GC with a keep-set
				if i+1 >= len(data) {
					continue
				}
				i++
				mask := data[i]
				keep := func(o string) bool {
					var n int
					fmt.Sscanf(o, "o%d", &n)
					return mask&(1<<n) != 0
				}
				released, err := a.GC(ctx, keep)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for o := range model {
					if !keep(o) {
						want = append(want, o)
						delete(model, o)
					}
				}
				sort.Strings(want)
				if fmt.Sprint(released) != fmt.Sprint(want) {
					t.Fatalf("op %d: GC released %v, want %v", i, released, want)
				}
			}
			// Invariants after every step.
			owners, _ := a.Owners(ctx)
			var want []string
			for o := range model {
				want = append(want, o)
			}
			sort.Strings(want)
			if fmt.Sprint(owners) != fmt.Sprint(want) {
				t.Fatalf("op %d: owners %v, model %v", i, owners, want)
			}
			us, _ := a.Usage(ctx)
			for _, u := range us {
				if u.Used != uint64(len(model)) {
					t.Fatalf("op %d: usage %+v with %d owners", i, u, len(model))
				}
			}
			avail, _ := a.Available(ctx)
			if avail != (len(model) < capacity) {
				t.Fatalf("op %d: Available = %v with %d/%d", i, avail, len(model), capacity)
			}
		}
	})
}

func addrList(as []Allocation) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Address.Addr().String())
	}
	return out
}
