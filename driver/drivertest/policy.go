package drivertest

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/kubewire/kubewire/policy"
)

// The policy suite's world is the upstream e2e one: namespaces x, y and z
// (labelled ns=<name>), pods a, b and c in each (labelled pod=<name>), all
// on one node, each serving TCP and UDP on ports 80 and 81 with the named
// ports serve-80-tcp, serve-81-tcp, serve-80-udp and serve-81-udp.
var (
	PolicyNamespaces = []string{"x", "y", "z"}
	PolicyPodNames   = []string{"a", "b", "c"}
	PolicyPorts      = []uint16{80, 81}
	PolicyProtocols  = []policy.Protocol{policy.TCP, policy.UDP}
)

// PolicyNode is the node every pod of the world runs on.
const PolicyNode = "node"

// Each pod has a subnet of its own, 10.244.<16 ns + pod>.0/24 and
// fd00:10:244:<16 ns + pod, in hex>::/64 (ns and pod counted from 1): the
// pod is .2 (::2), its gateway on the node .1 (::1), and namespace ns
// covers 10.244.<16 ns>.0/20 and fd00:10:244:<ns>0::/60.
func policySubnet(k policy.Key) int {
	return (slices.Index(PolicyNamespaces, k.Namespace)+1)*16 + slices.Index(PolicyPodNames, k.Name) + 1
}

// PolicyPodAddr is the address of pod k in family fam (0: IPv4).
func PolicyPodAddr(k policy.Key, fam int) netip.Addr { return policyAddr(k, fam, 2) }

// PolicyGateway is the node's address on the link of pod k (the pod's
// gateway), in family fam.
func PolicyGateway(k policy.Key, fam int) netip.Addr { return policyAddr(k, fam, 1) }

// PolicyPrefixBits is the prefix length of the pod subnets, by family.
var PolicyPrefixBits = [2]int{24, 64}

func policyAddr(k policy.Key, fam int, host byte) netip.Addr {
	n := policySubnet(k)
	if fam == 0 {
		return netip.AddrFrom4([4]byte{10, 244, byte(n), host})
	}
	return netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%x::%d", n, host))
}

// PolicyPods lists the pods of the world.
func PolicyPods() []policy.Key {
	var out []policy.Key
	for _, ns := range PolicyNamespaces {
		for _, p := range PolicyPodNames {
			out = append(out, policy.Key{Namespace: ns, Name: p})
		}
	}
	return out
}

// PolicyWorld returns the world's namespaces, pods and node, no policies.
func PolicyWorld() *policy.Cluster {
	c := &policy.Cluster{}
	node := policy.Node{Name: PolicyNode}
	for _, ns := range PolicyNamespaces {
		c.Namespaces = append(c.Namespaces, policy.Namespace{Name: ns,
			Labels: policy.Labels{"ns": ns, "kubernetes.io/metadata.name": ns}})
	}
	for _, k := range PolicyPods() {
		pod := policy.Pod{Key: k, Labels: policy.Labels{"pod": k.Name}, Node: PolicyNode,
			IPs: []netip.Addr{PolicyPodAddr(k, 0), PolicyPodAddr(k, 1)}}
		for _, port := range PolicyPorts {
			for _, proto := range PolicyProtocols {
				pod.Ports = append(pod.Ports, policy.NamedPort{Name: portName(port, proto), Protocol: proto, Port: port})
			}
		}
		c.Pods = append(c.Pods, pod)
		node.IPs = append(node.IPs, PolicyGateway(k, 0), PolicyGateway(k, 1))
	}
	c.Nodes = []policy.Node{node}
	return c
}

func portName(port uint16, proto policy.Protocol) string {
	p := "tcp"
	if proto == policy.UDP {
		p = "udp"
	}
	return fmt.Sprintf("serve-%d-%s", port, p)
}

// Probe is one connection of the reachability matrix.
type Probe struct {
	From, To policy.Key
	Protocol policy.Protocol
	Port     uint16
	Fam      int // 0: IPv4, 1: IPv6
}

