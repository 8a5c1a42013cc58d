package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// Step is the decision of one side of a connection: the egress policy of
// its source pod or the ingress policy of its destination pod.
type Step struct {
	// Pod is the pod on this side (zero when the address is no pod's).
	Pod Key
	// Isolated: some policy selects the pod for this direction.
	Isolated bool
	// Node: the peer is the pod's own node, always allowed.
	Node bool
	// Self: the pod reaches itself (its own namespace), always allowed.
	Self bool
	// AllowedBy lists the rules that allow the packet (empty when denied).
	AllowedBy []RuleID
	// DeniedBy is the admin or baseline rule that denies the packet.
	DeniedBy *RuleID
	// Passed is the admin rule that passed the packet on to
	// NetworkPolicy.
	Passed *RuleID
	// Policies are the policies isolating the pod (when denied, these are
	// the policies none of whose rules allow it).
	Policies []Key
}

// Allowed reports whether this side lets the packet through.
func (s Step) Allowed() bool {
	return s.Node || s.Self || (s.DeniedBy == nil && (!s.Isolated || len(s.AllowedBy) > 0))
}

// Decision is the verdict on a new connection and how it was reached.
type Decision struct {
	Allowed bool
	Egress  Step // the source pod's side
	Ingress Step // the destination pod's side
}

// String explains the decision in one line.
func (d Decision) String() string {
	verdict := "denied"
	if d.Allowed {
		verdict = "allowed"
	}
	return verdict + ": egress " + d.Egress.explain() + "; ingress " + d.Ingress.explain()
}

func (s Step) explain() string {
	switch {
	case s.Pod == (Key{}):
		return "not a pod"
	case s.Self:
		return s.Pod.String() + " to itself"
	case !s.Isolated:
		return s.Pod.String() + " not isolated"
	case s.Node:
		return s.Pod.String() + " with its own node"
	case s.DeniedBy != nil:
		return s.Pod.String() + " denied by " + s.DeniedBy.String()
	case len(s.AllowedBy) > 0:
		ids := make([]string, len(s.AllowedBy))
		for i, id := range s.AllowedBy {
			ids[i] = id.String()
		}
		return s.Pod.String() + " allowed by " + strings.Join(ids, ", ")
	}
	ps := make([]string, len(s.Policies))
	for i, p := range s.Policies {
		ps[i] = p.String()
	}
	return fmt.Sprintf("%s isolated by %s, no rule allows it", s.Pod, strings.Join(ps, ", "))
}

// Trace decides a new connection from src to dst on proto/port (the
// destination port after service DNAT: the pod's own port). Replies of
// allowed connections are not traced: they always pass.
func (p *Program) Trace(src, dst netip.Addr, proto Protocol, port uint16) Decision {
	if k, ok := p.pods[src]; ok {
		if k2, ok2 := p.pods[dst]; ok2 && k2 == k {
			// A pod reaching itself: the packets never leave its namespace.
			s := Step{Pod: k, Self: true}
			return Decision{Allowed: true, Egress: s, Ingress: s}
		}
	}
	d := Decision{
		Egress:  p.step(src, Egress, dst, proto, port),
		Ingress: p.step(dst, Ingress, src, proto, port),
	}
	d.Allowed = d.Egress.Allowed() && d.Ingress.Allowed()
	return d
}

func (p *Program) step(self netip.Addr, dir Direction, peer netip.Addr, proto Protocol, port uint16) Step {
	s := Step{Pod: p.pods[self]}
	pp := p.byIP[self]
	if pp == nil || pp.Dirs[dir] == nil {
		return s
	}
	dp := pp.Dirs[dir]
	for _, n := range pp.NodeIPs {
		if n == peer {
			s.Isolated, s.Node = true, true
			return s
		}
	}
	// Admin policies first: the first rule that matches decides.
	for i := range dp.Admin {
		r := &dp.Admin[i]
		if !r.matches(p, peer, proto, port) {
			continue
		}
		id := r.ID
		switch r.Action {
		case ActionAllow:
			s.AllowedBy = []RuleID{id}
			return s
		case ActionDeny:
			s.DeniedBy = &id
			return s
		}
		s.Passed = &id
		break
	}
	if len(dp.Policies) == 0 {
		// Not isolated by NetworkPolicy: the baseline decides, else allow.
		for i := range dp.Baseline {
			r := &dp.Baseline[i]
			if !r.matches(p, peer, proto, port) {
				continue
			}
			id := r.ID
			if r.Action == ActionDeny {
				s.DeniedBy = &id
			} else {
				s.AllowedBy = []RuleID{id}
			}
			return s
		}
		return s
	}
	s.Isolated, s.Policies = true, dp.Policies
	for i := range dp.Rules {
		r := &dp.Rules[i]
		if r.matches(p, peer, proto, port) && (len(s.AllowedBy) == 0 || s.AllowedBy[len(s.AllowedBy)-1] != r.ID) {
			s.AllowedBy = append(s.AllowedBy, r.ID)
		}
	}
	return s
}

// Pod returns the program of the pod with address ip, if it is isolated.
func (p *Program) Pod(ip netip.Addr) (*PodProgram, bool) {
	pp, ok := p.byIP[ip]
	return pp, ok
}

// Dataplane enforces a Program in the kernel. Implementations:
// driver/nftables, driver/fake.
type Dataplane interface {
	// Sync makes the dataplane enforce exactly prog. Idempotent.
	Sync(ctx context.Context, prog *Program) error
}

// Knows reports whether ip is the address of a pod the Program was
// compiled with (isolated or not).
func (p *Program) Knows(ip netip.Addr) bool {
	_, ok := p.pods[ip]
	return ok
}
