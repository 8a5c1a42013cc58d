package kubeconv

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	anp "sigs.k8s.io/network-policy-api/apis/v1alpha1"

	"github.com/kubewire/kubewire/internal/k8sparse"
	"github.com/kubewire/kubewire/policy"
)

// AdminPolicy converts a policy.networking.k8s.io/v1alpha1
// AdminNetworkPolicy. Egress peers by node or domain name are not
// supported: such a policy is refused with an error naming the field (a
// caller should report it on the object; it is not half-enforced).
func AdminPolicy(a *anp.AdminNetworkPolicy) (*policy.AdminPolicy, error) {
	if a == nil {
		return nil, fmt.Errorf("kubeconv: nil AdminNetworkPolicy: %w", policy.ErrInvalid)
	}
	var in, eg []adminRuleIn
	for _, r := range a.Spec.Ingress {
		in = append(in, adminRuleIn{name: r.Name, action: policy.AdminAction(r.Action), from: r.From, ports: r.Ports})
	}
	for _, r := range a.Spec.Egress {
		eg = append(eg, adminRuleIn{name: r.Name, action: policy.AdminAction(r.Action), to: r.To, ports: r.Ports})
	}
	return adminPolicy(failer("adminnetworkpolicy "+a.Name), a.Name, a.Spec.Priority, &a.Spec.Subject, in, eg, false)
}

// BaselineAdminPolicy converts the BaselineAdminNetworkPolicy (as
// AdminPolicy: node peers are refused).
func BaselineAdminPolicy(b *anp.BaselineAdminNetworkPolicy) (*policy.AdminPolicy, error) {
	if b == nil {
		return nil, fmt.Errorf("kubeconv: nil BaselineAdminNetworkPolicy: %w", policy.ErrInvalid)
	}
	var in, eg []adminRuleIn
	for _, r := range b.Spec.Ingress {
		in = append(in, adminRuleIn{name: r.Name, action: policy.AdminAction(r.Action), from: r.From, ports: r.Ports})
	}
	for _, r := range b.Spec.Egress {
		to := make([]anp.AdminNetworkPolicyEgressPeer, len(r.To))
		for i, p := range r.To {
			to[i] = anp.AdminNetworkPolicyEgressPeer{Namespaces: p.Namespaces, Pods: p.Pods, Nodes: p.Nodes, Networks: p.Networks}
		}
		eg = append(eg, adminRuleIn{name: r.Name, action: policy.AdminAction(r.Action), to: to, ports: r.Ports})
	}
	return adminPolicy(failer("baselineadminnetworkpolicy "+b.Name), b.Name, 0, &b.Spec.Subject, in, eg, true)
}

// adminRuleIn is a rule of either kind of admin policy: ingress peers in
// from, egress peers in to (as AdminNetworkPolicy spells them, a superset
// of the baseline's).
type adminRuleIn struct {
	name   string
	action policy.AdminAction
	from   []anp.AdminNetworkPolicyIngressPeer
	to     []anp.AdminNetworkPolicyEgressPeer
	ports  *[]anp.AdminNetworkPolicyPort
}

