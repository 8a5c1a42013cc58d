// Package kubeconv converts k8s.io/api objects (networking/v1
// NetworkPolicy, core/v1 Pod, Namespace and Node) into the model of
// package policy, so that policy and the dataplane drivers never import
// k8s.io/api.
//
// The conversion follows the API server's defaulting and validation:
//
//   - NetworkPolicy: an empty policyTypes is left nil, which policy reads
//     as the API default (Ingress, plus Egress when there are egress
//     rules); a nil port protocol is TCP; a numeric port must be 1-65535,
//     a named one an IANA service name, and endPort needs a numeric port
//     not above it; label selectors take matchLabels and matchExpressions
//     with the operators In, NotIn, Exists and DoesNotExist, keys and
//     values checked as label keys and values; ipBlock CIDRs are parsed
//     as the API server and kube-proxy's ParseCIDRSloppy do (IPv4 octets
//     with leading zeros accepted, host bits cleared, IPv4-mapped IPv6
//     CIDRs of at least /96 read as IPv4) and each except must be a strict
//     subset of the cidr.
//   - Pod: addresses from status.podIPs, else status.podIP (at most one
//     per family, IPv4-mapped addresses read as IPv4); the node from
//     spec.nodeName; the named ports of the containers and of the
//     restartable init containers (sidecars), protocol defaulting to TCP.
//   - Namespace: its labels, with kubernetes.io/metadata.name set to the
//     name as the API server does.
//   - Node: its name and every InternalIP and ExternalIP address.
//
// Pods NetworkPolicy does not apply to give an error wrapping ErrSkip:
// pods on the host network, and pods in a terminal phase (Succeeded,
// Failed), whose addresses are released and may already belong to
// another pod.
//
// Invalid objects give an error naming the object, the Kubernetes field
// and its value, such as
//
//	kubeconv: networkpolicy default/web: spec.ingress[0].from[1].ipBlock.except[0] "10.0.0.0/33": not a CIDR
//
// which, like the errors of policy.Policy.Validate, satisfies
// errors.Is(err, policy.ErrInvalid). Every converted policy passes
// Validate.
package kubeconv

import (
	"errors"
	"fmt"
	"github.com/kubewire/kubewire/internal/k8sparse"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubewire/kubewire/policy"
)

// ErrSkip is wrapped, with the reason, by the errors for objects
// NetworkPolicy does not apply to (see the package documentation). Test
// with errors.Is.
var ErrSkip = errors.New("skipped")

// LabelMetadataName is the label the API server sets on every namespace to
// its name, so that policies can select namespaces by name.
const LabelMetadataName = corev1.LabelMetadataName

// failer builds the errors of one object.
type failer string

func (obj failer) fail(field string, value any, reason string) error {
	return &k8sparse.FieldError{Obj: string(obj), Field: field, Value: value, Reason: reason, Kind: policy.ErrInvalid}
}

func skip(obj, reason string) error {
	return fmt.Errorf("kubeconv: %s: %w: %s", obj, ErrSkip, reason)
}

// Policy converts a NetworkPolicy. Invalid policies give an error naming
// the field; the result passes Validate.
func Policy(np *networkingv1.NetworkPolicy) (*policy.Policy, error) {
	if np == nil {
		return nil, fmt.Errorf("kubeconv: nil NetworkPolicy: %w", policy.ErrInvalid)
	}
	c := failer("networkpolicy " + np.Namespace + "/" + np.Name)
	if np.Namespace == "" || np.Name == "" {
		return nil, c.fail("metadata", np.Namespace+"/"+np.Name, "namespace and name are required")
	}
	out := &policy.Policy{Key: policy.Key{Namespace: np.Namespace, Name: np.Name}}
	var err error
	if out.PodSelector, err = c.selector(&np.Spec.PodSelector, "spec.podSelector"); err != nil {
		return nil, err
	}

	// An empty list is defaulted by the API server: leave it nil, which
	// policy reads the same way.
	if n := len(np.Spec.PolicyTypes); n > 2 {
		return nil, c.fail("spec.policyTypes", fmt.Sprint(np.Spec.PolicyTypes), "at most two policy types")
	}
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			out.PolicyTypes = append(out.PolicyTypes, policy.Ingress)
		case networkingv1.PolicyTypeEgress:
			out.PolicyTypes = append(out.PolicyTypes, policy.Egress)
		default:
			return nil, c.fail(fmt.Sprintf("spec.policyTypes[%d]", i), string(t), "want Ingress or Egress")
		}
	}

	for i, r := range np.Spec.Ingress {
		rule, err := c.rule(r.From, r.Ports, fmt.Sprintf("spec.ingress[%d]", i), "from")
		if err != nil {
			return nil, err
		}
		out.Ingress = append(out.Ingress, rule)
	}
	for i, r := range np.Spec.Egress {
		rule, err := c.rule(r.To, r.Ports, fmt.Sprintf("spec.egress[%d]", i), "to")
		if err != nil {
			return nil, err
		}
		out.Egress = append(out.Egress, rule)
	}

	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

