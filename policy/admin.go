package policy

import (
	"fmt"
	"net/netip"
)

// AdminAction is what an admin policy rule does with the traffic it
// matches.
type AdminAction string

const (
	// ActionAllow accepts the traffic: tiers below are not consulted.
	ActionAllow AdminAction = "Allow"
	// ActionDeny drops the traffic.
	ActionDeny AdminAction = "Deny"
	// ActionPass skips the remaining admin rules: NetworkPolicy (and then
	// the baseline) decides. AdminNetworkPolicy only.
	ActionPass AdminAction = "Pass"
)

// AdminPolicy is a policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy,
// or, used as Cluster.Baseline, the BaselineAdminNetworkPolicy. Admin
// policies are evaluated before NetworkPolicy, in Priority order (lower
// first; equal priorities by name), the first matching rule deciding;
// Pass hands the decision to NetworkPolicy. The baseline applies, in rule
// order, to traffic of pods that no NetworkPolicy isolates.
type AdminPolicy struct {
	Name string
	// Priority, 0–1000 (AdminNetworkPolicy only).
	Priority int32
	// Subject selects the pods the policy applies to.
	Subject AdminSelector
	Ingress []AdminRule
	Egress  []AdminRule
}

// AdminSelector selects every pod of the namespaces matching Namespaces
// or, when Pods is set, the pods matching Pods in those namespaces.
type AdminSelector struct {
	Namespaces Selector
	Pods       *Selector
}

// AdminRule is one rule: traffic from (ingress) or to (egress) a pod of
// Peers, on one of Ports (none: every port of every protocol).
type AdminRule struct {
	Name   string
	Action AdminAction
	Peers  []AdminSelector
	// Networks are CIDRs (egress only): any address in them, pods' too.
	Networks []netip.Prefix
	Ports    []PortSpec
}

// Key names the policy in rule IDs and traces.
func (a *AdminPolicy) key(baseline bool) Key {
	if baseline {
		return Key{Name: "BaselineAdminNetworkPolicy/" + a.Name}
	}
	return Key{Name: "AdminNetworkPolicy/" + a.Name}
}

// Validate checks an admin policy (baseline: the baseline policy, whose
// rules may not Pass and which has no priority).
func (a *AdminPolicy) Validate(baseline bool) error {
	k := a.key(baseline)
	bad := func(field, value, reason string) error {
		return &invalidError{obj: k.Name, field: field, value: value, reason: reason}
	}
	if a.Name == "" {
		return bad("metadata.name", "", "required")
	}
	if !baseline && (a.Priority < 0 || a.Priority > 1000) {
		return bad("spec.priority", fmt.Sprint(a.Priority), "must be 0-1000")
	}
	check := func(s *AdminSelector, field string) error {
		if err := validateSelector(&s.Namespaces, field+".namespaceSelector", bad); err != nil {
			return err
		}
		if s.Pods != nil {
			return validateSelector(s.Pods, field+".podSelector", bad)
		}
		return nil
	}
	if err := check(&a.Subject, "spec.subject"); err != nil {
		return err
	}
	for _, dir := range []struct {
		name  string
		rules []AdminRule
	}{{"ingress", a.Ingress}, {"egress", a.Egress}} {
		peerField := map[string]string{"ingress": "from", "egress": "to"}[dir.name]
		for i, r := range dir.rules {
			f := fmt.Sprintf("spec.%s[%d]", dir.name, i)
			switch {
			case r.Action == ActionAllow || r.Action == ActionDeny:
			case r.Action == ActionPass && !baseline:
			default:
				return bad(f+".action", string(r.Action), "must be Allow, Deny or Pass (the baseline: Allow or Deny)")
			}
			if len(r.Peers)+len(r.Networks) == 0 {
				return bad(f+"."+peerField, "", "at least one peer is required")
			}
			for j, n := range r.Networks {
				nf := fmt.Sprintf("%s.%s.networks[%d]", f, peerField, j)
				if dir.name == "ingress" {
					return bad(nf, n.String(), "networks are egress peers only")
				}
				if !n.IsValid() || n.Addr().Zone() != "" || n.Addr().Is4In6() {
					return bad(nf, n.String(), "not a valid CIDR")
				}
			}
			for j := range r.Peers {
				if err := check(&r.Peers[j], fmt.Sprintf("%s.%s[%d]", f, peerField, j)); err != nil {
					return err
				}
			}
			for j, ps := range r.Ports {
				if err := validatePort(&ps, fmt.Sprintf("%s.ports[%d]", f, j), bad); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// adminPeers turns an admin rule's peers into policy peers (every admin
// peer names its namespaces, so none depends on a policy namespace).
func adminPeers(r *AdminRule) []Peer {
	out := make([]Peer, 0, len(r.Peers)+len(r.Networks))
	for i := range r.Peers {
		ns := r.Peers[i].Namespaces
		out = append(out, Peer{NamespaceSelector: &ns, PodSelector: r.Peers[i].Pods})
	}
	for _, n := range r.Networks {
		out = append(out, Peer{IPBlock: &IPBlock{CIDR: n.Masked()}})
	}
	return out
}

// subjectSelects reports whether an admin subject selects pod.
func (c *compiler) subjectSelects(s *AdminSelector, pod *Pod) bool {
	l, ok := c.nsLabels[pod.Namespace]
	return ok && len(pod.IPs) > 0 && s.Namespaces.Matches(l) && (s.Pods == nil || s.Pods.Matches(pod.Labels))
}

// AdminCompiledRule is a compiled admin rule: its match and its action.
type AdminCompiledRule struct {
	CompiledRule
	Action AdminAction
}
