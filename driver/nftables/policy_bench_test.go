package nftables

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/policy"
)

// benchPolicyCluster is nPods pods in 50 namespaces (app=app-<i%20>,
// role=client|server) and nPolicies policies (spread over the
// namespaces), each selecting one app and allowing ingress on TCP 8080
// from the clients of its namespace and from namespaces labelled
// team=<ns%5>.
func benchPolicyCluster(nPods, nPolicies int) *policy.Cluster {
	c := &policy.Cluster{Nodes: []policy.Node{{Name: "node"}}}
	const nss = 50
	for i := range nss {
		c.Namespaces = append(c.Namespaces, policy.Namespace{Name: fmt.Sprintf("ns-%02d", i), Labels: policy.Labels{"team": fmt.Sprint(i % 5)}})
	}
	for i := range nPods {
		role := "server"
		if i%3 == 0 {
			role = "client"
		}
		c.Pods = append(c.Pods, policy.Pod{
			Key:    policy.Key{Namespace: fmt.Sprintf("ns-%02d", i%nss), Name: fmt.Sprintf("pod-%05d", i)},
			Labels: policy.Labels{"app": fmt.Sprintf("app-%d", (i/nss)%20), "role": role},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})},
			Node:   "node",
			Ports:  []policy.NamedPort{{Name: "http", Protocol: policy.TCP, Port: 8080}},
		})
	}
	for i := range nPolicies {
		ns := fmt.Sprintf("ns-%02d", i%nss)
		c.Policies = append(c.Policies, policy.Policy{
			Key:         policy.Key{Namespace: ns, Name: fmt.Sprintf("pol-%04d", i)},
			PodSelector: policy.Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (i/nss)%20)}},
			Ingress: []policy.Rule{{
				Peers: []policy.Peer{
					{PodSelector: &policy.Selector{MatchLabels: map[string]string{"role": "client"}}},
					{NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"team": fmt.Sprint(i % 5)}},
						PodSelector: &policy.Selector{MatchLabels: map[string]string{"role": "client"}}},
				},
				Ports: []policy.PortSpec{{Protocol: policy.TCP, Name: "http"}, {Protocol: policy.TCP, Port: 9090}},
			}},
		})
	}
	return c
}

// BenchmarkPolicySync: compile and full sync of 1k policies over 5k pods,
// then one pod label change (Enforcer event, incremental compile and sync).
func BenchmarkPolicySync(b *testing.B) {
	ctx := context.Background()
	cl := benchPolicyCluster(5000, 1000)
	b.Run("compile-1k-policies-5k-pods", func(b *testing.B) {
		for b.Loop() {
			policy.Compile(cl)
		}
	})
	sb := sandbox.New(b)
	node := sb.Namespace("node")
	d := newPolicyDataplane(b, node, PolicyOptions{})
	b.Run("full-sync-1k-policies-5k-pods", func(b *testing.B) {
		prog := policy.Compile(cl)
		for b.Loop() {
			d.committed = nil
			if err := d.Sync(ctx, prog); err != nil {
				b.Fatal(err)
			}
		}
		isolated := 0
		for _, pp := range prog.Pods {
			if pp.Dirs[policy.Ingress] != nil {
				isolated++
			}
		}
		b.ReportMetric(float64(isolated), "isolated-pods")
	})
	for _, nPods := range []int{5000, 10000} {
		benchLabelChange(b, d, benchPolicyCluster(nPods, 1000), nPods)
	}
}

