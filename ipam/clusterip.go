package ipam

import (
	"context"
	"fmt"
	"net/netip"
)

// ClusterIPConfig configures a ClusterIPAllocator.
type ClusterIPConfig struct {
	// CIDRs holds the service CIDRs, at most one per family; the first is
	// the primary family. IPv4 CIDRs must be /30 or larger, IPv6 /126 or
	// larger.
	CIDRs []netip.Prefix
	// Store keeps the reservations; required.
	Store Store
	// Space names the store space (default "cluster-ips").
	Space string
}

// ClusterIPAllocator hands out Service cluster IPs like the Kubernetes API
// server: never the network address nor the IPv4 broadcast address, and
// dynamic allocation prefers the upper band of the CIDR, leaving the lower
// "static" band (min(max(16, size/16), 256) addresses, KEP-3070) to
// explicitly requested IPs unless the upper band is full. Dynamic
// allocation is round-robin, so a released IP is not reused immediately.
type ClusterIPAllocator struct {
	store Store
	space string
	fams  []Family // configured, primary first
	pools map[Family]*svcPool
}

type svcPool struct {
	cidr      netip.Prefix
	is4       bool
	first     u128 // network + 1
	last      u128 // broadcast - 1 (IPv4) or last address (IPv6)
	dynFirst  u128 // first address of the dynamic (upper) band
	staticLen uint64
}

func (p *svcPool) contains(a netip.Addr) bool {
	if a.Is4() != p.is4 {
		return false
	}
	v := addrToU128(a)
	return p.first.cmp(v) <= 0 && v.cmp(p.last) <= 0
}

// bandOffset implements the Kubernetes static band size: sizes of 16 or less
// have no static band, otherwise min(max(min, size/step), max).
func bandOffset(size u128, min, max, step uint64) uint64 {
	if size.cmp(u64(min)) <= 0 {
		return 0
	}
	if size.hi != 0 || size.lo/step > max {
		return max
	}
	off := size.lo / step
	if off < min {
		return min
	}
	return off
}

// NewClusterIPAllocator validates cfg and returns an allocator. It does no I/O.
func NewClusterIPAllocator(cfg ClusterIPConfig) (*ClusterIPAllocator, error) {
	if cfg.Store == nil {
		return nil, cfgErr("Store", "", "required")
	}
	space := cfg.Space
	if space == "" {
		space = "cluster-ips"
	}
	if err := validateSpace("Space", space); err != nil {
		return nil, err
	}
	if len(cfg.CIDRs) == 0 {
		return nil, cfgErr("CIDRs", "", "at least one CIDR is required")
	}
	a := &ClusterIPAllocator{store: cfg.Store, space: space, pools: map[Family]*svcPool{}}
	for i, c := range cfg.CIDRs {
		field := fmt.Sprintf("CIDRs[%d]", i)
		c, err := normPrefix(field, c)
		if err != nil {
			return nil, err
		}
		fam := familyOfPrefix(c)
		if a.pools[fam] != nil {
			return nil, cfgErr(field, c.String(), "second %s CIDR (already %s); at most one per family", fam, a.pools[fam].cidr)
		}
		p := &svcPool{cidr: c, is4: fam == IPv4}
		if p.is4 && c.Bits() > 30 {
			return nil, cfgErr(field, c.String(), "prefix too small: an IPv4 service CIDR needs /30 or larger")
		}
		if !p.is4 && c.Bits() > 126 {
			return nil, cfgErr(field, c.String(), "prefix too small: an IPv6 service CIDR needs /126 or larger")
		}
		lo, hi := prefixBounds(c)
		p.first, p.last = lo.inc(), hi
		if p.is4 {
			p.last = hi.dec()
		}
		p.staticLen = bandOffset(count(lo, hi), 16, 256, 16)
		p.dynFirst = p.first.add(u64(p.staticLen))
		a.pools[fam] = p
		a.fams = append(a.fams, fam)
	}
	return a, nil
}

// Families returns the configured families, primary first.
func (a *ClusterIPAllocator) Families() []Family { return append([]Family(nil), a.fams...) }

