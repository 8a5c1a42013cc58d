package kubeconv

import (
	"errors"
	"github.com/kubewire/kubewire/internal/k8sparse"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/policy"
)

// gen builds objects from fuzz input: each choice takes a byte (0 once
// the input is used up), and strings come from a pool that holds the
// fuzzer's own strings next to valid and invalid values.
type gen struct {
	b    []byte
	fuzz []string
}

func (g *gen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *gen) n(k int) int { return int(g.byte()) % k }

func (g *gen) int32() int32 {
	return int32(uint32(g.byte())<<24 | uint32(g.byte())<<16 | uint32(g.byte())<<8 | uint32(g.byte()))
}

// port is a port number, mostly in range.
func (g *gen) port() int32 {
	switch g.n(8) {
	case 0:
		return g.int32()
	case 1:
		return 0
	case 2:
		return 65535 + int32(g.n(3))
	}
	return int32(g.byte())<<8 | int32(g.byte())
}

// pick returns one of the fuzzer's strings or of pool.
func (g *gen) pick(pool ...string) string {
	i := g.n(len(g.fuzz) + len(pool))
	if i < len(g.fuzz) {
		return g.fuzz[i]
	}
	return pool[i-len(g.fuzz)]
}

var (
	labelKeys   = []string{"app", "tier", "example.com/team", "kubernetes.io/metadata.name", "", "not a key", "a/b/c"}
	labelValues = []string{"web", "db", "", "prod", "-bad", "x_y.z"}
	cidrs       = []string{"10.0.0.0/8", "10.1.0.0/16", "010.001.0.0/16", "10.1.2.3/24", "192.0.2.0/24", "0.0.0.0/0",
		"fd00::/8", "fd00:1::/32", "2001:db8::1/64", "::/0", "::ffff:10.0.0.0/104", "::ffff:10.0.0.0/64",
		"10.0.0.0/33", "garbage", "", "10.0.0.1"}
	portNames = []string{"http", "dns-udp", "metrics", "Bad_Name", "", "80", "a-very-long-port-name"}
	protocols = []string{"TCP", "UDP", "SCTP", "ICMP", "tcp", ""}
	operators = []string{"In", "NotIn", "Exists", "DoesNotExist", "Gt", ""}
	addrPool  = []string{"10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2", "010.0.0.01", "::ffff:10.0.0.3", "0.0.0.0", "::",
		"fe80::1%eth0", "10.0.0.256", "", "192.0.2.1"}
)

func (g *gen) labels(pool []string) map[string]string {
	n := g.n(4)
	if n == 0 {
		return nil
	}
	m := map[string]string{}
	for range n {
		m[g.pick(pool...)] = g.pick(labelValues...)
	}
	return m
}

func (g *gen) selector() *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: g.labels(labelKeys)}
	for range g.n(3) {
		r := metav1.LabelSelectorRequirement{Key: g.pick(labelKeys...), Operator: metav1.LabelSelectorOperator(g.pick(operators...))}
		for range g.n(3) {
			r.Values = append(r.Values, g.pick(labelValues...))
		}
		s.MatchExpressions = append(s.MatchExpressions, r)
	}
	return s
}

func (g *gen) peer() networkingv1.NetworkPolicyPeer {
	var p networkingv1.NetworkPolicyPeer
	k := g.n(8)
	if k&1 != 0 {
		p.PodSelector = g.selector()
	}
	if k&2 != 0 {
		p.NamespaceSelector = g.selector()
	}
	if k&4 != 0 || k == 0 && g.n(4) != 0 {
		b := &networkingv1.IPBlock{CIDR: g.pick(cidrs...)}
		for range g.n(3) {
			b.Except = append(b.Except, g.pick(cidrs...))
		}
		p.IPBlock = b
	}
	return p
}

