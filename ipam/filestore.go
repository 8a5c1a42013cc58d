package ipam

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// FileStore is a Store kept in a directory, safe for concurrent use by many
// goroutines and by many processes sharing the directory.
//
// # On-disk format
//
// Each space S is held in two files, named after S with every byte outside
// [A-Za-z0-9.-] escaped ('/' becomes '_', ':' becomes '+', any other byte,
// a leading '.' included, becomes %XX): so space "pods-10.244.1.0/24" lives
// in "pods-10.244.1.0_24.lock" and "pods-10.244.1.0_24.journal".
//
//   - <name>.lock is empty and never replaced or removed. Transact holds an
//     exclusive flock(2) on it for its whole duration, so transactions on a
//     space are serialised across processes (and, through a per-space mutex,
//     across the goroutines of one process, since flock locks belong to the
//     open file description).
//
//   - <name>.journal is an append-only sequence of records, one per
//     committed transaction, each a single line written with one write(2)
//     and then fsync'd (unless NoSync):
//
//     record  = crc SP op *(SP op) LF
//     crc     = 8 lowercase hex digits: CRC-32C (Castagnoli) of the bytes
//     between the SP after crc and the LF
//     op      = "P" SP key SP owner   ; key is now held by owner
//     / "D" SP key                    ; key is free
//     / "C" SP cursor                 ; the space's cursor is now cursor
//     key, owner, cursor = escaped text: '%', '~', SP, control bytes and
//     DEL are written as %XX (two uppercase hex digits); the empty string
//     is written as "~"
//
//     Loading replays the records in order. A last record without its LF or
//     with a bad checksum is a transaction whose writer died before
//     Transact returned: it never committed, is ignored, and is truncated
//     away by the next process holding the lock. A bad record followed by
//     more data is corruption (ErrCorrupt); FileStore never guesses.
//
//     When the journal holds many more operations than live keys, the
//     transaction that noticed writes a snapshot (the same record format:
//     one cursor op and puts for every live key) to <name>.journal.tmp,
//     fsyncs it, renames it over the journal and fsyncs the directory.
//     Other processes notice the new inode once they hold the lock and
//     reload from scratch.
//
// Each FileStore caches the replayed state of every space it has used, with
// the journal's identity and the offset it has read up to, so a Transact
// only reads what other processes appended since its last one: the cost of
// a transaction does not grow with the number of live keys.
//
// Crash safety: a record is written in one write(2) under the lock, so a
// crash (kill -9 included) leaves at most one torn record, at the tail,
// which is discarded; a Transact that returned nil has had its record
// fsync'd. Hence no allocation that was reported is lost and no key can be
// handed to two owners.
type FileStore struct {
	dir  string
	opts FileStoreOptions

	mu     sync.Mutex
	closed bool
	spaces map[string]*fileSpace
}

// FileStoreOptions tunes a FileStore. The zero value is the safe default.
type FileStoreOptions struct {
	// NoSync skips fsync after each transaction. State then survives the
	// crash of any process, but not a power loss or kernel crash.
	NoSync bool

	// compactMin is the constant term of the compaction threshold
	// (journal ops > 4*live keys + compactMin); 0 means 1024. Tests only.
	compactMin int
}

const defaultCompactMin = 1024

// maxFileStem keeps "<stem>.journal.tmp" within the usual 255-byte NAME_MAX.
const maxFileStem = 240

type fileSpace struct {
	lk         spaceLock
	base       string // path without extension
	closed     bool
	lockf      *os.File
	j          *os.File    // current journal, nil until loaded
	jinfo      os.FileInfo // identity of j
	off        int64       // bytes of j replayed (always at a record boundary)
	nops       int         // operations in j
	st         *state
	stale      bool // cached state may be wrong: reload fully
	newJournal bool // journal was created and its directory entry not yet synced
}