// adminPolicy converts what both kinds of admin policy share.
func adminPolicy(c failer, name string, prio int32, subject *anp.AdminNetworkPolicySubject, in, eg []adminRuleIn, baseline bool) (*policy.AdminPolicy, error) {
	out := &policy.AdminPolicy{Name: name, Priority: prio}
	var err error
	if out.Subject, err = c.adminSubject(subject, "spec.subject"); err != nil {
		return nil, err
	}
	if out.Ingress, err = c.adminRules(in, "spec.ingress"); err != nil {
		return nil, err
	}
	if out.Egress, err = c.adminRules(eg, "spec.egress"); err != nil {
		return nil, err
	}
	if err := out.Validate(baseline); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

func (c failer) adminRules(rules []adminRuleIn, field string) ([]policy.AdminRule, error) {
	var out []policy.AdminRule
	for i, r := range rules {
		f := fmt.Sprintf("%s[%d]", field, i)
		rule := policy.AdminRule{Name: r.name, Action: r.action}
		for j, p := range r.from {
			sel, err := c.adminPeer(p.Namespaces, p.Pods, fmt.Sprintf("%s.from[%d]", f, j))
			if err != nil {
				return nil, err
			}
			rule.Peers = append(rule.Peers, sel)
		}
		for j, p := range r.to {
			pf := fmt.Sprintf("%s.to[%d]", f, j)
			set := 0
			for _, on := range []bool{p.Namespaces != nil, p.Pods != nil, p.Nodes != nil, len(p.Networks) > 0, len(p.DomainNames) > 0} {
				if on {
					set++
				}
			}
			switch {
			case set > 1:
				return nil, c.fail(pf, nil, "exactly one of namespaces, pods, nodes, networks or domainNames")
			case p.Nodes != nil:
				return nil, c.fail(pf+".nodes", metav1.FormatLabelSelector(p.Nodes), "node peers are not supported")
			case len(p.DomainNames) > 0:
				return nil, c.fail(pf+".domainNames", string(p.DomainNames[0]), "domain name peers are not supported")
			case len(p.Networks) > 0:
				if err := c.networks(&rule, p.Networks, pf+".networks"); err != nil {
					return nil, err
				}
				continue
			}
			sel, err := c.adminPeer(p.Namespaces, p.Pods, pf)
			if err != nil {
				return nil, err
			}
			rule.Peers = append(rule.Peers, sel)
		}
		var err error
		if rule.Ports, err = c.adminPorts(r.ports, f+".ports"); err != nil {
			return nil, err
		}
		out = append(out, rule)
	}
	return out, nil
}

func (c failer) adminSubject(s *anp.AdminNetworkPolicySubject, field string) (policy.AdminSelector, error) {
	return c.adminPeer(s.Namespaces, s.Pods, field)
}

// adminPeer converts a namespaces-or-pods selector pair (exactly one set).
func (c failer) adminPeer(ns *metav1.LabelSelector, pods *anp.NamespacedPod, field string) (policy.AdminSelector, error) {
	switch {
	case ns != nil && pods != nil:
		return policy.AdminSelector{}, c.fail(field, nil, "namespaces and pods are exclusive")
	case ns != nil:
		sel, err := c.selector(ns, field+".namespaces")
		return policy.AdminSelector{Namespaces: sel}, err
	case pods != nil:
		nsSel, err := c.selector(&pods.NamespaceSelector, field+".pods.namespaceSelector")
		if err != nil {
			return policy.AdminSelector{}, err
		}
		podSel, err := c.selector(&pods.PodSelector, field+".pods.podSelector")
		return policy.AdminSelector{Namespaces: nsSel, Pods: &podSel}, err
	}
	return policy.AdminSelector{}, c.fail(field, nil, "one of namespaces or pods is required")
}

func (c failer) networks(r *policy.AdminRule, cidrs []anp.CIDR, field string) error {
	for k, s := range cidrs {
		p, ok := k8sparse.Prefix(string(s))
		if !ok || p.Addr().Is4In6() {
			return c.fail(fmt.Sprintf("%s[%d]", field, k), string(s), "not a CIDR")
		}
		r.Networks = append(r.Networks, p)
	}
	return nil
}

func (c failer) adminPorts(ps *[]anp.AdminNetworkPolicyPort, field string) ([]policy.PortSpec, error) {
	if ps == nil {
		return nil, nil
	}
	var out []policy.PortSpec
	for i, p := range *ps {
		f := fmt.Sprintf("%s[%d]", field, i)
		proto := func(pr corev1.Protocol, pf string) (policy.Protocol, error) {
			switch pr {
			case "":
				return policy.TCP, nil
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
				return policy.Protocol(pr), nil
			}
			return "", c.fail(pf, string(pr), "want TCP, UDP or SCTP")
		}
		switch {
		case p.PortNumber != nil:
			pr, err := proto(p.PortNumber.Protocol, f+".portNumber.protocol")
			if err != nil {
				return nil, err
			}
			if p.PortNumber.Port < 1 || p.PortNumber.Port > 65535 {
				return nil, c.fail(f+".portNumber.port", p.PortNumber.Port, "must be 1-65535")
			}
			out = append(out, policy.PortSpec{Protocol: pr, Port: uint16(p.PortNumber.Port)})
		case p.PortRange != nil:
			pr, err := proto(p.PortRange.Protocol, f+".portRange.protocol")
			if err != nil {
				return nil, err
			}
			r := p.PortRange
			if r.Start < 1 || r.End > 65535 || r.End < r.Start {
				return nil, c.fail(f+".portRange", fmt.Sprintf("%d-%d", r.Start, r.End), "want 1 <= start <= end <= 65535")
			}
			out = append(out, policy.PortSpec{Protocol: pr, Port: uint16(r.Start), EndPort: uint16(r.End)})
		case p.NamedPort != nil:
			// A named port matches the container port of that name, of
			// whatever protocol: one spec per protocol.
			for _, pr := range []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP} {
				out = append(out, policy.PortSpec{Protocol: pr, Name: *p.NamedPort})
			}
		default:
			return nil, c.fail(f, nil, "one of portNumber, portRange or namedPort is required")
		}
	}
	return out, nil
}
