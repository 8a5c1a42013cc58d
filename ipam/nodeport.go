package ipam

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// PortRange is the inclusive range of ports [Base, Base+Size-1].
type PortRange struct {
	Base, Size int
}

const defaultNodePortBase, defaultNodePortSize = 30000, 2768

// DefaultNodePortRange is the Kubernetes default, 30000-32767. (The package
// itself uses a private copy, so changing this variable has no effect.)
var DefaultNodePortRange = PortRange{Base: defaultNodePortBase, Size: defaultNodePortSize}

// ParsePortRange parses "min-max", "min+offset" (ports min..min+offset) or
// a single port "p", as Kubernetes does.
func ParsePortRange(s string) (PortRange, error) {
	bad := func(reason string) (PortRange, error) {
		return PortRange{}, cfgErr("PortRange", s, "%s", reason)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return bad("empty")
	}
	num := func(x string) (int, bool) {
		n, err := strconv.Atoi(strings.TrimSpace(x))
		return n, err == nil
	}
	var pr PortRange
	switch {
	case strings.Contains(t, "-"):
		lo, hi, _ := strings.Cut(t, "-")
		l, ok1 := num(lo)
		h, ok2 := num(hi)
		if !ok1 || !ok2 {
			return bad(`want "min-max", "min+offset" or "port"`)
		}
		if h < l {
			return bad("end before start")
		}
		pr = PortRange{Base: l, Size: h - l + 1}
	case strings.Contains(t, "+"):
		lo, off, _ := strings.Cut(t, "+")
		l, ok1 := num(lo)
		o, ok2 := num(off)
		if !ok1 || !ok2 || o < 0 {
			return bad(`want "min-max", "min+offset" or "port"`)
		}
		pr = PortRange{Base: l, Size: o + 1}
	default:
		p, ok := num(t)
		if !ok {
			return bad(`want "min-max", "min+offset" or "port"`)
		}
		pr = PortRange{Base: p, Size: 1}
	}
	if err := pr.validate("PortRange"); err != nil {
		return PortRange{}, err
	}
	return pr, nil
}

func (r PortRange) validate(field string) error {
	switch {
	case r.Base < 1 || r.Base > 65535:
		return cfgErr(field, r.String(), "base port must be in 1-65535")
	case r.Size < 1:
		return cfgErr(field, r.String(), "size must be positive")
	case r.Base+r.Size-1 > 65535:
		return cfgErr(field, r.String(), "ends beyond port 65535")
	}
	return nil
}

// String returns "min-max" (or "" for the zero PortRange).
func (r PortRange) String() string {
	if r == (PortRange{}) {
		return ""
	}
	return fmt.Sprintf("%d-%d", r.Base, r.Base+r.Size-1)
}

// Contains reports whether port lies in r.
func (r PortRange) Contains(port int) bool { return port >= r.Base && port < r.Base+r.Size }

// NodePortConfig configures a NodePortAllocator.
type NodePortConfig struct {
	Range PortRange // zero means DefaultNodePortRange
	Store Store     // required
	Space string    // store space, default "node-ports"
}

// NodePortAllocator hands out Service node ports. Ports are family
// independent; an owner (a Service) may hold several. Dynamic allocation
// prefers the upper band, leaving the lower static band (min(max(16,
// size/32), 128) ports, KEP-3668) to requested ports unless the upper band
// is full; it is round-robin so a released port is not reused immediately.
type NodePortAllocator struct {
	store     Store
	space     string
	rng       PortRange
	staticLen int
}