// NewFileStore opens (creating it if needed) a FileStore in dir.
func NewFileStore(dir string, opts FileStoreOptions) (*FileStore, error) {
	if dir == "" {
		return nil, cfgErr("dir", "", "must not be empty")
	}
	if err := flockSupported(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam: create store directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: store directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, cfgErr("dir", dir, "not a directory")
	}
	return &FileStore{dir: dir, opts: opts, spaces: map[string]*fileSpace{}}, nil
}

// Dir returns the store's directory.
func (s *FileStore) Dir() string { return s.dir }

// spaceFileName maps a space name to a safe, unique file name stem.
func spaceFileName(space string) string {
	var b strings.Builder
	for i := 0; i < len(space); i++ {
		c := space[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		case c == '.' && i > 0:
			b.WriteByte(c)
		case c == '/':
			b.WriteByte('_')
		case c == ':':
			b.WriteByte('+')
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func (s *FileStore) space(name string) (*fileSpace, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	sp := s.spaces[name]
	if sp == nil {
		fn := spaceFileName(name)
		if len(fn) > maxFileStem {
			return nil, cfgErr("space", name, "escaped file name longer than %d bytes", maxFileStem)
		}
		sp = &fileSpace{lk: newSpaceLock(), base: filepath.Join(s.dir, fn)}
		s.spaces[name] = sp
	}
	return sp, nil
}

// Transact implements Store.
func (s *FileStore) Transact(ctx context.Context, space string, fn func(txn *Txn) error) error {
	if err := checkTransact(ctx, space, fn); err != nil {
		return err
	}
	sp, err := s.space(space)
	if err != nil {
		return err
	}
	if err := sp.lk.lock(ctx); err != nil {
		return err
	}
	defer sp.lk.unlock()
	if sp.closed {
		return ErrClosed
	}
	if sp.lockf == nil {
		f, err := os.OpenFile(sp.base+".lock", os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("ipam: open lock file: %w", err)
		}
		sp.lockf = f
	}
	if err := flockFile(ctx, sp.lockf); err != nil {
		return fmt.Errorf("ipam: lock %s: %w", sp.lockf.Name(), err)
	}
	defer funlockFile(sp.lockf)

	if err := sp.refresh(); err != nil {
		sp.stale = true
		return err
	}
	err = runTxn(sp.st, fn, func(ops []txnOp) error {
		if err := sp.appendRecord(encodeRecord(nil, ops), !s.opts.NoSync); err != nil {
			sp.stale = true
			return err
		}
		sp.nops += len(ops)
		return nil
	})
	if err != nil {
		return err
	}
	min := s.opts.compactMin
	if min <= 0 {
		min = defaultCompactMin
	}
	if sp.nops > 4*len(sp.st.keys)+min {
		// The transaction is already durable: a failed compaction only
		// leaves a longer journal, retried at the next threshold crossing.
		if err := sp.compact(); err != nil {
			sp.stale = true
		}
	}
	return nil
}

// Close implements Store. It waits for running transactions. Closing twice
// is a no-op.
func (s *FileStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	spaces := s.spaces
	s.spaces = nil
	s.mu.Unlock()
	var errs []error
	for _, sp := range spaces {
		sp.lk <- struct{}{}
		sp.closed = true
		if sp.j != nil {
			errs = append(errs, sp.j.Close())
		}
		if sp.lockf != nil {
			errs = append(errs, sp.lockf.Close())
		}
		sp.j, sp.lockf, sp.st = nil, nil, nil
		<-sp.lk
	}
	return errors.Join(errs...)
}

// refresh brings sp.st up to date with the journal. The flock is held.
func (sp *fileSpace) refresh() error {
	path := sp.base + ".journal"
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sp.reload(path)
	case err != nil:
		return fmt.Errorf("ipam: stat journal: %w", err)
	case sp.j == nil || sp.stale || !os.SameFile(fi, sp.jinfo) || fi.Size() < sp.off:
		return sp.reload(path)
	case fi.Size() == sp.off:
		return nil
	}
	// Delta: records other processes appended since our last transaction.
	buf := make([]byte, fi.Size()-sp.off)
	if _, err := sp.j.ReadAt(buf, sp.off); err != nil {
		return fmt.Errorf("ipam: read journal: %w", err)
	}
	n, nops, err := replay(buf, sp.st, sp.off)
	sp.off += int64(n)
	sp.nops += nops
	if err != nil {
		return fmt.Errorf("%w (%s)", err, path)
	}
	return sp.truncateTail(fi.Size())
}

// reload reads the journal from scratch (creating it if missing).
func (sp *fileSpace) reload(path string) error {
	if sp.j != nil {
		sp.j.Close()
		sp.j = nil
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("ipam: open journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("ipam: stat journal: %w", err)
	}
	buf := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, buf); err != nil {
		f.Close()
		return fmt.Errorf("ipam: read journal: %w", err)
	}
	st := newState()
	n, nops, err := replay(buf, st, 0)
	if err != nil {
		f.Close()
		return fmt.Errorf("%w (%s)", err, path)
	}
	sp.j, sp.jinfo, sp.st, sp.off, sp.nops, sp.stale = f, fi, st, int64(n), nops, false
	if errors.Is(statErr, fs.ErrNotExist) {
		sp.newJournal = true
	}
	return sp.truncateTail(fi.Size())
}

// truncateTail cuts an uncommitted (torn) tail beyond sp.off; size is the
// journal size observed.
func (sp *fileSpace) truncateTail(size int64) error {
	if size <= sp.off {
		return nil
	}
	if err := sp.j.Truncate(sp.off); err != nil {
		return fmt.Errorf("ipam: truncate torn journal tail: %w", err)
	}
	return nil
}

func (sp *fileSpace) appendRecord(rec []byte, sync bool) error {
	n, err := sp.j.WriteAt(rec, sp.off)
	if err == nil && sync {
		err = sp.j.Sync()
		if err == nil && sp.newJournal {
			err = syncDir(filepath.Dir(sp.base))
		}
	}
	if err != nil {
		if n > 0 {
			// Best effort: remove what was written so the record reads as
			// never committed even if this process lives on.
			_ = sp.j.Truncate(sp.off)
		}
		return fmt.Errorf("ipam: append journal: %w", err)
	}
	if sync {
		sp.newJournal = false
	}
	sp.off += int64(len(rec))
	return nil
}

// compact replaces the journal by a snapshot of the live state.
func (sp *fileSpace) compact() error {
	path := sp.base + ".journal"
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	keys := make([]string, 0, len(sp.st.keys))
	for k := range sp.st.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	const perRecord = 512
	var (
		buf  []byte
		ops  []txnOp
		nops int
	)
	if sp.st.cursor != "" {
		ops = append(ops, txnOp{kind: opCursor, val: sp.st.cursor})
	}
	for i, k := range keys {
		ops = append(ops, txnOp{kind: opPut, key: k, val: sp.st.keys[k]})
		if len(ops) >= perRecord || i == len(keys)-1 {
			buf = encodeRecord(buf, ops)
			nops += len(ops)
			ops = ops[:0]
		}
	}
	if len(ops) > 0 { // cursor only
		buf = encodeRecord(buf, ops)
		nops += len(ops)
	}
	if _, err := f.Write(buf); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	sp.j.Close()
	sp.j, sp.jinfo, sp.off, sp.nops, sp.newJournal = f, fi, int64(len(buf)), nops, false
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ---- record encoding ----

func crcTable() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

// encodeRecord appends one journal record holding ops to dst.
func encodeRecord(dst []byte, ops []txnOp) []byte {
	start := len(dst)
	dst = append(dst, "00000000"...)
	for _, op := range ops {
		dst = append(dst, ' ', op.kind)
		switch op.kind {
		case opPut:
			dst = appendEscaped(append(dst, ' '), op.key)
			dst = appendEscaped(append(dst, ' '), op.val)
		case opDelete:
			dst = appendEscaped(append(dst, ' '), op.key)
		case opCursor:
			dst = appendEscaped(append(dst, ' '), op.val)
		}
	}
	sum := crc32.Checksum(dst[start+9:], crcTable())
	const hex = "0123456789abcdef"
	for i := 0; i < 8; i++ {
		dst[start+i] = hex[(sum>>(28-4*uint(i)))&0xf]
	}
	return append(dst, '\n')
}

func needsEscape(c byte) bool {
	return c <= ' ' || c == 0x7f || c == '%' || c == '~'
}

func appendEscaped(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, '~')
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			dst = append(dst, '%', hex[c>>4], hex[c&0xf])
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

func unescape(tok []byte) (string, bool) {
	if len(tok) == 1 && tok[0] == '~' {
		return "", true
	}
	if len(tok) == 0 {
		return "", false
	}
	if bytes.IndexByte(tok, '%') < 0 {
		if bytes.IndexByte(tok, '~') >= 0 {
			return "", false
		}
		return string(tok), true
	}
	out := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch c {
		case '~':
			return "", false
		case '%':
			if i+2 >= len(tok) {
				return "", false
			}
			v, err := strconv.ParseUint(string(tok[i+1:i+3]), 16, 8)
			if err != nil {
				return "", false
			}
			out = append(out, byte(v))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return string(out), true
}

var errBadChecksum = errors.New("checksum mismatch")

// decodeRecord parses one record line (without its LF).
func decodeRecord(line []byte) ([]txnOp, error) {
	if len(line) < 10 || line[8] != ' ' {
		return nil, errBadChecksum // too short to be a record: treat like a torn one
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return nil, errBadChecksum
	}
	body := line[9:]
	if crc32.Checksum(body, crcTable()) != uint32(want) {
		return nil, errBadChecksum
	}
	toks := bytes.Split(body, []byte{' '})
	var ops []txnOp
	for i := 0; i < len(toks); {
		kind := toks[i]
		if len(kind) != 1 {
			return nil, fmt.Errorf("bad operation %q", kind)
		}
		nargs := 1
		if kind[0] == opPut {
			nargs = 2
		} else if kind[0] != opDelete && kind[0] != opCursor {
			return nil, fmt.Errorf("unknown operation %q", kind)
		}
		if i+nargs >= len(toks) {
			return nil, fmt.Errorf("operation %q lacks arguments", kind)
		}
		var args [2]string
		for a := 0; a < nargs; a++ {
			s, ok := unescape(toks[i+1+a])
			if !ok {
				return nil, fmt.Errorf("bad escaping in %q", toks[i+1+a])
			}
			args[a] = s
		}
		op := txnOp{kind: kind[0]}
		switch kind[0] {
		case opPut:
			op.key, op.val = args[0], args[1]
		case opDelete:
			op.key = args[0]
		case opCursor:
			op.val = args[0]
		}
		ops = append(ops, op)
		i += 1 + nargs
	}
	return ops, nil
}

// replay applies the complete, valid records of buf to st and returns the
// number of bytes consumed and operations applied. An incomplete or
// checksum-failing last record is not consumed (it never committed); any
// other bad record yields an error wrapping ErrCorrupt. base is the file
// offset of buf, for messages.
func replay(buf []byte, st *state, base int64) (n, nops int, err error) {
	for n < len(buf) {
		nl := bytes.IndexByte(buf[n:], '\n')
		if nl < 0 {
			return n, nops, nil // torn tail
		}
		ops, derr := decodeRecord(buf[n : n+nl])
		if derr != nil {
			if errors.Is(derr, errBadChecksum) && n+nl+1 == len(buf) {
				return n, nops, nil // torn or unsynced last record
			}
			return n, nops, fmt.Errorf("%w: journal record at offset %d: %v", ErrCorrupt, base+int64(n), derr)
		}
		for _, op := range ops {
			switch op.kind {
			case opPut:
				st.put(op.key, op.val)
			case opDelete:
				st.del(op.key)
			case opCursor:
				st.cursor = op.val
			}
		}
		nops += len(ops)
		n += nl + 1
	}
	return n, nops, nil
}