func (p Probe) String() string {
	return fmt.Sprintf("%s -> %s %s/%d ipv%d", p.From, p.To, p.Protocol, p.Port, []int{4, 6}[p.Fam])
}

// PolicyCase is a set of policies (applied to the world, after Mutate) and
// the reachability it must give.
type PolicyCase struct {
	Name     string
	Policies []policy.Policy
	// AdminPolicies and Baseline: the admin tiers.
	AdminPolicies []policy.AdminPolicy
	Baseline      *policy.AdminPolicy
	// Mutate, when set, changes the world (labels) first.
	Mutate func(c *policy.Cluster)
	// Allowed is the expected verdict of each probe.
	Allowed func(p Probe) bool
}

// Expect is the expected verdict of probe p: Allowed, except that a pod
// always reaches itself (the traffic stays in its own namespace, as
// upstream's AllowLoopback).
func (c *PolicyCase) Expect(p Probe) bool { return p.From == p.To || c.Allowed(p) }

// Cluster returns the world with the case applied.
func (c *PolicyCase) Cluster() *policy.Cluster {
	w := PolicyWorld()
	if c.Mutate != nil {
		c.Mutate(w)
	}
	w.Policies = c.Policies
	w.AdminPolicies = c.AdminPolicies
	w.Baseline = c.Baseline
	return w
}

// Probes lists every probe of the matrix: 9 × 9 pods, two ports, TCP and
// UDP, IPv4 and IPv6.
func Probes() []Probe {
	var out []Probe
	for _, from := range PolicyPods() {
		for _, to := range PolicyPods() {
			for _, proto := range PolicyProtocols {
				for _, port := range PolicyPorts {
					for fam := range 2 {
						out = append(out, Probe{From: from, To: to, Protocol: proto, Port: port, Fam: fam})
					}
				}
			}
		}
	}
	return out
}

// Helpers to write cases.
var (
	xa = policy.Key{Namespace: "x", Name: "a"}
	xb = policy.Key{Namespace: "x", Name: "b"}
	yb = policy.Key{Namespace: "y", Name: "b"}
)

