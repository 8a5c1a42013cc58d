// Package k8sparse parses the addresses and CIDRs of Kubernetes API
// objects as Kubernetes components do (k8s.io/utils/net's ParseIPSloppy
// and ParseCIDRSloppy), for the kubeconv converters.
package k8sparse

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// IP parses an IP address: IPv4 octets may have leading zeros (read as
// decimal, as objects written before Kubernetes 1.20's stricter parsing
// may hold), IPv4-mapped IPv6 addresses are IPv4, zones are refused.
func IP(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return legacyIPv4(s)
	}
	if ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// legacyIPv4 parses dotted-quad IPv4 with decimal octets that may have
// leading zeros.
func legacyIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		b[i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}

// Prefix parses a CIDR and returns the network (host bits cleared). An
// IPv4-mapped IPv6 CIDR stays an IPv6 one (as Kubernetes' family checks
// see it): mapping ::ffff:0:0/96 to 0.0.0.0/0 would widen a source range
// or an ipBlock to every IPv4 address.
func Prefix(s string) (netip.Prefix, bool) {
	addr, bits, ok := strings.Cut(s, "/")
	if !ok || bits == "" || len(bits) > 3 || strings.TrimLeft(bits, "0123456789") != "" {
		return netip.Prefix{}, false
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		var ok bool
		if ip, ok = legacyIPv4(addr); !ok {
			return netip.Prefix{}, false
		}
	}
	if ip.Zone() != "" {
		return netip.Prefix{}, false
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n > ip.BitLen() {
		return netip.Prefix{}, false
	}
	p, err := ip.Prefix(n)
	return p, err == nil
}

// FieldError is a conversion error naming the object, the Kubernetes
// field and its value; errors.Is(err, Kind) holds (each converter passes
// its domain's ErrInvalid).
type FieldError struct {
	Obj    string // "service ns/name", "networkpolicy ns/name", ...
	Field  string
	Value  any // nil: the field as a whole
	Reason string
	Kind   error
}

func (e *FieldError) Error() string {
	if e.Value == nil {
		return fmt.Sprintf("kubeconv: %s: %s: %s", e.Obj, e.Field, e.Reason)
	}
	v := e.Value
	if s, ok := v.(string); ok {
		v = strconv.Quote(s)
	}
	return fmt.Sprintf("kubeconv: %s: %s %v: %s", e.Obj, e.Field, v, e.Reason)
}

// Is matches Kind.
func (e *FieldError) Is(target error) bool { return target == e.Kind }
