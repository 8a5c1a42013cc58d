package ipam

import (
	"context"
	"fmt"
	"net/netip"
)

// Range is one pool of pod addresses.
type Range struct {
	// Subnet is the on-link subnet; required and masked (no host bits). An
	// IPv4 subnet must be /30 or larger, an IPv6 one /126 or larger.
	Subnet netip.Prefix
	// Start and End optionally bound the addresses handed out; both must lie
	// inside Subnet. The defaults are the first and last usable addresses.
	Start, End netip.Addr
	// Gateway is optional; when set it must lie inside Subnet, is never
	// handed out and is reported in every Allocation from this range. No
	// gateway is assumed when it is unset (unlike host-local, which defaults
	// to the first address).
	Gateway netip.Addr
	// Exclude lists prefixes inside Subnet that are never handed out.
	Exclude []netip.Prefix
}

// PodAllocatorConfig configures a PodAllocator.
type PodAllocatorConfig struct {
	// Ranges holds one or more ranges per family. Several ranges of one
	// family form a set tried in order (continuing round-robin across the
	// set); they must not overlap.
	Ranges []Range
	// Store keeps the reservations; required.
	Store Store
	// Space names the store space holding this allocator's reservations
	// (default "pods"). Allocators sharing a Store must use distinct spaces
	// unless they manage the same pool (like host-local's network name).
	Space string
}

// Allocation is one address handed to an owner.
type Allocation struct {
	// Address is the address with the prefix length of its range's subnet,
	// e.g. 10.244.1.5/24.
	Address netip.Prefix
	// Gateway is the range's gateway, or the zero Addr when none is set.
	Gateway netip.Addr
}

// RangeUsage reports the occupancy of one configured range.
type RangeUsage struct {
	Subnet   netip.Prefix
	Family   Family
	Capacity uint64 // usable addresses (saturates at math.MaxUint64)
	Used     uint64 // addresses held inside the range
}

// Free returns the number of addresses still available in the range.
func (u RangeUsage) Free() uint64 {
	if u.Used >= u.Capacity {
		return 0
	}
	return u.Capacity - u.Used
}

// PodAllocator hands out pod addresses from per-node ranges, like the CNI
// host-local plugin. All reservations of the allocator live in one store
// space, so a dual-stack allocation is committed (or discarded) as a whole.
// It is safe for concurrent use, and several processes may share a
// FileStore.
type PodAllocator struct {
	store Store
	space string
	fams  []Family      // configured families, IPv4 first
	sets  [][]*podRange // parallel to fams
	all   []*podRange   // in configuration order
}

type podRange struct {
	Range
	is4         bool
	first, last u128
	skip        []ival // merged reserved addresses (network, broadcast, gateway, excludes)
	capacity    u128
}

// DefaultPodSpace is the store space of a PodAllocator whose Config.Space
// is empty.
const DefaultPodSpace = "pods"

// ReleasePodOwner frees owner's addresses in space ("" means
// DefaultPodSpace) without knowing the allocator's ranges: for tearing
// pods down when a node's ranges are gone (a node reset, a lost range
// file). Releasing an owner holding nothing is not an error.
func ReleasePodOwner(ctx context.Context, s Store, space, owner string) error {
	if space == "" {
		space = DefaultPodSpace
	}
	if err := validateSpace("space", space); err != nil {
		return err
	}
	return releaseOwner(ctx, s, space, "owner", owner)
}

// NewPodAllocator validates cfg and returns an allocator. It does no I/O.
func NewPodAllocator(cfg PodAllocatorConfig) (*PodAllocator, error) {
	if cfg.Store == nil {
		return nil, cfgErr("Store", "", "required")
	}
	space := cfg.Space
	if space == "" {
		space = DefaultPodSpace
	}
	if err := validateSpace("Space", space); err != nil {
		return nil, err
	}
	if len(cfg.Ranges) == 0 {
		return nil, cfgErr("Ranges", "", "at least one range is required")
	}
	a := &PodAllocator{store: cfg.Store, space: space}
	for i, r := range cfg.Ranges {
		field := fmt.Sprintf("Ranges[%d]", i)
		pr, err := newPodRange(field, r)
		if err != nil {
			return nil, err
		}
		for j, o := range a.all {
			if o.is4 == pr.is4 && o.first.cmp(pr.last) <= 0 && pr.first.cmp(o.last) <= 0 {
				return nil, cfgErr(field+".Subnet", r.Subnet.String(), "overlaps Ranges[%d] (%s)", j, o.describe())
			}
		}
		a.all = append(a.all, pr)
	}
	for _, fam := range []Family{IPv4, IPv6} {
		var set []*podRange
		for _, r := range a.all {
			if r.is4 == (fam == IPv4) {
				set = append(set, r)
			}
		}
		if set != nil {
			a.fams = append(a.fams, fam)
			a.sets = append(a.sets, set)
		}
	}
	return a, nil
}

