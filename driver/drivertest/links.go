// Package drivertest holds the behaviour every kubewire driver must show,
// as test suites a driver's own tests call with a constructor. The fake
// drivers run them always; kernel drivers run them inside throwaway
// namespaces. A downstream driver (another LinkDriver, say) can run the same
// suites to prove it is a drop-in replacement.
package drivertest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubewire/kubewire/ipam"
	"github.com/kubewire/kubewire/network"
)

// LinkEnv is what the LinkDriver suite needs from a driver under test.
type LinkEnv struct {
	// Driver is the driver, bound to a fresh node.
	Driver network.LinkDriver
	// NewNetNS returns the path of a new, empty pod namespace.
	NewNetNS func(t *testing.T) string
	// RemoveNetNS destroys a pod namespace made by NewNetNS, as a runtime
	// does when a sandbox dies.
	RemoveNetNS func(t *testing.T, path string)
}

// TestLinkDriver runs the network.LinkDriver conformance suite. newEnv is
// called once per subtest and must give a driver with no attachments.
func TestLinkDriver(t *testing.T, newEnv func(t *testing.T) LinkEnv) {
	for _, mode := range []network.Mode{network.ModeRouted, network.ModeBridge} {
		t.Run(mode.String()+"/lifecycle", func(t *testing.T) { testLifecycle(t, newEnv(t), mode) })
		t.Run(mode.String()+"/netns-gone", func(t *testing.T) { testNetNSGone(t, newEnv(t), mode) })
	}
	t.Run("missing-netns", func(t *testing.T) { testMissingNetNS(t, newEnv(t)) })
	t.Run("foreign-interface", func(t *testing.T) { testForeignInterface(t, newEnv(t)) })
}