// rule converts one ingress or egress rule (peerField: "from" or "to").
func (c failer) rule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, field, peerField string) (policy.Rule, error) {
	var out policy.Rule
	for j := range peers {
		p, err := c.peer(&peers[j], fmt.Sprintf("%s.%s[%d]", field, peerField, j))
		if err != nil {
			return policy.Rule{}, err
		}
		out.Peers = append(out.Peers, p)
	}
	for j := range ports {
		p, err := c.port(&ports[j], fmt.Sprintf("%s.ports[%d]", field, j))
		if err != nil {
			return policy.Rule{}, err
		}
		out.Ports = append(out.Ports, p)
	}
	return out, nil
}

func (c failer) peer(p *networkingv1.NetworkPolicyPeer, field string) (policy.Peer, error) {
	var out policy.Peer
	if b := p.IPBlock; b != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return policy.Peer{}, c.fail(field, nil, "ipBlock cannot be combined with podSelector or namespaceSelector")
		}
		cidr, ok := k8sparse.Prefix(b.CIDR)
		switch {
		case !ok:
			return policy.Peer{}, c.fail(field+".ipBlock.cidr", b.CIDR, "not a CIDR")
		case cidr.Addr().Is4In6():
			return policy.Peer{}, c.fail(field+".ipBlock.cidr", b.CIDR, "IPv4-mapped IPv6 CIDRs are not supported (write the IPv4 CIDR)")
		}
		out.IPBlock = &policy.IPBlock{CIDR: cidr}
		for k, s := range b.Except {
			f := fmt.Sprintf("%s.ipBlock.except[%d]", field, k)
			e, ok := k8sparse.Prefix(s)
			switch {
			case !ok:
				return policy.Peer{}, c.fail(f, s, "not a CIDR")
			case e.Addr().Is4In6():
				return policy.Peer{}, c.fail(f, s, "IPv4-mapped IPv6 CIDRs are not supported (write the IPv4 CIDR)")
			case e.Addr().Is4() != cidr.Addr().Is4() || e.Bits() <= cidr.Bits() || !cidr.Contains(e.Addr()):
				return policy.Peer{}, c.fail(f, s, "must be a strict subset of cidr "+cidr.String())
			}
			out.IPBlock.Except = append(out.IPBlock.Except, e)
		}
		return out, nil
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return policy.Peer{}, c.fail(field, nil, "one of podSelector, namespaceSelector or ipBlock is required")
	}
	if p.PodSelector != nil {
		s, err := c.selector(p.PodSelector, field+".podSelector")
		if err != nil {
			return policy.Peer{}, err
		}
		out.PodSelector = &s
	}
	if p.NamespaceSelector != nil {
		s, err := c.selector(p.NamespaceSelector, field+".namespaceSelector")
		if err != nil {
			return policy.Peer{}, err
		}
		out.NamespaceSelector = &s
	}
	return out, nil
}

