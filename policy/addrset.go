package policy

import (
	"net/netip"
	"slices"
)

// AddrRange is the inclusive range From..To of one family.
type AddrRange struct {
	From, To netip.Addr
}

// AddrSet is a set of addresses as sorted, disjoint, non-adjacent ranges.
// Name is stable across compilations of the same rule (drivers name their
// kernel sets after it).
type AddrSet struct {
	Name   string
	Ranges []AddrRange

	// gen identifies this version; base the version it was derived from
	// (0: none) and added/removed how it differs from it. A generation,
	// not a pointer: the versions of a set do not chain in memory.
	gen, base      uint64
	added, removed []AddrRange
}

// DeltaFrom returns the ranges to add to and remove from prev to make s,
// when s was derived from prev (ok false: compare Ranges instead). A driver
// that programmed prev applies the delta: a label change costs what
// changed, not the size of the set.
func (s *AddrSet) DeltaFrom(prev *AddrSet) (added, removed []AddrRange, ok bool) {
	if prev == nil || s.base == 0 || s.base != prev.gen {
		return nil, nil, false
	}
	return s.added, s.removed, true
}

// Contains reports whether a is in the set.
func (s *AddrSet) Contains(a netip.Addr) bool {
	i, _ := slices.BinarySearchFunc(s.Ranges, a, func(r AddrRange, a netip.Addr) int {
		if r.To.Less(a) {
			return -1
		}
		if a.Less(r.From) {
			return 1
		}
		return 0
	})
	return i < len(s.Ranges) && !a.Less(s.Ranges[i].From) && !s.Ranges[i].To.Less(a)
}

// Prefixes returns the set as the fewest CIDR prefixes.
func (s *AddrSet) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, r := range s.Ranges {
		out = appendRangePrefixes(out, r.From, r.To)
	}
	return out
}

// prefixRange is the first and last address of p.
func prefixRange(p netip.Prefix) AddrRange {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return AddrRange{From: p.Addr(), To: last}
}

// normalize sorts and merges overlapping and adjacent ranges (IPv4
// before IPv6).
func normalize(rs []AddrRange) []AddrRange {
	slices.SortFunc(rs, func(a, b AddrRange) int { return a.From.Compare(b.From) })
	var out []AddrRange
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].To.Is4() == r.From.Is4() {
			last := &out[n-1]
			// Invalid next: last ends at the family's last address.
			if next := last.To.Next(); !next.IsValid() || !next.Less(r.From) {
				if last.To.Less(r.To) {
					last.To = r.To
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// subtract removes the ranges of cut from rs (both normalized).
func subtract(rs, cut []AddrRange) []AddrRange {
	var out []AddrRange
	for _, r := range rs {
		cur := []AddrRange{r}
		for _, c := range cut {
			var next []AddrRange
			for _, x := range cur {
				if x.From.Is4() != c.From.Is4() || c.To.Less(x.From) || x.To.Less(c.From) {
					next = append(next, x)
					continue
				}
				if x.From.Less(c.From) {
					next = append(next, AddrRange{From: x.From, To: c.From.Prev()})
				}
				if c.To.Less(x.To) {
					next = append(next, AddrRange{From: c.To.Next(), To: x.To})
				}
			}
			cur = next
		}
		out = append(out, cur...)
	}
	return out
}

// appendRangePrefixes appends the fewest prefixes covering from..to.
func appendRangePrefixes(out []netip.Prefix, from, to netip.Addr) []netip.Prefix {
	bits := from.BitLen()
	for {
		// The largest prefix starting at from that does not pass to.
		n := bits
		for n > 0 {
			p, _ := from.Prefix(n - 1)
			if p.Addr() != from || to.Less(prefixRange(p).To) {
				break
			}
			n--
		}
		p := netip.PrefixFrom(from, n)
		out = append(out, p)
		last := prefixRange(p).To
		if last == to {
			return out
		}
		from = last.Next()
	}
}

// mergeIPs merges normalized ranges and sorted addresses into normalized
// ranges, in one pass.
func mergeIPs(blocks []AddrRange, ips []ipCount) []AddrRange {
	out := make([]AddrRange, 0, len(blocks)+len(ips))
	add := func(r AddrRange) {
		if n := len(out); n > 0 && out[n-1].To.Is4() == r.From.Is4() {
			last := &out[n-1]
			if next := last.To.Next(); !next.IsValid() || !next.Less(r.From) {
				if last.To.Less(r.To) {
					last.To = r.To
				}
				return
			}
		}
		out = append(out, r)
	}
	i, j := 0, 0
	for i < len(blocks) || j < len(ips) {
		if j == len(ips) || (i < len(blocks) && blocks[i].From.Less(ips[j].ip)) {
			add(blocks[i])
			i++
		} else {
			add(AddrRange{From: ips[j].ip, To: ips[j].ip})
			j++
		}
	}
	return out
}

// diffSorted returns the ranges of a not in b and of b not in a (both
// sorted), in one pass.
func diffSorted(a, b []AddrRange) (onlyA, onlyB []AddrRange) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b):
			onlyA = append(onlyA, a[i])
			i++
		case i == len(a):
			onlyB = append(onlyB, b[j])
			j++
		case a[i] == b[j]:
			i++
			j++
		case a[i].From.Less(b[j].From) || (a[i].From == b[j].From && a[i].To.Less(b[j].To)):
			onlyA = append(onlyA, a[i])
			i++
		default:
			onlyB = append(onlyB, b[j])
			j++
		}
	}
	return onlyA, onlyB
}
