//go:build unix

package ipam

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

func flockSupported() error { return nil }

// flockFile takes an exclusive flock on f. While ctx can be cancelled it
// polls with LOCK_NB (with exponential backoff up to 5ms) so that a stuck
// holder cannot block the caller past its deadline.
func flockFile(ctx context.Context, f *os.File) error {
	fd := int(f.Fd())
	if ctx.Done() == nil {
		for {
			err := syscall.Flock(fd, syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				return err
			}
		}
	}
	delay := 50 * time.Microsecond
	var t *time.Timer
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return err
		}
		if t == nil {
			t = time.NewTimer(delay)
			defer t.Stop()
		} else {
			t.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if delay *= 2; delay > 5*time.Millisecond {
			delay = 5 * time.Millisecond
		}
	}
}

func funlockFile(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