func sel(kv ...string) *policy.Selector {
	s := &policy.Selector{MatchLabels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func expr(key string, op policy.Operator, values ...string) *policy.Selector {
	return &policy.Selector{MatchExpressions: []policy.Requirement{{Key: key, Operator: op, Values: values}}}
}

func pol(ns, name string, target *policy.Selector, f func(p *policy.Policy)) policy.Policy {
	p := policy.Policy{Key: policy.Key{Namespace: ns, Name: name}, PodSelector: *target}
	if f != nil {
		f(&p)
	}
	return p
}

func tcpPort(n uint16) policy.PortSpec { return policy.PortSpec{Protocol: policy.TCP, Port: n} }

func cidr(k policy.Key, fam, bits int) netip.Prefix {
	p, _ := PolicyPodAddr(k, fam).Prefix(bits)
	return p
}

func all(Probe) bool { return true }

// ns selects every pod of the namespaces nsSel selects; nsPods the pods
// podSel selects in them.
func ns(nsSel *policy.Selector) policy.AdminSelector { return policy.AdminSelector{Namespaces: *nsSel} }

func nsPods(nsSel, podSel *policy.Selector) policy.AdminSelector {
	return policy.AdminSelector{Namespaces: *nsSel, Pods: podSel}
}

// PolicyCases are the truth-table cases: the upstream e2e NetworkPolicy
// scenarios and more, each with the whole expected matrix.
func PolicyCases() []PolicyCase {
	ingressOnly := []policy.Direction{policy.Ingress}
	egressOnly := []policy.Direction{policy.Egress}
	both := []policy.Direction{policy.Ingress, policy.Egress}
	return []PolicyCase{
		{Name: "no policies", Allowed: all},
		{Name: "deny all ingress in x",
			Policies: []policy.Policy{pol("x", "deny", sel(), func(p *policy.Policy) { p.PolicyTypes = ingressOnly })},
			Allowed:  func(p Probe) bool { return p.To.Namespace != "x" }},
		{Name: "deletion restores access", Allowed: all},
		{Name: "deny all egress in x",
			Policies: []policy.Policy{pol("x", "deny", sel(), func(p *policy.Policy) { p.PolicyTypes = egressOnly })},
			Allowed:  func(p Probe) bool { return p.From.Namespace != "x" }},
		{Name: "deny all both directions in x",
			Policies: []policy.Policy{pol("x", "deny", sel(), func(p *policy.Policy) { p.PolicyTypes = both })},
			Allowed:  func(p Probe) bool { return p.From.Namespace != "x" && p.To.Namespace != "x" }},
		{Name: "allow all ingress",
			Policies: []policy.Policy{pol("x", "allow", sel(), func(p *policy.Policy) { p.Ingress = []policy.Rule{{}} })},
			Allowed:  all},
		{Name: "allow all egress, ingress defaulted to deny",
			Policies: []policy.Policy{pol("x", "egress", sel(), func(p *policy.Policy) { p.Egress = []policy.Rule{{}} })},
			Allowed:  func(p Probe) bool { return p.To.Namespace != "x" }},
		{Name: "policyTypes Egress only leaves ingress open",
			Policies: []policy.Policy{pol("x", "egress", sel(), func(p *policy.Policy) {
				p.PolicyTypes = egressOnly
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{PodSelector: sel("pod", "none")}}}}
				p.Egress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y")}}}}
			})},
			Allowed: func(p Probe) bool { return p.From.Namespace != "x" || p.To.Namespace == "y" }},
		{Name: "ingress from the same namespace",
			Policies: []policy.Policy{pol("x", "same-ns", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{PodSelector: sel()}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace == "x" }},
		{Name: "ingress from one pod",
			Policies: []policy.Policy{pol("x", "from-b", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{PodSelector: sel("pod", "b")}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From == xb }},
		{Name: "ingress from a namespace",
			Policies: []policy.Policy{pol("x", "from-y", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y")}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace == "y" }},
		{Name: "ingress from a pod of a namespace (both selectors in one peer)",
			Policies: []policy.Policy{pol("x", "from-y-b", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "b")}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From == yb }},
		{Name: "ingress from a pod name in any namespace",
			Policies: []policy.Policy{pol("x", "from-any-b", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel(), PodSelector: sel("pod", "b")}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Name == "b" }},
		{Name: "peers are ORed (namespace y or pod c here)",
			Policies: []policy.Policy{pol("x", "or", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y")}, {PodSelector: sel("pod", "c")}}}}
			})},
			Allowed: func(p Probe) bool {
				return p.To != xa || p.From.Namespace == "y" || p.From == policy.Key{Namespace: "x", Name: "c"}
			}},
		{Name: "namespaceSelector In",
			Policies: []policy.Policy{pol("x", "in", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: expr("ns", policy.OpIn, "y", "z")}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace != "x" }},
		{Name: "namespaceSelector NotIn",
			Policies: []policy.Policy{pol("x", "notin", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: expr("ns", policy.OpNotIn, "y")}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace != "y" }},
		{Name: "podSelector Exists on another label",
			Policies: []policy.Policy{pol("x", "exists", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel(), PodSelector: expr("team", policy.OpExists)}}}}
			})},
			Mutate:  labelPod(policy.Key{Namespace: "z", Name: "c"}, "team", "blue"),
			Allowed: func(p Probe) bool { return p.To != xa || p.From == policy.Key{Namespace: "z", Name: "c"} }},
		{Name: "podSelector DoesNotExist",
			Policies: []policy.Policy{pol("x", "dne", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel(), PodSelector: expr("team", policy.OpDoesNotExist)}}}}
			})},
			Mutate:  labelPod(policy.Key{Namespace: "z", Name: "c"}, "team", "blue"),
			Allowed: func(p Probe) bool { return p.To != xa || p.From != policy.Key{Namespace: "z", Name: "c"} }},
		{Name: "target selector with matchExpressions",
			Policies: []policy.Policy{pol("x", "deny-ab", expr("pod", policy.OpIn, "a", "b"), func(p *policy.Policy) { p.PolicyTypes = ingressOnly })},
			Allowed:  func(p Probe) bool { return p.To != xa && p.To != xb }},
		{Name: "ingress on port 80 only",
			Policies: []policy.Policy{pol("x", "port80", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{tcpPort(80)}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || (p.Protocol == policy.TCP && p.Port == 80) }},
		{Name: "ingress on a named port",
			Policies: []policy.Policy{pol("x", "named", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, Name: "serve-81-tcp"}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || (p.Protocol == policy.TCP && p.Port == 81) }},
		{Name: "named UDP port",
			Policies: []policy.Policy{pol("x", "named-udp", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.UDP, Name: "serve-80-udp"}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || (p.Protocol == policy.UDP && p.Port == 80) }},
		{Name: "a named port with the wrong protocol matches nothing",
			Policies: []policy.Policy{pol("x", "named-wrong", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.UDP, Name: "serve-80-tcp"}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa }},
		{Name: "a named port resolved per pod",
			Policies: []policy.Policy{pol("x", "named-per-pod", sel(), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, Name: "web"}}}}
			})},
			Mutate: func(c *policy.Cluster) {
				for i := range c.Pods {
					switch c.Pods[i].Key {
					case xa:
						c.Pods[i].Ports = append(c.Pods[i].Ports, policy.NamedPort{Name: "web", Protocol: policy.TCP, Port: 80})
					case xb:
						c.Pods[i].Ports = append(c.Pods[i].Ports, policy.NamedPort{Name: "web", Protocol: policy.TCP, Port: 81})
					}
				}
			},
			Allowed: func(p Probe) bool {
				switch p.To {
				case xa:
					return p.Protocol == policy.TCP && p.Port == 80
				case xb:
					return p.Protocol == policy.TCP && p.Port == 81
				}
				return p.To.Namespace != "x"
			}},
		{Name: "endPort range",
			Policies: []policy.Policy{pol("x", "range", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.UDP, Port: 79, EndPort: 80}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || (p.Protocol == policy.UDP && p.Port == 80) }},
		{Name: "protocol without a port",
			Policies: []policy.Policy{pol("x", "udp", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.UDP}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.Protocol == policy.UDP }},
		{Name: "ports and peers in one rule are ANDed",
			Policies: []policy.Policy{pol("x", "and", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y")}}, Ports: []policy.PortSpec{tcpPort(81)}}}
			})},
			Allowed: func(p Probe) bool {
				return p.To != xa || (p.From.Namespace == "y" && p.Protocol == policy.TCP && p.Port == 81)
			}},
		{Name: "ipBlock",
			Policies: []policy.Policy{pol("x", "ipblock", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: cidr(yb, 0, 20)}}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || (p.From.Namespace == "y" && p.Fam == 0) }},
		{Name: "ipBlock with except",
			Policies: []policy.Policy{pol("x", "except", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{
					{IPBlock: &policy.IPBlock{CIDR: cidr(yb, 0, 16), Except: []netip.Prefix{cidr(yb, 0, 32), cidr(xa, 0, 20)}}},
					{IPBlock: &policy.IPBlock{CIDR: cidr(yb, 1, 48), Except: []netip.Prefix{cidr(yb, 1, 60)}}},
				}}}
			})},
			Allowed: func(p Probe) bool {
				if p.Fam == 0 {
					return p.To != xa || (p.From != yb && p.From.Namespace != "x")
				}
				return p.To != xa || p.From.Namespace != "y"
			}},
		{Name: "egress to a namespace",
			Policies: []policy.Policy{pol("x", "to-y", sel("pod", "a"), func(p *policy.Policy) {
				p.Egress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y")}}}}
				p.PolicyTypes = egressOnly
			})},
			Allowed: func(p Probe) bool { return p.From != xa || p.To.Namespace == "y" }},
		{Name: "egress to one pod on one port",
			Policies: []policy.Policy{pol("x", "to-b-80", sel("pod", "a"), func(p *policy.Policy) {
				p.Egress = []policy.Rule{{Peers: []policy.Peer{{PodSelector: sel("pod", "b")}}, Ports: []policy.PortSpec{tcpPort(80)}}}
				p.PolicyTypes = egressOnly
			})},
			Allowed: func(p Probe) bool { return p.From != xa || (p.To == xb && p.Protocol == policy.TCP && p.Port == 80) }},
		{Name: "egress to a named port of the destination",
			Policies: []policy.Policy{pol("x", "to-named", sel("pod", "a"), func(p *policy.Policy) {
				p.Egress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, Name: "serve-81-tcp"}}}}
				p.PolicyTypes = egressOnly
			})},
			Allowed: func(p Probe) bool { return p.From != xa || (p.Protocol == policy.TCP && p.Port == 81) }},
		{Name: "egress ipBlock with except",
			Policies: []policy.Policy{pol("x", "to-cidr", sel("pod", "a"), func(p *policy.Policy) {
				p.Egress = []policy.Rule{{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: cidr(yb, 0, 20), Except: []netip.Prefix{cidr(yb, 0, 32)}}}}}}
				p.PolicyTypes = egressOnly
			})},
			Allowed: func(p Probe) bool { return p.From != xa || (p.To.Namespace == "y" && p.To != yb && p.Fam == 0) }},
		{Name: "egress to DNS only (port 53)",
			Policies: []policy.Policy{pol("x", "dns", sel(), func(p *policy.Policy) {
				p.Egress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.UDP, Port: 53}, {Protocol: policy.TCP, Port: 53}}}}
				p.PolicyTypes = egressOnly
			})},
			Allowed: func(p Probe) bool { return p.From.Namespace != "x" }},
		{Name: "egress on a port to anywhere",
			Policies: []policy.Policy{pol("x", "any-80", sel(), func(p *policy.Policy) {
				p.Egress = []policy.Rule{{Ports: []policy.PortSpec{tcpPort(80)}}}
				p.PolicyTypes = egressOnly
			})},
			Allowed: func(p Probe) bool { return p.From.Namespace != "x" || (p.Protocol == policy.TCP && p.Port == 80) }},
		{Name: "multiple policies are additive",
			Policies: []policy.Policy{
				pol("x", "from-y", sel("pod", "a"), func(p *policy.Policy) {
					p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y")}}}}
				}),
				pol("x", "from-z", sel("pod", "a"), func(p *policy.Policy) {
					p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "z")}}}}
				})},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace != "x" }},
		{Name: "deny all plus an allow",
			Policies: []policy.Policy{
				pol("x", "deny", sel(), func(p *policy.Policy) { p.PolicyTypes = both }),
				pol("x", "allow-a-b", sel("pod", "a"), func(p *policy.Policy) {
					p.Egress = []policy.Rule{{Peers: []policy.Peer{{PodSelector: sel("pod", "b")}}}}
					p.PolicyTypes = egressOnly
				}),
				pol("x", "allow-b-from-a", sel("pod", "b"), func(p *policy.Policy) {
					p.Ingress = []policy.Rule{{Peers: []policy.Peer{{PodSelector: sel("pod", "a")}}}}
				})},
			Allowed: func(p Probe) bool {
				if p.From == xa && p.To == xb {
					return true
				}
				return p.From.Namespace != "x" && p.To.Namespace != "x"
			}},
		{Name: "a policy applies in its own namespace only",
			Policies: []policy.Policy{pol("y", "deny", sel("pod", "a"), func(p *policy.Policy) { p.PolicyTypes = ingressOnly })},
			Allowed:  func(p Probe) bool { return p.To != policy.Key{Namespace: "y", Name: "a"} }},
		{Name: "a relabelled pod leaves the policy",
			Policies: []policy.Policy{pol("x", "deny-a", sel("pod", "a"), func(p *policy.Policy) { p.PolicyTypes = ingressOnly })},
			Mutate:   labelPod(xa, "pod", "moved"),
			Allowed:  all},
		{Name: "a relabelled namespace joins a peer",
			Policies: []policy.Policy{pol("x", "from-y", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel("ns", "y")}}}}
			})},
			Mutate: func(c *policy.Cluster) {
				for i := range c.Namespaces {
					if c.Namespaces[i].Name == "z" {
						c.Namespaces[i].Labels = policy.Labels{"ns": "y"}
					}
				}
			},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace != "x" }},
		{Name: "an invalid policy is refused and never widens",
			Policies: []policy.Policy{
				pol("x", "deny", sel(), func(p *policy.Policy) { p.PolicyTypes = ingressOnly }),
				pol("x", "bad", sel(), func(p *policy.Policy) {
					p.Ingress = []policy.Rule{{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: cidr(yb, 0, 20), Except: []netip.Prefix{cidr(xa, 0, 20)}}}}}}
				})},
			Allowed: func(p Probe) bool { return p.To.Namespace != "x" }},
		{Name: "admin deny overrides a NetworkPolicy allow",
			Policies: []policy.Policy{pol("x", "allow-all", sel("pod", "a"), func(p *policy.Policy) { p.Ingress = []policy.Rule{{}} })},
			AdminPolicies: []policy.AdminPolicy{{Name: "deny-y", Priority: 10, Subject: nsPods(sel("ns", "x"), sel("pod", "a")),
				Ingress: []policy.AdminRule{{Action: policy.ActionDeny, Peers: []policy.AdminSelector{ns(sel("ns", "y"))}}}}},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace != "y" }},
		{Name: "admin allow overrides a NetworkPolicy deny",
			Policies: []policy.Policy{pol("x", "deny", sel(), func(p *policy.Policy) { p.PolicyTypes = ingressOnly })},
			AdminPolicies: []policy.AdminPolicy{{Name: "allow-y", Priority: 5, Subject: ns(sel("ns", "x")),
				Ingress: []policy.AdminRule{{Action: policy.ActionAllow, Peers: []policy.AdminSelector{ns(sel("ns", "y"))}}}}},
			Allowed: func(p Probe) bool { return p.To.Namespace != "x" || p.From.Namespace == "y" }},
		{Name: "admin pass hands over to NetworkPolicy",
			AdminPolicies: []policy.AdminPolicy{
				{Name: "pass-y", Priority: 1, Subject: ns(sel("ns", "x")),
					Ingress: []policy.AdminRule{{Action: policy.ActionPass, Peers: []policy.AdminSelector{ns(sel("ns", "y"))}}}},
				{Name: "deny-all", Priority: 2, Subject: ns(sel("ns", "x")),
					Ingress: []policy.AdminRule{{Action: policy.ActionDeny, Peers: []policy.AdminSelector{ns(sel())}}}},
			},
			Policies: []policy.Policy{pol("x", "only-b", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: sel(), PodSelector: sel("pod", "b")}}}}
			})},
			Allowed: func(p Probe) bool {
				if p.To.Namespace != "x" {
					return true
				}
				return p.From.Namespace == "y" && (p.To != xa || p.From.Name == "b")
			}},
		{Name: "admin priorities: the lower number wins",
			AdminPolicies: []policy.AdminPolicy{
				{Name: "b-deny", Priority: 20, Subject: nsPods(sel("ns", "x"), sel("pod", "a")),
					Ingress: []policy.AdminRule{{Action: policy.ActionDeny, Peers: []policy.AdminSelector{ns(sel("ns", "y"))}}}},
				{Name: "a-allow", Priority: 10, Subject: nsPods(sel("ns", "x"), sel("pod", "a")),
					Ingress: []policy.AdminRule{{Action: policy.ActionAllow, Peers: []policy.AdminSelector{nsPods(sel("ns", "y"), sel("pod", "b"))}}}},
			},
			Allowed: func(p Probe) bool { return p.To != xa || p.From.Namespace != "y" || p.From == yb }},
		{Name: "admin egress deny on one port",
			AdminPolicies: []policy.AdminPolicy{{Name: "no-z-80", Priority: 100, Subject: ns(sel("ns", "x")),
				Egress: []policy.AdminRule{{Action: policy.ActionDeny, Peers: []policy.AdminSelector{ns(sel("ns", "z"))}, Ports: []policy.PortSpec{tcpPort(80)}}}}},
			Allowed: func(p Probe) bool {
				return !(p.From.Namespace == "x" && p.To.Namespace == "z" && p.Protocol == policy.TCP && p.Port == 80)
			}},
		{Name: "baseline applies to pods no NetworkPolicy isolates",
			Policies: []policy.Policy{pol("x", "allow-all", sel("pod", "a"), func(p *policy.Policy) { p.Ingress = []policy.Rule{{}} })},
			Baseline: &policy.AdminPolicy{Name: "default", Subject: ns(sel()),
				Ingress: []policy.AdminRule{{Action: policy.ActionDeny, Peers: []policy.AdminSelector{ns(sel("ns", "z"))}}}},
			Allowed: func(p Probe) bool { return p.From.Namespace != "z" || p.To == xa }},
		{Name: "baseline rules apply in order",
			Baseline: &policy.AdminPolicy{Name: "default", Subject: ns(sel("ns", "y")),
				Ingress: []policy.AdminRule{
					{Action: policy.ActionAllow, Peers: []policy.AdminSelector{ns(sel("ns", "x"))}},
					{Action: policy.ActionDeny, Peers: []policy.AdminSelector{ns(sel())}},
				}},
			Allowed: func(p Probe) bool { return p.To.Namespace != "y" || p.From.Namespace == "x" }},
		{Name: "admin egress deny to a network",
			AdminPolicies: []policy.AdminPolicy{{Name: "no-yb", Priority: 50, Subject: ns(sel("ns", "x")),
				Egress: []policy.AdminRule{{Action: policy.ActionDeny, Networks: []netip.Prefix{cidr(yb, 0, 32)}}}}},
			Allowed: func(p Probe) bool { return !(p.From.Namespace == "x" && p.To == yb && p.Fam == 0) }},
		{Name: "an invalid admin policy is refused",
			AdminPolicies: []policy.AdminPolicy{{Name: "too-low", Priority: 2000, Subject: ns(sel()),
				Ingress: []policy.AdminRule{{Action: policy.ActionDeny, Peers: []policy.AdminSelector{ns(sel())}}}}},
			Allowed: all},
		{Name: "IPv6 ipBlock only",
			Policies: []policy.Policy{pol("x", "v6", sel("pod", "a"), func(p *policy.Policy) {
				p.Ingress = []policy.Rule{{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("fd00:10:244::/48")}}}}}
			})},
			Allowed: func(p Probe) bool { return p.To != xa || p.Fam == 1 }},
	}
}

