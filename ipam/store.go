package ipam

import (
	"context"
	"sort"
	"sync"
)

// Store keeps reservations durable. A space is an independent namespace of
// keys, each mapped to the owner holding it, plus one cursor string (the
// "last allocated" position used for round-robin allocation).
//
// Implementations must serialise Transact calls on the same space and make
// a transaction's changes durable before Transact returns nil.
type Store interface {
	// Transact runs fn with exclusive access to space (across goroutines;
	// across processes for FileStore), and makes the changes fn made through
	// txn durable before returning nil. If fn returns an error, nothing fn
	// did is kept and that error is returned. The Txn must not be used after
	// fn returns, and fn must not call Transact on the same space (it would
	// deadlock); it may use other spaces, always in a consistent order.
	Transact(ctx context.Context, space string, fn func(txn *Txn) error) error
	// Close releases the store's resources. Transact fails with ErrClosed
	// afterwards.
	Close() error
}

// MaxSpaceLen is the maximum length in bytes of a space name.
const MaxSpaceLen = 128

func validateSpace(field, space string) error {
	switch {
	case space == "":
		return cfgErr(field, "", "must not be empty")
	case len(space) > MaxSpaceLen:
		return cfgErr(field, space, "longer than %d bytes", MaxSpaceLen)
	}
	for i := 0; i < len(space); i++ {
		if c := space[i]; c < 0x20 || c == 0x7f {
			return cfgErr(field, space, "contains control characters")
		}
	}
	return nil
}

// state is the in-memory content of one space.
type state struct {
	keys   map[string]string              // key -> owner
	owners map[string]map[string]struct{} // owner -> keys
	cursor string
}

func newState() *state {
	return &state{keys: map[string]string{}, owners: map[string]map[string]struct{}{}}
}

func (s *state) put(key, owner string) {
	if prev, ok := s.keys[key]; ok {
		if prev == owner {
			return
		}
		s.unindex(prev, key)
	}
	s.keys[key] = owner
	ks := s.owners[owner]
	if ks == nil {
		ks = map[string]struct{}{}
		s.owners[owner] = ks
	}
	ks[key] = struct{}{}
}

func (s *state) del(key string) {
	prev, ok := s.keys[key]
	if !ok {
		return
	}
	delete(s.keys, key)
	s.unindex(prev, key)
}

func (s *state) unindex(owner, key string) {
	ks := s.owners[owner]
	delete(ks, key)
	if len(ks) == 0 {
		delete(s.owners, owner)
	}
}

// Operation kinds, shared by Txn and the FileStore journal.
const (
	opPut    = 'P'
	opDelete = 'D'
	opCursor = 'C'
)

type txnOp struct {
	kind byte
	key  string // key (put/delete)
	val  string // owner (put) or cursor value (cursor)
}

type undoRec struct {
	kind byte // opPut: restore key to prev (or delete if !had); opCursor
	key  string
	prev string
	had  bool
}

// Txn is the view of one space inside Store.Transact. Its methods are not
// safe for concurrent use and must not be called after the transaction
// function returns (calls are then ignored).
type Txn struct {
	st   *state
	ops  []txnOp
	undo []undoRec
	done bool
}

func newTxn(st *state) *Txn { return &Txn{st: st} }

// Get returns the owner holding key.
func (t *Txn) Get(key string) (owner string, ok bool) {
	if t.done {
		return "", false
	}
	owner, ok = t.st.keys[key]
	return owner, ok
}

// Put records that owner holds key, replacing any previous holder.
func (t *Txn) Put(key, owner string) {
	if t.done {
		return
	}
	prev, had := t.st.keys[key]
	if had && prev == owner {
		return
	}
	t.undo = append(t.undo, undoRec{kind: opPut, key: key, prev: prev, had: had})
	t.ops = append(t.ops, txnOp{kind: opPut, key: key, val: owner})
	t.st.put(key, owner)
}

// Delete removes key. Deleting an absent key does nothing.
func (t *Txn) Delete(key string) {
	if t.done {
		return
	}
	prev, had := t.st.keys[key]
	if !had {
		return
	}
	t.undo = append(t.undo, undoRec{kind: opPut, key: key, prev: prev, had: true})
	t.ops = append(t.ops, txnOp{kind: opDelete, key: key})
	t.st.del(key)
}

