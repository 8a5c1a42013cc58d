// Package driver holds the vocabulary shared by kubewire's kernel drivers:
// the error a driver returns when the kernel lacks a feature, and a helper to
// pick the first driver that works on this machine.
//
// The drivers themselves live in the subpackages: netlink (links, addresses,
// routes, VXLAN), nftables (service and policy dataplanes, masquerade), ebpf,
// and fake (in-memory, for tests without root). Domain packages (network,
// service, policy, dns) define the small interfaces the drivers implement;
// drivers import domain packages, never the other way round.
package driver

import (
	"errors"
	"fmt"
)

// ErrNotSupported is matched (with errors.Is) by every error that reports a
// kernel or platform feature a driver needs but cannot find.
var ErrNotSupported = errors.New("not supported")

// UnsupportedError says which feature is missing and, when known, the first
// kernel version that has it. errors.Is(err, ErrNotSupported) is true.
type UnsupportedError struct {
	// Feature names what was probed, e.g. "vxlan link" or "nftables set with intervals".
	Feature string
	// MinKernel is the oldest Linux release that has the feature ("3.7"), or "".
	MinKernel string
	// Err is the error the probe saw, if any.
	Err error
}

func (e *UnsupportedError) Error() string {
	msg := e.Feature + " not supported"
	if e.MinKernel != "" {
		msg += " (requires Linux " + e.MinKernel + " or later)"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is reports whether target is ErrNotSupported.
func (e *UnsupportedError) Is(target error) bool { return target == ErrNotSupported }

// Unwrap returns the probe's own error.
func (e *UnsupportedError) Unwrap() error { return e.Err }

// First calls each constructor in order and returns the first value built
// without an error. A constructor that fails with ErrNotSupported is skipped;
// any other error stops the search and is returned. When every constructor
// reports ErrNotSupported, the joined errors are returned, so the caller can
// still see each missing feature.
func First[T any](constructors ...func() (T, error)) (T, error) {
	var zero T
	var unsupported []error
	for i, c := range constructors {
		v, err := c()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, ErrNotSupported) {
			return zero, fmt.Errorf("driver %d: %w", i, err)
		}
		unsupported = append(unsupported, err)
	}
	if len(unsupported) == 0 {
		return zero, errors.New("driver: no constructor given")
	}
	return zero, errors.Join(unsupported...)
}
