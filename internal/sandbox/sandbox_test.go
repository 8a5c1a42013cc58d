package sandbox

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubewire/kubewire/internal/netns"
)

func TestTwoNamespacesTalk(t *testing.T) {
	sb := New(t)
	a, b := sb.Namespace("a"), sb.Namespace("b")
	sb.Connect(a, "eth0", []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("2001:db8::1/64")},
		b, "eth0", []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24"), netip.MustParsePrefix("2001:db8::2/64")})
	for _, network := range []string{"tcp", "udp"} {
		for _, ip := range []string{"198.18.0.2", "2001:db8::2"} {
			srv := b.ServeEcho(network, netip.AddrPortFrom(netip.MustParseAddr(ip), 0))
			from := a.MustReach(t, network, srv)
			want := map[string]string{"198.18.0.2": "198.18.0.1", "2001:db8::2": "2001:db8::1"}[ip]
			if from.Addr().String() != want {
				t.Errorf("%s %s: server saw %s, want %s", network, srv, from, want)
			}
		}
	}
	// Nothing leaks into the test's own namespace.
	cur, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if cur.Equal(a.NetNS) || cur.Equal(b.NetNS) {
		t.Fatal("sandbox namespace is the test's own namespace")
	}
	a.MustNotReach(t, "tcp", netip.MustParseAddrPort("198.18.0.9:80"))
}

func TestCleanupRemovesNamespaces(t *testing.T) {
	var names []string
	t.Run("inner", func(t *testing.T) {
		sb := New(t)
		names = append(names, sb.Namespace("x").Name, sb.Namespace("y").Name)
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(netns.RunDir, n)); err != nil {
				t.Fatalf("namespace %s not created: %v", n, err)
			}
		}
	})
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netns.RunDir, n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still present after cleanup (err %v)", n, err)
		}
	}
}

func TestRemoveStale(t *testing.T) {
	RequirePrivileged(t)
	// A PID that cannot be running: above the kernel's pid_max limit.
	name := namePrefix + "4194305-1-1-stale"
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	t.Cleanup(func() { _ = netns.DeleteNamed(name) })
	RemoveStale()
	if _, err := os.Stat(filepath.Join(netns.RunDir, name)); !os.IsNotExist(err) {
		t.Fatalf("stale namespace %s not removed", name)
	}
}
