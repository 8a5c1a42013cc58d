package probecache

import (
	"errors"
	"os"
	"testing"
)

func TestDo(t *testing.T) {
	Forget()
	dir := t.TempDir()
	calls := 0
	ok := func() error { calls++; return nil }
	for i := 0; i < 3; i++ {
		if err := Do(dir, "feat", ok); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Fatalf("probe ran %d times in one process, want 1", calls)
	}
	// A new process: memory gone, the disk entry remains.
	Forget()
	if err := Do(dir, "feat", ok); err != nil || calls != 1 {
		t.Fatalf("probe ran again despite the disk cache (calls %d, err %v)", calls, err)
	}
	// Failures are not cached.
	Forget()
	boom := errors.New("boom")
	fails := 0
	bad := func() error { fails++; return boom }
	for i := 0; i < 2; i++ {
		if err := Do(dir, "other", bad); !errors.Is(err, boom) {
			t.Fatalf("Do = %v, want boom", err)
		}
	}
	if fails != 2 {
		t.Fatalf("failing probe ran %d times, want 2", fails)
	}
	// A stale entry (other kernel) is ignored.
	Forget()
	file, _ := entry(dir, "feat")
	if err := os.WriteFile(file, []byte("ok 2.6.32\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Do(dir, "feat", ok); err != nil || calls != 2 {
		t.Fatalf("stale entry trusted (calls %d, err %v)", calls, err)
	}
	// No directory: memory only.
	Forget()
	if err := Do("", "feat", ok); err != nil || calls != 3 {
		t.Fatalf("calls %d err %v", calls, err)
	}
}
