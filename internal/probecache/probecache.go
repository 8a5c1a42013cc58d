// Package probecache remembers successful kernel feature probes, in the
// process and optionally on disk, so that short-lived programs (a CNI plugin
// runs once per call) do not pay for probing on every start.
//
// A disk entry is valid for one boot of one kernel: its name holds the boot
// ID, and its content the kernel release. Only successes are cached: a
// failed probe is retried next time.
package probecache

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

var (
	mu   sync.Mutex
	seen = map[string]bool{}
)

// Do runs probe unless a success for name is remembered in this process or,
// when dir is not empty, in dir for the running kernel and boot. dir must
// exist for a success to be remembered there.
func Do(dir, name string, probe func() error) error {
	mu.Lock()
	ok := seen[name]
	mu.Unlock()
	if ok {
		return nil
	}
	file, stamp := entry(dir, name)
	if file != "" {
		if b, err := os.ReadFile(file); err == nil && string(b) == stamp {
			remember(name)
			return nil
		}
	}
	if err := probe(); err != nil {
		return err
	}
	remember(name)
	if file != "" {
		// Best effort: a cache that cannot be written only costs a probe.
		// The directory belongs to the caller: it is never created here.
		tmp := file + ".tmp"
		if os.WriteFile(tmp, []byte(stamp), 0o644) == nil {
			_ = os.Rename(tmp, file)
		}
	}
	return nil
}

func remember(name string) {
	mu.Lock()
	seen[name] = true
	mu.Unlock()
}

// entry returns the cache file for name and the content that marks a valid
// success, or "" when dir is empty or the boot cannot be identified.
func entry(dir, name string) (string, string) {
	if dir == "" {
		return "", ""
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", ""
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", ""
	}
	release := unix.ByteSliceToString(u.Release[:])
	id := strings.TrimSpace(string(boot))
	return filepath.Join(dir, fmt.Sprintf("probe-%s-%s", name, id)), "ok " + release + "\n"
}

// Forget drops the in-process memory of every probe (tests use it).
func Forget() {
	mu.Lock()
	seen = map[string]bool{}
	mu.Unlock()
}