func (g *gen) policyPort() networkingv1.NetworkPolicyPort {
	var p networkingv1.NetworkPolicyPort
	if g.n(3) != 0 {
		p.Protocol = ptr(corev1.Protocol(g.pick(protocols...)))
	}
	switch g.n(5) {
	case 1, 2:
		p.Port = ptr(intstr.FromInt32(g.port()))
	case 3:
		p.Port = ptr(intstr.FromString(g.pick(portNames...)))
	case 4:
		p.Port = &intstr.IntOrString{Type: intstr.Type(g.n(4)), IntVal: g.port(), StrVal: g.pick(portNames...)}
	}
	if g.n(3) == 0 {
		p.EndPort = ptr(g.port())
	}
	return p
}

func (g *gen) policy() *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{
		Namespace: g.pick("default", ""), Name: g.pick("web", "")}}
	p.Spec.PodSelector = *g.selector()
	if g.n(2) == 0 {
		p.Spec.PolicyTypes = []networkingv1.PolicyType{}
		for range g.n(4) {
			p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyType(g.pick("Ingress", "Egress", "Both")))
		}
	}
	for range g.n(3) {
		var r networkingv1.NetworkPolicyIngressRule
		for range g.n(3) {
			r.From = append(r.From, g.peer())
		}
		for range g.n(3) {
			r.Ports = append(r.Ports, g.policyPort())
		}
		p.Spec.Ingress = append(p.Spec.Ingress, r)
	}
	for range g.n(3) {
		var r networkingv1.NetworkPolicyEgressRule
		for range g.n(3) {
			r.To = append(r.To, g.peer())
		}
		for range g.n(3) {
			r.Ports = append(r.Ports, g.policyPort())
		}
		p.Spec.Egress = append(p.Spec.Egress, r)
	}
	return p
}

func (g *gen) container() corev1.Container {
	var c corev1.Container
	for range g.n(4) {
		c.Ports = append(c.Ports, corev1.ContainerPort{
			Name:          g.pick(portNames...),
			Protocol:      corev1.Protocol(g.pick(protocols...)),
			ContainerPort: g.port(),
		})
	}
	return c
}

func (g *gen) pod() *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Namespace: g.pick("default", ""), Name: g.pick("web", ""), Labels: g.labels(labelKeys)}}
	p.Spec.NodeName = g.pick("node-a", "")
	p.Spec.HostNetwork = g.n(6) == 0
	p.Status.Phase = corev1.PodPhase(g.pick("Running", "Pending", "Succeeded", "Failed", "Unknown", ""))
	if g.n(3) == 0 {
		p.Status.PodIP = g.pick(addrPool...)
	}
	for range g.n(4) {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: g.pick(addrPool...)})
	}
	for range g.n(3) {
		p.Spec.Containers = append(p.Spec.Containers, g.container())
	}
	for range g.n(3) {
		c := g.container()
		if g.n(3) > 0 {
			c.RestartPolicy = ptr(corev1.ContainerRestartPolicy(g.pick("Always", "OnFailure")))
		}
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
	}
	return p
}

// checkErr checks the shape of a conversion error: a skip or an invalid
// object, never both, with a message naming the object and, for field
// errors, the field.
func checkErr(t *testing.T, err error, obj string) {
	t.Helper()
	skip, inv := errors.Is(err, ErrSkip), errors.Is(err, policy.ErrInvalid)
	if skip == inv {
		t.Fatalf("error %q: ErrSkip %v, policy.ErrInvalid %v; want exactly one", err, skip, inv)
	}
	if !strings.HasPrefix(err.Error(), "kubeconv: ") || !strings.Contains(err.Error(), obj) {
		t.Fatalf("error %q lacks the kubeconv prefix or the object %q", err, obj)
	}
	var fe *k8sparse.FieldError
	if errors.As(err, &fe) && (fe.Field == "" || fe.Reason == "") {
		t.Fatalf("error %q names no field", err)
	}
}