// specs builds the PodSpecs network.Manager would build, so the suite
// exercises exactly what drivers receive in production.
func specs(t *testing.T, env LinkEnv, mode network.Mode, n int) ([]network.PodSpec, *recorder) {
	t.Helper()
	rec := &recorder{LinkDriver: env.Driver}
	r4 := ipam.Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Gateway: netip.MustParseAddr("10.244.1.1")}
	r6 := ipam.Range{Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"), Gateway: netip.MustParseAddr("fd00:10:244:1::1")}
	alloc, err := ipam.NewPodAllocator(ipam.PodAllocatorConfig{Ranges: []ipam.Range{r4, r6}, Store: ipam.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := network.NewManager(network.Config{Links: rec, IPAM: alloc, Mode: mode, MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		att := network.Attachment{ContainerID: fmt.Sprintf("ctr%d", i), NetNS: env.NewNetNS(t)}
		if _, err := m.Attach(context.Background(), att); err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
	}
	return rec.specs, rec
}

// recorder passes calls through and keeps the PodSpecs it saw.
type recorder struct {
	network.LinkDriver
	specs []network.PodSpec
}

func (r *recorder) SetupPod(ctx context.Context, s network.PodSpec) (network.PodLink, error) {
	l, err := r.LinkDriver.SetupPod(ctx, s)
	if err == nil {
		r.specs = append(r.specs, s)
	}
	return l, err
}

func inspectClean(t *testing.T, d network.LinkDriver, s network.PodSpec) {
	t.Helper()
	st, err := d.InspectPod(context.Background(), s.PodKey, s.HostIfName, s.NetNS)
	if err != nil {
		t.Fatalf("InspectPod %s: %v", s.PodKey, err)
	}
	if p := network.Diff(s, st); len(p) > 0 {
		t.Fatalf("InspectPod %s differs from its spec: %q", s.PodKey, p)
	}
}

func keys(t *testing.T, d network.LinkDriver) []string {
	t.Helper()
	links, err := d.Pods(context.Background())
	if err != nil {
		t.Fatalf("Pods: %v", err)
	}
	var out []string
	for _, l := range links {
		out = append(out, l.PodKey.String()+" "+l.HostIfName)
	}
	slices.Sort(out)
	return out
}

func testLifecycle(t *testing.T, env LinkEnv, mode network.Mode) {
	ctx := context.Background()
	d := env.Driver
	ss, _ := specs(t, env, mode, 2)
	for _, s := range ss {
		inspectClean(t, d, s)
	}
	want := []string{ss[0].PodKey.String() + " " + ss[0].HostIfName, ss[1].PodKey.String() + " " + ss[1].HostIfName}
	slices.Sort(want)
	if got := keys(t, d); !slices.Equal(got, want) {
		t.Fatalf("Pods = %q, want %q", got, want)
	}
	// SetupPod is idempotent.
	for i := 0; i < 2; i++ {
		l, err := d.SetupPod(ctx, ss[0])
		if err != nil {
			t.Fatalf("SetupPod again: %v", err)
		}
		if l.PodKey != ss[0].PodKey || l.HostIfName != ss[0].HostIfName {
			t.Fatalf("SetupPod returned %+v", l)
		}
	}
	inspectClean(t, d, ss[0])
	if got := keys(t, d); !slices.Equal(got, want) {
		t.Fatalf("Pods after repeated SetupPod = %q, want %q", got, want)
	}
	// Teardown removes exactly one, twice is fine.
	for i := 0; i < 2; i++ {
		if err := d.TeardownPod(ctx, ss[0].PodKey, ss[0].HostIfName, ss[0].NetNS); err != nil {
			t.Fatalf("TeardownPod #%d: %v", i+1, err)
		}
	}
	if got := keys(t, d); len(got) != 1 || got[0] != ss[1].PodKey.String()+" "+ss[1].HostIfName {
		t.Fatalf("Pods after teardown = %q", got)
	}
	st, err := d.InspectPod(ctx, ss[0].PodKey, ss[0].HostIfName, ss[0].NetNS)
	if err != nil {
		t.Fatal(err)
	}
	if st.HostIfName != "" || st.IfName != "" {
		t.Fatalf("InspectPod after teardown found %+v", st)
	}
	inspectClean(t, d, ss[1])
	// Set up again after teardown: same spec works.
	if _, err := d.SetupPod(ctx, ss[0]); err != nil {
		t.Fatal(err)
	}
	inspectClean(t, d, ss[0])
}

func testNetNSGone(t *testing.T, env LinkEnv, mode network.Mode) {
	ctx := context.Background()
	d := env.Driver
	ss, _ := specs(t, env, mode, 1)
	env.RemoveNetNS(t, ss[0].NetNS)
	if err := d.TeardownPod(ctx, ss[0].PodKey, ss[0].HostIfName, ss[0].NetNS); err != nil {
		t.Fatalf("TeardownPod with the namespace gone: %v", err)
	}
	if got := keys(t, d); len(got) != 0 {
		t.Fatalf("Pods after teardown = %q", got)
	}
}

func testMissingNetNS(t *testing.T, env LinkEnv) {
	ctx := context.Background()
	d := env.Driver
	ss, _ := specs(t, env, network.ModeRouted, 1)
	s := otherKey(ss[0], "gone")
	path := env.NewNetNS(t)
	env.RemoveNetNS(t, path)
	s.NetNS = path
	if _, err := d.SetupPod(ctx, s); err == nil {
		t.Fatal("SetupPod into a removed namespace succeeded")
	}
	if got := keys(t, d); len(got) != 1 {
		t.Fatalf("a failed SetupPod left %q", got)
	}
}

func testForeignInterface(t *testing.T, env LinkEnv) {
	ctx := context.Background()
	d := env.Driver
	ss, _ := specs(t, env, network.ModeRouted, 1)
	// Another attachment that wants the same interface name in the same
	// namespace must fail and leave the first intact.
	s := otherKey(ss[0], "intruder")
	_, err := d.SetupPod(ctx, s)
	if err == nil {
		t.Fatal("SetupPod over another attachment's interface succeeded")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	inspectClean(t, d, ss[0])
	if got := keys(t, d); len(got) != 1 {
		t.Fatalf("Pods = %q, want only the first attachment", got)
	}
}

// otherKey is spec for another container's eth0 (same namespace and
// addresses).
func otherKey(spec network.PodSpec, containerID string) network.PodSpec {
	spec.PodKey = network.PodKey{ContainerID: containerID, IfName: "eth0"}
	spec.HostIfName = spec.PodKey.HostIfName("kw")
	return spec
}