func labelPod(k policy.Key, key, value string) func(c *policy.Cluster) {
	return func(c *policy.Cluster) {
		for i := range c.Pods {
			if c.Pods[i].Key == k {
				l := policy.Labels{}
				for kk, v := range c.Pods[i].Labels {
					l[kk] = v
				}
				l[key] = value
				c.Pods[i].Labels = l
			}
		}
	}
}

// PolicyEnv is what the policy dataplane suite needs from a driver under
// test: the dataplane, bound to the node of the world, and a way to probe.
type PolicyEnv struct {
	Dataplane policy.Dataplane
	// Reach reports whether probe p connects (TCP) or is answered (UDP).
	Reach func(t *testing.T, p Probe) bool
	// ForgetFlows, when set, is called after each sync: it clears the
	// connection tracking of earlier probes. Policy applies to new
	// connections; a probe reusing the source port of an earlier allowed
	// UDP flow would otherwise pass as its reply.
	ForgetFlows func(t *testing.T)
	// Incremental, when set, feeds the cases to a policy.Enforcer as
	// events (so the dataplane sees the compiler's incremental Programs:
	// reused pod programs, peer set deltas) instead of compiling each.
	Incremental bool
}

// TestPolicyDataplane applies the cases in order to one dataplane (so
// updates, relabelling and deletion are exercised) and checks every probe
// of the matrix against the case and against the evaluator.
func TestPolicyDataplane(t *testing.T, env PolicyEnv) {
	ctx := context.Background()
	var e *policy.Enforcer
	if env.Incremental {
		var err error
		if e, err = policy.NewEnforcer(policy.Config{Dataplane: env.Dataplane}); err != nil {
			t.Fatal(err)
		}
	}
	prev := &policy.Cluster{}
	for _, c := range PolicyCases() {
		cl := c.Cluster()
		prog := policy.Compile(cl)
		if e != nil {
			FeedPolicyEvents(e, prev, cl)
			prev = cl
			if err := e.Sync(ctx); err != nil {
				t.Fatalf("%s: sync: %v", c.Name, err)
			}
			prog = e.Program()
		} else if err := env.Dataplane.Sync(ctx, prog); err != nil {
			t.Fatalf("%s: sync: %v", c.Name, err)
		}
		if env.ForgetFlows != nil {
			env.ForgetFlows(t)
		}
		var wrong []string
		for _, p := range Probes() {
			want := c.Expect(p)
			if d := prog.Trace(PolicyPodAddr(p.From, p.Fam), PolicyPodAddr(p.To, p.Fam), p.Protocol, p.Port); d.Allowed != want {
				wrong = append(wrong, fmt.Sprintf("%s: tracer says %s", p, d))
			}
			if got := env.Reach(t, p); got != want {
				wrong = append(wrong, fmt.Sprintf("%s: connected=%v, want %v", p, got, want))
			}
		}
		if len(wrong) > 0 {
			if len(wrong) > 12 {
				wrong = append(wrong[:12], fmt.Sprintf("... %d more", len(wrong)-12))
			}
			t.Errorf("case %q:\n  %s", c.Name, joinLines(wrong))
		}
	}
}

