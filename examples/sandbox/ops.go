package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/internal/sandbox"
)

func intStr(s string) intstr.IntOrString { return intstr.FromString(s) }

// scaleNamespace holds the pods and services of -pods and -services.
const scaleNamespace = "scale"

// sampleSize is how many scale pods and services the matrix probes.
const sampleSize = 4

// addScale adds pods pods (round-robin over the nodes) and services
// services in namespace scale; service s<j> selects the pods of app=s<j>.
func addScale(m *Manifest, pods, services int) error {
	if pods == 0 {
		return nil
	}
	if slices.ContainsFunc(m.Namespaces, func(n *corev1.Namespace) bool { return n.Name == scaleNamespace }) {
		return fmt.Errorf("-pods: the manifest already has namespace %q, which -pods fills", scaleNamespace)
	}
	m.Namespaces = append(m.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace,
		Labels: map[string]string{"kubernetes.io/metadata.name": scaleNamespace}}})
	groups := max(services, 1)
	for i := range pods {
		m.Pods = append(m.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: scaleNamespace, Name: fmt.Sprintf("pod-%d", i),
				Labels: map[string]string{"app": fmt.Sprintf("s%d", i%groups)}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node%d", 1+i%m.Cluster.Nodes), Containers: []corev1.Container{{Name: "echo",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
		})
	}
	families := make([]corev1.IPFamily, 0, 2)
	for _, f := range m.Cluster.IPFamilies {
		families = append(families, corev1.IPFamily(f))
	}
	pol := corev1.IPFamilyPolicyPreferDualStack
	for j := range services {
		m.Services = append(m.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: scaleNamespace, Name: fmt.Sprintf("s%d", j)},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: map[string]string{"app": fmt.Sprintf("s%d", j)},
				IPFamilies: families, IPFamilyPolicy: &pol,
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intStr("http")}}},
		})
	}
	return nil
}

// sample returns the items the matrix probes: all of the manifest's, and
// sampleSize of those -pods/-services added.
func sample[T any](all []T, scale func(T) bool) []T {
	var out []T
	n := 0
	for _, x := range all {
		if scale(x) {
			if n >= sampleSize {
				continue
			}
			n++
		}
		out = append(out, x)
	}
	return out
}

// check probes the cluster and asks its DNS, and returns the report.
func (c *cluster) check(ctx context.Context, progress io.Writer, sampled bool) (*Report, error) {
	var userPods []*pod
	for _, p := range c.pods {
		if !p.system {
			userPods = append(userPods, p)
		}
	}
	var svcs []*corev1.Service
	for _, s := range c.m.Services {
		if s.Namespace != dnsNamespace || s.Name != dnsName {
			svcs = append(svcs, s)
		}
	}
	pods := sample(userPods, func(p *pod) bool { return p.obj.Namespace == scaleNamespace })
	probedSvcs := sample(svcs, func(s *corev1.Service) bool { return s.Namespace == scaleNamespace })
	r := &Report{}
	c.describe(r)
	if sampled {
		r.Cluster.Sampled = fmt.Sprintf("probed %d of %d pods and %d of %d services", len(pods), len(userPods), len(probedSvcs), len(svcs))
	}
	tasks := c.matrixTasks(pods, pods, probedSvcs)
	fmt.Fprintf(progress, "probing: %d connections", len(tasks))
	start := time.Now()
	r.Probes = runTasks(tasks)
	if len(pods) > 0 {
		dnsSvcs := append(slices.Clone(probedSvcs), c.dnsService())
		answers, rc, err := c.askDNS(ctx, pods[0], dnsSvcs)
		if err != nil {
			return nil, fmt.Errorf("DNS from %s: %w", pods[0].key, err)
		}
		r.DNS = DNSReport{From: pods[0].key, ResolvConf: rc, Answers: answers}
	}
	r.Timings = c.timings
	r.summarize()
	r.Summary.Probe = time.Since(start)
	fmt.Fprintf(progress, ", %d DNS names: %s\n\n", len(r.DNS.Answers), r.Summary.Probe.Round(time.Millisecond))
	return r, nil
}