func newPodRange(field string, r Range) (*podRange, error) {
	sub, err := normPrefix(field+".Subnet", r.Subnet)
	if err != nil {
		return nil, err
	}
	pr := &podRange{Range: r, is4: sub.Addr().Is4()}
	pr.Subnet = sub
	if pr.is4 && sub.Bits() > 30 {
		return nil, cfgErr(field+".Subnet", sub.String(), "prefix too small: an IPv4 pod subnet needs /30 or larger")
	}
	if !pr.is4 && sub.Bits() > 126 {
		return nil, cfgErr(field+".Subnet", sub.String(), "prefix too small: an IPv6 pod subnet needs /126 or larger")
	}
	netLo, netHi := prefixBounds(sub)
	reserved := []ival{{netLo, netLo}} // network address; IPv6 subnet-router anycast
	pr.first, pr.last = netLo.inc(), netHi
	if pr.is4 {
		reserved = append(reserved, ival{netHi, netHi}) // broadcast
		pr.last = netHi.dec()
	}
	inSubnet := func(name string, a netip.Addr) (netip.Addr, error) {
		a, err := normAddr(field+"."+name, a)
		if err != nil {
			return a, err
		}
		if !sub.Contains(a) {
			return a, cfgErr(field+"."+name, a.String(), "outside Subnet %s", sub)
		}
		return a, nil
	}
	if r.Start.IsValid() {
		if pr.Start, err = inSubnet("Start", r.Start); err != nil {
			return nil, err
		}
		pr.first = addrToU128(pr.Start)
	}
	if r.End.IsValid() {
		if pr.End, err = inSubnet("End", r.End); err != nil {
			return nil, err
		}
		pr.last = addrToU128(pr.End)
	}
	if pr.first.cmp(pr.last) > 0 {
		return nil, cfgErr(field+".End", u128ToAddr(pr.last, pr.is4).String(), "before Start %s", u128ToAddr(pr.first, pr.is4))
	}
	if r.Gateway.IsValid() {
		if pr.Gateway, err = inSubnet("Gateway", r.Gateway); err != nil {
			return nil, err
		}
		g := addrToU128(pr.Gateway)
		reserved = append(reserved, ival{g, g})
	}
	pr.Exclude = nil
	for j, e := range r.Exclude {
		ef := fmt.Sprintf("%s.Exclude[%d]", field, j)
		p, err := normPrefix(ef, e)
		if err != nil {
			return nil, err
		}
		if !sub.Overlaps(p) {
			return nil, cfgErr(ef, p.String(), "outside Subnet %s", sub)
		}
		lo, hi := prefixBounds(p)
		reserved = append(reserved, ival{lo, hi})
		pr.Exclude = append(pr.Exclude, p)
	}
	pr.skip = mergeIvals(reserved)
	pr.capacity = count(pr.first, pr.last).sub(ivalCount(pr.skip, pr.first, pr.last))
	if pr.capacity == (u128{}) {
		return nil, cfgErr(field, sub.String(), "no usable addresses (all reserved or excluded)")
	}
	return pr, nil
}

func (r *podRange) describe() string {
	return fmt.Sprintf("%s, %s-%s", r.Subnet, u128ToAddr(r.first, r.is4), u128ToAddr(r.last, r.is4))
}

// contains reports whether a lies within the range's [Start, End].
func (r *podRange) contains(a netip.Addr) bool {
	if a.Is4() != r.is4 {
		return false
	}
	v := addrToU128(a)
	return r.first.cmp(v) <= 0 && v.cmp(r.last) <= 0
}