// FeedPolicyEvents sends e the events that turn cluster a into cluster b.
func FeedPolicyEvents(e *policy.Enforcer, a, b *policy.Cluster) {
	feedDiff(a.Namespaces, b.Namespaces, func(n *policy.Namespace) string { return n.Name },
		func(old, n *policy.Namespace) { e.OnNamespaceAdd(*n) }, func(n *policy.Namespace) { e.OnNamespaceDelete(*n) })
	for _, n := range b.Nodes {
		e.OnNodeAdd(n)
	}
	feedDiff(a.Pods, b.Pods, func(p *policy.Pod) policy.Key { return p.Key }, e.OnPodUpdate, e.OnPodDelete)
	feedDiff(a.Policies, b.Policies, func(p *policy.Policy) policy.Key { return p.Key }, e.OnPolicyUpdate, e.OnPolicyDelete)
	feedDiff(a.AdminPolicies, b.AdminPolicies, func(p *policy.AdminPolicy) string { return p.Name },
		e.OnAdminPolicyUpdate, e.OnAdminPolicyDelete)
	if !reflect.DeepEqual(a.Baseline, b.Baseline) {
		e.OnBaselinePolicyUpdate(a.Baseline, b.Baseline)
	}
}

// feedDiff calls update for the objects of b that are new or differ from
// their version in a (old nil when new), and del for those only in a.
func feedDiff[K comparable, V any](a, b []V, key func(*V) K, update func(old, v *V), del func(*V)) {
	before := make(map[K]*V, len(a))
	for i := range a {
		before[key(&a[i])] = &a[i]
	}
	for i := range b {
		v := &b[i]
		if old, ok := before[key(v)]; !ok || !reflect.DeepEqual(*old, *v) {
			update(old, v)
		}
		delete(before, key(v))
	}
	for _, v := range before {
		del(v)
	}
}

func joinLines(ls []string) string {
	s := ""
	for i, l := range ls {
		if i > 0 {
			s += "\n  "
		}
		s += l
	}
	return s
}
