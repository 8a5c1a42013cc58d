// Package netns opens, creates and enters Linux network namespaces safely
// from Go.
//
// A network namespace belongs to an OS thread, not to a goroutine, and the Go
// scheduler moves goroutines between threads at will. The only safe way to run
// code "inside" a namespace is therefore to lock a goroutine to its thread,
// switch that thread, run the code, and switch back; if switching back fails,
// the thread must never be reused, so it is left locked and dies with its
// goroutine. (*NetNS).Do does exactly that. Goroutines started by the function
// passed to Do run on other threads and are NOT in the namespace.
//
// Prefer objects bound to a namespace over Do: a socket (netlink, nftables,
// TCP) keeps the namespace it was created in, so create it inside Do once and
// use it from any goroutine afterwards, as vishvananda/netlink's Handle and
// CNI's pkg/ns recommend.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// RunDir is where named namespaces are bound, as iproute2's `ip netns` does.
const RunDir = "/run/netns"

// NetNS is an open handle on a network namespace. It keeps the namespace
// alive until Close. The zero value is not usable.
type NetNS struct {
	mu   sync.Mutex
	file *os.File
	path string
}

// Open opens the namespace at path: a bind mount such as /run/netns/NAME or a
// /proc/PID/ns/net file. It fails unless path refers to a network namespace.
func Open(path string) (*NetNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	if err := isNetNS(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	return &NetNS{file: f, path: path}, nil
}

// OpenOrCurrent opens the namespace at path, or the calling thread's when
// path is empty: the rule every driver's Options.NetNS follows.
func OpenOrCurrent(path string) (*NetNS, error) {
	if path == "" {
		return Current()
	}
	return Open(path)
}

// Current opens the network namespace of the calling OS thread.
func Current() (*NetNS, error) {
	// The thread must not change between reading its id and opening the file.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return Open(threadNSPath())
}

// ErrNotNetNS is returned when a path does not refer to a network namespace.
var ErrNotNetNS = errors.New("not a network namespace")

func isNetNS(f *os.File) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		return ErrNotNetNS
	}
	// NS_GET_NSTYPE tells the namespace type for nsfs files (Linux 4.11).
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err == nil && t != unix.CLONE_NEWNET {
		return ErrNotNetNS
	}
	return nil
}

// Path returns the path the namespace was opened from.
func (n *NetNS) Path() string { return n.path }

// Fd returns the namespace file descriptor; it stays valid until Close.
func (n *NetNS) Fd() int { return int(n.file.Fd()) }

// Close releases the handle. The namespace itself lives on while anything
// else (a bind mount, a process, another handle) holds it.
func (n *NetNS) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.file == nil {
		return nil
	}
	err := n.file.Close()
	n.file = nil
	return err
}

// Equal reports whether two handles refer to the same namespace.
func (n *NetNS) Equal(o *NetNS) bool {
	var a, b unix.Stat_t
	if unix.Fstat(n.Fd(), &a) != nil || unix.Fstat(o.Fd(), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Do runs fn on a goroutine locked to an OS thread that has entered the
// namespace, and returns fn's error. The thread returns to its original
// namespace afterwards; if it cannot, the thread is discarded. Goroutines fn
// starts do not run in the namespace.
func (n *NetNS) Do(fn func() error) error {
	return do(func() error {
		if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %s: %w", n.path, err)
		}
		return nil
	}, fn)
}

// do runs enter then fn on a fresh locked goroutine and restores the thread's
// namespace. If restoring fails, the goroutine exits still locked, which makes
// the Go runtime terminate the thread instead of reusing it.
func do(enter func() error, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(threadNSPath())
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			// The thread may be half-switched (unshare succeeded, something later
			// failed): do not reuse it.
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("return to original netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DoFresh runs fn in a new, anonymous network namespace that exists only for
// the duration of the call (the thread is discarded afterwards). Drivers use
// it to probe kernel features without touching any real namespace.
func DoFresh(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves the namespace by dying, which also
		// frees the namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// NewNamed creates a new network namespace, bound at RunDir/name like
// `ip netns add name`, and returns an open handle on it. The caller's thread
// is not changed. Remove it with DeleteNamed.
func NewNamed(name string) (*NetNS, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := ensureRunDir(); err != nil {
		return nil, err
	}
	target := filepath.Join(RunDir, name)
	f, err := os.OpenFile(target, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	err = do(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare netns: %w", err)
		}
		return nil
	}, func() error {
		if err := unix.Mount(threadNSPath(), target, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind netns to %s: %w", target, err)
		}
		return nil
	})
	if err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		os.Remove(target)
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	ns, err := Open(target)
	if err != nil {
		_ = DeleteNamed(name)
		return nil, err
	}
	return ns, nil
}

// DeleteNamed unbinds and removes RunDir/name. The namespace is destroyed
// once no process or open handle holds it. Deleting a missing name is not an
// error.
func DeleteNamed(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	target := filepath.Join(RunDir, name)
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", name, err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", name, err)
	}
	return nil
}

// ListNamed returns the names bound under RunDir.
func ListNamed() ([]string, error) {
	entries, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 200 {
		return fmt.Errorf("netns name %q: invalid", name)
	}
	return nil
}

var runDirMu sync.Mutex

// ensureRunDir makes RunDir a shared mount point, as iproute2 does, so that
// namespaces bound there stay visible to other mount namespaces.
func ensureRunDir() error {
	runDirMu.Lock()
	defer runDirMu.Unlock()
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", RunDir, err)
	}
	err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", RunDir, err)
	}
	// Not a mount point yet: bind it onto itself first.
	if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", RunDir, err)
	}
	if err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", RunDir, err)
	}
	return nil
}

func threadNSPath() string {
	return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
}