func (r *podRange) reserved(a netip.Addr) bool {
	_, ok := ivalAt(r.skip, addrToU128(a))
	return ok
}

func (r *podRange) alloc(a netip.Addr) Allocation {
	return Allocation{Address: netip.PrefixFrom(a, r.Subnet.Bits()), Gateway: r.Gateway}
}

// find returns the range of set containing a.
func findRange(set []*podRange, a netip.Addr) *podRange {
	for _, r := range set {
		if r.contains(a) {
			return r
		}
	}
	return nil
}

func (a *PodAllocator) famIndex(f Family) int {
	for i, ff := range a.fams {
		if ff == f {
			return i
		}
	}
	return -1
}

// Families returns the configured families, IPv4 first.
func (a *PodAllocator) Families() []Family { return append([]Family(nil), a.fams...) }

// Allocate returns the addresses of owner, one per configured family (IPv4
// first), reserving them if needed. It is idempotent: an owner that already
// holds an address of a family keeps it. requested optionally names at most
// one specific address per family; it fails with ErrConflict if another
// owner holds it and ErrOutOfRange if no range offers it. Dynamic addresses
// are chosen round-robin after the last one handed out, wrapping, skipping
// the network address, the IPv4 broadcast address, gateways and excluded
// prefixes. Either every family is allocated or nothing is changed.
func (a *PodAllocator) Allocate(ctx context.Context, owner string, requested ...netip.Addr) ([]Allocation, error) {
	if err := validateOwner("owner", owner); err != nil {
		return nil, err
	}
	req := make([]netip.Addr, len(a.fams))
	for i, r := range requested {
		field := fmt.Sprintf("requested[%d]", i)
		r, err := normAddr(field, r)
		if err != nil {
			return nil, err
		}
		fi := a.famIndex(FamilyOf(r))
		if fi < 0 {
			return nil, errorf(ErrOutOfRange, "requested %s: no %s range configured", r, FamilyOf(r))
		}
		if req[fi].IsValid() {
			return nil, cfgErr(field, r.String(), "second requested %s address (already %s)", FamilyOf(r), req[fi])
		}
		set := a.sets[fi]
		pr := findRange(set, r)
		if pr == nil {
			return nil, errorf(ErrOutOfRange, "requested %s is outside every %s range", r, FamilyOf(r))
		}
		if pr.reserved(r) {
			return nil, errorf(ErrOutOfRange, "requested %s is reserved in range %s (network, broadcast, gateway or excluded)", r, pr.Subnet)
		}
		req[fi] = r
	}
	var out []Allocation
	err := a.store.Transact(ctx, a.space, func(t *Txn) error {
		out = out[:0]
		var held []netip.Addr
		for _, k := range t.KeysOf(owner) {
			if ad, err := netip.ParseAddr(k); err == nil {
				held = append(held, ad)
			}
		}
		cursor := t.Cursor()
		for fi, fam := range a.fams {
			set := a.sets[fi]
			var existing netip.Addr
			var exR *podRange
			for _, h := range held {
				if r := findRange(set, h); r != nil {
					existing, exR = h, r
					break
				}
			}
			if existing.IsValid() {
				if req[fi].IsValid() && req[fi] != existing {
					return errorf(ErrConflict, "owner %q already holds %s, cannot also take requested %s", owner, existing, req[fi])
				}
				out = append(out, exR.alloc(existing))
				continue
			}
			if r := req[fi]; r.IsValid() {
				key := r.String()
				if h, ok := t.Get(key); ok {
					return &ConflictError{Resource: key, Holder: h}
				}
				t.Put(key, owner)
				out = append(out, findRange(set, r).alloc(r))
				continue
			}
			cur, hasCur := cursorAddr(cursor, fam)
			got, pr, ok := nextFree(t, set, cur, hasCur)
			if !ok {
				return errorf(ErrExhausted, "no free %s address in %s", fam, describeSet(set))
			}
			t.Put(got.String(), owner)
			cursor = setCursorEntry(cursor, fam, got.String())
			out = append(out, pr.alloc(got))
		}
		t.SetCursor(cursor)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func describeSet(set []*podRange) string {
	s := ""
	for i, r := range set {
		if i > 0 {
			s += ", "
		}
		s += r.Subnet.String()
	}
	return s
}

// nextFree scans the range set round-robin, starting after cur.
func nextFree(t *Txn, set []*podRange, cur netip.Addr, hasCur bool) (netip.Addr, *podRange, bool) {
	n := len(set)
	idx, start := 0, set[0].first
	if hasCur {
		for i, r := range set {
			if r.contains(cur) {
				v := addrToU128(cur)
				if v == r.last {
					idx = (i + 1) % n
					start = set[idx].first
				} else {
					idx, start = i, v.inc()
				}
				break
			}
		}
	}
	for i := 0; i <= n; i++ {
		r := set[(idx+i)%n]
		from, to := r.first, r.last
		if i == 0 {
			from = start
		}
		if i == n {
			if start == r.first {
				break
			}
			to = start.dec()
		}
		held := func(v u128) bool {
			_, ok := t.Get(u128ToAddr(v, r.is4).String())
			return ok
		}
		if v, ok := scanFree(from, to, r.skip, held); ok {
			return u128ToAddr(v, r.is4), r, true
		}
	}
	return netip.Addr{}, nil, false
}

// Release frees every address of owner. It is idempotent: releasing an
// owner that holds nothing returns nil.
func (a *PodAllocator) Release(ctx context.Context, owner string) error {
	return releaseOwner(ctx, a.store, a.space, "owner", owner)
}

// Lookup returns the addresses owner holds in the configured ranges, IPv4
// first, or an error wrapping ErrNotFound.
func (a *PodAllocator) Lookup(ctx context.Context, owner string) ([]Allocation, error) {
	return lookupOwned(ctx, a.store, a.space, "owner", owner, "address", func(keys []string) []Allocation {
		var out []Allocation
		for fi := range a.fams {
			for _, k := range keys {
				if ad, err := netip.ParseAddr(k); err == nil {
					if r := findRange(a.sets[fi], ad); r != nil {
						out = append(out, r.alloc(ad))
					}
				}
			}
		}
		return out
	})
}

// Owners returns every owner holding an address, sorted.
func (a *PodAllocator) Owners(ctx context.Context) ([]string, error) {
	return ownersOf(ctx, a.store, a.space)
}

// GC releases every owner for which keep returns false and returns them,
// sorted. keep runs while the store space is locked: it must be quick and
// must not call back into the allocator.
func (a *PodAllocator) GC(ctx context.Context, keep func(owner string) bool) (released []string, err error) {
	if keep == nil {
		return nil, cfgErr("keep", "", "must not be nil")
	}
	err = a.store.Transact(ctx, a.space, func(t *Txn) error {
		released = released[:0]
		for _, o := range t.Owners() {
			if keep(o) {
				continue
			}
			for _, k := range t.KeysOf(o) {
				t.Delete(k)
			}
			released = append(released, o)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return released, nil
}

// Usage reports the capacity and occupancy of every configured range, in
// configuration order. It costs O(live addresses).
func (a *PodAllocator) Usage(ctx context.Context) ([]RangeUsage, error) {
	used := make([]uint64, len(a.all))
	err := a.store.Transact(ctx, a.space, func(t *Txn) error {
		clear(used)
		t.Range(func(key, _ string) bool {
			ad, err := netip.ParseAddr(key)
			if err != nil {
				return true
			}
			for i, r := range a.all {
				if r.contains(ad) && !r.reserved(ad) {
					used[i]++
					break
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]RangeUsage, len(a.all))
	for i, r := range a.all {
		fam := IPv6
		if r.is4 {
			fam = IPv4
		}
		out[i] = RangeUsage{Subnet: r.Subnet, Family: fam, Capacity: r.capacity.sat64(), Used: used[i]}
	}
	return out, nil
}

// Available reports whether one more owner could be allocated now: every
// configured family has a free address in at least one of its ranges.
// Useful for a CNI STATUS implementation.
func (a *PodAllocator) Available(ctx context.Context) (bool, error) {
	us, err := a.Usage(ctx)
	if err != nil {
		return false, err
	}
	free := map[Family]bool{}
	for _, u := range us {
		if u.Free() > 0 {
			free[u.Family] = true
		}
	}
	for _, f := range a.fams {
		if !free[f] {
			return false, nil
		}
	}
	return true, nil
}
