package kubeconv

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/policy"
)

func ptr[T any](v T) *T { return &v }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func tcp(p policy.PortSpec) policy.PortSpec { p.Protocol = policy.TCP; return p }

// np returns the NetworkPolicy default/web selecting app=web with no
// rules, modified by fs.
func np(fs ...func(*networkingv1.NetworkPolicy)) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		},
	}
	for _, f := range fs {
		f(p)
	}
	return p
}

// wantPol returns the conversion of np(), modified by fs.
func wantPol(fs ...func(*policy.Policy)) *policy.Policy {
	p := &policy.Policy{
		Key:         policy.Key{Namespace: "default", Name: "web"},
		PodSelector: policy.Selector{MatchLabels: map[string]string{"app": "web"}},
	}
	for _, f := range fs {
		f(p)
	}
	return p
}

func ingressFrom(peers ...networkingv1.NetworkPolicyPeer) func(*networkingv1.NetworkPolicy) {
	return func(p *networkingv1.NetworkPolicy) {
		p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers}}
	}
}

func ingressPorts(ports ...networkingv1.NetworkPolicyPort) func(*networkingv1.NetworkPolicy) {
	return func(p *networkingv1.NetworkPolicy) {
		p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: ports}}
	}
}

func ipBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func labelSel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func sel(kv ...string) *policy.Selector {
	s := &policy.Selector{MatchLabels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		name string
		in   *networkingv1.NetworkPolicy
		want *policy.Policy
	}{
		{name: "selector only: default policy types", in: np(), want: wantPol()},
		{
			name: "empty pod selector selects every pod",
			in:   np(func(p *networkingv1.NetworkPolicy) { p.Spec.PodSelector = metav1.LabelSelector{} }),
			want: wantPol(func(p *policy.Policy) { p.PodSelector = policy.Selector{} }),
		},
		{
			name: "pod selector: matchLabels and every operator",
			in: np(func(p *networkingv1.NetworkPolicy) {
				p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{
					{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}},
					{Key: "example.com/env", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"dev"}},
					{Key: "team", Operator: metav1.LabelSelectorOpExists},
					{Key: "legacy", Operator: metav1.LabelSelectorOpDoesNotExist},
				}
			}),
			want: wantPol(func(p *policy.Policy) {
				p.PodSelector.MatchExpressions = []policy.Requirement{
					{Key: "tier", Operator: policy.OpIn, Values: []string{"web", "api"}},
					{Key: "example.com/env", Operator: policy.OpNotIn, Values: []string{"dev"}},
					{Key: "team", Operator: policy.OpExists},
					{Key: "legacy", Operator: policy.OpDoesNotExist},
				}
			}),
		},
		{
			name: "policyTypes Ingress",
			in:   np(func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress"} }),
			want: wantPol(func(p *policy.Policy) { p.PolicyTypes = []policy.Direction{policy.Ingress} }),
		},
		{
			name: "policyTypes Egress",
			in:   np(func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = []networkingv1.PolicyType{"Egress"} }),
			want: wantPol(func(p *policy.Policy) { p.PolicyTypes = []policy.Direction{policy.Egress} }),
		},
		{
			name: "policyTypes Egress and Ingress",
			in: np(func(p *networkingv1.NetworkPolicy) {
				p.Spec.PolicyTypes = []networkingv1.PolicyType{"Egress", "Ingress"}
			}),
			want: wantPol(func(p *policy.Policy) { p.PolicyTypes = []policy.Direction{policy.Egress, policy.Ingress} }),
		},
		{
			name: "empty policyTypes is the API default (nil)",
			in:   np(func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = []networkingv1.PolicyType{} }),
			want: wantPol(),
		},
		{
			name: "empty rule allows everything",
			in: np(func(p *networkingv1.NetworkPolicy) {
				p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
				p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
			}),
			want: wantPol(func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{}}
				p.Egress = []policy.Rule{{}}
			}),
		},
		{
			name: "ingress peers: podSelector, namespaceSelector, both, ipBlock",
			in: np(ingressFrom(
				networkingv1.NetworkPolicyPeer{PodSelector: labelSel("role", "client")},
				networkingv1.NetworkPolicyPeer{NamespaceSelector: labelSel("kubernetes.io/metadata.name", "monitoring")},
				networkingv1.NetworkPolicyPeer{PodSelector: labelSel(), NamespaceSelector: &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []string{"prod"}}}}},
				ipBlock("192.0.2.0/24", "192.0.2.128/25", "192.0.2.7/32"),
			)),
			want: wantPol(func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{
					{PodSelector: sel("role", "client")},
					{NamespaceSelector: sel("kubernetes.io/metadata.name", "monitoring")},
					{PodSelector: sel(), NamespaceSelector: &policy.Selector{
						MatchExpressions: []policy.Requirement{{Key: "env", Operator: policy.OpIn, Values: []string{"prod"}}}}},
					{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("192.0.2.0/24"), Except: prefixes("192.0.2.128/25", "192.0.2.7/32")}},
				}}}
			}),
		},
		{
			name: "egress peers and ports",
			in: np(func(p *networkingv1.NetworkPolicy) {
				p.Spec.PolicyTypes = []networkingv1.PolicyType{"Egress"}
				p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
					{
						To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labelSel(), PodSelector: labelSel("k8s-app", "kube-dns")}},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(intstr.FromInt32(53))}, {Port: ptr(intstr.FromString("dns-tcp"))}},
					},
					{To: []networkingv1.NetworkPolicyPeer{ipBlock("2001:db8::/32", "2001:db8:1::/48")}},
				}
			}),
			want: wantPol(func(p *policy.Policy) {
				p.PolicyTypes = []policy.Direction{policy.Egress}
				p.Egress = []policy.Rule{
					{
						Peers: []policy.Peer{{NamespaceSelector: sel(), PodSelector: sel("k8s-app", "kube-dns")}},
						Ports: []policy.PortSpec{{Protocol: policy.UDP, Port: 53}, {Protocol: policy.TCP, Name: "dns-tcp"}},
					},
					{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("2001:db8::/32"), Except: prefixes("2001:db8:1::/48")}}}},
				}
			}),
		},
		{
			name: "ports: default TCP, UDP, SCTP, named, range, protocol only",
			in: np(ingressPorts(
				networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(80))},
				networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(intstr.FromInt32(53))},
				networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolSCTP), Port: ptr(intstr.FromInt32(3868))},
				networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolTCP), Port: ptr(intstr.FromString("http-alt"))},
				networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(32000)), EndPort: ptr[int32](32768)},
				networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(8080)), EndPort: ptr[int32](8080)},
				networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolUDP)},
				networkingv1.NetworkPolicyPort{},
			)),
			want: wantPol(func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{
					tcp(policy.PortSpec{Port: 80}),
					{Protocol: policy.UDP, Port: 53},
					{Protocol: policy.SCTP, Port: 3868},
					tcp(policy.PortSpec{Name: "http-alt"}),
					tcp(policy.PortSpec{Port: 32000, EndPort: 32768}),
					tcp(policy.PortSpec{Port: 8080, EndPort: 8080}),
					{Protocol: policy.UDP},
					tcp(policy.PortSpec{}),
				}}}
			}),
		},
		{
			name: "sloppy CIDRs: leading zeros, host bits",
			in: np(ingressFrom(
				ipBlock("010.001.000.000/16", "10.1.2.3/24"),
				ipBlock("192.000.002.000/24"),
				ipBlock("2001:db8::1/64", "2001:db8::ff/120"),
				ipBlock("0.0.0.0/0", "10.0.0.0/8"),
			)),
			want: wantPol(func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{
					{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("10.1.0.0/16"), Except: prefixes("10.1.2.0/24")}},
					{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("192.0.2.0/24")}},
					{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("2001:db8::/64"), Except: prefixes("2001:db8::/120")}},
					{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("0.0.0.0/0"), Except: prefixes("10.0.0.0/8")}},
				}}}
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.DeepCopy()
			got, err := Policy(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if !reflect.DeepEqual(before, tt.in) {
				t.Error("Policy modified its input")
			}
		})
	}
}