// KeysOf returns the keys held by owner, sorted. Its cost is proportional to
// the number of keys of that owner.
func (t *Txn) KeysOf(owner string) []string {
	if t.done {
		return nil
	}
	ks := t.st.owners[owner]
	if len(ks) == 0 {
		return nil
	}
	out := make([]string, 0, len(ks))
	for k := range ks {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Owners returns every owner holding at least one key, sorted.
func (t *Txn) Owners() []string {
	if t.done {
		return nil
	}
	out := make([]string, 0, len(t.st.owners))
	for o := range t.st.owners {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// Len returns the number of keys in the space.
func (t *Txn) Len() int {
	if t.done {
		return 0
	}
	return len(t.st.keys)
}

// Range calls fn for every key and its owner, in unspecified order, until fn
// returns false. fn must not modify the transaction.
func (t *Txn) Range(fn func(key, owner string) bool) {
	if t.done {
		return
	}
	for k, o := range t.st.keys {
		if !fn(k, o) {
			return
		}
	}
}

// Cursor returns the space's cursor (empty if never set).
func (t *Txn) Cursor() string {
	if t.done {
		return ""
	}
	return t.st.cursor
}

// SetCursor sets the space's cursor; it is persisted with the transaction.
func (t *Txn) SetCursor(c string) {
	if t.done || c == t.st.cursor {
		return
	}
	t.undo = append(t.undo, undoRec{kind: opCursor, prev: t.st.cursor})
	t.ops = append(t.ops, txnOp{kind: opCursor, val: c})
	t.st.cursor = c
}

// rollback reverts every change, newest first.
func (t *Txn) rollback() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		u := t.undo[i]
		switch {
		case u.kind == opCursor:
			t.st.cursor = u.prev
		case u.had:
			t.st.put(u.key, u.prev)
		default:
			t.st.del(u.key)
		}
	}
	t.undo, t.ops = nil, nil
}

// runTxn runs fn against st; on error or panic the changes are undone. The
// commit callback (may be nil) makes the ops durable; if it fails, the
// changes are undone too.
func runTxn(st *state, fn func(*Txn) error, commit func([]txnOp) error) (err error) {
	t := newTxn(st)
	ok := false
	defer func() {
		if !ok {
			t.rollback()
		}
		t.done = true
	}()
	if err := fn(t); err != nil {
		return err
	}
	if commit != nil && len(t.ops) > 0 {
		if err := commit(t.ops); err != nil {
			return err
		}
	}
	ok = true
	return nil
}

// spaceLock is a mutex whose acquisition honours a context.
type spaceLock chan struct{}

func newSpaceLock() spaceLock { return make(spaceLock, 1) }

func (l spaceLock) lock(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	default:
	}
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l spaceLock) unlock() { <-l }

// MemoryStore is a Store held in process memory. It is safe for concurrent
// use; nothing survives the process. It is meant for tests and for callers
// that rebuild state from another source of truth on start.
type MemoryStore struct {
	mu     sync.Mutex
	closed bool
	spaces map[string]*memSpace
}

type memSpace struct {
	lk spaceLock
	st *state
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{spaces: map[string]*memSpace{}}
}

// Transact implements Store.
func (m *MemoryStore) Transact(ctx context.Context, space string, fn func(txn *Txn) error) error {
	if err := checkTransact(ctx, space, fn); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	sp := m.spaces[space]
	if sp == nil {
		sp = &memSpace{lk: newSpaceLock(), st: newState()}
		m.spaces[space] = sp
	}
	m.mu.Unlock()
	if err := sp.lk.lock(ctx); err != nil {
		return err
	}
	defer sp.lk.unlock()
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return runTxn(sp.st, fn, nil)
}

// Close implements Store. The content is discarded. Closing twice is a
// no-op.
func (m *MemoryStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.spaces = nil
	return nil
}

// checkTransact validates the arguments every Store's Transact takes.
func checkTransact(ctx context.Context, space string, fn func(*Txn) error) error {
	if fn == nil {
		return cfgErr("fn", "", "must not be nil")
	}
	if err := validateSpace("space", space); err != nil {
		return err
	}
	return ctx.Err()
}
