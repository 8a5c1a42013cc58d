package fake

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/kubewire/kubewire/service"
)

// Services is an in-memory service.Dataplane. It keeps the last State it
// was given, renders it with Dump, and answers "where would this packet
// go" with Trace, following the rules a kernel dataplane implements.
type Services struct {
	mu       sync.Mutex
	st       service.State
	affinity map[affinityKey]service.Target
	hints    []service.Hint
	fail     error
	// NodeAddrs are the node's addresses: node ports answer on them (unless
	// the State names the node's addresses), and Trace treats sources among
	// them as the node itself.
	NodeAddrs []netip.Addr
}

var _ service.Dataplane = (*Services)(nil)

// NewServices returns an empty fake service dataplane.
func NewServices(nodeAddrs ...netip.Addr) *Services { return &Services{NodeAddrs: nodeAddrs} }

// FailNext makes the next Sync return err.
func (f *Services) FailNext(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

// Hints returns the hints of every successful Sync so far.
func (f *Services) Hints() []service.Hint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.hints)
}

// Sync implements service.Dataplane.
func (f *Services) Sync(ctx context.Context, st *service.State, hint service.Hint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	f.st = service.State{Ports: slices.Clone(st.Ports), NodeAddresses: slices.Clone(st.NodeAddresses)}
	f.affinity = nil
	f.hints = append(f.hints, hint)
	return nil
}

// Dump renders the state, one service port per block, sorted.
func (f *Services) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, p := range f.st.Ports {
		fmt.Fprintf(&b, "%s %s:%d", p.Name, joinAddrs(p.ClusterIPs), p.Port)
		if p.NodePort != 0 {
			fmt.Fprintf(&b, " nodePort=%d", p.NodePort)
		}
		if len(p.ExternalIPs) > 0 {
			fmt.Fprintf(&b, " external=%s", joinAddrs(p.ExternalIPs))
		}
		if len(p.LoadBalancerIPs) > 0 {
			fmt.Fprintf(&b, " lb=%s", joinAddrs(p.LoadBalancerIPs))
		}
		if p.AffinityTimeout > 0 {
			fmt.Fprintf(&b, " affinity=%s", p.AffinityTimeout)
		}
		if !p.HasEndpoints {
			b.WriteString(" reject")
		}
		b.WriteString("\n")
		fmt.Fprintf(&b, "  internal%s: %s\n", localTag(p.InternalLocal), joinTargets(p.InternalEndpoints))
		if p.NodePort != 0 || len(p.ExternalIPs)+len(p.LoadBalancerIPs) > 0 {
			fmt.Fprintf(&b, "  external%s: %s\n", localTag(p.ExternalLocal), joinTargets(p.ExternalEndpoints))
		}
	}
	return b.String()
}

func localTag(local bool) string {
	if local {
		return "(local)"
	}
	return ""
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func joinTargets(ts []service.Target) string {
	if len(ts) == 0 {
		return "-"
	}
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.AddrPort().String()
		if t.Local {
			s[i] += "*"
		}
	}
	return strings.Join(s, " ")
}

// Verdict is what happens to a traced packet.
type Verdict string

// Trace verdicts.
const (
	VerdictForward Verdict = "forward" // DNAT to one of Targets
	VerdictReject  Verdict = "reject"  // ICMP port unreachable / TCP reset
	VerdictDrop    Verdict = "drop"
	VerdictNoMatch Verdict = "no-match" // not a service address: routed as is
)

// TraceResult says where a packet goes.
type TraceResult struct {
	Verdict Verdict
	// Targets are the endpoints the packet may be sent to (one is picked at
	// random, or by affinity).
	Targets []service.Target
	// Masquerade is true when the source is rewritten to the node.
	Masquerade bool
}

// Trace follows a packet from src (fromLocal: a pod of this node or the
// node itself) to dst with protocol proto through the state.
func (f *Services) Trace(src netip.Addr, fromLocal bool, proto service.Protocol, dst netip.AddrPort) TraceResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	nodePortAddrs := f.NodeAddrs
	if len(f.st.NodeAddresses) > 0 {
		nodePortAddrs = f.st.NodeAddresses
	}
	for _, p := range f.st.Ports {
		if p.Protocol != proto {
			continue
		}
		external := false
		switch {
		case dst.Port() == p.Port && slices.Contains(p.ClusterIPs, dst.Addr()):
		case dst.Port() == p.Port && (slices.Contains(p.ExternalIPs, dst.Addr()) || slices.Contains(p.LoadBalancerIPs, dst.Addr())):
			external = true
			if slices.Contains(p.LoadBalancerIPs, dst.Addr()) && len(p.SourceRanges) > 0 && !fromLocal &&
				!slices.ContainsFunc(p.SourceRanges, func(r netip.Prefix) bool { return r.Contains(src) }) {
				return TraceResult{Verdict: VerdictDrop}
			}
		case p.NodePort != 0 && dst.Port() == p.NodePort && slices.Contains(nodePortAddrs, dst.Addr()):
			external = true
		default:
			continue
		}
		if !p.HasEndpoints {
			return TraceResult{Verdict: VerdictReject}
		}
		eps := p.InternalEndpoints
		masq := false
		if external {
			eps = p.ExternalEndpoints
			if p.ExternalLocal && fromLocal {
				eps = p.ClusterEndpoints // short-circuit
			}
			masq = !p.ExternalLocal || fromLocal
		}
		var fam []service.Target
		for _, t := range eps {
			if t.Addr.Is4() == dst.Addr().Is4() {
				fam = append(fam, t)
			}
		}
		if len(fam) == 0 {
			return TraceResult{Verdict: VerdictDrop}
		}
		for _, t := range fam {
			if t.Addr == src && t.Local { // hairpin
				masq = true
			}
		}
		return TraceResult{Verdict: VerdictForward, Targets: fam, Masquerade: masq}
	}
	for _, p := range f.st.Ports {
		if slices.Contains(p.ClusterIPs, dst.Addr()) {
			return TraceResult{Verdict: VerdictReject} // another port of a live ClusterIP
		}
	}
	return TraceResult{Verdict: VerdictNoMatch}
}

type affinityKey struct {
	port service.PortName
	src  netip.Addr
}

// Connect traces a packet like Trace and then picks the endpoint the
// kernel would: at random, or the one a client is pinned to by session
// affinity (the fake never expires affinity).
func (f *Services) Connect(src netip.Addr, fromLocal bool, proto service.Protocol, dst netip.AddrPort) (TraceResult, service.Target) {
	r := f.Trace(src, fromLocal, proto, dst)
	if r.Verdict != VerdictForward {
		return r, service.Target{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var port *service.PortState
	for i := range f.st.Ports {
		p := &f.st.Ports[i]
		if p.Protocol == proto && (p.Port == dst.Port() || p.NodePort == dst.Port()) {
			port = p
			break
		}
	}
	pick := r.Targets[rand.IntN(len(r.Targets))]
	if port != nil && port.AffinityTimeout > 0 {
		key := affinityKey{port.Name, src}
		if t, ok := f.affinity[key]; ok && slices.Contains(r.Targets, t) {
			return r, t
		}
		if f.affinity == nil {
			f.affinity = map[affinityKey]service.Target{}
		}
		f.affinity[key] = pick
	}
	return r, pick
}
