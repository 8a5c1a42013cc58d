package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kubewire/kubewire/internal/runner"
)

// Config configures a Proxier.
type Config struct {
	// Dataplane renders the state (required).
	Dataplane Dataplane
	// Node is this node (its name decides which endpoints are local).
	Node NodeInfo
	// MinSyncInterval is the least time between two syncs (changes in
	// between are coalesced); MaxSyncInterval forces a full resync at least
	// that often (0: never). Defaults: 0 and 1 hour.
	MinSyncInterval, MaxSyncInterval time.Duration
	// Clock is for tests; nil means the wall clock.
	Clock Clock
	// Health, when set, tracks sync progress for /healthz and /livez.
	Health *ProxyHealth
	// ServiceHealth, when set, serves the healthCheckNodePort of services
	// with externalTrafficPolicy Local after every sync.
	ServiceHealth *ServiceHealth
	// Conntrack, when set, clears stale UDP conntrack entries after syncs.
	Conntrack Conntrack
	// Metrics, when set, is updated after every sync (register it yourself).
	Metrics *Metrics
	// Logger receives debug events; nil discards.
	Logger *slog.Logger
}

// Clock is the time source of a Proxier's sync loop (a fake in tests).
type Clock interface {
	Now() time.Time
	// NewTimer returns a channel that receives once after d, and a
	// function that stops the timer.
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

// Proxier turns Service and EndpointSlice events into dataplane syncs.
// Event methods only record the change and ask for a sync; Run performs
// syncs from a coalescing, rate-bounded loop. All methods are safe for
// concurrent use.
type Proxier struct {
	cfg    Config
	log    *slog.Logger
	runner *runner.Runner

	mu       sync.Mutex
	node     NodeInfo
	services map[Name]*Service
	slices   map[Name]map[string]*EndpointSlice
	dirty    map[Name]bool
	ports    map[PortName]PortState // last built
	bySvc    map[Name][]PortName    // the keys of ports, per service
	sorted   []PortState            // ports in State order
	needFull bool
	lastFull time.Time
	stale    []UDPFlowSet // conntrack sets of syncs that failed
	triggers []time.Time  // EndpointSlice trigger times not yet synced
	pending  int          // changes recorded since the last sync
}

// NewProxier checks cfg and returns a Proxier. It starts nothing.
func NewProxier(cfg Config) (*Proxier, error) {
	if cfg.Dataplane == nil {
		return nil, errors.New("service: Config.Dataplane is required")
	}
	if cfg.MaxSyncInterval == 0 {
		cfg.MaxSyncInterval = time.Hour
	}
	if cfg.MinSyncInterval < 0 || cfg.MaxSyncInterval < cfg.MinSyncInterval {
		return nil, fmt.Errorf("service: Config.MinSyncInterval %v / MaxSyncInterval %v: want 0 <= min <= max", cfg.MinSyncInterval, cfg.MaxSyncInterval)
	}
	if cfg.Clock == nil {
		cfg.Clock = runner.RealClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxier{
		cfg: cfg, log: log, node: NodeInfo{Name: cfg.Node.Name, Zone: cfg.Node.Zone, Addresses: slices.Clone(cfg.Node.Addresses)},
		services: map[Name]*Service{},
		slices:   map[Name]map[string]*EndpointSlice{},
		dirty:    map[Name]bool{},
		ports:    map[PortName]PortState{},
		bySvc:    map[Name][]PortName{},
		needFull: true,
	}
	var err error
	p.runner, err = runner.New(p.syncFromLoop, runner.Config{
		MinInterval: cfg.MinSyncInterval, MaxInterval: cfg.MaxSyncInterval, Clock: cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Run syncs until ctx ends: at once, after changes (at most every
// MinSyncInterval), and at least every MaxSyncInterval. It returns nil when
// ctx ends.
func (p *Proxier) Run(ctx context.Context) error { return p.runner.Run(ctx) }

func (p *Proxier) syncFromLoop(ctx context.Context) error {
	err := p.Sync(ctx)
	if err != nil {
		p.log.WarnContext(ctx, "service sync failed; retrying with a full sync", "err", err)
	}
	return err
}

func (p *Proxier) changed(n Name) {
	p.dirty[n] = true
	p.pending++
	if p.cfg.Health != nil {
		p.cfg.Health.QueuedUpdate()
	}
	p.runner.Request()
}

// OnServiceAdd records a new Service. An invalid one is refused with an
// error (and ignored), so one bad object never blocks the others.
func (p *Proxier) OnServiceAdd(s *Service) error { return p.OnServiceUpdate(nil, s) }

// OnServiceUpdate records a changed Service; an update that changes
// nothing the proxy uses is dropped.
func (p *Proxier) OnServiceUpdate(old, s *Service) error {
	if err := s.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.services[s.Name]; ok && cur.Equal(s) {
		return nil
	}
	if old != nil && old.Name != s.Name {
		delete(p.services, old.Name)
		p.changed(old.Name)
	}
	c := *s
	p.services[s.Name] = &c
	p.changed(s.Name)
	return nil
}

// OnServiceDelete records a deleted Service.
func (p *Proxier) OnServiceDelete(s *Service) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.services[s.Name]; ok {
		delete(p.services, s.Name)
		p.changed(s.Name)
	}
}

// OnEndpointSliceAdd records a new EndpointSlice.
func (p *Proxier) OnEndpointSliceAdd(es *EndpointSlice) error {
	return p.OnEndpointSliceUpdate(nil, es)
}

// OnEndpointSliceUpdate records a changed EndpointSlice.
func (p *Proxier) OnEndpointSliceUpdate(old, es *EndpointSlice) error {
	if err := es.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.slices[es.Service]
	if m == nil {
		m = map[string]*EndpointSlice{}
		p.slices[es.Service] = m
	}
	c := *es
	m[es.Name] = &c
	if !es.TriggerTime.IsZero() {
		p.triggers = append(p.triggers, es.TriggerTime)
	}
	p.changed(es.Service)
	return nil
}

// OnEndpointSliceDelete records a deleted EndpointSlice.
func (p *Proxier) OnEndpointSliceDelete(es *EndpointSlice) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.slices[es.Service]; m != nil {
		if _, ok := m[es.Name]; ok {
			delete(m, es.Name)
			if len(m) == 0 {
				delete(p.slices, es.Service)
			}
			p.changed(es.Service)
		}
	}
}

// OnNodeUpdate records this node's new name, zone or addresses; every
// service is recomputed (topology hints depend on them) in a full sync.
func (p *Proxier) OnNodeUpdate(n NodeInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n.Equal(p.node) {
		return
	}
	n.Addresses = slices.Clone(n.Addresses)
	p.node = n
	p.needFull = true
	for name := range p.services {
		p.changed(name)
	}
}

// Sync computes the desired state from the recorded events and hands it to
// the dataplane now. Run calls it; tests and programs may too.
func (p *Proxier) Sync(ctx context.Context) error {
	p.mu.Lock()
	full := p.needFull || p.cfg.Clock.Now().Sub(p.lastFull) >= p.cfg.MaxSyncInterval
	var changed []PortName
	stale := p.stale
	p.stale = nil
	note := func(old, cur *PortState) {
		if set, ok := staleUDP(old, cur); ok {
			stale = append(stale, set)
		}
	}
	for name := range p.dirty {
		seen := map[PortName]bool{}
		var kept []PortName
		if s, ok := p.services[name]; ok {
			var sl []*EndpointSlice
			for _, es := range p.slices[name] {
				sl = append(sl, es)
			}
			for _, port := range s.Ports {
				pn := PortName{Service: name, Port: port.Name, Protocol: port.Protocol}
				seen[pn] = true
				kept = append(kept, pn)
				ps := BuildPort(s, port, Backends(sl, pn), p.node)
				if old, ok := p.ports[pn]; !ok || !old.Equal(&ps) {
					if ok {
						note(&old, &ps)
					} else {
						note(nil, &ps)
					}
					p.ports[pn] = ps
					changed = append(changed, pn)
				}
			}
		}
		for _, pn := range p.bySvc[name] {
			if !seen[pn] {
				old := p.ports[pn]
				note(&old, nil)
				delete(p.ports, pn)
				changed = append(changed, pn)
			}
		}
		if len(kept) == 0 {
			delete(p.bySvc, name)
		} else {
			p.bySvc[name] = kept
		}
	}
	p.updateSorted(changed)
	st := &State{Ports: slices.Clone(p.sorted), NodeAddresses: slices.Clone(p.node.Addresses)}
	p.dirty = map[Name]bool{}
	pending := p.pending
	p.pending = 0
	triggers := p.triggers
	p.triggers = nil
	p.mu.Unlock()

	start := time.Now()
	err := p.cfg.Dataplane.Sync(ctx, st, Hint{Full: full, Changed: changed, Exact: true})
	p.mu.Lock()
	p.cfg.Metrics.observeSync(full, time.Since(start), err, st, p.pending, triggers, time.Now())
	if err != nil {
		p.needFull = true
		p.stale = append(p.stale, stale...)
		p.mu.Unlock()
		return fmt.Errorf("service: sync: %w", err)
	}
	if full {
		p.needFull = false
		p.lastFull = p.cfg.Clock.Now()
	}
	if p.cfg.Health != nil && p.pending == 0 {
		p.cfg.Health.Updated()
	}
	var hcPorts map[Name]uint16
	var hcCounts map[Name]int
	if p.cfg.ServiceHealth != nil {
		hcPorts, hcCounts = p.healthChecks()
	}
	p.mu.Unlock()

	if p.cfg.Conntrack != nil && len(stale) > 0 {
		// Only now that the dataplane no longer sends to the old endpoints.
		if err := p.cfg.Conntrack.ClearStaleUDP(ctx, stale); err != nil {
			p.log.WarnContext(ctx, "clear stale UDP conntrack entries", "err", err)
		}
	}
	if p.cfg.ServiceHealth != nil {
		if err := p.cfg.ServiceHealth.Sync(hcPorts, hcCounts); err != nil {
			p.log.WarnContext(ctx, "health check ports", "err", err)
		}
	}
	p.log.DebugContext(ctx, "services synced", "ports", len(st.Ports), "changed", len(changed), "full", full,
		"events", pending, "took", time.Since(start))
	return nil
}

// healthChecks returns, for services with externalTrafficPolicy Local and
// a health check node port, that port and the number of local endpoints
// (the most any of its ports has). Called with p.mu held.
func (p *Proxier) healthChecks() (map[Name]uint16, map[Name]int) {
	ports, counts := map[Name]uint16{}, map[Name]int{}
	for n, s := range p.services {
		if s.HealthCheckNodePort == 0 || !s.ExternalTrafficPolicy.Local() {
			continue
		}
		ports[n] = s.HealthCheckNodePort
	}
	for pn, ps := range p.ports {
		if _, ok := ports[pn.Service]; !ok {
			continue
		}
		local := 0
		for _, t := range ps.ExternalEndpoints {
			if t.Local {
				local++
			}
		}
		counts[pn.Service] = max(counts[pn.Service], local)
	}
	return ports, counts
}

// updateSorted brings p.sorted in line with p.ports after the given
// changes: in place for a few (binary search), by a fresh sort for many.
// Called with p.mu held.
func (p *Proxier) updateSorted(changed []PortName) {
	if len(changed) > len(p.sorted)/8 {
		p.sorted = p.sorted[:0]
		for _, ps := range p.ports {
			p.sorted = append(p.sorted, ps)
		}
		SortPorts(p.sorted)
		return
	}
	for _, pn := range changed {
		i, found := slices.BinarySearchFunc(p.sorted, pn, func(ps PortState, pn PortName) int { return ComparePortNames(ps.Name, pn) })
		ps, live := p.ports[pn]
		switch {
		case live && found:
			p.sorted[i] = ps
		case live:
			p.sorted = slices.Insert(p.sorted, i, ps)
		case found:
			p.sorted = slices.Delete(p.sorted, i, i+1)
		}
	}
}