// checkInvalid checks that err is an invalid-object error naming obj,
// field and value.
func checkInvalid(t *testing.T, err error, obj, field, value string) {
	t.Helper()
	if !errors.Is(err, policy.ErrInvalid) || errors.Is(err, ErrSkip) {
		t.Fatalf("error %v: want policy.ErrInvalid (and not ErrSkip)", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "kubeconv: ") {
		t.Errorf("error %q lacks the kubeconv prefix", msg)
	}
	for _, s := range []string{obj, field + " ", value} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not name %q", msg, s)
		}
	}
}

func TestPolicyErrors(t *testing.T) {
	tests := []struct {
		name         string
		in           *networkingv1.NetworkPolicy
		field, value string
	}{
		{"no name", np(func(p *networkingv1.NetworkPolicy) { p.Name = "" }), "metadata", `"default/"`},
		{"no namespace", np(func(p *networkingv1.NetworkPolicy) { p.Namespace = "" }), "metadata", `"/web"`},
		{"matchLabels key", np(func(p *networkingv1.NetworkPolicy) { p.Spec.PodSelector.MatchLabels["not a key"] = "x" }),
			`spec.podSelector.matchLabels["not a key"]`, `"not a key"`},
		{"matchLabels value", np(func(p *networkingv1.NetworkPolicy) { p.Spec.PodSelector.MatchLabels["app"] = "-web" }),
			`spec.podSelector.matchLabels["app"]`, `"-web"`},
		{"expression key", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "", Operator: metav1.LabelSelectorOpExists}}
		}), "spec.podSelector.matchExpressions[0].key", `""`},
		{"expression operator", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{
				{Key: "a", Operator: metav1.LabelSelectorOpExists},
				{Key: "a", Operator: "Gt", Values: []string{"1"}},
			}
		}), "spec.podSelector.matchExpressions[1].operator", `"Gt"`},
		{"In without values", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn}}
		}), "spec.podSelector.matchExpressions[0].values:", "non-empty for In"},
		{"NotIn without values", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpNotIn, Values: []string{}}}
		}), "spec.podSelector.matchExpressions[0].values:", "non-empty for NotIn"},
		{"Exists with values", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpExists, Values: []string{"x"}}}
		}), "spec.podSelector.matchExpressions[0].values", `"x"`},
		{"DoesNotExist with values", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpDoesNotExist, Values: []string{"x", "y"}}}
		}), "spec.podSelector.matchExpressions[0].values", `"x,y"`},
		{"expression value", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn, Values: []string{"ok", "not ok"}}}
		}), "spec.podSelector.matchExpressions[0].values[1]", `"not ok"`},
		{"three policy types", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress", "Egress", "Ingress"}
		}), "spec.policyTypes", "[Ingress Egress Ingress]"},
		{"unknown policy type", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress", "ingress"}
		}), "spec.policyTypes[1]", `"ingress"`},
		{"empty peer", np(ingressFrom(networkingv1.NetworkPolicyPeer{})), "spec.ingress[0].from[0]:", "one of podSelector, namespaceSelector or ipBlock"},
		{"ipBlock with a selector", np(ingressFrom(
			networkingv1.NetworkPolicyPeer{PodSelector: labelSel()},
			networkingv1.NetworkPolicyPeer{NamespaceSelector: labelSel(), IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}},
		)), "spec.ingress[0].from[1]:", "cannot be combined"},
		{"cidr", np(ingressFrom(ipBlock("10.0.0.0/33"))), "spec.ingress[0].from[0].ipBlock.cidr", `"10.0.0.0/33"`},
		{"cidr without length", np(ingressFrom(ipBlock("10.0.0.0"))), "spec.ingress[0].from[0].ipBlock.cidr", `"10.0.0.0"`},
		{"cidr with zone", np(ingressFrom(ipBlock("fe80::%eth0/64"))), "spec.ingress[0].from[0].ipBlock.cidr", `"fe80::%eth0/64"`},
		{"cidr IPv4-mapped", np(ingressFrom(ipBlock("::ffff:0.0.0.0/96"))), "spec.ingress[0].from[0].ipBlock.cidr", `"::ffff:0.0.0.0/96"`},
		{"empty cidr", np(ingressFrom(ipBlock(""))), "spec.ingress[0].from[0].ipBlock.cidr", `""`},
		{"except not a CIDR", np(ingressFrom(ipBlock("10.0.0.0/8"), ipBlock("10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/33"))),
			"spec.ingress[0].from[1].ipBlock.except[1]", `"10.2.0.0/33"`},
		{"except outside", np(ingressFrom(ipBlock("10.0.0.0/8", "192.168.0.0/16"))),
			"spec.ingress[0].from[0].ipBlock.except[0]", `"192.168.0.0/16"`},
		{"except the whole block", np(ingressFrom(ipBlock("10.0.0.0/8", "10.0.0.0/8"))),
			"spec.ingress[0].from[0].ipBlock.except[0]", "strict subset"},
		{"except wider", np(ingressFrom(ipBlock("10.0.0.0/8", "10.0.0.0/7"))),
			"spec.ingress[0].from[0].ipBlock.except[0]", `"10.0.0.0/7"`},
		{"except other family", np(ingressFrom(ipBlock("::/0", "10.0.0.0/8"))),
			"spec.ingress[0].from[0].ipBlock.except[0]", `"10.0.0.0/8"`},
		{"peer pod selector", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}, {To: []networkingv1.NetworkPolicyPeer{{PodSelector: labelSel("bad key", "x")}}}}
		}), `spec.egress[1].to[0].podSelector.matchLabels["bad key"]`, `"bad key"`},
		{"peer namespace selector", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: labelSel(), NamespaceSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Lt", Values: []string{"3"}}}}}}}}
		}), "spec.egress[0].to[0].namespaceSelector.matchExpressions[0].operator", `"Lt"`},
		{"protocol", np(ingressPorts(networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.Protocol("ICMP"))})),
			"spec.ingress[0].ports[0].protocol", `"ICMP"`},
		{"lower-case protocol", np(ingressPorts(networkingv1.NetworkPolicyPort{}, networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.Protocol("tcp"))})),
			"spec.ingress[0].ports[1].protocol", `"tcp"`},
		{"port 0", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(0))})), "spec.ingress[0].ports[0].port", " 0:"},
		{"port too large", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(65536))})), "spec.ingress[0].ports[0].port", "65536"},
		{"negative port", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(-1))})), "spec.ingress[0].ports[0].port", "-1"},
		{"port name", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromString("Not_A_Name"))})), "spec.ingress[0].ports[0].port", `"Not_A_Name"`},
		{"numeric port as a string", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromString("80"))})), "spec.ingress[0].ports[0].port", `"80"`},
		{"empty port name", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromString(""))})), "spec.ingress[0].ports[0].port", `""`},
		{"intstr of unknown type", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: &intstr.IntOrString{Type: 7, IntVal: 80}})), "spec.ingress[0].ports[0].port", "neither"},
		{"endPort without port", np(ingressPorts(networkingv1.NetworkPolicyPort{EndPort: ptr[int32](90)})), "spec.ingress[0].ports[0].endPort", "90: needs port"},
		{"endPort with a named port", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromString("http")), EndPort: ptr[int32](90)})),
			"spec.ingress[0].ports[0].endPort", "needs a numeric port"},
		{"endPort below port", np(func(p *networkingv1.NetworkPolicy) {
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(90)), EndPort: ptr[int32](80)}}}}
		}), "spec.egress[0].ports[0].endPort", "80: must not be below port 90"},
		{"endPort too large", np(ingressPorts(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(90)), EndPort: ptr[int32](65536)})),
			"spec.ingress[0].ports[0].endPort", "65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Policy(tt.in)
			if err == nil {
				t.Fatalf("no error; got %+v", got)
			}
			if got != nil {
				t.Errorf("result %+v with error", got)
			}
			checkInvalid(t, err, "networkpolicy "+tt.in.Namespace+"/"+tt.in.Name, tt.field, tt.value)
		})
	}
	if _, err := Policy(nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("nil policy: %v, want policy.ErrInvalid", err)
	}
}