func policySeeds() [][]byte {
	return [][]byte{
		nil,
		[]byte("\x07\x07\x07\x07\x07\x07\x07\x07"),
		{0, 0, 1, 0, 1, 2, 0, 0, 0, 1, 1, 1, 1, 4, 2, 1, 1, 9, 1, 2, 2, 0, 2, 1, 3, 1, 2, 1, 1, 2},
		{7, 7, 0, 0, 0, 1, 1, 2, 2, 3, 5, 1, 2, 4, 6, 1, 8, 2, 4, 1, 2, 1, 2, 4, 0, 11, 2, 1, 3},
		[]byte("networkpolicy fuzz seed with some length to it, covering many choices"),
	}
}

func FuzzPolicy(f *testing.F) {
	for _, s := range policySeeds() {
		f.Add(s, "web", "10.0.0.0/8")
		f.Add(s, "", "http")
	}
	f.Add([]byte{1, 2, 3}, "fd00::/64", "In")
	f.Fuzz(func(t *testing.T, data []byte, s1, s2 string) {
		g := &gen{b: data, fuzz: []string{s1, s2}}
		in := g.policy()
		before := in.DeepCopy()
		got, err := Policy(in)
		if !reflect.DeepEqual(before, in) {
			t.Fatal("Policy modified its input")
		}
		if err != nil {
			if got != nil {
				t.Fatalf("Policy returned %+v with error %v", got, err)
			}
			if errors.Is(err, ErrSkip) {
				t.Fatalf("a policy is never skipped: %v", err)
			}
			checkErr(t, err, "networkpolicy "+in.Namespace+"/"+in.Name)
			if fe := (*k8sparse.FieldError)(nil); !errors.As(err, &fe) {
				// Validate is only a backstop: the converter names the
				// Kubernetes field itself.
				t.Fatalf("error %v comes from Validate, not the conversion", err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("result fails Validate: %v\n%+v", err, got)
		}
		if got.Key != (policy.Key{Namespace: in.Namespace, Name: in.Name}) ||
			len(got.Ingress) != len(in.Spec.Ingress) || len(got.Egress) != len(in.Spec.Egress) ||
			len(got.PolicyTypes) != len(in.Spec.PolicyTypes) || (got.PolicyTypes == nil) != (len(in.Spec.PolicyTypes) == 0) {
			t.Fatalf("shape differs: %+v from %+v", got, in)
		}
		for d, rules := range [][]policy.Rule{got.Ingress, got.Egress} {
			for i, r := range rules {
				var peers []networkingv1.NetworkPolicyPeer
				var ports []networkingv1.NetworkPolicyPort
				if d == 0 {
					peers, ports = in.Spec.Ingress[i].From, in.Spec.Ingress[i].Ports
				} else {
					peers, ports = in.Spec.Egress[i].To, in.Spec.Egress[i].Ports
				}
				if len(r.Peers) != len(peers) || len(r.Ports) != len(ports) {
					t.Fatalf("rule %d/%d: %+v from %+v %+v", d, i, r, peers, ports)
				}
				for j, p := range r.Peers {
					if b := p.IPBlock; b != nil {
						if b.CIDR != b.CIDR.Masked() || b.CIDR.Addr().Is4In6() || len(b.Except) != len(peers[j].IPBlock.Except) {
							t.Fatalf("ipBlock %+v from %+v", b, peers[j].IPBlock)
						}
						for _, e := range b.Except {
							if e != e.Masked() || e.Bits() <= b.CIDR.Bits() {
								t.Fatalf("except %v of %v", e, b.CIDR)
							}
						}
					}
				}
				for j, p := range r.Ports {
					if ports[j].Protocol == nil && p.Protocol != policy.TCP {
						t.Fatalf("port %+v: protocol not defaulted to TCP", p)
					}
				}
			}
		}
		again, err := Policy(in)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("second conversion differs: %+v, %v", again, err)
		}
	})
}

func FuzzPod(f *testing.F) {
	for _, s := range policySeeds() {
		f.Add(s, "10.0.0.1", "http")
		f.Add(s, "fd00::5", "")
	}
	f.Fuzz(func(t *testing.T, data []byte, s1, s2 string) {
		g := &gen{b: data, fuzz: []string{s1, s2}}
		in := g.pod()
		before := in.DeepCopy()
		got, err := Pod(in)
		if !reflect.DeepEqual(before, in) {
			t.Fatal("Pod modified its input")
		}
		named := in.Namespace != "" && in.Name != ""
		terminal := in.Status.Phase == corev1.PodSucceeded || in.Status.Phase == corev1.PodFailed
		if err != nil {
			if got != nil {
				t.Fatalf("Pod returned %+v with error %v", got, err)
			}
			checkErr(t, err, "pod "+in.Namespace+"/"+in.Name)
			if errors.Is(err, ErrSkip) != (named && (in.Spec.HostNetwork || terminal)) {
				t.Fatalf("skip %v for host network %v, phase %q", err, in.Spec.HostNetwork, in.Status.Phase)
			}
			return
		}
		if !named || in.Spec.HostNetwork || terminal {
			t.Fatalf("converted %+v", in)
		}
		if got.Key != (policy.Key{Namespace: in.Namespace, Name: in.Name}) || got.Node != in.Spec.NodeName ||
			!maps.Equal(got.Labels, in.Labels) {
			t.Fatalf("metadata differs: %+v from %+v", got, in)
		}
		want := len(in.Status.PodIPs)
		if want == 0 && in.Status.PodIP != "" {
			want = 1
		}
		if len(got.IPs) != want || len(got.IPs) > 2 || len(got.IPs) == 2 && got.IPs[0].Is4() == got.IPs[1].Is4() {
			t.Fatalf("addresses %v from %q %v", got.IPs, in.Status.PodIP, in.Status.PodIPs)
		}
		for _, ip := range got.IPs {
			if !ip.IsValid() || ip.Is4In6() || ip.Zone() != "" || ip.IsUnspecified() {
				t.Fatalf("address %v", ip)
			}
		}
		ctrs := slices.Clone(in.Spec.Containers)
		for _, c := range in.Spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				ctrs = append(ctrs, c)
			}
		}
		n := 0
		for _, c := range ctrs {
			for _, p := range c.Ports {
				if p.Name != "" {
					n++
				}
			}
		}
		if len(got.Ports) != n {
			t.Fatalf("%d named ports from %d", len(got.Ports), n)
		}
		for _, p := range got.Ports {
			if p.Port == 0 || (p.Protocol != policy.TCP && p.Protocol != policy.UDP && p.Protocol != policy.SCTP) {
				t.Fatalf("port %+v", p)
			}
		}
		if len(got.IPs) > 0 {
			checkNamedPorts(t, got)
		}
	})
}

