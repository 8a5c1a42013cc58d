package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrInvalid is wrapped by every error about an invalid policy or object.
var ErrInvalid = errors.New("invalid")

// invalidError names the object, the field and the value that is wrong.
type invalidError struct {
	obj, field, value, reason string
}

func (e *invalidError) Error() string {
	return fmt.Sprintf("policy: %s: %s %q: %s", e.obj, e.field, e.value, e.reason)
}

func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// Protocol is a transport protocol a rule can name.
type Protocol string

const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Direction is ingress (to the selected pod) or egress (from it).
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Labels are an object's labels.
type Labels map[string]string

// Namespace is a namespace: its name and labels (Kubernetes adds
// kubernetes.io/metadata.name itself; kubeconv keeps it).
type Namespace struct {
	Name   string
	Labels Labels
}

// Key names a namespaced object.
type Key struct {
	Namespace, Name string
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Name // cluster-scoped (admin policies)
	}
	return k.Namespace + "/" + k.Name
}

// Compare orders keys by namespace, then name.
func (k Key) Compare(o Key) int {
	if c := strings.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	return strings.Compare(k.Name, o.Name)
}

// Pod is what policy needs of a pod. Pods on the host network are not
// subject to NetworkPolicy: leave them out (kubeconv does).
type Pod struct {
	Key
	Labels Labels
	IPs    []netip.Addr
	// Node is the name of the node the pod runs on.
	Node string
	// Ports are the pod's named container ports (unnamed ones need not be
	// listed: only names are resolved).
	Ports []NamedPort
}

// NamedPort is a named container port.
type NamedPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Node is a node: traffic between a pod and its own node always passes.
type Node struct {
	Name string
	IPs  []netip.Addr
}

// Operator is a label selector requirement's operator.
type Operator string

const (
	OpIn           Operator = "In"
	OpNotIn        Operator = "NotIn"
	OpExists       Operator = "Exists"
	OpDoesNotExist Operator = "DoesNotExist"
)

// Requirement is one matchExpressions entry.
type Requirement struct {
	Key      string
	Operator Operator
	Values   []string
}

// Selector is a label selector: all of MatchLabels and all of
// MatchExpressions must hold. The empty selector matches everything.
type Selector struct {
	MatchLabels      map[string]string
	MatchExpressions []Requirement
}

