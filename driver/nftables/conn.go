package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"

	nft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/internal/probecache"
)

// commentPrefix starts the comment of every rule and set the drivers of
// this package write.
const commentPrefix = "kubewire"

// Options binds a driver to a network namespace and names its table.
type Options struct {
	// NetNS is the path of the network namespace to program (a bind mount
	// such as /run/netns/NAME, or /proc/PID/ns/net). "" means the namespace
	// of the calling OS thread when the driver is constructed.
	NetNS string
	// Table is the name of the nftables table (family inet) the instance
	// owns. Required: 1 to MaxTableNameLen letters, digits, '-' and '_',
	// starting with a letter or '_'.
	Table string
	// ProbeCacheDir, when set, remembers a successful feature probe there
	// for the running kernel and boot, so short-lived programs (a CNI
	// plugin) probe once per boot instead of once per start.
	ProbeCacheDir string
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

// ErrClosed is returned by methods of a closed driver.
var ErrClosed = errors.New("nftables: driver closed")

// tableConn is what every driver of this package shares: the one inet table
// it owns and a lasting netlink connection bound to the namespace of that
// table. Its methods are serialised by mu.
type tableConn struct {
	table *nft.Table
	log   *slog.Logger

	mu     sync.Mutex
	ns     *netns.NetNS
	conn   *nft.Conn     // lasting connection bound to ns; nil after an error
	sock   *netlink.Conn // conn's socket, for deadlines
	bufLen int           // socket buffer size set by growBuffers (0: default)
	// forget, when set, drops what the driver remembers of the table; it
	// runs (under mu) when Cleanup has removed it.
	forget func()
	closed bool
}

// open validates opts, opens the namespace, runs probe (the driver's cached
// kernel feature check) and dials, listing tables once: it fails early when
// the namespace cannot be programmed (no CAP_NET_ADMIN in its user
// namespace). It changes nothing in the namespace.
func (tc *tableConn) open(opts Options, probeName string, probe func() error) error {
	if err := validateTableName(opts.Table); err != nil {
		return err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.OpenOrCurrent(opts.NetNS)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := probecache.Do(opts.ProbeCacheDir, "nftables-"+probeName, probe); err != nil {
		ns.Close()
		return err
	}
	tc.table = &nft.Table{Family: nft.TableFamilyINet, Name: opts.Table}
	tc.log = log.With("table", "inet "+opts.Table, "netns", ns.Path())
	tc.ns = ns
	err = tc.withConn(context.Background(), func(c *nft.Conn) error {
		_, err := c.ListTablesOfFamily(nft.TableFamilyINet)
		return err
	})
	if err != nil {
		ns.Close()
		return fmt.Errorf("nftables: connect in netns %s: %w", ns.Path(), err)
	}
	return nil
}

// Table returns the name of the table the instance owns.
func (tc *tableConn) Table() string { return tc.table.Name }

// dial opens a lasting nftables connection whose socket is created inside
// the namespace, so it stays bound to it whatever thread uses it later.
func (tc *tableConn) dial() error {
	var (
		conn *nft.Conn
		sock *netlink.Conn
	)
	err := tc.ns.Do(func() error {
		var err error
		conn, err = nft.New(nft.AsLasting(), nft.WithSockOptions(func(c *netlink.Conn) error {
			sock = c
			return nil
		}))
		return err
	})
	if err != nil {
		return err
	}
	tc.conn, tc.sock = conn, sock
	return nil
}

// withConn runs fn with the connection under tc.mu, applying ctx's deadline
// to the socket. After any error the connection is dropped (a failed batch
// or an expired deadline can leave unread replies behind) and the next call
// dials a fresh one.
func (tc *tableConn) withConn(ctx context.Context, fn func(*nft.Conn) error) error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if tc.conn == nil {
		if err := tc.dial(); err != nil {
			return err
		}
	}
	deadline, _ := ctx.Deadline() // zero: no deadline
	if tc.sock != nil {
		if err := tc.sock.SetDeadline(deadline); err != nil {
			tc.dropConn()
			return err
		}
	}
	err := fn(tc.conn)
	if err != nil {
		tc.dropConn()
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
	}
	return err
}

func (tc *tableConn) dropConn() {
	if tc.conn != nil {
		_ = tc.conn.CloseLasting()
	}
	tc.conn, tc.sock, tc.bufLen = nil, nil, 0
}

// growBuffers makes the socket's send and receive buffers hold at least n
// bytes: one batch is one sendmsg, and the kernel queues an acknowledgement
// per message of it before the first is read. It forces the size
// (SO_SNDBUFFORCE, with CAP_NET_ADMIN) and falls back to the capped
// SO_SNDBUF. Called with tc.mu held, inside withConn.
func (tc *tableConn) growBuffers(n int) error {
	if n <= tc.bufLen || tc.sock == nil {
		return nil
	}
	n = max(n, 2*tc.bufLen)
	raw, err := tc.sock.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], n); e != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], n); e != nil {
					serr = e
				}
			}
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("socket buffers of %d bytes: %w", n, err)
	}
	tc.bufLen = n
	return nil
}

