package policy_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/policy"
)

func feed(e *policy.Enforcer, a, b *policy.Cluster) { drivertest.FeedPolicyEvents(e, a, b) }

// sameVerdicts compares two programs on every probe of the world.
func sameVerdicts(t *testing.T, what string, got, want *policy.Program) {
	t.Helper()
	bad := 0
	for _, p := range drivertest.Probes() {
		src, dst := drivertest.PolicyPodAddr(p.From, p.Fam), drivertest.PolicyPodAddr(p.To, p.Fam)
		g, w := got.Trace(src, dst, p.Protocol, p.Port), want.Trace(src, dst, p.Protocol, p.Port)
		if g.String() != w.String() {
			if bad++; bad <= 3 {
				t.Errorf("%s: %s: incremental %s, full %s", what, p, g, w)
			}
		}
	}
}

// TestEnforcerIncremental applies the truth-table cases one after the
// other as events: each incremental Program must decide every probe as a
// fresh Compile does (rules and reasons included) and as the case says.
func TestEnforcerIncremental(t *testing.T) {
	dp := fake.NewPolicy()
	e, err := policy.NewEnforcer(policy.Config{Dataplane: dp})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prev := &policy.Cluster{}
	for _, c := range drivertest.PolicyCases() {
		cl := c.Cluster()
		feed(e, prev, cl)
		prev = cl
		if err := e.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		sameVerdicts(t, c.Name, e.Program(), policy.Compile(cl))
		for _, p := range drivertest.Probes() {
			if got := dp.Allowed(drivertest.PolicyPodAddr(p.From, p.Fam), drivertest.PolicyPodAddr(p.To, p.Fam), p.Protocol, p.Port); got != c.Expect(p) {
				t.Errorf("%s: %s: enforced %v, want %v", c.Name, p, got, c.Expect(p))
				break
			}
		}
	}
}

// TestEnforcerRandomChanges mutates labels, pods and namespaces at random
// under the truth-table policies: after each batch, the incremental
// Program equals a fresh Compile of the same cluster.
func TestEnforcerRandomChanges(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	for _, c := range drivertest.PolicyCases() {
		e, err := policy.NewEnforcer(policy.Config{Dataplane: fake.NewPolicy()})
		if err != nil {
			t.Fatal(err)
		}
		cur := c.Cluster()
		feed(e, &policy.Cluster{}, cur)
		for step := range 6 {
			next := clone(cur)
			for range 1 + rnd.IntN(3) {
				mutate(rnd, next)
			}
			feed(e, cur, next)
			cur = next
			if err := e.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			sameVerdicts(t, fmt.Sprintf("%s step %d", c.Name, step), e.Program(), policy.Compile(cur))
		}
	}
}

func clone(c *policy.Cluster) *policy.Cluster {
	out := &policy.Cluster{Nodes: c.Nodes, Policies: c.Policies}
	for _, ns := range c.Namespaces {
		l := policy.Labels{}
		for k, v := range ns.Labels {
			l[k] = v
		}
		out.Namespaces = append(out.Namespaces, policy.Namespace{Name: ns.Name, Labels: l})
	}
	for _, p := range c.Pods {
		l := policy.Labels{}
		for k, v := range p.Labels {
			l[k] = v
		}
		p.Labels = l
		p.IPs = append([]netip.Addr(nil), p.IPs...)
		p.Ports = append([]policy.NamedPort(nil), p.Ports...)
		out.Pods = append(out.Pods, p)
	}
	return out
}

func mutate(rnd *rand.Rand, c *policy.Cluster) {
	values := []string{"a", "b", "c", "x", "y", "z", "blue"}
	switch rnd.IntN(5) {
	case 0: // relabel a pod
		p := &c.Pods[rnd.IntN(len(c.Pods))]
		p.Labels[[]string{"pod", "team"}[rnd.IntN(2)]] = values[rnd.IntN(len(values))]
	case 1: // relabel a namespace
		ns := &c.Namespaces[rnd.IntN(len(c.Namespaces))]
		ns.Labels["ns"] = values[rnd.IntN(len(values))]
	case 2: // remove a pod
		if len(c.Pods) > 1 {
			i := rnd.IntN(len(c.Pods))
			c.Pods = append(c.Pods[:i], c.Pods[i+1:]...)
		}
	case 3: // a pod loses or renames a named port
		p := &c.Pods[rnd.IntN(len(c.Pods))]
		if len(p.Ports) > 0 {
			i := rnd.IntN(len(p.Ports))
			p.Ports[i].Port = uint16(80 + rnd.IntN(2))
			if rnd.IntN(2) == 0 {
				p.Ports = append(p.Ports[:i], p.Ports[i+1:]...)
			}
		}
	case 4: // a pod loses its IPv6 address
		p := &c.Pods[rnd.IntN(len(c.Pods))]
		p.IPs = p.IPs[:1]
	}
}

