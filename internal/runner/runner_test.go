package runner

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu    sync.Mutex
	calls []time.Time
	errs  []error // returned in order; nil after
	clock *FakeClock
	ran   chan struct{}
}

func (r *recorder) fn(ctx context.Context) error {
	r.mu.Lock()
	r.calls = append(r.calls, r.clock.Now())
	var err error
	if len(r.errs) > 0 {
		err, r.errs = r.errs[0], r.errs[1:]
	}
	r.mu.Unlock()
	r.ran <- struct{}{}
	return err
}

func (r *recorder) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.calls) }

// waitIdle waits until the loop blocks on a timer or on requests.
func waitIdle(t *testing.T, c *FakeClock, timers int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for c.Waiting() < timers {
		if time.Now().After(deadline) {
			t.Fatalf("loop never waited on %d timers (%d)", timers, c.Waiting())
		}
		time.Sleep(time.Millisecond)
	}
}

func start(t *testing.T, cfg Config, errs ...error) (*Runner, *recorder, *FakeClock) {
	t.Helper()
	clock := NewFakeClock(time.Unix(1000, 0))
	rec := &recorder{clock: clock, errs: errs, ran: make(chan struct{}, 100)}
	cfg.Clock = clock
	r, err := New(rec.fn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	<-rec.ran // the first run is immediate
	return r, rec, clock
}

func TestCoalescesAndBounds(t *testing.T) {
	r, rec, clock := start(t, Config{MinInterval: time.Second, MaxInterval: time.Minute})
	waitIdle(t, clock, 1) // the periodic timer
	// Many requests inside MinInterval give one run, at MinInterval.
	for i := 0; i < 10; i++ {
		r.Request()
	}
	waitIdle(t, clock, 1)
	clock.Step(500 * time.Millisecond)
	select {
	case <-rec.ran:
		t.Fatal("ran before MinInterval")
	case <-time.After(20 * time.Millisecond):
	}
	clock.Step(500 * time.Millisecond)
	<-rec.ran
	if rec.count() != 2 {
		t.Fatalf("runs = %d, want 2", rec.count())
	}
	// No request: a run at MaxInterval.
	waitIdle(t, clock, 1)
	clock.Step(time.Minute)
	<-rec.ran
	if got := rec.calls[2].Sub(rec.calls[1]); got != time.Minute {
		t.Fatalf("periodic run after %v, want 1m", got)
	}
}

func TestRetriesWithBackoff(t *testing.T) {
	boom := errors.New("boom")
	_, rec, clock := start(t, Config{RetryBase: time.Second, RetryMax: 3 * time.Second}, boom, boom, boom)
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
		waitIdle(t, clock, 1)
		clock.Step(want - time.Millisecond)
		select {
		case <-rec.ran:
			t.Fatalf("retry before %v", want)
		case <-time.After(20 * time.Millisecond):
		}
		clock.Step(time.Millisecond)
		<-rec.ran
	}
	if rec.count() != 4 {
		t.Fatalf("runs = %d, want 4", rec.count())
	}
	// Success: back to idle, nothing more without a request (no MaxInterval).
	time.Sleep(20 * time.Millisecond)
	if clock.Waiting() != 0 {
		t.Fatalf("%d timers armed after success without MaxInterval", clock.Waiting())
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(nil, Config{}); err == nil {
		t.Error("nil function accepted")
	}
	if _, err := New(func(context.Context) error { return nil }, Config{MinInterval: time.Minute, MaxInterval: time.Second}); err == nil {
		t.Error("MaxInterval < MinInterval accepted")
	}
}
