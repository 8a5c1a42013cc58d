package ipam

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"sort"
)

// u128 is an unsigned 128-bit integer used for address arithmetic. IPv4
// addresses occupy the low 32 bits.
type u128 struct{ hi, lo uint64 }

var u128Max = u128{math.MaxUint64, math.MaxUint64}

func u64(v uint64) u128 { return u128{0, v} }

func (u u128) cmp(v u128) int {
	switch {
	case u.hi < v.hi:
		return -1
	case u.hi > v.hi:
		return 1
	case u.lo < v.lo:
		return -1
	case u.lo > v.lo:
		return 1
	}
	return 0
}

func (u u128) add(v u128) u128 {
	lo, c := bits.Add64(u.lo, v.lo, 0)
	hi, _ := bits.Add64(u.hi, v.hi, c)
	return u128{hi, lo}
}

// addSat adds with saturation at u128Max.
func (u u128) addSat(v u128) u128 {
	lo, c := bits.Add64(u.lo, v.lo, 0)
	hi, c2 := bits.Add64(u.hi, v.hi, c)
	if c2 != 0 {
		return u128Max
	}
	return u128{hi, lo}
}

func (u u128) sub(v u128) u128 {
	lo, b := bits.Sub64(u.lo, v.lo, 0)
	hi, _ := bits.Sub64(u.hi, v.hi, b)
	return u128{hi, lo}
}

func (u u128) inc() u128 { return u.add(u64(1)) }
func (u u128) dec() u128 { return u.sub(u64(1)) }

func (u u128) lsh(n uint) u128 {
	switch {
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{u.lo << (n - 64), 0}
	case n == 0:
		return u
	}
	return u128{u.hi<<n | u.lo>>(64-n), u.lo << n}
}

func (u u128) rsh(n uint) u128 {
	switch {
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{0, u.hi >> (n - 64)}
	case n == 0:
		return u
	}
	return u128{u.hi >> n, u.lo>>n | u.hi<<(64-n)}
}

// sat64 returns u as a uint64, saturating at math.MaxUint64.
func (u u128) sat64() uint64 {
	if u.hi != 0 {
		return math.MaxUint64
	}
	return u.lo
}

func addrToU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u64(uint64(binary.BigEndian.Uint32(b[:])))
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func u128ToAddr(u u128, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(u.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

// prefixBounds returns the first and last address of p as integers.
func prefixBounds(p netip.Prefix) (first, last u128) {
	first = addrToU128(p.Masked().Addr())
	hostBits := uint(p.Addr().BitLen() - p.Bits())
	var mask u128
	if hostBits >= 128 {
		mask = u128Max
	} else {
		mask = u64(1).lsh(hostBits).dec()
	}
	return first, u128{first.hi | mask.hi, first.lo | mask.lo}
}

// count returns the number of integers in [lo, hi], saturating at u128Max.
func count(lo, hi u128) u128 { return hi.sub(lo).addSat(u64(1)) }

// ival is an inclusive interval of addresses.
type ival struct{ lo, hi u128 }

// mergeIvals sorts and merges overlapping or adjacent intervals.
func mergeIvals(in []ival) []ival {
	if len(in) == 0 {
		return nil
	}
	s := append([]ival(nil), in...)
	sort.Slice(s, func(i, j int) bool { return s[i].lo.cmp(s[j].lo) < 0 })
	out := s[:1]
	for _, iv := range s[1:] {
		last := &out[len(out)-1]
		if last.hi == u128Max || iv.lo.cmp(last.hi.inc()) <= 0 {
			if iv.hi.cmp(last.hi) > 0 {
				last.hi = iv.hi
			}
			continue
		}
		out = append(out, iv)
	}
	return out
}

// ivalAt returns the end of the interval of the sorted, merged set s that
// contains v, if any.
func ivalAt(s []ival, v u128) (hi u128, ok bool) {
	i := sort.Search(len(s), func(i int) bool { return s[i].hi.cmp(v) >= 0 })
	if i < len(s) && s[i].lo.cmp(v) <= 0 {
		return s[i].hi, true
	}
	return u128{}, false
}

// ivalCount returns how many integers of [lo, hi] the set s covers.
func ivalCount(s []ival, lo, hi u128) u128 {
	var n u128
	for _, iv := range s {
		a, b := iv.lo, iv.hi
		if a.cmp(lo) < 0 {
			a = lo
		}
		if b.cmp(hi) > 0 {
			b = hi
		}
		if a.cmp(b) <= 0 {
			n = n.addSat(count(a, b))
		}
	}
	return n
}

// scanFree walks [from, to], skipping the reserved intervals in skip, and
// returns the first value for which held returns false. The walk costs
// O(held values + reserved intervals) rather than O(to-from).
func scanFree(from, to u128, skip []ival, held func(u128) bool) (u128, bool) {
	if from.cmp(to) > 0 {
		return u128{}, false
	}
	c := from
	for {
		if hi, ok := ivalAt(skip, c); ok {
			if hi.cmp(to) >= 0 {
				return u128{}, false
			}
			c = hi.inc()
			continue
		}
		if !held(c) {
			return c, true
		}
		if c == to {
			return u128{}, false
		}
		c = c.inc()
	}
}
