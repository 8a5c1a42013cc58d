package nftables

import (
	"net/netip"
	"slices"

	nft "github.com/google/nftables"
)

// addrRange is an inclusive range of addresses of one family.
type addrRange struct {
	From, To netip.Addr
}

// String renders the range as a prefix when it is exactly one, else as
// "from-to" (the notation nft uses for interval set elements).
func (r addrRange) String() string {
	if p, ok := r.prefix(); ok {
		return p.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// prefix returns the prefix covering exactly r, if there is one.
func (r addrRange) prefix() (netip.Prefix, bool) {
	for bits := 0; bits <= r.From.BitLen(); bits++ {
		p := netip.PrefixFrom(r.From, bits)
		if p.Masked() == p && lastAddr(p) == r.To {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// lastAddr returns the highest address of p (all host bits set).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.As16()
	off := 0
	if a.Is4() {
		off = 12 // As16 puts an IPv4 address in the last 4 bytes
	}
	for i := off*8 + p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	if a.Is4() {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b)
}

// mergePrefixes turns prefixes of one family into the smallest sorted list of
// disjoint, non-adjacent ranges covering the same addresses: overlapping,
// nested and adjacent prefixes are merged. The prefixes must be valid and of
// one family; the input is not modified.
func mergePrefixes(ps []netip.Prefix) []addrRange {
	if len(ps) == 0 {
		return nil
	}
	rs := make([]addrRange, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		rs = append(rs, addrRange{From: p.Addr(), To: lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b addrRange) int {
		if c := a.From.Compare(b.From); c != 0 {
			return c
		}
		return b.To.Compare(a.To) // wider first
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		cur := &out[len(out)-1]
		next := cur.To.Next() // invalid when cur ends at the top of the space
		if !next.IsValid() || r.From.Compare(next) <= 0 {
			// Overlapping or adjacent (or cur already reaches the top).
			if r.To.Compare(cur.To) > 0 {
				cur.To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// intervalElements encodes sorted disjoint ranges as the elements of an
// nftables interval set, the way nft(8) does: each range is a start element
// (its first address) and an IntervalEnd element (the address just after
// its last one). A range reaching the top of the address space has no end
// element, and when the first range does not start at the zero address an
// IntervalEnd element at zero marks the gap below it.
func intervalElements(rs []addrRange) []nft.SetElement {
	if len(rs) == 0 {
		return nil
	}
	var els []nft.SetElement
	if zero := zeroAddr(rs[0].From); rs[0].From != zero {
		els = append(els, nft.SetElement{Key: zero.AsSlice(), IntervalEnd: true})
	}
	for _, r := range rs {
		els = append(els, nft.SetElement{Key: r.From.AsSlice()})
		if end := r.To.Next(); end.IsValid() {
			els = append(els, nft.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

// elementRanges decodes the elements of an interval set (as the kernel lists
// them, in any order) back into sorted ranges. bits is the key width.
func elementRanges(els []nft.SetElement, bits int) []addrRange {
	type el struct {
		a   netip.Addr
		end bool
	}
	var list []el
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok || a.BitLen() != bits {
			continue
		}
		list = append(list, el{a, e.IntervalEnd})
	}
	slices.SortFunc(list, func(x, y el) int { return x.a.Compare(y.a) })
	var rs []addrRange
	for i := 0; i < len(list); i++ {
		if list[i].end {
			continue // the gap marker at zero, or a stray end
		}
		r := addrRange{From: list[i].a, To: maxAddr(list[i].a)}
		if i+1 < len(list) && list[i+1].end {
			r.To = list[i+1].a.Prev()
			i++
		}
		rs = append(rs, r)
	}
	return rs
}

func zeroAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func maxAddr(a netip.Addr) netip.Addr {
	return lastAddr(netip.PrefixFrom(zeroAddr(a), 0))
}
