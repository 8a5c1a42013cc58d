package nftables

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/kubewire/kubewire/network"
)

// ErrInvalid is matched (with errors.Is) by every error that rejects an
// Options or MasqueradeRules value. Nothing is applied when it is returned.
var ErrInvalid = errors.New("nftables: invalid argument")

// MaxTableNameLen is the longest table name Options.Table accepts: the
// kernel's NFT_TABLE_MAXNAMELEN (256) minus the terminating NUL.
const MaxTableNameLen = 255

type invalidError struct {
	field, value, reason string // value as shown: quoted string or number
}

func (e *invalidError) Error() string {
	return fmt.Sprintf("nftables: %s %s: %s", e.field, e.value, e.reason)
}

func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// invalid rejects a string value, shown quoted.
func invalid(field, value, reason string) error {
	return &invalidError{field: field, value: strconv.Quote(value), reason: reason}
}

// invalidNumber rejects a numeric value, shown as is.
func invalidNumber(field string, value uint64, reason string) error {
	return &invalidError{field: field, value: strconv.FormatUint(value, 10), reason: reason}
}

// validateTableName accepts 1 to MaxTableNameLen letters, digits, '-' and
// '_', starting with a letter or '_' so the name is also a valid nft(8)
// identifier.
func validateTableName(name string) error {
	const field = "Options.Table"
	switch {
	case name == "":
		return invalid(field, name, "a table name is required")
	case len(name) > MaxTableNameLen:
		return invalid(field, name, fmt.Sprintf("longer than %d bytes", MaxTableNameLen))
	}
	for i, c := range []byte(name) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if letter || i > 0 && (c >= '0' && c <= '9' || c == '-') {
			continue
		}
		if i == 0 {
			return invalid(field, name, "must start with a letter or '_'")
		}
		return invalid(field, name, "only letters, digits, '-' and '_' are allowed")
	}
	return nil
}

// plan is validated MasqueradeRules split by family, merged into ranges.
type plan struct {
	src4, src6  []addrRange
	dst4, dst6  []addrRange // Except
	randomFully bool
}

func (p plan) empty() bool { return len(p.src4) == 0 && len(p.src6) == 0 }

// buildPlan validates rules and merges their prefixes.
func buildPlan(rules network.MasqueradeRules) (plan, error) {
	src4, src6, err := splitPrefixes("MasqueradeRules.Sources", rules.Sources)
	if err != nil {
		return plan{}, err
	}
	dst4, dst6, err := splitPrefixes("MasqueradeRules.Except", rules.Except)
	if err != nil {
		return plan{}, err
	}
	return plan{
		src4: mergePrefixes(src4), src6: mergePrefixes(src6),
		dst4: mergePrefixes(dst4), dst6: mergePrefixes(dst6),
		randomFully: rules.RandomFully,
	}, nil
}

func splitPrefixes(field string, ps []netip.Prefix) (v4, v6 []netip.Prefix, err error) {
	for i, p := range ps {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case !p.IsValid():
			return nil, nil, invalid(f, p.String(), "not a valid prefix")
		case p.Addr().Is4In6():
			return nil, nil, invalid(f, p.String(), "IPv4-mapped IPv6 prefix: write it as an IPv4 prefix")
		case p != p.Masked():
			return nil, nil, invalid(f, p.String(), "not a masked prefix")
		case p.Addr().Is4():
			v4 = append(v4, p)
		default:
			v6 = append(v6, p)
		}
	}
	return v4, v6, nil
}