func (c *cluster) dnsService() *corev1.Service {
	for _, s := range c.m.Services {
		if s.Namespace == dnsNamespace && s.Name == dnsName {
			return s
		}
	}
	return nil
}

// probeRequest is a parsed -probe value.
type probeRequest struct {
	src, dst string
	dstKind  string // "", "pod" or "svc"
	port     int
	proto    corev1.Protocol
}

// parseProbe reads 'src=NS/POD dst=[pod:|svc:]NS/NAME [port=PORT[/PROTO]]'.
func parseProbe(s string) (probeRequest, error) {
	var r probeRequest
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" {
			return r, fmt.Errorf("-probe %q: %q is not key=value", s, f)
		}
		switch k {
		case "src":
			r.src = v
		case "dst":
			if kind, rest, ok := strings.Cut(v, ":"); ok {
				if kind != "pod" && kind != "svc" {
					return r, fmt.Errorf("-probe: dst %q: want pod:NS/NAME or svc:NS/NAME", v)
				}
				r.dstKind, v = kind, rest
			}
			r.dst = v
		case "port":
			num, proto, _ := strings.Cut(v, "/")
			p, err := strconv.Atoi(num)
			if err != nil || p < 1 || p > 65535 {
				return r, fmt.Errorf("-probe: port %q: want 1-65535, optionally /TCP or /UDP", v)
			}
			r.port = p
			switch strings.ToUpper(proto) {
			case "", "TCP":
				r.proto = corev1.ProtocolTCP
			case "UDP":
				r.proto = corev1.ProtocolUDP
			default:
				return r, fmt.Errorf("-probe: port %q: protocol %q: want TCP or UDP", v, proto)
			}
		default:
			return r, fmt.Errorf("-probe: unknown key %q (want src, dst, port)", k)
		}
	}
	for _, x := range []struct{ name, v string }{{"src", r.src}, {"dst", r.dst}} {
		if ns, name, ok := strings.Cut(x.v, "/"); !ok || ns == "" || name == "" {
			return r, fmt.Errorf("-probe: %s %q: want NAMESPACE/NAME", x.name, x.v)
		}
	}
	return r, nil
}

// runProbe performs one probe per family and prints it with its trace.
func (c *cluster) runProbe(out io.Writer, req probeRequest) error {
	src := c.podByKey[req.src]
	if src == nil {
		return fmt.Errorf("-probe: src %q: no such pod", req.src)
	}
	var svc *corev1.Service
	if req.dstKind != "pod" {
		for _, s := range c.m.Services {
			if s.Namespace+"/"+s.Name == req.dst {
				svc = s
			}
		}
	}
	dst := c.podByKey[req.dst]
	switch {
	case req.dstKind == "svc" && svc == nil, req.dstKind == "pod" && dst == nil, svc == nil && dst == nil:
		return fmt.Errorf("-probe: dst %q: no such pod or service", req.dst)
	}
	var tasks []task
	if svc != nil {
		if !probeable(svc) {
			return fmt.Errorf("-probe: service %s has no cluster IP to probe (headless or ExternalName): probe its pods", req.dst)
		}
		if req.port != 0 {
			i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
				return int(p.Port) == req.port && p.Protocol == req.proto
			})
			if i < 0 {
				return fmt.Errorf("-probe: service %s has no port %d/%s", req.dst, req.port, req.proto)
			}
			s2 := *svc
			s2.Spec.Ports = []corev1.ServicePort{svc.Spec.Ports[i]}
			svc = &s2
		}
		tasks = c.matrixTasks([]*pod{src}, nil, []*corev1.Service{svc})
	} else {
		d := *dst
		if req.port != 0 {
			d.ports = []corev1.ContainerPort{{ContainerPort: int32(req.port), Protocol: req.proto}}
		}
		tasks = c.matrixTasks([]*pod{src}, []*pod{&d}, nil)
	}
	probes := runTasks(tasks)
	bad := 0
	for i, p := range probes {
		fmt.Fprintf(out, "%s → %s %s %s/%s (%s): %s", p.From, p.Kind, p.To, strings.ToLower(p.Protocol), p.Target, p.Family, p.Result)
		if p.SeenAs != "" {
			fmt.Fprintf(out, ", the server saw %s", p.SeenAs)
		}
		verdict := "as expected"
		if !p.OK {
			verdict, bad = "NOT AS EXPECTED (expected "+p.Expect+")", bad+1
		}
		fmt.Fprintf(out, "; %s\n", verdict)
		// The trace of every endpoint the connection may reach.
		t := tasks[i]
		srcIP := src.ip(p.Family == "IPv4")
		if svc != nil {
			sp := svc.Spec.Ports[0]
			bs := c.backends(svc, sp.Name, p.Family == "IPv4")
			if len(bs) == 0 {
				fmt.Fprintln(out, "    no ready endpoint: the service proxy refuses the connection")
			}
			for _, b := range bs {
				fmt.Fprintf(out, "    endpoint %s: %s\n", netip.AddrPortFrom(b.addr, b.port), c.trace(srcIP, b.addr, sp.Protocol, b.port))
			}
		} else {
			fmt.Fprintf(out, "    %s\n", c.trace(srcIP, t.addr.Addr(), corev1.Protocol(p.Protocol), t.addr.Port()))
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d probes %w", bad, errUnexpected)
	}
	return nil
}