func TestEnforcerRun(t *testing.T) {
	dp := fake.NewPolicy()
	e, err := policy.NewEnforcer(policy.Config{Dataplane: dp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.NewEnforcer(policy.Config{}); err == nil {
		t.Error("no dataplane accepted")
	}
	// Nil objects are ignored, never a panic.
	e.OnPodAdd(nil)
	e.OnPodDelete(nil)
	e.OnPolicyAdd(nil)
	e.OnPolicyDelete(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	w := drivertest.PolicyWorld()
	feed(e, &policy.Cluster{}, w)
	deny := policy.Policy{Key: policy.Key{Namespace: "x", Name: "deny"}}
	e.OnPolicyAdd(&deny)
	a, b := w.Pods[1].IPs[0], w.Pods[0].IPs[0] // x/b -> x/a
	deadline := time.Now().Add(5 * time.Second)
	for dp.Allowed(a, b, policy.TCP, 80) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if dp.Allowed(a, b, policy.TCP, 80) {
		t.Error("the loop did not sync the deny-all policy")
	}
	if d := e.Trace(a, b, policy.TCP, 80); d.Allowed {
		t.Errorf("Trace after sync: %s", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestProgramDeltas checks what the Enforcer's successive Programs tell a
// driver: the pods changed since the previous one (others keep their
// *PodProgram), and peer set deltas that turn the old set into the new.
func TestProgramDeltas(t *testing.T) {
	dp := fake.NewPolicy()
	e, err := policy.NewEnforcer(policy.Config{Dataplane: dp})
	if err != nil {
		t.Fatal(err)
	}
	c := drivertest.PolicyCases()
	var withPeers drivertest.PolicyCase
	for _, pc := range c {
		if pc.Name == "ingress from a namespace" {
			withPeers = pc
		}
	}
	w := withPeers.Cluster()
	feed(e, &policy.Cluster{}, w)
	sync := func() *policy.Program {
		if err := e.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		return e.Program()
	}
	p1 := sync()
	if _, ok := p1.ChangedSince(0); ok {
		t.Error("a first Program claims a base")
	}
	// Namespace z relabelled ns=y: its pods join the peer set of x/from-y.
	w2 := clone(w)
	for i := range w2.Namespaces {
		if w2.Namespaces[i].Name == "z" {
			w2.Namespaces[i].Labels = policy.Labels{"ns": "y"}
		}
	}
	feed(e, w, w2)
	p2 := sync()
	changed, ok := p2.ChangedSince(p1.Generation())
	if !ok {
		t.Fatal("no delta from the previous Program")
	}
	for _, pp := range p1.Pods {
		if !slices.Contains(changed, pp.Pod) && p2.PodOf(pp.Pod) != pp {
			t.Errorf("%s not listed as changed but its program differs", pp.Pod)
		}
	}
	deltas := 0
	for _, s2 := range p2.Sets() {
		s1 := p1.Set(s2.Name)
		if s1 == nil || s1 == s2 {
			continue
		}
		deltas++
		add, rem, ok := s2.DeltaFrom(s1)
		if !ok {
			t.Fatalf("set %s changed without a delta", s2.Name)
		}
		// Applying the delta to the old ranges gives the new ones.
		got := map[policy.AddrRange]bool{}
		for _, r := range s1.Ranges {
			got[r] = true
		}
		for _, r := range rem {
			if !got[r] {
				t.Errorf("delta removes %v, not in the old set", r)
			}
			delete(got, r)
		}
		for _, r := range add {
			got[r] = true
		}
		if len(got) != len(s2.Ranges) {
			t.Errorf("old set + delta has %d ranges, new set %d", len(got), len(s2.Ranges))
		}
		for _, r := range s2.Ranges {
			if !got[r] {
				t.Errorf("old set + delta lacks %v", r)
			}
		}
		if _, _, ok := s2.DeltaFrom(s2); ok {
			t.Error("a set claims a delta from itself")
		}
	}
	if deltas == 0 {
		t.Error("no peer set changed with the namespace's label")
	}
	// A Program compiled apart shares no generation.
	if _, ok := policy.Compile(w2).ChangedSince(p2.Generation()); ok {
		t.Error("a separately compiled Program claims the Enforcer's as base")
	}
}
