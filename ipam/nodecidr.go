package ipam

import (
	"context"
	"fmt"
	"net/netip"
)

// NodeCIDRConfig configures a NodeCIDRAllocator, like kube-controller-manager's
// --cluster-cidr and --node-cidr-mask-size-ipv4/-ipv6 flags.
type NodeCIDRConfig struct {
	// ClusterCIDRs holds one or more masked, non-overlapping prefixes, IPv4
	// and/or IPv6. Several prefixes of one family form a set tried in order.
	ClusterCIDRs []netip.Prefix
	// NodeMaskSizeIPv4 is the prefix length of IPv4 node CIDRs (default 24;
	// at most 30 and not shorter than any IPv4 cluster CIDR). It is ignored
	// (and not validated) without IPv4 cluster CIDRs; likewise for IPv6.
	NodeMaskSizeIPv4 int
	// NodeMaskSizeIPv6 is the prefix length of IPv6 node CIDRs (default 64;
	// at most 126 and not shorter than any IPv6 cluster CIDR).
	NodeMaskSizeIPv6 int
	// Store keeps the reservations; required.
	Store Store
	// Space names the store space (default "node-cidrs").
	Space string
}

// NodeCIDRAllocator carves per-node pod CIDRs out of cluster CIDRs. Node
// subnets are addressed by index and never enumerated, so a /32 IPv6 cluster
// with /64 nodes (2^32 subnets) costs no more than a small one. Allocation
// is round-robin after the last CIDR handed out, like kube-controller-
// manager's cidrset; released CIDRs are reused once the cursor comes round.
type NodeCIDRAllocator struct {
	store Store
	space string
	fams  []Family
	sets  [][]*cidrPool
}

type cidrPool struct {
	cidr     netip.Prefix
	is4      bool
	nodeBits int
	shift    uint // host bits of a node CIDR
	base     u128 // first address of cidr
	maxIdx   u128 // number of node CIDRs - 1
}

func (p *cidrPool) at(i u128) netip.Prefix {
	return netip.PrefixFrom(u128ToAddr(p.base.add(i.lsh(p.shift)), p.is4), p.nodeBits)
}

// index returns the index of node CIDR q in p, if q is one of p's.
func (p *cidrPool) index(q netip.Prefix) (u128, bool) {
	if q.Bits() != p.nodeBits || !p.cidr.Contains(q.Addr()) || q.Masked() != q {
		return u128{}, false
	}
	return addrToU128(q.Addr()).sub(p.base).rsh(p.shift), true
}

// NewNodeCIDRAllocator validates cfg and returns an allocator. It does no I/O.
func NewNodeCIDRAllocator(cfg NodeCIDRConfig) (*NodeCIDRAllocator, error) {
	if cfg.Store == nil {
		return nil, cfgErr("Store", "", "required")
	}
	space := cfg.Space
	if space == "" {
		space = "node-cidrs"
	}
	if err := validateSpace("Space", space); err != nil {
		return nil, err
	}
	if len(cfg.ClusterCIDRs) == 0 {
		return nil, cfgErr("ClusterCIDRs", "", "at least one CIDR is required")
	}
	m4, m6 := cfg.NodeMaskSizeIPv4, cfg.NodeMaskSizeIPv6
	if m4 == 0 {
		m4 = 24
	}
	if m6 == 0 {
		m6 = 64
	}
	a := &NodeCIDRAllocator{store: cfg.Store, space: space}
	var all []*cidrPool
	for i, c := range cfg.ClusterCIDRs {
		field := fmt.Sprintf("ClusterCIDRs[%d]", i)
		c, err := normPrefix(field, c)
		if err != nil {
			return nil, err
		}
		p := &cidrPool{cidr: c, is4: c.Addr().Is4(), nodeBits: m6}
		mfield := "NodeMaskSizeIPv6"
		if p.is4 {
			p.nodeBits, mfield = m4, "NodeMaskSizeIPv4"
		}
		if p.is4 && (m4 < 1 || m4 > 30) {
			return nil, cfgErr(mfield, fmt.Sprint(m4), "must be between 1 and 30")
		}
		if !p.is4 && (m6 < 1 || m6 > 126) {
			return nil, cfgErr(mfield, fmt.Sprint(m6), "must be between 1 and 126")
		}
		if p.nodeBits < c.Bits() {
			return nil, cfgErr(mfield, fmt.Sprint(p.nodeBits), "shorter than the prefix length of %s %s", field, c)
		}
		for j, o := range all {
			if o.cidr.Overlaps(c) {
				return nil, cfgErr(field, c.String(), "overlaps ClusterCIDRs[%d] %s", j, o.cidr)
			}
		}
		p.shift = uint(c.Addr().BitLen() - p.nodeBits)
		p.base, _ = prefixBounds(c)
		p.maxIdx = u64(1).lsh(uint(p.nodeBits - c.Bits())).dec()
		all = append(all, p)
	}
	for _, fam := range []Family{IPv4, IPv6} {
		var set []*cidrPool
		for _, p := range all {
			if p.is4 == (fam == IPv4) {
				set = append(set, p)
			}
		}
		if set != nil {
			a.fams = append(a.fams, fam)
			a.sets = append(a.sets, set)
		}
	}
	return a, nil
}

func findPool(set []*cidrPool, q netip.Prefix) (*cidrPool, u128) {
	for _, p := range set {
		if i, ok := p.index(q); ok {
			return p, i
		}
	}
	return nil, u128{}
}