// benchLabelChange times one pod label change through an Enforcer and d.
func benchLabelChange(b *testing.B, d *PolicyDataplane, cl *policy.Cluster, nPods int) {
	ctx := context.Background()
	b.Run(fmt.Sprintf("label-change-with-1k-policies-%dk-pods", nPods/1000), func(b *testing.B) {
		d.committed = nil
		e, err := policy.NewEnforcer(policy.Config{Dataplane: d})
		if err != nil {
			b.Fatal(err)
		}
		for _, ns := range cl.Namespaces {
			e.OnNamespaceAdd(ns)
		}
		for i := range cl.Pods {
			e.OnPodAdd(&cl.Pods[i])
		}
		for i := range cl.Policies {
			e.OnPolicyAdd(&cl.Policies[i])
		}
		if err := e.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		pod := cl.Pods[1] // a server; toggled to client and back
		for i := 0; b.Loop(); i++ {
			p := pod
			p.Labels = policy.Labels{"app": pod.Labels["app"], "role": []string{"client", "server"}[i%2]}
			e.OnPodUpdate(&pod, &p)
			if err := e.Sync(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPolicyConnect times new TCP connections between two pods of
// drivertest's world through the node, with the destination isolated by
// one allowing policy, alone or among 1,000 policies isolating other pods
// (each with its own peer set), and with no policy at all.
func BenchmarkPolicyConnect(b *testing.B) {
	ctx := context.Background()
	node, pods := policyWorld(b)
	d := newPolicyDataplane(b, node, PolicyOptions{})
	xa, xb := policy.Key{Namespace: "x", Name: "a"}, policy.Key{Namespace: "x", Name: "b"}
	allow := policy.Policy{Key: policy.Key{Namespace: "x", Name: "allow-b"},
		PodSelector: policy.Selector{MatchLabels: map[string]string{"pod": "a"}},
		Ingress:     []policy.Rule{{Peers: []policy.Peer{{PodSelector: &policy.Selector{MatchLabels: map[string]string{"pod": "b"}}}}}}}
	others := benchPolicyCluster(2000, 1000)
	target := netip.AddrPortFrom(drivertest.PolicyPodAddr(xa, 0), 80).String()
	for _, c := range []struct {
		name     string
		policies []policy.Policy
		pods     []policy.Pod
	}{
		{"no-policy", nil, nil},
		{"one-policy", []policy.Policy{allow}, nil},
		{"one-of-1001-policies", append([]policy.Policy{allow}, others.Policies...), others.Pods},
	} {
		w := drivertest.PolicyWorld()
		w.Policies = c.policies
		w.Pods = append(w.Pods, c.pods...)
		w.Namespaces = append(w.Namespaces, others.Namespaces...)
		if err := d.Sync(ctx, policy.Compile(w)); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			err := pods[xb].Do(func() error {
				for b.Loop() {
					conn, err := net.DialTimeout("tcp", target, time.Second)
					if err != nil {
						return err
					}
					conn.(*net.TCPConn).SetLinger(0)
					conn.Close()
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkPolicyTimeToEnforce measures, with an Enforcer running its
// loop over this dataplane, the time from OnPolicyAdd of a deny-all policy
// to the first refused connection, and from its OnPolicyDelete to the
// first accepted one (1k other policies over 2k other pods loaded).
func BenchmarkPolicyTimeToEnforce(b *testing.B) {
	node, pods := policyWorld(b)
	d := newPolicyDataplane(b, node, PolicyOptions{Reject: true})
	e, err := policy.NewEnforcer(policy.Config{Dataplane: d, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		b.Fatal(err)
	}
	w := drivertest.PolicyWorld()
	others := benchPolicyCluster(2000, 1000)
	for _, ns := range append(w.Namespaces, others.Namespaces...) {
		e.OnNamespaceAdd(ns)
	}
	for _, n := range w.Nodes {
		e.OnNodeAdd(n)
	}
	for _, p := range append(w.Pods, others.Pods...) {
		e.OnPodAdd(&p)
	}
	for i := range others.Policies {
		e.OnPolicyAdd(&others.Policies[i])
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The initial full sync (1,000 policies) first: measuring from before
	// it would charge it to the first change (the "outlier" of 0.3-1.9 s
	// the earlier runs showed once per run).
	if err := e.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	xa, xb := policy.Key{Namespace: "x", Name: "a"}, policy.Key{Namespace: "x", Name: "b"}
	target := netip.AddrPortFrom(drivertest.PolicyPodAddr(xa, 0), 80)
	deny := &policy.Policy{Key: policy.Key{Namespace: "x", Name: "deny-a"},
		PodSelector: policy.Selector{MatchLabels: map[string]string{"pod": "a"}}}
	waitFor := func(reachable bool) time.Duration {
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			_, err := pods[xb].Probe("tcp", target, time.Second)
			if (err == nil) == reachable {
				return time.Since(start)
			}
		}
		b.Fatalf("reachable=%v not seen in 10 s", reachable)
		return 0
	}
	waitFor(true)
	var toDeny, toAllow []time.Duration
	for b.Loop() {
		start := time.Now()
		e.OnPolicyAdd(deny)
		waitFor(false)
		toDeny = append(toDeny, time.Since(start))
		start = time.Now()
		e.OnPolicyDelete(deny)
		waitFor(true)
		toAllow = append(toAllow, time.Since(start))
	}
	slices.Sort(toDeny)
	slices.Sort(toAllow)
	b.ReportMetric(float64(toDeny[len(toDeny)/2].Microseconds())/1000, "p50-ms-to-deny")
	b.ReportMetric(float64(toDeny[len(toDeny)-1].Microseconds())/1000, "max-ms-to-deny")
	b.ReportMetric(float64(toAllow[len(toAllow)/2].Microseconds())/1000, "p50-ms-to-allow")
}
