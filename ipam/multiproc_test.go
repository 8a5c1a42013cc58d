package ipam

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "KUBEWIRE_IPAM_TEST_HELPER"

var helperRange = Range{Subnet: netip.MustParsePrefix("10.10.0.0/16"), Gateway: netip.MustParseAddr("10.10.0.1")}

// TestHelperProcess is not a test: it is the child process of the
// multi-process tests, selected by the environment.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process for multi-process tests")
	}
	err := runHelper(mode, os.Getenv(helperEnv+"_DIR"), os.Getenv(helperEnv+"_OWNER"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

func runHelper(mode, dir, owner string) error {
	ctx := context.Background()
	opts := FileStoreOptions{}
	if strings.HasSuffix(mode, "-nosync") {
		opts.NoSync = true
	}
	opts.compactMin = 32 // compact often: exercise rename under kill
	s, err := NewFileStore(dir, opts)
	if err != nil {
		return err
	}
	a, err := NewPodAllocator(PodAllocatorConfig{Ranges: []Range{helperRange}, Store: s})
	if err != nil {
		return err
	}
	switch strings.TrimSuffix(mode, "-nosync") {
	case "one":
		got, err := a.Allocate(ctx, owner)
		if err != nil {
			return err
		}
		fmt.Printf("%s %s\n", owner, got[0].Address.Addr())
		return nil
	case "loop":
		for i := 0; ; i++ {
			o := fmt.Sprintf("%s-%d", owner, i)
			got, err := a.Allocate(ctx, o)
			if err != nil {
				return err
			}
			// One write(2) per line: atomic on a pipe.
			os.Stdout.WriteString(fmt.Sprintf("%s %s\n", o, got[0].Address.Addr()))
			// Churn so that compaction happens while processes die.
			tmp := owner + "-tmp"
			if _, err := a.Allocate(ctx, tmp); err != nil {
				return err
			}
			if err := a.Release(ctx, tmp); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func helperCmd(mode, dir, owner string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_DIR="+dir, helperEnv+"_OWNER="+owner)
	cmd.Stderr = os.Stderr
	return cmd
}

func TestMultiProcessAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns 50 processes")
	}
	dir := t.TempDir()
	const n = 50
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got = map[string]string{} // owner -> addr
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("pod%02d/eth0", i)
			out, err := helperCmd("one", dir, owner).Output()
			if err != nil {
				t.Errorf("child %d: %v", i, err)
				return
			}
			f := strings.Fields(string(out))
			if len(f) != 2 || f[0] != owner {
				t.Errorf("child %d printed %q", i, out)
				return
			}
			mu.Lock()
			got[owner] = f[1]
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[string]string{}
	for o, a := range got {
		if prev, dup := seen[a]; dup {
			t.Fatalf("address %s handed to both %s and %s", a, prev, o)
		}
		seen[a] = o
	}
	if len(seen) != n {
		t.Fatalf("%d distinct addresses, want %d", len(seen), n)
	}
	s, err := NewFileStore(dir, FileStoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, _ := NewPodAllocator(PodAllocatorConfig{Ranges: []Range{helperRange}, Store: s})
	ctx := context.Background()
	owners, err := a.Owners(ctx)
	if err != nil || len(owners) != n {
		t.Fatalf("fresh allocator sees %d owners (%v), want %d", len(owners), err, n)
	}
	for o, want := range got {
		al, err := a.Lookup(ctx, o)
		if err != nil || len(al) != 1 || al[0].Address.Addr().String() != want {
			t.Fatalf("Lookup(%s) = %v, %v; child printed %s", o, al, err, want)
		}
	}
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	printed := map[string]string{} // owner -> addr, from every child's stdout
	const rounds, children = 6, 3
	for r := 0; r < rounds; r++ {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for c := 0; c < children; c++ {
			mode := "loop-nosync"
			if c == 0 {
				mode = "loop"
			}
			cmd := helperCmd(mode, dir, fmt.Sprintf("r%dc%d", r, c))
			cmd.Stderr = nil // killed children may complain
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					f := strings.Fields(sc.Text())
					if len(f) != 2 {
						continue // a line cut by the kill is impossible, but be strict below
					}
					mu.Lock()
					if _, dup := printed[f[0]]; dup {
						t.Errorf("owner %s printed twice", f[0])
					}
					printed[f[0]] = f[1]
					mu.Unlock()
				}
				cmd.Wait()
			}()
			delay := time.Duration(80+rng.IntN(250)) * time.Millisecond
			time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
		}
		wg.Wait()
	}
	if len(printed) < 10 {
		t.Fatalf("children printed only %d allocations; test exercised nothing", len(printed))
	}
	t.Logf("%d allocations printed across %d killed processes", len(printed), rounds*children)
	byAddr := map[string]string{}
	for o, a := range printed {
		if prev, dup := byAddr[a]; dup {
			t.Fatalf("address %s printed for both %s and %s", a, prev, o)
		}
		byAddr[a] = o
	}
	s, err := NewFileStore(dir, FileStoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	held := map[string]string{}
	err = s.Transact(ctx, "pods", func(x *Txn) error {
		for _, o := range x.Owners() {
			ks := x.KeysOf(o)
			if len(ks) != 1 {
				return fmt.Errorf("owner %s holds %v", o, ks)
			}
		}
		x.Range(func(k, o string) bool { held[k] = o; return true })
		return nil
	})
	if err != nil {
		t.Fatalf("journal after crashes: %v", err)
	}
	for o, a := range printed {
		if held[a] != o {
			t.Fatalf("printed allocation %s -> %s lost (store has %q)", o, a, held[a])
		}
	}
	a, _ := NewPodAllocator(PodAllocatorConfig{Ranges: []Range{helperRange}, Store: s})
	got, err := a.Allocate(ctx, "after-crash")
	if err != nil {
		t.Fatal(err)
	}
	if o, dup := held[got[0].Address.Addr().String()]; dup {
		t.Fatalf("new allocation %s duplicates %s's", got[0].Address, o)
	}
}