// pidFile records the process of a cluster kept up by -keep.
const pidFile = "/run/kubewire-sandbox.pid"

// keep writes each pod's resolv.conf where `ip netns exec` mounts it,
// prints how to use the cluster and waits until the process is stopped
// (Ctrl-C, or -down from another shell); the Program's signal handler
// then removes everything.
func (c *cluster) keep(out io.Writer) error {
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && ours(pid) {
			return fmt.Errorf("-keep: another kept sandbox runs (PID %d); stop it with -down first", pid)
		}
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	c.env.Cleanup(func() { os.Remove(pidFile) })
	if _, err := os.Stat("/etc/netns"); errors.Is(err, os.ErrNotExist) {
		c.env.Cleanup(func() { os.Remove("/etc/netns") }) // made here: removed when empty
	}
	for _, p := range c.pods {
		rc, err := c.resolvConf(p)
		if err != nil {
			return err
		}
		dir := filepath.Join("/etc/netns", p.ns.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		c.env.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(rc.String()), 0o644); err != nil {
			return err
		}
	}
	example := c.pods[0]
	for _, p := range c.pods {
		if !p.system {
			example = p
			break
		}
	}
	fmt.Fprintf(out, "The cluster stays up (PID %d). Enter a pod, with its resolv.conf:\n", os.Getpid())
	fmt.Fprintf(out, "    ip netns exec %s sh          # %s\n", example.ns.Name, example.key)
	fmt.Fprintf(out, "  nodes: %s\n", strings.Join(nodeNetns(c.nodes), " "))
	fmt.Fprintln(out, "  (ip netns list shows every namespace; nft list ruleset inside a node shows its tables)")
	fmt.Fprintln(out, "Remove it with Ctrl-C here, or from another shell: go run ./examples/sandbox -down")
	select {} // the Program's signal handler exits
}

func nodeNetns(ns []*node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.ns.Name)
	}
	return out
}

// ours reports whether pid is a running sandbox process.
func ours(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmd), "sandbox")
}

// down stops the kept sandbox (by the PID it recorded) and removes the
// namespaces of sandboxes whose process is gone.
func down(out io.Writer) error {
	b, err := os.ReadFile(pidFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintln(out, "no kept sandbox is running")
	case err != nil:
		return err
	default:
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if ours(pid) {
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("stop PID %d: %w", pid, err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for ours(pid) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if ours(pid) {
				return fmt.Errorf("PID %d did not stop within 30s", pid)
			}
			fmt.Fprintf(out, "stopped the kept sandbox (PID %d); it removed its namespaces\n", pid)
		}
		os.Remove(pidFile)
	}
	sandbox.RemoveStale()
	return nil
}