// checkNamedPorts compiles a policy that admits, on every named port of
// pod, traffic from anywhere, and checks that each port is reachable: the
// converted pod is one the compiler can resolve names against.
func checkNamedPorts(t *testing.T, pod *policy.Pod) {
	t.Helper()
	pol := policy.Policy{Key: policy.Key{Namespace: pod.Namespace, Name: "named-ports"}}
	var rule policy.Rule
	for _, p := range pod.Ports {
		rule.Ports = append(rule.Ports, policy.PortSpec{Protocol: p.Protocol, Name: p.Name})
	}
	pol.Ingress = []policy.Rule{rule}
	if err := pol.Validate(); err != nil {
		t.Fatalf("named ports of %+v: %v", pod, err)
	}
	prog := policy.Compile(&policy.Cluster{Pods: []policy.Pod{*pod}, Policies: []policy.Policy{pol}})
	src := netip.MustParseAddr("192.0.2.99")
	if pod.IPs[0].Is6() {
		src = netip.MustParseAddr("2001:db8::99")
	}
	seen := map[[2]string]bool{}
	for _, p := range pod.Ports {
		k := [2]string{p.Name, string(p.Protocol)}
		if seen[k] {
			continue // the first port of a name and protocol is the one resolved
		}
		seen[k] = true
		if d := prog.Trace(src, pod.IPs[0], p.Protocol, p.Port); !d.Allowed {
			t.Fatalf("named port %+v not reachable: %s", p, d)
		}
	}
}
