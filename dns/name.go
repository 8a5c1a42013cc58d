package dns

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// lowerASCII lowercases the ASCII letters of s, returning s itself (no
// allocation) when it has none. DNS names compare case-insensitively in
// ASCII only (RFC 4343); other bytes arrive \DDD-escaped.
func lowerASCII(s string) string {
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			break
		}
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// canonicalDomain returns s lowercased with exactly one trailing dot, or
// an error naming field when s is not a valid domain.
func canonicalDomain(field, s string) (string, error) {
	if !validDomain(s) {
		return "", invalid("config", field, s, "not a domain name")
	}
	return lowerASCII(strings.TrimSuffix(s, ".")) + ".", nil
}

// under reports whether the lowercased FQDN name is zone or below it, and
// returns the part of name before the zone without the separating dot
// ("" for the zone itself). zone is a lowercased FQDN, not the root.
// A dot escaped in name (\.) does not separate labels, so "a\.cluster.local."
// is not under "local." the way it looks.
func under(name, zone string) (rel string, ok bool) {
	if name == zone {
		return "", true
	}
	if len(name) <= len(zone) || !strings.HasSuffix(name, zone) || name[len(name)-len(zone)-1] != '.' {
		return "", false
	}
	// The dot before the zone must not be escaped: count the backslashes
	// before it.
	i, n := len(name)-len(zone)-2, 0
	for ; i >= 0 && name[i] == '\\'; i-- {
		n++
	}
	if n%2 == 1 {
		return "", false
	}
	return name[:len(name)-len(zone)-1], true
}

// labels splits rel (a name relative to the zone, no trailing dot) into at
// most len(buf) labels, right to left: buf[0] is the label next to the
// zone. It returns how many labels there are, or -1 when there are more
// than len(buf) or the name holds an escape (no served name has one).
func labels(rel string, buf []string) int {
	if rel == "" {
		return 0
	}
	if strings.IndexByte(rel, '\\') >= 0 {
		return -1
	}
	n := 0
	for {
		if n == len(buf) {
			return -1
		}
		i := strings.LastIndexByte(rel, '.')
		buf[n] = rel[i+1:]
		n++
		if i < 0 {
			return n
		}
		rel = rel[:i]
	}
}

// dashed returns an address in the dashed form of pod and endpoint names:
// 10-1-2-3 for IPv4, the canonical text with ':' replaced by '-' for IPv6
// (fd00--5).
func dashed(ip netip.Addr) string {
	if ip.Is4() {
		b := ip.As4()
		var buf [15]byte
		out := strconv.AppendUint(buf[:0], uint64(b[0]), 10)
		for _, x := range b[1:] {
			out = append(out, '-')
			out = strconv.AppendUint(out, uint64(x), 10)
		}
		return string(out)
	}
	return strings.ReplaceAll(ip.String(), ":", "-")
}

// parseDashed parses the dashed address of a pod record: four
// dash-separated decimal octets for IPv4 (exactly three dashes, no "--"),
// otherwise IPv6 with '-' for ':' (the reading CoreDNS uses).
func parseDashed(label string) (netip.Addr, bool) {
	var s string
	if strings.Count(label, "-") == 3 && !strings.Contains(label, "--") {
		s = strings.ReplaceAll(label, "-", ".")
	} else {
		s = strings.ReplaceAll(label, "-", ":")
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" || ip.Is4In6() {
		return netip.Addr{}, false
	}
	return ip, true
}

const (
	arpa4 = "in-addr.arpa."
	arpa6 = "ip6.arpa."
)

// ReverseName returns the PTR owner name of ip: d.c.b.a.in-addr.arpa. for
// IPv4, 32 nibbles under ip6.arpa. for IPv6.
func ReverseName(ip netip.Addr) string {
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			b.WriteByte('.')
		}
		b.WriteString(arpa4)
		return b.String()
	}
	const hex = "0123456789abcdef"
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString(arpa6)
	return b.String()
}

// reverseKind tells whether a lowercased FQDN is under in-addr.arpa. (4),
// ip6.arpa. (6), or neither (0).
func reverseKind(name string) int {
	if _, ok := under(name, arpa4); ok {
		return 4
	}
	if _, ok := under(name, arpa6); ok {
		return 6
	}
	return 0
}

// parseReverse parses a complete reverse name (four decimal labels under
// in-addr.arpa., 32 single-nibble labels under ip6.arpa.), lowercased.
func parseReverse(name string) (netip.Addr, bool) {
	if rel, ok := under(name, arpa4); ok {
		var buf [5]string
		if labels(rel, buf[:]) != 4 {
			return netip.Addr{}, false
		}
		var a [4]byte
		for i := 0; i < 4; i++ {
			l := buf[i] // buf[0] is the first octet
			if l == "" || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			n, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			a[i] = byte(n)
		}
		return netip.AddrFrom4(a), true
	}
	if rel, ok := under(name, arpa6); ok {
		if len(rel) != 63 {
			return netip.Addr{}, false
		}
		var a [16]byte
		for i := 0; i < 32; i++ {
			c := rel[62-2*i]
			if i < 31 && rel[62-2*i-1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case c >= '0' && c <= '9':
				v = c - '0'
			case c >= 'a' && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			if i%2 == 0 {
				a[i/2] = v << 4
			} else {
				a[i/2] |= v
			}
		}
		return netip.AddrFrom16(a), true
	}
	return netip.Addr{}, false
}

// reverseZone returns the reverse zone that covers prefix p: the octet
// (IPv4) or nibble (IPv6) boundary at or above its length. It is how
// Config.ReverseCIDRs become zones.
func reverseZone(p netip.Prefix) (string, error) {
	p = p.Masked()
	if p.Addr().Is4() {
		if p.Bits()%8 != 0 {
			return "", fmt.Errorf("prefix length %d is not a multiple of 8", p.Bits())
		}
		full := ReverseName(p.Addr())
		// full has 4 octet labels; keep the last Bits/8 of them.
		drop := 4 - p.Bits()/8
		for i := 0; i < drop; i++ {
			full = full[strings.IndexByte(full, '.')+1:]
		}
		return full, nil
	}
	if p.Bits()%4 != 0 {
		return "", fmt.Errorf("prefix length %d is not a multiple of 4", p.Bits())
	}
	full := ReverseName(p.Addr())
	return full[2*(32-p.Bits()/4):], nil
}