// Allocate returns owner's cluster IPs for families, in that order,
// reserving them if needed. An owner holds at most one IP per family, and
// Allocate is idempotent. If families is empty it is the families of
// requested, or else the primary family alone. requested optionally names at
// most one IP per family: it fails with ErrConflict (a *ConflictError naming
// the holder) if another owner holds it and ErrOutOfRange if it is not a
// usable address of that family's CIDR. Either every family is allocated or
// nothing is.
func (a *ClusterIPAllocator) Allocate(ctx context.Context, owner string, families []Family, requested []netip.Addr) ([]netip.Addr, error) {
	if err := validateOwner("owner", owner); err != nil {
		return nil, err
	}
	req := map[Family]netip.Addr{}
	var reqFams []Family
	for i, r := range requested {
		field := fmt.Sprintf("requested[%d]", i)
		r, err := normAddr(field, r)
		if err != nil {
			return nil, err
		}
		fam := FamilyOf(r)
		if _, dup := req[fam]; dup {
			return nil, cfgErr(field, r.String(), "second requested %s address (already %s)", fam, req[fam])
		}
		p := a.pools[fam]
		if p == nil {
			return nil, errorf(ErrOutOfRange, "requested %s: no %s service CIDR configured", r, fam)
		}
		if !p.contains(r) {
			if p.cidr.Contains(r) {
				return nil, errorf(ErrOutOfRange, "requested %s is the network or broadcast address of %s", r, p.cidr)
			}
			return nil, errorf(ErrOutOfRange, "requested %s is outside service CIDR %s", r, p.cidr)
		}
		req[fam] = r
		reqFams = append(reqFams, fam)
	}
	if len(families) == 0 {
		families = reqFams
		if len(families) == 0 {
			families = a.fams[:1]
		}
	}
	seen := map[Family]bool{}
	for i, f := range families {
		field := fmt.Sprintf("families[%d]", i)
		if !f.valid() {
			return nil, cfgErr(field, f.String(), "unknown family")
		}
		if seen[f] {
			return nil, cfgErr(field, f.String(), "listed twice")
		}
		seen[f] = true
		if a.pools[f] == nil {
			return nil, errorf(ErrOutOfRange, "no %s service CIDR configured", f)
		}
	}
	for f, r := range req {
		if !seen[f] {
			return nil, cfgErr("requested", r.String(), "family %s not in families", f)
		}
	}
	var out []netip.Addr
	err := a.store.Transact(ctx, a.space, func(t *Txn) error {
		out = out[:0]
		held := map[Family]netip.Addr{}
		for _, k := range t.KeysOf(owner) {
			if ad, err := netip.ParseAddr(k); err == nil {
				if p := a.pools[FamilyOf(ad)]; p != nil && p.contains(ad) {
					held[FamilyOf(ad)] = ad
				}
			}
		}
		cursor := t.Cursor()
		for _, fam := range families {
			p := a.pools[fam]
			if h, ok := held[fam]; ok {
				if r, ok := req[fam]; ok && r != h {
					return errorf(ErrConflict, "owner %q already holds %s, cannot also take requested %s", owner, h, r)
				}
				out = append(out, h)
				continue
			}
			if r, ok := req[fam]; ok {
				key := r.String()
				if h, ok := t.Get(key); ok {
					return &ConflictError{Resource: key, Holder: h}
				}
				t.Put(key, owner)
				out = append(out, r)
				continue
			}
			cur, hasCur := cursorAddr(cursor, fam)
			got, ok := p.next(t, cur, hasCur)
			if !ok {
				return errorf(ErrExhausted, "no free %s cluster IP in %s", fam, p.cidr)
			}
			t.Put(got.String(), owner)
			cursor = setCursorEntry(cursor, fam, got.String())
			out = append(out, got)
		}
		t.SetCursor(cursor)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// next scans the upper band round-robin after cur, then the static band.
func (p *svcPool) next(t *Txn, cur netip.Addr, hasCur bool) (netip.Addr, bool) {
	held := func(v u128) bool {
		_, ok := t.Get(u128ToAddr(v, p.is4).String())
		return ok
	}
	lo, hi := p.dynFirst, p.last
	if lo.cmp(hi) <= 0 {
		start := lo
		if hasCur && p.contains(cur) {
			if v := addrToU128(cur); v.cmp(lo) >= 0 && v != hi {
				start = v.inc()
			}
		}
		if v, ok := scanFree(start, hi, nil, held); ok {
			return u128ToAddr(v, p.is4), true
		}
		if start != lo {
			if v, ok := scanFree(lo, start.dec(), nil, held); ok {
				return u128ToAddr(v, p.is4), true
			}
		}
	}
	if p.staticLen > 0 {
		if v, ok := scanFree(p.first, p.dynFirst.dec(), nil, held); ok {
			return u128ToAddr(v, p.is4), true
		}
	}
	return netip.Addr{}, false
}

// Release frees every cluster IP of owner; releasing an owner holding
// nothing returns nil.
func (a *ClusterIPAllocator) Release(ctx context.Context, owner string) error {
	return releaseOwner(ctx, a.store, a.space, "owner", owner)
}

// Lookup returns owner's cluster IPs in configured-family order, or an error
// wrapping ErrNotFound.
func (a *ClusterIPAllocator) Lookup(ctx context.Context, owner string) ([]netip.Addr, error) {
	return lookupOwned(ctx, a.store, a.space, "owner", owner, "cluster IP", func(keys []string) []netip.Addr {
		var out []netip.Addr
		for _, fam := range a.fams {
			for _, k := range keys {
				if ad, err := netip.ParseAddr(k); err == nil && FamilyOf(ad) == fam && a.pools[fam].contains(ad) {
					out = append(out, ad)
				}
			}
		}
		return out
	})
}

// Owners returns every owner holding a cluster IP, sorted.
func (a *ClusterIPAllocator) Owners(ctx context.Context) ([]string, error) {
	return ownersOf(ctx, a.store, a.space)
}