// tableUse reports whether the table exists and how many objects (chains,
// sets, anonymous ones included) the kernel counts in it.
func (tc *tableConn) tableUse(c *nft.Conn) (exists bool, use uint32, err error) {
	tables, err := c.ListTablesOfFamily(tc.table.Family)
	if err != nil {
		return false, 0, err
	}
	for _, t := range tables {
		if t.Name == tc.table.Name {
			return true, t.Use, nil
		}
	}
	return false, 0, nil
}

// holds reports whether the table still holds what a sync left: it exists,
// the kernel counts objects objects in it, and chain has rules rules (a
// flush from outside empties chains but keeps the count). Any error means
// no: the caller rebuilds.
func (tc *tableConn) holds(c *nft.Conn, objects int, chain string, rules int) bool {
	exists, use, err := tc.tableUse(c)
	if err != nil || !exists || !useIs(use, uint32(objects)) {
		return false
	}
	got, err := c.GetRules(tc.table, &nft.Chain{Name: chain, Table: tc.table})
	return err == nil && len(got) == rules
}

// useIs compares a table's object count as google/nftables v0.3.0 decodes
// it (in host byte order, not network order: either is accepted).
func useIs(got, want uint32) bool { return got == want || got == bits.ReverseBytes32(want) }

// removeTable queues the deletion of the table with all it holds. Adding it
// first makes the deletion valid whether or not the table exists, all in
// the same transaction.
func (tc *tableConn) removeTable(c *nft.Conn) {
	c.AddTable(tc.table)
	c.DelTable(tc.table)
}

// Cleanup removes the table and everything in it. Removing a table that is
// not there is not an error. Other tables are never touched.
func (tc *tableConn) Cleanup(ctx context.Context) error {
	err := tc.withConn(ctx, func(c *nft.Conn) error {
		tc.removeTable(c)
		if err := c.Flush(); err != nil {
			return err
		}
		if tc.forget != nil {
			tc.forget()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nftables: remove table inet %s: %w", tc.table.Name, err)
	}
	tc.log.DebugContext(ctx, "table removed")
	return nil
}

// Close releases the connection and the namespace handle. It leaves the
// table in place (call Cleanup first to remove it).
func (tc *tableConn) Close() error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.closed {
		return nil
	}
	tc.closed = true
	tc.dropConn()
	return tc.ns.Close()
}

// Dump renders the table as text: the table, its chains, sets and maps with
// their elements and rules, in nft-like syntax without handles, so two dumps
// of the same ruleset are equal. A missing table dumps as "".
func (tc *tableConn) Dump(ctx context.Context) (string, error) {
	var out string
	err := tc.withConn(ctx, func(c *nft.Conn) error {
		var err error
		out, err = dumpTable(c, tc.table)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("nftables: dump table inet %s: %w", tc.table.Name, err)
	}
	return out, nil
}