// Allocate returns the CIDRs of node, one per configured family (IPv4
// first), reserving them if needed. It is idempotent per node. requested
// optionally names at most one CIDR per family, which must have the node
// mask size and lie in a cluster CIDR (ErrOutOfRange otherwise) and be free
// (ErrConflict otherwise). Either every family is allocated or nothing is.
func (a *NodeCIDRAllocator) Allocate(ctx context.Context, node string, requested ...netip.Prefix) ([]netip.Prefix, error) {
	if err := validateOwner("node", node); err != nil {
		return nil, err
	}
	req := make([]netip.Prefix, len(a.fams))
	for i, r := range requested {
		field := fmt.Sprintf("requested[%d]", i)
		r, err := normPrefix(field, r)
		if err != nil {
			return nil, err
		}
		fam := familyOfPrefix(r)
		fi := -1
		for j, f := range a.fams {
			if f == fam {
				fi = j
			}
		}
		if fi < 0 {
			return nil, errorf(ErrOutOfRange, "requested %s: no %s cluster CIDR configured", r, fam)
		}
		if req[fi].IsValid() {
			return nil, cfgErr(field, r.String(), "second requested %s CIDR (already %s)", fam, req[fi])
		}
		if p, _ := findPool(a.sets[fi], r); p == nil {
			return nil, errorf(ErrOutOfRange, "requested %s is not a /%d inside any %s cluster CIDR", r, a.sets[fi][0].nodeBits, fam)
		}
		req[fi] = r
	}
	var out []netip.Prefix
	err := a.store.Transact(ctx, a.space, func(t *Txn) error {
		out = out[:0]
		var held []netip.Prefix
		for _, k := range t.KeysOf(node) {
			if p, err := netip.ParsePrefix(k); err == nil {
				held = append(held, p)
			}
		}
		cursor := t.Cursor()
		for fi, fam := range a.fams {
			set := a.sets[fi]
			var existing netip.Prefix
			for _, h := range held {
				if p, _ := findPool(set, h); p != nil {
					existing = h
					break
				}
			}
			if existing.IsValid() {
				if req[fi].IsValid() && req[fi] != existing {
					return errorf(ErrConflict, "node %q already holds %s, cannot also take requested %s", node, existing, req[fi])
				}
				out = append(out, existing)
				continue
			}
			if r := req[fi]; r.IsValid() {
				key := r.String()
				if h, ok := t.Get(key); ok {
					return &ConflictError{Resource: key, Holder: h}
				}
				t.Put(key, node)
				out = append(out, r)
				continue
			}
			cur, hasCur := cursorPrefix(cursor, fam)
			got, ok := nextFreeCIDR(t, set, cur, hasCur)
			if !ok {
				s := ""
				for i, p := range set {
					if i > 0 {
						s += ", "
					}
					s += p.cidr.String()
				}
				return errorf(ErrExhausted, "no free /%d %s node CIDR in %s", set[0].nodeBits, fam, s)
			}
			t.Put(got.String(), node)
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

// nextFreeCIDR scans the pools round-robin after cur. The scan visits at most
// (held CIDRs + 1) indexes before finding a free one, so it never enumerates
// a huge cluster CIDR.
func nextFreeCIDR(t *Txn, set []*cidrPool, cur netip.Prefix, hasCur bool) (netip.Prefix, bool) {
	n := len(set)
	idx, start := 0, u128{}
	if hasCur {
		if p, i := findPool(set, cur); p != nil {
			for j := range set {
				if set[j] == p {
					idx = j
				}
			}
			if i == p.maxIdx {
				idx, start = (idx+1)%n, u128{}
			} else {
				start = i.inc()
			}
		}
	}
	for i := 0; i <= n; i++ {
		p := set[(idx+i)%n]
		from, to := u128{}, p.maxIdx
		if i == 0 {
			from = start
		}
		if i == n {
			if start == (u128{}) {
				break
			}
			to = start.dec()
		}
		held := func(v u128) bool {
			_, ok := t.Get(p.at(v).String())
			return ok
		}
		if v, ok := scanFree(from, to, nil, held); ok {
			return p.at(v), true
		}
	}
	return netip.Prefix{}, false
}

// Release frees every CIDR of node; releasing a node without CIDRs returns
// nil.
func (a *NodeCIDRAllocator) Release(ctx context.Context, node string) error {
	return releaseOwner(ctx, a.store, a.space, "node", node)
}

// Lookup returns the CIDRs node holds, IPv4 first, or an error wrapping
// ErrNotFound.
func (a *NodeCIDRAllocator) Lookup(ctx context.Context, node string) ([]netip.Prefix, error) {
	return lookupOwned(ctx, a.store, a.space, "node", node, "CIDR", func(keys []string) []netip.Prefix {
		var out []netip.Prefix
		for fi := range a.fams {
			for _, k := range keys {
				if p, err := netip.ParsePrefix(k); err == nil {
					if pool, _ := findPool(a.sets[fi], p); pool != nil {
						out = append(out, p)
					}
				}
			}
		}
		return out
	})
}

// Nodes returns every node holding a CIDR, sorted.
func (a *NodeCIDRAllocator) Nodes(ctx context.Context) ([]string, error) {
	return ownersOf(ctx, a.store, a.space)
}