func (c failer) port(p *networkingv1.NetworkPolicyPort, field string) (policy.PortSpec, error) {
	out := policy.PortSpec{Protocol: policy.TCP} // the API default
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			out.Protocol = policy.Protocol(*p.Protocol)
		default:
			return policy.PortSpec{}, c.fail(field+".protocol", string(*p.Protocol), "want TCP, UDP or SCTP")
		}
	}
	if pt := p.Port; pt != nil {
		switch pt.Type {
		case intstr.Int:
			if pt.IntVal < 1 || pt.IntVal > 65535 {
				return policy.PortSpec{}, c.fail(field+".port", pt.IntVal, "must be 1-65535")
			}
			out.Port = uint16(pt.IntVal)
		case intstr.String:
			if msgs := validation.IsValidPortName(pt.StrVal); len(msgs) > 0 {
				return policy.PortSpec{}, c.fail(field+".port", pt.StrVal, "not a port name: "+strings.Join(msgs, "; "))
			}
			out.Name = pt.StrVal
		default:
			return policy.PortSpec{}, c.fail(field+".port", pt.String(), "neither a number nor a name")
		}
	}
	if ep := p.EndPort; ep != nil {
		f := field + ".endPort"
		switch {
		case p.Port == nil:
			return policy.PortSpec{}, c.fail(f, *ep, "needs port")
		case out.Name != "":
			return policy.PortSpec{}, c.fail(f, *ep, "needs a numeric port")
		case *ep < 1 || *ep > 65535:
			return policy.PortSpec{}, c.fail(f, *ep, "must be 1-65535")
		case *ep < int32(out.Port):
			return policy.PortSpec{}, c.fail(f, *ep, fmt.Sprintf("must not be below port %d", out.Port))
		}
		out.EndPort = uint16(*ep)
	}
	return out, nil
}

// selector converts a label selector, checking keys and values as the API
// server does.
func (c failer) selector(s *metav1.LabelSelector, field string) (policy.Selector, error) {
	var out policy.Selector
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		f := fmt.Sprintf("%s.matchLabels[%q]", field, k)
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return policy.Selector{}, c.fail(f, k, "not a label key: "+strings.Join(msgs, "; "))
		}
		if v := s.MatchLabels[k]; len(validation.IsValidLabelValue(v)) > 0 {
			return policy.Selector{}, c.fail(f, v, "not a label value: "+strings.Join(validation.IsValidLabelValue(v), "; "))
		}
	}
	out.MatchLabels = maps.Clone(s.MatchLabels)
	for i, r := range s.MatchExpressions {
		f := fmt.Sprintf("%s.matchExpressions[%d]", field, i)
		if msgs := validation.IsQualifiedName(r.Key); len(msgs) > 0 {
			return policy.Selector{}, c.fail(f+".key", r.Key, "not a label key: "+strings.Join(msgs, "; "))
		}
		var op policy.Operator
		switch r.Operator {
		case metav1.LabelSelectorOpIn:
			op = policy.OpIn
		case metav1.LabelSelectorOpNotIn:
			op = policy.OpNotIn
		case metav1.LabelSelectorOpExists:
			op = policy.OpExists
		case metav1.LabelSelectorOpDoesNotExist:
			op = policy.OpDoesNotExist
		default:
			return policy.Selector{}, c.fail(f+".operator", string(r.Operator), "want In, NotIn, Exists or DoesNotExist")
		}
		switch {
		case (op == policy.OpIn || op == policy.OpNotIn) && len(r.Values) == 0:
			return policy.Selector{}, c.fail(f+".values", nil, "must be non-empty for "+string(op))
		case (op == policy.OpExists || op == policy.OpDoesNotExist) && len(r.Values) > 0:
			return policy.Selector{}, c.fail(f+".values", strings.Join(r.Values, ","), "must be empty for "+string(op))
		}
		for j, v := range r.Values {
			if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
				return policy.Selector{}, c.fail(fmt.Sprintf("%s.values[%d]", f, j), v, "not a label value: "+strings.Join(msgs, "; "))
			}
		}
		out.MatchExpressions = append(out.MatchExpressions, policy.Requirement{Key: r.Key, Operator: op, Values: slices.Clone(r.Values)})
	}
	return out, nil
}