// Matches reports whether the labels satisfy the selector.
func (s *Selector) Matches(l Labels) bool {
	for k, v := range s.MatchLabels {
		if got, ok := l[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := l[r.Key]
		switch r.Operator {
		case OpIn:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case OpNotIn:
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case OpExists:
			if !ok {
				return false
			}
		case OpDoesNotExist:
			if ok {
				return false
			}
		default:
			return false // refused by Validate; never matches
		}
	}
	return true
}

// Policy is a networking.k8s.io/v1 NetworkPolicy.
type Policy struct {
	Key
	// PodSelector selects the pods of the policy's namespace it applies
	// to; the empty selector selects them all.
	PodSelector Selector
	// PolicyTypes lists the directions the policy isolates. Empty means
	// Kubernetes' default: Ingress, plus Egress when Egress has rules.
	PolicyTypes []Direction
	Ingress     []Rule
	Egress      []Rule
}

// Rule is one ingress or egress rule: traffic from (ingress) or to
// (egress) one of Peers on one of Ports. No peers means every address; no
// ports means every port of every protocol.
type Rule struct {
	Peers []Peer
	Ports []PortSpec
}

// Peer is one entry of from/to: exactly one of IPBlock or (PodSelector
// and/or NamespaceSelector). A PodSelector alone selects pods of the
// policy's namespace; a NamespaceSelector alone every pod of the selected
// namespaces; both, the selected pods of the selected namespaces.
type Peer struct {
	PodSelector       *Selector
	NamespaceSelector *Selector
	IPBlock           *IPBlock
}

// IPBlock is a CIDR minus the Except CIDRs (each inside it).
type IPBlock struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// PortSpec is one entry of ports. Protocol is required (the API defaults
// it to TCP; kubeconv fills it in). Port is
// either a number (with an optional EndPort for a range) or a Name
// resolved against the destination pod; neither means every port of the
// protocol.
type PortSpec struct {
	Protocol Protocol
	Port     uint16
	EndPort  uint16
	Name     string
}

// directions returns the directions the policy isolates.
func (p *Policy) directions() (ingress, egress bool) {
	if len(p.PolicyTypes) == 0 {
		return true, len(p.Egress) > 0
	}
	return slices.Contains(p.PolicyTypes, Ingress), slices.Contains(p.PolicyTypes, Egress)
}

// Validate checks a policy the way the API server does, and what the
// dataplane relies on. The error names the field and value.
func (p *Policy) Validate() error {
	obj := "networkpolicy " + p.Key.String()
	bad := func(field, value, reason string) error {
		return &invalidError{obj: obj, field: field, value: value, reason: reason}
	}
	if p.Name == "" || p.Namespace == "" {
		return bad("metadata", p.Key.String(), "namespace and name are required")
	}
	if err := validateSelector(&p.PodSelector, "spec.podSelector", bad); err != nil {
		return err
	}
	for i, d := range p.PolicyTypes {
		if d != Ingress && d != Egress {
			return bad(fmt.Sprintf("spec.policyTypes[%d]", i), fmt.Sprint(d), "must be Ingress or Egress")
		}
	}
	for _, dir := range []struct {
		name  string
		rules []Rule
	}{{"ingress", p.Ingress}, {"egress", p.Egress}} {
		peerField := map[string]string{"ingress": "from", "egress": "to"}[dir.name]
		for i, r := range dir.rules {
			for j, peer := range r.Peers {
				f := fmt.Sprintf("spec.%s[%d].%s[%d]", dir.name, i, peerField, j)
				if err := validatePeer(&peer, f, bad); err != nil {
					return err
				}
			}
			for j, ps := range r.Ports {
				f := fmt.Sprintf("spec.%s[%d].ports[%d]", dir.name, i, j)
				if err := validatePort(&ps, f, bad); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func validateSelector(s *Selector, field string, bad func(field, value, reason string) error) error {
	for i, r := range s.MatchExpressions {
		f := fmt.Sprintf("%s.matchExpressions[%d]", field, i)
		if r.Key == "" {
			return bad(f+".key", r.Key, "must not be empty")
		}
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				return bad(f+".values", "", "must not be empty for "+string(r.Operator))
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) != 0 {
				return bad(f+".values", strings.Join(r.Values, ","), "must be empty for "+string(r.Operator))
			}
		default:
			return bad(f+".operator", string(r.Operator), "must be In, NotIn, Exists or DoesNotExist")
		}
	}
	return nil
}

func validatePeer(p *Peer, field string, bad func(field, value, reason string) error) error {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return bad(field, "ipBlock", "ipBlock cannot be combined with selectors")
		}
		b := p.IPBlock
		if !b.CIDR.IsValid() || b.CIDR.Addr().Zone() != "" || b.CIDR.Addr().Is4In6() {
			return bad(field+".ipBlock.cidr", b.CIDR.String(), "not a valid CIDR")
		}
		for k, e := range b.Except {
			ef := fmt.Sprintf("%s.ipBlock.except[%d]", field, k)
			if !e.IsValid() || e.Addr().Is4() != b.CIDR.Addr().Is4() || e.Bits() <= b.CIDR.Bits() || !b.CIDR.Contains(e.Addr()) {
				return bad(ef, e.String(), "must be a CIDR strictly inside "+b.CIDR.String())
			}
		}
		return nil
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return bad(field, "", "one of podSelector, namespaceSelector or ipBlock is required")
	}
	if p.PodSelector != nil {
		if err := validateSelector(p.PodSelector, field+".podSelector", bad); err != nil {
			return err
		}
	}
	if p.NamespaceSelector != nil {
		if err := validateSelector(p.NamespaceSelector, field+".namespaceSelector", bad); err != nil {
			return err
		}
	}
	return nil
}

func validatePort(ps *PortSpec, field string, bad func(field, value, reason string) error) error {
	switch ps.Protocol {
	case TCP, UDP, SCTP:
	default:
		return bad(field+".protocol", string(ps.Protocol), "must be TCP, UDP or SCTP")
	}
	switch {
	case ps.Name != "" && ps.Port != 0:
		return bad(field+".port", ps.Name, "a port is a number or a name, not both")
	case ps.Name != "" && ps.EndPort != 0:
		return bad(field+".endPort", fmt.Sprint(ps.EndPort), "endPort needs a numeric port")
	case ps.EndPort != 0 && ps.Port == 0:
		return bad(field+".endPort", fmt.Sprint(ps.EndPort), "endPort needs port")
	case ps.EndPort != 0 && ps.EndPort < ps.Port:
		return bad(field+".endPort", fmt.Sprint(ps.EndPort), fmt.Sprintf("must not be below port %d", ps.Port))
	case ps.Name != "" && !validPortName(ps.Name):
		return bad(field+".port", ps.Name, "not a valid port name (IANA_SVC_NAME)")
	}
	return nil
}

// validPortName checks an IANA service name: 1-15 lower-case letters,
// digits and '-', at least one letter, no leading, trailing or double '-'.
func validPortName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	letter := false
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}
