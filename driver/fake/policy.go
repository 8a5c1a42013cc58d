package fake

import (
	"context"
	"net/netip"
	"sync"

	"github.com/kubewire/kubewire/policy"
)

// Policy is an in-memory policy.Dataplane: it keeps the last Program and
// answers connection attempts with the Program's own evaluator, as the
// kernel would enforce it.
type Policy struct {
	mu    sync.Mutex
	prog  *policy.Program
	held  map[netip.Addr]bool
	syncs int
	fail  error
}

var _ policy.Dataplane = (*Policy)(nil)

// NewPolicy returns a fake policy dataplane enforcing nothing.
func NewPolicy() *Policy { return &Policy{held: map[netip.Addr]bool{}} }

// FailNext makes the next Sync return err.
func (f *Policy) FailNext(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

// Sync implements policy.Dataplane.
func (f *Policy) Sync(ctx context.Context, prog *policy.Program) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	f.prog = prog
	f.syncs++
	for ip := range f.held {
		if prog.Knows(ip) {
			delete(f.held, ip)
		}
	}
	return nil
}

// Hold drops traffic of the addresses until a Program knows them (see
// driver/nftables.PolicyDataplane.Hold).
func (f *Policy) Hold(ips ...netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ip := range ips {
		f.held[ip] = true
	}
}

// Syncs returns the number of successful syncs.
func (f *Policy) Syncs() int { f.mu.Lock(); defer f.mu.Unlock(); return f.syncs }

// Program returns the last Program synced (nil before the first).
func (f *Policy) Program() *policy.Program { f.mu.Lock(); defer f.mu.Unlock(); return f.prog }

// Allowed reports whether a new connection from src to dst on proto/port
// passes.
func (f *Policy) Allowed(src, dst netip.Addr, proto policy.Protocol, port uint16) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held[src] || f.held[dst] {
		return false
	}
	if f.prog == nil {
		return true
	}
	return f.prog.Trace(src, dst, proto, port).Allowed
}
