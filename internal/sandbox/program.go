package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Program is a TB for commands (examples, benchmarks) rather than tests:
// Fatal and Skip abort the function given to Run with an error, and
// cleanups run once, at Close or on SIGINT/SIGTERM (then the process exits
// with status 130).
type Program struct {
	mu       sync.Mutex
	cleanups []func()
	done     bool
	stop     chan struct{}
}

type abort struct{ err error }

// NewProgram returns a Program that cleans up on SIGINT and SIGTERM.
func NewProgram() *Program {
	p := &Program{stop: make(chan struct{})}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sigs:
			p.Close()
			os.Exit(130)
		case <-p.stop:
			signal.Stop(sigs)
		}
	}()
	return p
}

// Run calls fn and turns a Fatal or Skip inside it into an error.
func (p *Program) Run(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(abort)
			if !ok {
				panic(r)
			}
			err = a.err
		}
	}()
	return fn()
}

// Close runs the cleanups, last registered first. It is idempotent.
func (p *Program) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	close(p.stop)
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
}

// Helper implements TB.
func (p *Program) Helper() {}

// Cleanup implements TB.
func (p *Program) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

// Errorf implements TB: it prints to standard error.
func (p *Program) Errorf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// Fatal implements TB.
func (p *Program) Fatal(args ...any) { panic(abort{errors.New(fmt.Sprint(args...))}) }

// Fatalf implements TB.
func (p *Program) Fatalf(format string, args ...any) { panic(abort{fmt.Errorf(format, args...)}) }

// Skipf implements TB.
func (p *Program) Skipf(format string, args ...any) { panic(abort{fmt.Errorf(format, args...)}) }
