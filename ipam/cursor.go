package ipam

import (
	"net/netip"
	"strings"
)

// Cursors are stored as space-separated canonical addresses or prefixes, at
// most one per family: the last dynamically allocated value of that family.

func cursorAddr(cur string, fam Family) (netip.Addr, bool) {
	for _, f := range strings.Fields(cur) {
		if a, err := netip.ParseAddr(f); err == nil && FamilyOf(a) == fam {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func cursorPrefix(cur string, fam Family) (netip.Prefix, bool) {
	for _, f := range strings.Fields(cur) {
		if p, err := netip.ParsePrefix(f); err == nil && familyOfPrefix(p) == fam {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// setCursorEntry replaces the entry of family fam in cur by val (the text of
// an address or prefix of that family), keeping other families' entries.
func setCursorEntry(cur string, fam Family, val string) string {
	var v4, v6 []string
	for _, f := range strings.Fields(cur) {
		var ff Family
		if a, err := netip.ParseAddr(f); err == nil {
			ff = FamilyOf(a)
		} else if p, err := netip.ParsePrefix(f); err == nil {
			ff = familyOfPrefix(p)
		} else {
			continue // unknown junk is dropped
		}
		if ff == fam {
			continue
		}
		if ff == IPv4 {
			v4 = append(v4, f)
		} else {
			v6 = append(v6, f)
		}
	}
	if fam == IPv4 {
		v4 = append(v4, val)
	} else {
		v6 = append(v6, val)
	}
	return strings.Join(append(v4, v6...), " ")
}
