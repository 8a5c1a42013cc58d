// Package testmain provides a TestMain that fails a package's tests when
// they leak file descriptors: netlink and nftables sockets, namespace
// handles, files. Driver packages use it, as cilium/ebpf does, because a
// leaked namespace handle keeps a whole network namespace alive.
package testmain

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Run runs the tests and exits, failing when descriptors opened during the
// run are still open at its end (after a short grace period for
// descriptors closed by finalizers or exiting goroutines).
func Run(m *testing.M) {
	before := fds()
	code := m.Run()
	if code == 0 {
		var leaked []string
		for i := 0; i < 20; i++ {
			leaked = diff(before, fds())
			if len(leaked) == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: %d file descriptors leaked by the tests:\n  %s\n", len(leaked), strings.Join(leaked, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

func fds() map[string]string {
	out := map[string]string{}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		out[e.Name()] = target
	}
	return out
}

// diff lists descriptors in after that were not open before, ignoring the
// Go runtime's own (netpoller, its wake-up pipe or eventfd).
func diff(before, after map[string]string) []string {
	var leaked []string
	for fd, target := range after {
		if before[fd] == target {
			continue
		}
		if strings.HasPrefix(target, "anon_inode:[eventpoll]") || strings.HasPrefix(target, "anon_inode:[eventfd]") ||
			strings.HasPrefix(target, "pipe:") || strings.HasPrefix(target, "anon_inode:[pidfd]") {
			continue
		}
		leaked = append(leaked, fd+" -> "+target)
	}
	sort.Strings(leaked)
	return leaked
}
