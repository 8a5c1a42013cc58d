// Package runner runs a function from a coalescing, rate-bounded loop, as
// kube-proxy's BoundedFrequencyRunner does: requests between runs collapse
// into one run, runs are at least MinInterval apart and at most
// MaxInterval apart, and a failed run is retried with exponential backoff.
// Time comes from an injectable Clock, so tests step it by hand.
package runner

import (
	"context"
	"errors"
	"time"
)

// Clock is the time source of a Runner.
type Clock interface {
	Now() time.Time
	// NewTimer returns a channel that receives once after d, and a stop
	// function.
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

// RealClock is the wall clock.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer implements Clock.
func (RealClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// Config tunes a Runner.
type Config struct {
	// MinInterval is the least time between the starts of two runs
	// (0: none).
	MinInterval time.Duration
	// MaxInterval is the most time between runs without a request (0: no
	// periodic run).
	MaxInterval time.Duration
	// RetryBase and RetryMax bound the backoff after a failed run
	// (defaults 1 s and 1 min).
	RetryBase, RetryMax time.Duration
	// Clock defaults to RealClock.
	Clock Clock
}

// Runner calls a function when asked, within the bounds of its Config.
type Runner struct {
	fn  func(context.Context) error
	cfg Config
	req chan struct{}
}

// New returns a Runner for fn. It starts nothing.
func New(fn func(context.Context) error, cfg Config) (*Runner, error) {
	if fn == nil {
		return nil, errors.New("runner: nil function")
	}
	if cfg.MinInterval < 0 || cfg.MaxInterval < 0 || (cfg.MaxInterval > 0 && cfg.MaxInterval < cfg.MinInterval) {
		return nil, errors.New("runner: want 0 <= MinInterval <= MaxInterval")
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	return &Runner{fn: fn, cfg: cfg, req: make(chan struct{}, 1)}, nil
}

// Request asks for a run as soon as the bounds allow. It never blocks;
// requests made before the run starts are coalesced.
func (r *Runner) Request() {
	select {
	case r.req <- struct{}{}:
	default:
	}
}

// Run runs the loop until ctx ends, then returns nil. The first run happens
// at once.
func (r *Runner) Run(ctx context.Context) error {
	var (
		last     time.Time
		pending  = true
		failures int
		retryAt  time.Time
		ranOnce  bool
	)
	for {
		now := r.cfg.Clock.Now()
		var wait time.Duration
		armed := true
		switch {
		case pending:
			if ranOnce {
				wait = last.Add(r.cfg.MinInterval).Sub(now)
			}
			if failures > 0 {
				wait = max(wait, retryAt.Sub(now))
			}
		case r.cfg.MaxInterval > 0:
			wait = last.Add(r.cfg.MaxInterval).Sub(now)
		default:
			armed = false // nothing to do until a request
		}
		var timer <-chan time.Time
		stop := func() bool { return false }
		if armed {
			timer, stop = r.cfg.Clock.NewTimer(max(wait, 0))
		}
		select {
		case <-ctx.Done():
			stop()
			return nil
		case <-r.req:
			stop()
			pending = true
			continue
		case <-timer:
		}
		last = r.cfg.Clock.Now()
		ranOnce = true
		pending = false
		if err := r.fn(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			backoff := r.cfg.RetryBase << min(failures-1, 20)
			if backoff > r.cfg.RetryMax || backoff <= 0 {
				backoff = r.cfg.RetryMax
			}
			retryAt = last.Add(backoff)
			pending = true
			continue
		}
		failures = 0
	}
}
