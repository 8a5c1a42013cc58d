package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/internal/testmain"
)

var update = flag.Bool("update", false, "rewrite the expected reports under testdata/")

// envMain makes the test binary run the command itself (for the tests
// that signal it).
const envMain = "KUBEWIRE_SANDBOX_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envMain) == "1" {
		main()
		os.Exit(0)
	}
	testmain.Run(m)
}

// runSandbox runs the command's run function in this process.
func runSandbox(t *testing.T, o options, stdin io.Reader) (string, error) {
	t.Helper()
	e := sandbox.NewProgram()
	var out strings.Builder
	err := e.Run(func() error { return run(context.Background(), e, o, stdin, &out, io.Discard) })
	e.Close()
	return out.String(), err
}

// timings matches the parts of a report that change from run to run.
var timings = regexp.MustCompile(`; built in .*`)

// TestReports runs the default cluster and the testdata manifests and
// compares their reports (the matrix, its explanations, the DNS answers)
// with the expected ones under testdata/*.golden (go test -update
// rewrites them).
func TestReports(t *testing.T) {
	sandbox.RequirePrivileged(t)
	policies, err := os.ReadFile("testdata/policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		o      options
		stdin  io.Reader
		golden string
	}{
		{"default", options{output: "text"}, nil, "default"},
		{"dualstack-vxlan", options{output: "text", files: []string{"testdata/dualstack-vxlan.yaml"}}, nil, "dualstack-vxlan"},
		{"policies", options{output: "text", files: []string{"testdata/policies.yaml"}}, nil, "policies"},
		{"stdin", options{output: "text", files: []string{"-"}}, strings.NewReader(string(policies)), "policies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, err := runSandbox(t, tc.o, tc.stdin)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("took %v, want a few seconds", took)
			}
			if !regexp.MustCompile(`built in [0-9.]+m?s \(nodes [0-9.]+m?s, pods [0-9.]+m?s, services [0-9.]+m?s, policy [0-9.]+m?s, dns [0-9.]+m?s\)`).MatchString(out) {
				t.Errorf("no build time per component:\n%s", out)
			}
			if !strings.Contains(out, "summary: all as expected") || strings.Contains(out, "NOT AS EXPECTED") {
				t.Fatalf("report:\n%s", out)
			}
			got := timings.ReplaceAllString(out, "; built in …")
			path := filepath.Join("testdata", tc.golden+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("report differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// TestJSON: -o json prints the whole report for scripts.
func TestJSON(t *testing.T) {
	sandbox.RequirePrivileged(t)
	out, err := runSandbox(t, options{output: "json"}, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if r.Cluster.Nodes != 2 || len(r.Nodes) != 2 || len(r.Pods) != 8 || len(r.Services) != 4 || r.Cluster.Policies != 1 {
		t.Errorf("cluster %+v: %d nodes, %d pods, %d services", r.Cluster, len(r.Nodes), len(r.Pods), len(r.Services))
	}
	s := r.Summary
	if s.Probes == 0 || s.Unexpected != 0 || s.Connected+s.Refused != s.Probes || s.Refused == 0 || s.DNSNames != 4 || s.DNSWrong != 0 {
		t.Errorf("summary %+v", s)
	}
	var denied, nodePorts int
	for _, p := range r.Probes {
		if !p.OK || p.Target == "" || p.Family == "" {
			t.Errorf("probe %+v", p)
		}
		if p.Expect == expectDeny && p.Kind == "pod" {
			denied++
			if !strings.Contains(p.Why, "shop/db-allow-web") {
				t.Errorf("denied probe without its policy: %+v", p)
			}
		}
		if p.Kind == "nodeport" {
			nodePorts++
			if p.Via == "node1" && p.SeenAs != outsideV4.String() {
				t.Errorf("externalTrafficPolicy Local: the server saw %q, want the client's address", p.SeenAs)
			}
		}
	}
	if denied == 0 || nodePorts != 2 {
		t.Errorf("%d denied pod probes, %d node port probes", denied, nodePorts)
	}
}

// TestProbeFlag: -probe runs one probe per family and traces it.
func TestProbeFlag(t *testing.T) {
	sandbox.RequirePrivileged(t)
	out, err := runSandbox(t, options{output: "text", probe: "src=monitoring/prober dst=shop/db-0 port=80/TCP"}, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	for _, want := range []string{"monitoring/prober → pod shop/db-0 tcp/10.244.0.3:80 (IPv4): refused; as expected",
		"(IPv6): refused; as expected", "ingress shop/db-0 isolated by shop/db-allow-web, no rule allows it"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = runSandbox(t, options{output: "text", probe: "src=shop/web-1 dst=svc:shop/web port=5353/UDP"}, nil)
	if err != nil || strings.Count(out, "connected") != 2 || !strings.Contains(out, "endpoint 10.244.1.1:5353: allowed") {
		t.Errorf("UDP service probe: %v\n%s", err, out)
	}
	for _, bad := range []string{"src=shop/nope dst=shop/web", "src=shop/web-1 dst=shop/db port=80", "src=shop/web-1 dst=shop/web port=81/TCP"} {
		if out, err := runSandbox(t, options{output: "text", probe: bad}, nil); err == nil {
			t.Errorf("-probe %q accepted:\n%s", bad, out)
		}
	}
}

func TestParseProbe(t *testing.T) {
	r, err := parseProbe("src=a/b dst=svc:c/d port=53/udp")
	if err != nil || r.src != "a/b" || r.dst != "c/d" || r.dstKind != "svc" || r.port != 53 || r.proto != "UDP" {
		t.Fatalf("%+v, %v", r, err)
	}
	for _, bad := range []string{"", "src=a/b", "src=a dst=c/d", "src=a/b dst=c/d port=0", "src=a/b dst=c/d port=80/SCTP",
		"src=a/b dst=x:c/d", "src=a/b dst=c/d via=x", "src=a/b dst"} {
		if _, err := parseProbe(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSearchCandidates(t *testing.T) {
	search := []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	got := searchCandidates("web.shop", search, 5)
	want := []string{"web.shop.shop.svc.cluster.local.", "web.shop.svc.cluster.local.", "web.shop.cluster.local.", "web.shop."}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ndots 5: %v", got)
	}
	if got := searchCandidates("a.b.c", search, 2); got[0] != "a.b.c." {
		t.Errorf("ndots 2: %v", got)
	}
}

// ownNamespaces lists the namespaces of sandboxes of process pid.
func ownNamespaces(t *testing.T, pid int) []string {
	t.Helper()
	names, err := netns.ListNamed()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, fmt.Sprintf("kwt-%d-", pid)) {
			out = append(out, n)
		}
	}
	return out
}

// TestBadInput: bad manifests and flags fail before anything is built.
func TestBadInput(t *testing.T) {
	sandbox.RequirePrivileged(t)
	bad, err := filepath.Glob("testdata/bad-*.yaml")
	if err != nil || len(bad) < 5 {
		t.Fatalf("bad manifests: %v, %v", bad, err)
	}
	before := len(ownNamespaces(t, os.Getpid()))
	for _, f := range bad {
		out, err := runSandbox(t, options{output: "text", files: []string{f}}, nil)
		if err == nil || !strings.Contains(err.Error(), f+": document") || out != "" {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
	for _, o := range []options{
		{output: "yaml"}, {output: "text", pods: -1}, {output: "text", services: 3},
		{output: "text", files: []string{"testdata/does-not-exist.yaml"}},
		{output: "text", probe: "src=x"},
	} {
		if _, err := runSandbox(t, o, nil); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if after := len(ownNamespaces(t, os.Getpid())); after != before {
		t.Errorf("%d namespaces left behind", after-before)
	}
}

// TestScale: -pods and -services build a bigger cluster and probe a
// sample.
func TestScale(t *testing.T) {
	sandbox.RequirePrivileged(t)
	start := time.Now()
	out, err := runSandbox(t, options{output: "text", pods: 200, services: 100}, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("took %v", took)
	}
	for _, want := range []string{"208 pods, 104 services", "(probed 11 of 207 pods and 7 of 103 services)", "summary: all as expected",
		"s3.scale", "scale/pod-3 "} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// startMain runs the command in a child process with args and returns it
// with a reader of its standard error (progress) and output.
func startMain(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envMain+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			sandbox.RemoveStale()
		}
	})
	return cmd, bufio.NewReader(stderr), bufio.NewReader(stdout)
}

// waitLine reads r until a line containing s.
func waitLine(t *testing.T, r *bufio.Reader, s string) {
	t.Helper()
	for {
		l, err := r.ReadString('\n')
		if strings.Contains(l, s) {
			return
		}
		if err != nil {
			t.Fatalf("no line with %q: %v", s, err)
		}
	}
}

// TestInterrupt: Ctrl-C while the cluster is being built, or while -keep
// holds it up, removes every namespace (and so every link and table in
// them) and every file the run made; -down stops a kept cluster.
func TestInterrupt(t *testing.T) {
	sandbox.RequirePrivileged(t)
	for _, delay := range []time.Duration{20 * time.Millisecond, 150 * time.Millisecond, 400 * time.Millisecond} {
		t.Run(fmt.Sprintf("while building, after %v", delay), func(t *testing.T) {
			cmd, progress, _ := startMain(t, "-pods", "150", "-services", "10")
			waitLine(t, progress, "nodes")
			time.Sleep(delay)
			if n := len(ownNamespaces(t, cmd.Process.Pid)); n == 0 {
				t.Fatal("no namespace made yet")
			}
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if left := ownNamespaces(t, cmd.Process.Pid); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
	t.Run("kept", func(t *testing.T) {
		if _, err := os.Stat(pidFile); err == nil {
			t.Skipf("%s exists: a kept sandbox may be running", pidFile)
		}
		cmd, _, out := startMain(t, "-keep")
		waitLine(t, out, "The cluster stays up")
		names := ownNamespaces(t, cmd.Process.Pid)
		if len(names) < 10 {
			t.Fatalf("namespaces: %v", names)
		}
		if _, err := os.Stat(filepath.Join("/etc/netns", names[len(names)-1], "resolv.conf")); err != nil {
			t.Errorf("no resolv.conf for ip netns exec: %v", err)
		}
		var msg strings.Builder
		if err := down(&msg); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if !strings.Contains(msg.String(), fmt.Sprintf("stopped the kept sandbox (PID %d)", cmd.Process.Pid)) {
			t.Errorf("-down said %q", msg.String())
		}
		if left := ownNamespaces(t, cmd.Process.Pid); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join("/etc/netns", n)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("/etc/netns/%s left behind: %v", n, err)
			}
		}
		if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind", pidFile)
		}
	})
}

// TestOwnKubeDNS: a manifest's own kube-dns Service (here with the address
// kubelet is told to use) is served by the sandbox's DNS pod, and pods'
// resolv.conf points at it.
func TestOwnKubeDNS(t *testing.T) {
	sandbox.RequirePrivileged(t)
	manifest := `
apiVersion: kubewire.dev/v1alpha1
kind: Cluster
spec: {nodes: 1, ipFamilies: [IPv4]}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {containers: [{name: c}]}
`
	out, err := runSandbox(t, options{output: "text", files: []string{"-"}}, strings.NewReader(manifest))
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	for _, want := range []string{"nameserver 10.96.0.53", "kube-dns.kube-system  → 10.96.0.53", "summary: all as expected"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