// pod returns the running pod default/web, modified by fs.
func pod(fs ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName: "node-a",
			Containers: []corev1.Container{{
				Name:  "web",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}},
		},
		Status: corev1.PodStatus{
			Phase:  corev1.PodRunning,
			PodIP:  "10.244.1.5",
			PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}},
		},
	}
	for _, f := range fs {
		f(p)
	}
	return p
}

func wantPod(fs ...func(*policy.Pod)) *policy.Pod {
	p := &policy.Pod{
		Key:    policy.Key{Namespace: "default", Name: "web"},
		Labels: policy.Labels{"app": "web"},
		IPs:    addrs("10.244.1.5"),
		Node:   "node-a",
		Ports:  []policy.NamedPort{{Name: "http", Protocol: policy.TCP, Port: 8080}},
	}
	for _, f := range fs {
		f(p)
	}
	return p
}

func TestPod(t *testing.T) {
	tests := []struct {
		name string
		in   *corev1.Pod
		want *policy.Pod
	}{
		{name: "running pod", in: pod(), want: wantPod()},
		{
			name: "dual-stack, IPv6 first",
			in: pod(func(p *corev1.Pod) {
				p.Status.PodIP = "fd00:10:244:1::5"
				p.Status.PodIPs = []corev1.PodIP{{IP: "fd00:10:244:1::5"}, {IP: "10.244.1.5"}}
			}),
			want: wantPod(func(p *policy.Pod) { p.IPs = addrs("fd00:10:244:1::5", "10.244.1.5") }),
		},
		{
			name: "podIP only",
			in:   pod(func(p *corev1.Pod) { p.Status.PodIPs = nil }),
			want: wantPod(),
		},
		{
			name: "sloppy addresses",
			in: pod(func(p *corev1.Pod) {
				p.Status.PodIPs = []corev1.PodIP{{IP: "010.244.001.005"}, {IP: "fd00::0005"}}
			}),
			want: wantPod(func(p *policy.Pod) { p.IPs = addrs("10.244.1.5", "fd00::5") }),
		},
		{
			name: "IPv4-mapped podIP is IPv4",
			in:   pod(func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "::ffff:10.244.1.5", nil }),
			want: wantPod(),
		},
		{
			name: "pending: no address, no node yet",
			in: pod(func(p *corev1.Pod) {
				p.Status = corev1.PodStatus{Phase: corev1.PodPending}
				p.Spec.NodeName = ""
			}),
			want: wantPod(func(p *policy.Pod) { p.IPs, p.Node = nil, "" }),
		},
		{
			name: "no labels",
			in:   pod(func(p *corev1.Pod) { p.Labels = nil }),
			want: wantPod(func(p *policy.Pod) { p.Labels = nil }),
		},
		{
			name: "ports: protocols, unnamed skipped, several containers, sidecars only",
			in: pod(func(p *corev1.Pod) {
				p.Spec.Containers = []corev1.Container{
					{Name: "web", Ports: []corev1.ContainerPort{
						{Name: "http", ContainerPort: 8080},
						{ContainerPort: 9999},
						{Name: "dns", Protocol: corev1.ProtocolUDP, ContainerPort: 53},
					}},
					{Name: "sig", Ports: []corev1.ContainerPort{{Name: "diameter", Protocol: corev1.ProtocolSCTP, ContainerPort: 3868}, {Name: "dns", Protocol: corev1.ProtocolTCP, ContainerPort: 53}}},
				}
				p.Spec.InitContainers = []corev1.Container{
					{Name: "setup", Ports: []corev1.ContainerPort{{Name: "setup", ContainerPort: 1}}},
					{Name: "proxy", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways), Ports: []corev1.ContainerPort{{Name: "proxy-admin", ContainerPort: 15000}}},
					{Name: "once", RestartPolicy: ptr(corev1.ContainerRestartPolicy("OnFailure")), Ports: []corev1.ContainerPort{{Name: "once", ContainerPort: 2}}},
				}
			}),
			want: wantPod(func(p *policy.Pod) {
				p.Ports = []policy.NamedPort{
					{Name: "http", Protocol: policy.TCP, Port: 8080},
					{Name: "dns", Protocol: policy.UDP, Port: 53},
					{Name: "diameter", Protocol: policy.SCTP, Port: 3868},
					{Name: "dns", Protocol: policy.TCP, Port: 53},
					{Name: "proxy-admin", Protocol: policy.TCP, Port: 15000},
				}
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.DeepCopy()
			got, err := Pod(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if !reflect.DeepEqual(before, tt.in) {
				t.Error("Pod modified its input")
			}
		})
	}
}

