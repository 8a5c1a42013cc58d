package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"unicode/utf8"
)

// Sentinel errors. Every error returned by this package that belongs to one
// of these classes satisfies errors.Is with the matching sentinel; the error
// text itself names the offending field, value, address or owner.
var (
	// ErrExhausted reports that a pool, range or port range has no free entry.
	ErrExhausted = errors.New("ipam: no free address")
	// ErrNotFound reports that an owner holds nothing.
	ErrNotFound = errors.New("ipam: not found")
	// ErrConflict reports that a requested address, port or CIDR is held by
	// another owner. The concrete error is a *ConflictError.
	ErrConflict = errors.New("ipam: already allocated")
	// ErrOutOfRange reports that a requested address, port or CIDR is not
	// inside any configured pool or range (or is reserved inside it).
	ErrOutOfRange = errors.New("ipam: outside every pool")
	// ErrInvalid reports bad configuration or a malformed argument. The
	// concrete error is a *ConfigError.
	ErrInvalid = errors.New("ipam: invalid configuration")
	// ErrCorrupt reports a store whose durable state cannot be decoded.
	ErrCorrupt = errors.New("ipam: store corrupt")
	// ErrClosed is returned by Transact after Close.
	ErrClosed = errors.New("ipam: store closed")
)

// ConfigError describes an invalid configuration field or argument.
// errors.Is(err, ErrInvalid) is true for every *ConfigError.
type ConfigError struct {
	Field  string // e.g. "Ranges[1].Subnet"
	Value  string // the offending value as text; may be empty
	Reason string // e.g. "prefix too small"
}

func (e *ConfigError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("ipam: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("ipam: %s %q: %s", e.Field, e.Value, e.Reason)
}

// Unwrap returns ErrInvalid.
func (e *ConfigError) Unwrap() error { return ErrInvalid }

func cfgErr(field, value, format string, args ...any) error {
	return &ConfigError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// ConflictError reports that Resource (an address, CIDR or port in canonical
// text form) is already held by Holder. errors.Is(err, ErrConflict) is true.
type ConflictError struct {
	Resource string
	Holder   string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("ipam: %s already allocated to %q", e.Resource, e.Holder)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// allocError is a sentinel-classified error with a specific message.
type allocError struct {
	kind error
	msg  string
}

func (e *allocError) Error() string { return "ipam: " + e.msg }
func (e *allocError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &allocError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Family is an IP address family.
type Family int

// Address families. The zero Family is invalid.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// FamilyOf returns the family of a: IPv4 for IPv4 and IPv4-mapped IPv6
// addresses, IPv6 for other IPv6 addresses, and 0 for the zero Addr.
func FamilyOf(a netip.Addr) Family {
	switch {
	case a.Is4() || a.Is4In6():
		return IPv4
	case a.Is6():
		return IPv6
	}
	return 0
}

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

func (f Family) valid() bool { return f == IPv4 || f == IPv6 }

// MaxOwnerLen is the maximum length in bytes of an owner ID.
const MaxOwnerLen = 1024

// PodOwner returns the canonical owner ID of a pod attachment: the container
// ID and the interface name joined by "/" (Linux interface names cannot
// contain "/"), the same pair the CNI host-local plugin records.
func PodOwner(containerID, ifName string) string {
	return containerID + "/" + ifName
}

// validateOwner checks an owner ID (field names the argument in errors).
func validateOwner(field, owner string) error {
	switch {
	case owner == "":
		return cfgErr(field, "", "must not be empty")
	case len(owner) > MaxOwnerLen:
		return cfgErr(field, owner[:32]+"...", "longer than %d bytes", MaxOwnerLen)
	case !utf8.ValidString(owner):
		return cfgErr(field, owner, "not valid UTF-8")
	}
	for _, r := range owner {
		if r < 0x20 || r == 0x7f {
			return cfgErr(field, owner, "contains control characters")
		}
	}
	return nil
}

// normAddr validates and canonicalises a caller-supplied address.
func normAddr(field string, a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, cfgErr(field, "", "invalid (zero) address")
	}
	if a.Zone() != "" {
		return a, cfgErr(field, a.String(), "zoned addresses are not allowed")
	}
	return a.Unmap(), nil
}

// normPrefix validates a caller-supplied prefix: valid, not IPv4-mapped,
// masked.
func normPrefix(field string, p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, cfgErr(field, p.String(), "invalid prefix")
	}
	if p.Addr().Is4In6() {
		return p, cfgErr(field, p.String(), "IPv4-mapped IPv6 prefixes are not allowed; use the IPv4 form")
	}
	if m := p.Masked(); m != p {
		return p, cfgErr(field, p.String(), "host bits set (did you mean %s?)", m)
	}
	return p, nil
}

func familyOfPrefix(p netip.Prefix) Family { return FamilyOf(p.Addr()) }