// Pod converts a Pod. It returns an error wrapping ErrSkip for pods on the
// host network and pods in a terminal phase, and an error naming the field
// for invalid ones. A pod without addresses yet converts to a Pod without
// IPs, which no policy selects and no peer set holds.
func Pod(p *corev1.Pod) (*policy.Pod, error) {
	if p == nil {
		return nil, fmt.Errorf("kubeconv: nil Pod: %w", policy.ErrInvalid)
	}
	obj := "pod " + p.Namespace + "/" + p.Name
	c := failer(obj)
	if p.Namespace == "" || p.Name == "" {
		return nil, c.fail("metadata", p.Namespace+"/"+p.Name, "namespace and name are required")
	}
	if p.Spec.HostNetwork {
		return nil, skip(obj, "on the host network")
	}
	switch p.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return nil, skip(obj, "phase "+string(p.Status.Phase)+": its addresses are released")
	}
	out := &policy.Pod{
		Key:    policy.Key{Namespace: p.Namespace, Name: p.Name},
		Labels: maps.Clone(p.Labels),
		Node:   p.Spec.NodeName,
	}

	// Addresses: podIPs, else the older single podIP.
	type addr struct{ field, s string }
	var addrs []addr
	for i, a := range p.Status.PodIPs {
		addrs = append(addrs, addr{fmt.Sprintf("status.podIPs[%d].ip", i), a.IP})
	}
	if len(addrs) == 0 && p.Status.PodIP != "" {
		addrs = append(addrs, addr{"status.podIP", p.Status.PodIP})
	}
	for _, a := range addrs {
		ip, ok := k8sparse.IP(a.s)
		switch {
		case !ok:
			return nil, c.fail(a.field, a.s, "not an IP address")
		case ip.IsUnspecified():
			return nil, c.fail(a.field, a.s, "not a unicast address")
		case slices.ContainsFunc(out.IPs, func(o netip.Addr) bool { return o.Is4() == ip.Is4() }):
			return nil, c.fail(a.field, a.s, "a second address of the same IP family")
		}
		out.IPs = append(out.IPs, ip)
	}

	// Named ports, of the containers and the sidecars (init containers
	// that keep running).
	type ctr struct {
		field string
		c     *corev1.Container
	}
	var ctrs []ctr
	for i := range p.Spec.Containers {
		ctrs = append(ctrs, ctr{fmt.Sprintf("spec.containers[%d]", i), &p.Spec.Containers[i]})
	}
	for i := range p.Spec.InitContainers {
		ic := &p.Spec.InitContainers[i]
		if ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			ctrs = append(ctrs, ctr{fmt.Sprintf("spec.initContainers[%d]", i), ic})
		}
	}
	for _, ct := range ctrs {
		for j, cp := range ct.c.Ports {
			if cp.Name == "" {
				continue // only names are resolved
			}
			f := fmt.Sprintf("%s.ports[%d]", ct.field, j)
			np := policy.NamedPort{Name: cp.Name, Protocol: policy.TCP}
			if msgs := validation.IsValidPortName(cp.Name); len(msgs) > 0 {
				return nil, c.fail(f+".name", cp.Name, "not a port name: "+strings.Join(msgs, "; "))
			}
			switch cp.Protocol {
			case "":
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
				np.Protocol = policy.Protocol(cp.Protocol)
			default:
				return nil, c.fail(f+".protocol", string(cp.Protocol), "want TCP, UDP or SCTP")
			}
			if cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
				return nil, c.fail(f+".containerPort", cp.ContainerPort, "must be 1-65535")
			}
			np.Port = uint16(cp.ContainerPort)
			out.Ports = append(out.Ports, np)
		}
	}
	return out, nil
}

// Namespace converts a Namespace: its name and labels, including
// kubernetes.io/metadata.name, which the API server sets to the name.
func Namespace(ns *corev1.Namespace) (policy.Namespace, error) {
	if ns == nil {
		return policy.Namespace{}, fmt.Errorf("kubeconv: nil Namespace: %w", policy.ErrInvalid)
	}
	if ns.Name == "" {
		return policy.Namespace{}, failer("namespace").fail("metadata.name", ns.Name, "required")
	}
	l := make(policy.Labels, len(ns.Labels)+1)
	maps.Copy(l, ns.Labels)
	l[LabelMetadataName] = ns.Name
	return policy.Namespace{Name: ns.Name, Labels: l}, nil
}

// Node converts a Node: its name and every InternalIP and ExternalIP
// address (traffic between a pod and its own node always passes).
func Node(n *corev1.Node) (policy.Node, error) {
	if n == nil {
		return policy.Node{}, fmt.Errorf("kubeconv: nil Node: %w", policy.ErrInvalid)
	}
	c := failer("node " + n.Name)
	if n.Name == "" {
		return policy.Node{}, c.fail("metadata.name", n.Name, "required")
	}
	out := policy.Node{Name: n.Name}
	for i, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		ip, ok := k8sparse.IP(a.Address)
		if !ok {
			return policy.Node{}, c.fail(fmt.Sprintf("status.addresses[%d].address", i), a.Address, "not an IP address")
		}
		if !slices.Contains(out.IPs, ip) {
			out.IPs = append(out.IPs, ip)
		}
	}
	return out, nil
}