func TestPodSkipped(t *testing.T) {
	for _, tt := range []struct {
		name, reason string
		in           *corev1.Pod
	}{
		{"host network", "host network", pod(func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Status.PodIP, p.Status.PodIPs = "192.0.2.10", []corev1.PodIP{{IP: "192.0.2.10"}}
		})},
		{"succeeded", "phase Succeeded", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })},
		{"failed", "phase Failed", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed; p.Status.PodIPs[0].IP = "garbage" })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Pod(tt.in)
			if !errors.Is(err, ErrSkip) || errors.Is(err, policy.ErrInvalid) || got != nil {
				t.Fatalf("got %+v, %v; want only an ErrSkip", got, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "kubeconv: pod default/web: skipped: ") || !strings.Contains(msg, tt.reason) {
				t.Errorf("error %q: want the pod and %q", msg, tt.reason)
			}
		})
	}
}

func TestPodErrors(t *testing.T) {
	tests := []struct {
		name         string
		in           *corev1.Pod
		field, value string
	}{
		{"no name", pod(func(p *corev1.Pod) { p.Name = "" }), "metadata", `"default/"`},
		{"podIP", pod(func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "10.244.1.300", nil }), "status.podIP", `"10.244.1.300"`},
		{"podIPs", pod(func(p *corev1.Pod) { p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::g"}) }), "status.podIPs[1].ip", `"fd00::g"`},
		{"zone", pod(func(p *corev1.Pod) { p.Status.PodIPs[0].IP = "fe80::1%eth0" }), "status.podIPs[0].ip", `"fe80::1%eth0"`},
		{"unspecified", pod(func(p *corev1.Pod) { p.Status.PodIPs[0].IP = "::" }), "status.podIPs[0].ip", `"::"`},
		{"two of a family", pod(func(p *corev1.Pod) {
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00::5"}, {IP: "10.244.1.6"}}
		}), "status.podIPs[2].ip", `"10.244.1.6"`},
		{"port name", pod(func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].Name = "HTTP" }), "spec.containers[0].ports[0].name", `"HTTP"`},
		{"port protocol", pod(func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].Protocol = "QUIC" }), "spec.containers[0].ports[0].protocol", `"QUIC"`},
		{"container port 0", pod(func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = 0 }), "spec.containers[0].ports[0].containerPort", " 0:"},
		{"container port too large", pod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Ports: []corev1.ContainerPort{{ContainerPort: 1}, {Name: "big", ContainerPort: 65536}}})
		}), "spec.containers[1].ports[1].containerPort", "65536"},
		{"sidecar port", pod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{}, {RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways), Ports: []corev1.ContainerPort{{Name: "x", ContainerPort: -4}}}}
		}), "spec.initContainers[1].ports[0].containerPort", "-4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Pod(tt.in)
			if err == nil || got != nil {
				t.Fatalf("got %+v, %v; want an error", got, err)
			}
			checkInvalid(t, err, "pod "+tt.in.Namespace+"/"+tt.in.Name, tt.field, tt.value)
		})
	}
	if _, err := Pod(nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("nil pod: %v, want policy.ErrInvalid", err)
	}
}

