package ipam

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type storeFactory struct {
	name string
	// open returns a store; reopen returns a fresh store over the same
	// durable state (nil if the store is not durable).
	open func(t *testing.T) (s Store, reopen func() Store)
}

func storeFactories() []storeFactory {
	return []storeFactory{
		{"memory", func(t *testing.T) (Store, func() Store) {
			return NewMemoryStore(), nil
		}},
		{"file", func(t *testing.T) (Store, func() Store) {
			dir := t.TempDir()
			open := func() Store {
				s, err := NewFileStore(dir, FileStoreOptions{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			return open(), open
		}},
		{"file-nosync", func(t *testing.T) (Store, func() Store) {
			dir := t.TempDir()
			open := func() Store {
				s, err := NewFileStore(dir, FileStoreOptions{NoSync: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			return open(), open
		}},
	}
}

// forEachStore runs f against every Store implementation.
func forEachStore(t *testing.T, f func(t *testing.T, s Store, reopen func() Store)) {
	for _, sf := range storeFactories() {
		t.Run(sf.name, func(t *testing.T) {
			s, reopen := sf.open(t)
			f(t, s, reopen)
		})
	}
}

func dump(t *testing.T, s Store, space string) (map[string]string, string) {
	t.Helper()
	m := map[string]string{}
	var cur string
	err := s.Transact(context.Background(), space, func(x *Txn) error {
		x.Range(func(k, o string) bool { m[k] = o; return true })
		cur = x.Cursor()
		if x.Len() != len(m) {
			return fmt.Errorf("Len %d != Range count %d", x.Len(), len(m))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, cur
}

func TestStoreSuite(t *testing.T) {
	ctx := context.Background()
	weird := "own er%~\n\r\t\x7f/é" // every escaped byte class
	forEachStore(t, func(t *testing.T, s Store, reopen func() Store) {
		t.Run("commit", func(t *testing.T) {
			err := s.Transact(ctx, "a", func(x *Txn) error {
				x.Put("k1", "o1")
				x.Put("k2", "o1")
				x.Put("k 3", weird)
				x.Put("", "empty-key")
				x.SetCursor("c 1")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			m, cur := dump(t, s, "a")
			want := map[string]string{"k1": "o1", "k2": "o1", "k 3": weird, "": "empty-key"}
			if fmt.Sprint(m) != fmt.Sprint(want) || cur != "c 1" {
				t.Fatalf("got %v %q, want %v", m, cur, want)
			}
		})
		t.Run("index", func(t *testing.T) {
			err := s.Transact(ctx, "a", func(x *Txn) error {
				if got := x.KeysOf("o1"); fmt.Sprint(got) != "[k1 k2]" {
					return fmt.Errorf("KeysOf(o1) = %v", got)
				}
				x.Put("k2", "o2") // move k2
				if got := x.KeysOf("o1"); fmt.Sprint(got) != "[k1]" {
					return fmt.Errorf("KeysOf(o1) after move = %v", got)
				}
				if got := x.KeysOf("o2"); fmt.Sprint(got) != "[k2]" {
					return fmt.Errorf("KeysOf(o2) = %v", got)
				}
				x.Delete("k1")
				x.Delete("absent")
				if got := x.KeysOf("o1"); got != nil {
					return fmt.Errorf("KeysOf(o1) after delete = %v", got)
				}
				if got := x.Owners(); fmt.Sprint(got) != fmt.Sprint([]string{"empty-key", "o2", weird}) {
					return fmt.Errorf("Owners = %q", got)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
		t.Run("rollback", func(t *testing.T) {
			before, bcur := dump(t, s, "a")
			boom := errors.New("boom")
			err := s.Transact(ctx, "a", func(x *Txn) error {
				x.Put("k2", "thief")
				x.Put("new", "o9")
				x.Delete("k 3")
				x.Put("k 3", "o9")
				x.SetCursor("moved")
				return boom
			})
			if err != boom {
				t.Fatalf("err = %v, want the fn's error", err)
			}
			after, acur := dump(t, s, "a")
			if fmt.Sprint(before) != fmt.Sprint(after) || bcur != acur {
				t.Fatalf("rollback left %v %q, want %v %q", after, acur, before, bcur)
			}
			err = s.Transact(ctx, "a", func(x *Txn) error {
				if got := x.KeysOf("o9"); got != nil {
					return fmt.Errorf("owner index not rolled back: %v", got)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
		t.Run("panic-rollback", func(t *testing.T) {
			before, _ := dump(t, s, "a")
			func() {
				defer func() {
					if recover() == nil {
						t.Fatal("panic not propagated")
					}
				}()
				s.Transact(ctx, "a", func(x *Txn) error {
					x.Put("panic", "p")
					panic("fn panics")
				})
			}()
			after, _ := dump(t, s, "a")
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Fatalf("panic left %v", after)
			}
		})
		t.Run("spaces-independent", func(t *testing.T) {
			if err := s.Transact(ctx, "b/with:odd chars", func(x *Txn) error {
				if x.Len() != 0 {
					return fmt.Errorf("new space has %d keys", x.Len())
				}
				x.Put("k1", "other")
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if m, _ := dump(t, s, "a"); m["k1"] == "other" {
				t.Fatal("spaces share keys")
			}
		})
		t.Run("bad-args", func(t *testing.T) {
			if err := s.Transact(ctx, "", func(*Txn) error { return nil }); !errors.Is(err, ErrInvalid) {
				t.Fatalf("empty space: %v", err)
			}
			if err := s.Transact(ctx, "a", nil); !errors.Is(err, ErrInvalid) {
				t.Fatalf("nil fn: %v", err)
			}
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if err := s.Transact(cctx, "a", func(*Txn) error { return nil }); !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled ctx: %v", err)
			}
		})
		t.Run("txn-after-return", func(t *testing.T) {
			var leaked *Txn
			s.Transact(ctx, "a", func(x *Txn) error { leaked = x; return nil })
			leaked.Put("late", "o") // must be ignored, not panic or corrupt
			if m, _ := dump(t, s, "a"); m["late"] != "" {
				t.Fatal("write after transaction end was applied")
			}
		})
		t.Run("concurrent", func(t *testing.T) {
			var wg sync.WaitGroup
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 50; i++ {
						err := s.Transact(ctx, "counter", func(x *Txn) error {
							n := x.Len()
							x.Put(fmt.Sprint(n), "g")
							return nil
						})
						if err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			if m, _ := dump(t, s, "counter"); len(m) != 400 {
				t.Fatalf("lost updates: %d keys, want 400", len(m))
			}
		})
		if reopen != nil {
			t.Run("durable", func(t *testing.T) {
				want, wcur := dump(t, s, "a")
				s2 := reopen()
				got, gcur := dump(t, s2, "a")
				if fmt.Sprint(want) != fmt.Sprint(got) || wcur != gcur {
					t.Fatalf("reopened: %v %q, want %v %q", got, gcur, want, wcur)
				}
				// A write by the second instance is seen by the first.
				if err := s2.Transact(ctx, "a", func(x *Txn) error { x.Put("from2", "s2"); return nil }); err != nil {
					t.Fatal(err)
				}
				if m, _ := dump(t, s, "a"); m["from2"] != "s2" {
					t.Fatal("first instance did not see the second's commit")
				}
			})
		}
		t.Run("close", func(t *testing.T) {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := s.Transact(ctx, "a", func(*Txn) error { return nil }); !errors.Is(err, ErrClosed) {
				t.Fatalf("Transact after Close: %v", err)
			}
		})
	})
}

func TestSpaceFileName(t *testing.T) {
	for in, want := range map[string]string{
		"pods-10.244.1.0/24": "pods-10.244.1.0_24",
		"pods-fd00::/64":     "pods-fd00++_64",
		"a_b":                "a%5Fb",
		"a+b":                "a%2Bb",
		"..":                 "%2E.",
		"x y%":               "x%20y%25",
	} {
		if got := spaceFileName(in); got != want {
			t.Errorf("spaceFileName(%q) = %q, want %q", in, got, want)
		}
	}
	// Injective on near misses.
	if spaceFileName("a/b") == spaceFileName("a_b") || spaceFileName("a:b") == spaceFileName("a+b") {
		t.Error("space file names collide")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	ops := []txnOp{
		{kind: opPut, key: "10.0.0.1", val: "c1/eth0"},
		{kind: opPut, key: "", val: "%~ \n"},
		{kind: opDelete, key: "a b"},
		{kind: opCursor, val: ""},
		{kind: opCursor, val: "10.0.0.1 fd00::1"},
	}
	rec := encodeRecord(nil, ops)
	if strings.Count(string(rec), "\n") != 1 || rec[len(rec)-1] != '\n' {
		t.Fatalf("record is not one line: %q", rec)
	}
	got, err := decodeRecord(rec[:len(rec)-1])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(ops) {
		t.Fatalf("round trip: %q, want %q", got, ops)
	}
	// Any single-byte corruption is detected.
	for i := 0; i < len(rec)-1; i++ {
		bad := append([]byte(nil), rec[:len(rec)-1]...)
		bad[i] ^= 0x01
		if _, err := decodeRecord(bad); err == nil {
			t.Fatalf("flipping byte %d of %q went unnoticed", i, rec)
		}
	}
}

func writeJournal(t *testing.T, dir, space string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, spaceFileName(space)+".journal")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJournalTornTail(t *testing.T) {
	ctx := context.Background()
	r1 := encodeRecord(nil, []txnOp{{kind: opPut, key: "k1", val: "o1"}})
	r2 := encodeRecord(nil, []txnOp{{kind: opPut, key: "k2", val: "o2"}})
	badCRC := append([]byte(nil), r2...)
	badCRC[0] ^= 1
	for name, tail := range map[string][]byte{
		"partial-write":    r2[:len(r2)/2],
		"missing-newline":  r2[:len(r2)-1],
		"bad-crc-last":     badCRC,
		"garbage-no-crc":   []byte("zz\n"),
		"just-one-byte":    r2[:1],
		"crc-only-newline": r2[:9],
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeJournal(t, dir, "s", append(append([]byte(nil), r1...), tail...))
			s, err := NewFileStore(dir, FileStoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			m, _ := dump(t, s, "s")
			if len(m) != 1 || m["k1"] != "o1" {
				t.Fatalf("state %v, want only k1", m)
			}
			if fi, _ := os.Stat(p); fi.Size() != int64(len(r1)) {
				t.Fatalf("torn tail not truncated: size %d, want %d", fi.Size(), len(r1))
			}
			if err := s.Transact(ctx, "s", func(x *Txn) error { x.Put("k3", "o3"); return nil }); err != nil {
				t.Fatal(err)
			}
			s2, _ := NewFileStore(dir, FileStoreOptions{})
			defer s2.Close()
			if m, _ := dump(t, s2, "s"); len(m) != 2 || m["k3"] != "o3" {
				t.Fatalf("after append: %v", m)
			}
		})
	}
	t.Run("torn-tail-seen-as-delta", func(t *testing.T) {
		// A process that already cached the journal finds another
		// process's torn record appended after its offset.
		dir := t.TempDir()
		s, _ := NewFileStore(dir, FileStoreOptions{})
		defer s.Close()
		if err := s.Transact(ctx, "s", func(x *Txn) error { x.Put("k1", "o1"); return nil }); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "s.journal")
		f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		f.Write(r2[:5])
		f.Close()
		if err := s.Transact(ctx, "s", func(x *Txn) error { x.Put("k4", "o4"); return nil }); err != nil {
			t.Fatal(err)
		}
		s2, _ := NewFileStore(dir, FileStoreOptions{})
		defer s2.Close()
		if m, _ := dump(t, s2, "s"); len(m) != 2 || m["k4"] != "o4" || m["k2"] != "" {
			t.Fatalf("state %v", m)
		}
	})
}

func TestJournalCorruptMiddle(t *testing.T) {
	r1 := encodeRecord(nil, []txnOp{{kind: opPut, key: "k1", val: "o1"}})
	r2 := encodeRecord(nil, []txnOp{{kind: opPut, key: "k2", val: "o2"}})
	r3 := encodeRecord(nil, []txnOp{{kind: opPut, key: "k3", val: "o3"}})
	badCRC := append([]byte(nil), r2...)
	badCRC[12] ^= 1
	unknownOp := []byte("00000000 X k\n")
	goodCRCBadOp := []byte(fmt.Sprintf("%08x P lonely-key\n", crc32.Checksum([]byte("P lonely-key"), crcTable())))
	for name, data := range map[string][]byte{
		"bad-crc-middle":  concat(r1, badCRC, r3),
		"torn-middle":     concat(r1, r2[:7], r3, r1),
		"unknown-op":      concat(r1, unknownOp, r3),
		"valid-crc-bogus": concat(r1, goodCRCBadOp, r3),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeJournal(t, dir, "s", data)
			s, _ := NewFileStore(dir, FileStoreOptions{})
			defer s.Close()
			err := s.Transact(context.Background(), "s", func(*Txn) error { return nil })
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), "offset") {
				t.Errorf("error %q does not locate the record", err)
			}
			if got, _ := os.ReadFile(p); string(got) != string(data) {
				t.Fatal("corrupt journal was modified")
			}
		})
	}
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestCompaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := FileStoreOptions{NoSync: true, compactMin: 64}
	a, _ := NewFileStore(dir, opts)
	defer a.Close()
	b, _ := NewFileStore(dir, opts) // "another process"
	defer b.Close()
	// b caches the journal's current inode.
	if err := b.Transact(ctx, "s", func(x *Txn) error { x.Put("keep", "b"); return nil }); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.journal")
	fi0, _ := os.Stat(path)
	for i := 0; i < 500; i++ {
		err := a.Transact(ctx, "s", func(x *Txn) error {
			x.Put(fmt.Sprint("tmp", i), "a")
			if i >= 10 {
				x.Delete(fmt.Sprint("tmp", i-10))
			}
			x.SetCursor(fmt.Sprint(i))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	fi1, _ := os.Stat(path)
	if os.SameFile(fi0, fi1) {
		t.Fatal("journal was never compacted")
	}
	// 500 transactions of ~3 ops would be far larger than the compacted
	// journal of 11 keys.
	if fi1.Size() > 4096 {
		t.Fatalf("journal is %d bytes after compaction", fi1.Size())
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary snapshot left behind: %v", err)
	}
	want, wcur := dump(t, a, "s")
	if len(want) != 11 || want["keep"] != "b" || want["tmp499"] != "a" || wcur != "499" {
		t.Fatalf("state after compaction: %v cursor %q", want, wcur)
	}
	got, gcur := dump(t, b, "s") // stale inode: must reload
	if fmt.Sprint(got) != fmt.Sprint(want) || gcur != wcur {
		t.Fatalf("second instance: %v %q, want %v %q", got, gcur, want, wcur)
	}
	if err := b.Transact(ctx, "s", func(x *Txn) error { x.Put("after", "b"); return nil }); err != nil {
		t.Fatal(err)
	}
	c, _ := NewFileStore(dir, opts)
	defer c.Close()
	if m, _ := dump(t, c, "s"); len(m) != 12 || m["after"] != "b" {
		t.Fatalf("fresh instance: %v", m)
	}
}

func TestFileStoreContextWhileLocked(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewFileStore(dir, FileStoreOptions{})
	defer a.Close()
	b, _ := NewFileStore(dir, FileStoreOptions{}) // separate flock holder
	defer b.Close()
	held := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- a.Transact(context.Background(), "s", func(*Txn) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Transact(ctx, "s", func(*Txn) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("lock wait ignored the deadline")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := b.Transact(context.Background(), "s", func(*Txn) error { return nil }); err != nil {
		t.Fatalf("lock not released: %v", err)
	}
}

func TestFileStoreLongSpace(t *testing.T) {
	s, _ := NewFileStore(t.TempDir(), FileStoreOptions{})
	defer s.Close()
	long := strings.Repeat("_", 100) // 300 bytes once escaped
	err := s.Transact(context.Background(), long, func(*Txn) error { return nil })
	wantErr(t, err, ErrInvalid, "space", "file name")
	if err := s.Transact(context.Background(), strings.Repeat("a", MaxSpaceLen), func(*Txn) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestNewFileStoreErrors(t *testing.T) {
	if _, err := NewFileStore("", FileStoreOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty dir: %v", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := NewFileStore(f, FileStoreOptions{}); err == nil {
		t.Fatal("a regular file accepted as store directory")
	}
}
