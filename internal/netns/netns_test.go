package netns

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("KUBEWIRE_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs root (KUBEWIRE_REQUIRE_PRIVILEGED=1)")
		}
		t.Skip("needs root")
	}
}

func TestNamedDoAndDelete(t *testing.T) {
	requireRoot(t)
	name := fmt.Sprintf("kwt-%d-netns-unit", os.Getpid())
	ns, err := NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); _ = DeleteNamed(name) })

	if _, err := NewNamed(name); err == nil {
		t.Fatal("creating an existing name succeeded")
	}
	cur, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if cur.Equal(ns) {
		t.Fatal("new namespace equals the current one")
	}
	// Many concurrent Do calls: each runs inside, and no thread stays switched.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- ns.Do(func() error {
				in, err := Current()
				if err != nil {
					return err
				}
				defer in.Close()
				if !in.Equal(ns) {
					return errors.New("Do ran outside the namespace")
				}
				return nil
			})
			after, err := Current()
			if err != nil {
				errs <- err
				return
			}
			defer after.Close()
			if !after.Equal(cur) {
				errs <- errors.New("thread left in the namespace after Do")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantErr := errors.New("boom")
	if err := ns.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Fatalf("Do error = %v, want %v", err, wantErr)
	}
	if err := ns.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if v, err := ns.Sysctl("net.ipv4.ip_forward"); err != nil || v != "1" {
		t.Fatalf("sysctl in ns = %q, %v", v, err)
	}
	if err := ns.SetSysctl("kernel.hostname", "x"); err == nil {
		t.Fatal("non-net sysctl accepted")
	}

	reopened, err := Open(RunDir + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if !reopened.Equal(ns) {
		t.Fatal("reopened handle differs")
	}
	reopened.Close()

	if err := DeleteNamed(name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(RunDir + "/" + name); !os.IsNotExist(err) {
		t.Fatalf("bind mount file still exists: %v", err)
	}
	if err := DeleteNamed(name); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
}

func TestOpenRejectsNonNetNS(t *testing.T) {
	if _, err := Open("/etc/hostname"); !errors.Is(err, ErrNotNetNS) {
		t.Fatalf("Open(/etc/hostname) = %v, want ErrNotNetNS", err)
	}
	if _, err := Open("/nonexistent/netns"); err == nil {
		t.Fatal("Open of a missing path succeeded")
	}
	if _, err := NewNamed("../evil"); err == nil {
		t.Fatal("name with a slash accepted")
	}
}

func TestDoFresh(t *testing.T) {
	requireRoot(t)
	cur, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	err = DoFresh(func() error {
		in, err := Current()
		if err != nil {
			return err
		}
		defer in.Close()
		if in.Equal(cur) {
			return errors.New("DoFresh ran in the current namespace")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