func TestNamespace(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   *corev1.Namespace
		want policy.Namespace
	}{
		{"labels kept, name label added",
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "prod"}}},
			policy.Namespace{Name: "prod", Labels: policy.Labels{"env": "prod", LabelMetadataName: "prod"}}},
		{"no labels",
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dev"}},
			policy.Namespace{Name: "dev", Labels: policy.Labels{LabelMetadataName: "dev"}}},
		{"wrong name label overridden as the API server does",
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dev", Labels: map[string]string{LabelMetadataName: "prod"}}},
			policy.Namespace{Name: "dev", Labels: policy.Labels{LabelMetadataName: "dev"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.DeepCopy()
			got, err := Namespace(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if !reflect.DeepEqual(before, tt.in) {
				t.Error("Namespace modified its input")
			}
		})
	}
	_, err := Namespace(&corev1.Namespace{})
	checkInvalid(t, err, "namespace", "metadata.name", `""`)
	if _, err := Namespace(nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("nil namespace: %v, want policy.ErrInvalid", err)
	}
}

func TestNode(t *testing.T) {
	in := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "node-a"},
			{Type: corev1.NodeInternalIP, Address: "192.168.1.10"},
			{Type: corev1.NodeInternalIP, Address: "fd00:1::10"},
			{Type: corev1.NodeExternalIP, Address: "203.0.113.10"},
			{Type: corev1.NodeExternalIP, Address: "192.168.001.010"}, // the InternalIP again
			{Type: corev1.NodeInternalDNS, Address: "node-a.internal"},
			{Type: corev1.NodeExternalIP, Address: "::ffff:198.51.100.10"},
		}},
	}
	got, err := Node(in)
	if err != nil {
		t.Fatal(err)
	}
	want := policy.Node{Name: "node-a", IPs: addrs("192.168.1.10", "fd00:1::10", "203.0.113.10", "198.51.100.10")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got, err := Node(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}); err != nil || !reflect.DeepEqual(got, policy.Node{Name: "bare"}) {
		t.Errorf("node without addresses: %+v, %v", got, err)
	}

	in.Status.Addresses = append(in.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.300"})
	_, err = Node(in)
	checkInvalid(t, err, "node node-a", "status.addresses[7].address", `"203.0.113.300"`)
	_, err = Node(&corev1.Node{})
	checkInvalid(t, err, "node", "metadata.name", `""`)
	if _, err := Node(nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("nil node: %v, want policy.ErrInvalid", err)
	}
}
