package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/kubewire/kubewire/internal/runner"
)

// Clock is the time source of the Enforcer's sync loop (a fake in tests).
type Clock interface {
	Now() time.Time
	// NewTimer returns a channel that receives once after d, and a
	// function that stops the timer.
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

// Config configures an Enforcer.
type Config struct {
	// Dataplane enforces the compiled Program (required).
	Dataplane Dataplane
	// MinSyncInterval is the least time between two syncs (changes in
	// between are coalesced); MaxSyncInterval forces a sync at least that
	// often. Defaults: 0 and 1 hour.
	MinSyncInterval, MaxSyncInterval time.Duration
	// Clock is for tests; nil means the wall clock.
	Clock Clock
	// Logger receives sync failures and refused policies; nil discards.
	Logger *slog.Logger
}

// Enforcer turns namespace, pod, node and policy events into dataplane
// syncs. Event methods record the change (recompiling only what it can
// affect) and ask for a sync; Run syncs from a coalescing, rate-bounded
// loop. All methods are safe for concurrent use.
type Enforcer struct {
	cfg    Config
	log    *slog.Logger
	runner *runner.Runner

	mu      sync.Mutex
	c       *compiler
	last    *Program // last synced
	pending int
}

// NewEnforcer checks cfg and returns an Enforcer. It starts nothing.
func NewEnforcer(cfg Config) (*Enforcer, error) {
	if cfg.Dataplane == nil {
		return nil, errors.New("policy: Config.Dataplane is required")
	}
	if cfg.MaxSyncInterval == 0 {
		cfg.MaxSyncInterval = time.Hour
	}
	if cfg.MinSyncInterval < 0 || cfg.MaxSyncInterval < cfg.MinSyncInterval {
		return nil, fmt.Errorf("policy: Config.MinSyncInterval %v / MaxSyncInterval %v: want 0 <= min <= max", cfg.MinSyncInterval, cfg.MaxSyncInterval)
	}
	if cfg.Clock == nil {
		cfg.Clock = runner.RealClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Enforcer{cfg: cfg, log: log, c: newCompiler()}
	var err error
	e.runner, err = runner.New(e.syncFromLoop, runner.Config{MinInterval: cfg.MinSyncInterval, MaxInterval: cfg.MaxSyncInterval, Clock: cfg.Clock})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Run syncs until ctx ends: at once, after changes (at most every
// MinSyncInterval) and at least every MaxSyncInterval; a failed sync is
// retried with backoff. It returns nil when ctx ends.
func (e *Enforcer) Run(ctx context.Context) error { return e.runner.Run(ctx) }

func (e *Enforcer) syncFromLoop(ctx context.Context) error {
	err := e.Sync(ctx)
	if err != nil {
		e.log.WarnContext(ctx, "policy sync failed; retrying", "err", err)
	}
	return err
}

func (e *Enforcer) record(fn func(c *compiler)) {
	e.mu.Lock()
	fn(e.c)
	e.pending++
	e.mu.Unlock()
	e.runner.Request()
}

// OnNamespaceAdd, OnNamespaceUpdate and OnNamespaceDelete record a
// namespace (its labels).
func (e *Enforcer) OnNamespaceAdd(ns Namespace) {
	e.record(func(c *compiler) { c.setNamespace(ns.Name, ns.Labels) })
}
func (e *Enforcer) OnNamespaceUpdate(_, ns Namespace) { e.OnNamespaceAdd(ns) }
func (e *Enforcer) OnNamespaceDelete(ns Namespace) {
	e.record(func(c *compiler) { c.deleteNamespace(ns.Name) })
}

// OnPodAdd, OnPodUpdate and OnPodDelete record a pod (nil is ignored).
func (e *Enforcer) OnPodAdd(p *Pod) {
	if p != nil {
		e.record(func(c *compiler) { c.setPod(p) })
	}
}

// OnPodUpdate records the new version of a pod.
func (e *Enforcer) OnPodUpdate(_, p *Pod) { e.OnPodAdd(p) }

// OnPodDelete records the deletion of a pod.
func (e *Enforcer) OnPodDelete(p *Pod) {
	if p != nil {
		e.record(func(c *compiler) { c.deletePod(p.Key) })
	}
}

// OnNodeAdd, OnNodeUpdate and OnNodeDelete record a node (its addresses:
// traffic between a pod and its own node always passes).
func (e *Enforcer) OnNodeAdd(n Node)       { e.record(func(c *compiler) { c.setNode(n) }) }
func (e *Enforcer) OnNodeUpdate(_, n Node) { e.OnNodeAdd(n) }
func (e *Enforcer) OnNodeDelete(n Node)    { e.record(func(c *compiler) { c.deleteNode(n.Name) }) }

// OnAdminPolicyAdd records an AdminNetworkPolicy (OnAdminPolicyUpdate its
// new version; nil is ignored).
func (e *Enforcer) OnAdminPolicyAdd(a *AdminPolicy) {
	if a != nil {
		e.record(func(c *compiler) { c.setAdminPolicy(a, false) })
	}
}
func (e *Enforcer) OnAdminPolicyUpdate(_, a *AdminPolicy) { e.OnAdminPolicyAdd(a) }

// OnAdminPolicyDelete records the deletion of an AdminNetworkPolicy.
func (e *Enforcer) OnAdminPolicyDelete(a *AdminPolicy) {
	if a != nil {
		e.record(func(c *compiler) { c.deleteAdminPolicy(a.Name, false) })
	}
}

// OnBaselinePolicyUpdate records the BaselineAdminNetworkPolicy (nil: it
// was deleted).
func (e *Enforcer) OnBaselinePolicyUpdate(old, b *AdminPolicy) {
	e.record(func(c *compiler) {
		if b != nil {
			c.setAdminPolicy(b, true)
		} else if old != nil {
			c.deleteAdminPolicy(old.Name, true)
		}
	})
}

// OnPolicyUpdate records the new version of a policy.
func (e *Enforcer) OnPolicyUpdate(_, p *Policy) { e.OnPolicyAdd(p) }

// OnPolicyAdd records a policy (nil is ignored). An invalid one is logged
// and enforced as absent (it never widens what others allow).
func (e *Enforcer) OnPolicyAdd(p *Policy) {
	if p == nil {
		return
	}
	if err := p.Validate(); err != nil {
		e.log.Warn("policy refused", "policy", p.Key.String(), "err", err)
	}
	e.record(func(c *compiler) { c.setPolicy(p) })
}

// OnPolicyDelete records the deletion of a policy (nil is ignored).
func (e *Enforcer) OnPolicyDelete(p *Policy) {
	if p != nil {
		e.record(func(c *compiler) { c.deletePolicy(p.Key) })
	}
}

// Sync compiles what changed and hands the Program to the dataplane now.
// Run calls it; tests and programs may too.
func (e *Enforcer) Sync(ctx context.Context) error {
	e.mu.Lock()
	prog := e.c.program()
	e.pending = 0
	e.mu.Unlock()
	if err := e.cfg.Dataplane.Sync(ctx, prog); err != nil {
		return fmt.Errorf("policy: sync: %w", err)
	}
	e.mu.Lock()
	e.last = prog
	e.mu.Unlock()
	return nil
}

// Program returns the Program of the last successful sync (nil before).
func (e *Enforcer) Program() *Program {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// Trace decides a connection with the last synced Program: what the
// dataplane enforces now.
func (e *Enforcer) Trace(src, dst netip.Addr, proto Protocol, port uint16) Decision {
	if p := e.Program(); p != nil {
		return p.Trace(src, dst, proto, port)
	}
	return Decision{Allowed: true}
}