// NewNodePortAllocator validates cfg and returns an allocator. It does no I/O.
func NewNodePortAllocator(cfg NodePortConfig) (*NodePortAllocator, error) {
	if cfg.Store == nil {
		return nil, cfgErr("Store", "", "required")
	}
	space := cfg.Space
	if space == "" {
		space = "node-ports"
	}
	if err := validateSpace("Space", space); err != nil {
		return nil, err
	}
	r := cfg.Range
	if r == (PortRange{}) {
		r = PortRange{Base: defaultNodePortBase, Size: defaultNodePortSize}
	}
	if err := r.validate("Range"); err != nil {
		return nil, err
	}
	return &NodePortAllocator{
		store: cfg.Store, space: space, rng: r,
		staticLen: int(bandOffset(u64(uint64(r.Size)), 16, 128, 32)),
	}, nil
}

// Range returns the configured port range.
func (a *NodePortAllocator) Range() PortRange { return a.rng }

// Allocate reserves a port for owner and returns it. With requested == 0 a
// new free port is chosen (an owner may hold several); otherwise requested
// is reserved, returning it unchanged if owner already holds it, or failing
// with ErrOutOfRange if outside the range or ErrConflict (a *ConflictError)
// if another owner holds it.
func (a *NodePortAllocator) Allocate(ctx context.Context, owner string, requested int) (int, error) {
	if err := validateOwner("owner", owner); err != nil {
		return 0, err
	}
	if requested != 0 && !a.rng.Contains(requested) {
		return 0, errorf(ErrOutOfRange, "requested port %d is outside node port range %s", requested, a.rng)
	}
	var got int
	err := a.store.Transact(ctx, a.space, func(t *Txn) error {
		if requested != 0 {
			key := strconv.Itoa(requested)
			if h, ok := t.Get(key); ok && h != owner {
				return &ConflictError{Resource: "port " + key, Holder: h}
			}
			t.Put(key, owner)
			got = requested
			return nil
		}
		held := func(v u128) bool {
			_, ok := t.Get(strconv.FormatUint(v.lo, 10))
			return ok
		}
		first, last := uint64(a.rng.Base), uint64(a.rng.Base+a.rng.Size-1)
		dynFirst := first + uint64(a.staticLen)
		start := dynFirst
		if c, err := strconv.ParseUint(t.Cursor(), 10, 16); err == nil && c >= dynFirst && c < last {
			start = c + 1
		}
		v, ok := scanFree(u64(start), u64(last), nil, held)
		if !ok && start > dynFirst {
			v, ok = scanFree(u64(dynFirst), u64(start-1), nil, held)
		}
		if ok {
			t.SetCursor(strconv.FormatUint(v.lo, 10))
		} else if a.staticLen > 0 {
			v, ok = scanFree(u64(first), u64(dynFirst-1), nil, held)
		}
		if !ok {
			return errorf(ErrExhausted, "no free node port in %s", a.rng)
		}
		got = int(v.lo)
		t.Put(strconv.Itoa(got), owner)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return got, nil
}

// ReleasePort frees port, whoever holds it; releasing a free port returns
// nil.
func (a *NodePortAllocator) ReleasePort(ctx context.Context, port int) error {
	if !a.rng.Contains(port) {
		return errorf(ErrOutOfRange, "port %d is outside node port range %s", port, a.rng)
	}
	return a.store.Transact(ctx, a.space, func(t *Txn) error {
		t.Delete(strconv.Itoa(port))
		return nil
	})
}

// Release frees every port of owner; releasing an owner holding nothing
// returns nil.
func (a *NodePortAllocator) Release(ctx context.Context, owner string) error {
	return releaseOwner(ctx, a.store, a.space, "owner", owner)
}

// Ports returns the ports owner holds inside the range, ascending, or an
// error wrapping ErrNotFound.
func (a *NodePortAllocator) Ports(ctx context.Context, owner string) ([]int, error) {
	return lookupOwned(ctx, a.store, a.space, "owner", owner, "node port", func(keys []string) []int {
		var out []int
		for _, k := range keys {
			if p, err := strconv.Atoi(k); err == nil && a.rng.Contains(p) {
				out = append(out, p)
			}
		}
		sort.Ints(out)
		return out
	})
}
