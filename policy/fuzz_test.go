package policy_test

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/policy"
)

// This file checks the compiler and the evaluator against a reference
// evaluator written directly from the NetworkPolicy semantics, on random
// clusters built from fuzz input.

// fuzzGen turns fuzz input into choices: each takes one byte (0 once the
// input is used up, so every input builds a cluster).
type fuzzGen struct{ b []byte }

func (g *fuzzGen) n(k int) int {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return int(c) % k
}

// The small alphabets random clusters are made of.
var (
	fzNamespaces = []string{"a", "b", "c", "d"}
	fzLabelKeys  = []string{"k1", "k2", "k3"}
	fzLabelVals  = []string{"x", "y"}
	fzPortNames  = []string{"http", "dns", "metrics"}
	fzPorts      = []uint16{53, 80, 81, 8080}
	fzProtocols  = []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}
	fzNodes      = []policy.Node{
		{Name: "n0", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00:ffff::1")}},
		{Name: "n1", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.2")}},
	}
	// fzOutside are addresses of no pod.
	fzOutside = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fd00:ffff::2"),
		netip.MustParseAddr("::ffff:10.0.0.1"), // no pod's, though 10.0.0.1 may be
		netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"),
		netip.MustParseAddr("::"), netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}
)

func (g *fuzzGen) labels() policy.Labels {
	var l policy.Labels
	for _, k := range fzLabelKeys {
		if v := g.n(3); v > 0 {
			if l == nil {
				l = policy.Labels{}
			}
			l[k] = fzLabelVals[v-1]
		}
	}
	return l
}

// selector is a random selector, now and then an invalid one.
func (g *fuzzGen) selector() policy.Selector {
	var s policy.Selector
	for _, k := range fzLabelKeys {
		if g.n(4) == 0 {
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]string{}
			}
			s.MatchLabels[k] = fzLabelVals[g.n(2)]
		}
	}
	for range g.n(3) {
		r := policy.Requirement{Key: fzLabelKeys[g.n(3)], Operator: []policy.Operator{policy.OpIn, policy.OpNotIn, policy.OpExists, policy.OpDoesNotExist}[g.n(4)]}
		if r.Operator == policy.OpIn || r.Operator == policy.OpNotIn {
			r.Values = []string{fzLabelVals[g.n(2)]}
			if g.n(2) == 0 {
				r.Values = append(r.Values, fzLabelVals[g.n(2)])
			}
		}
		switch g.n(64) {
		case 0:
			r.Key = ""
		case 1:
			r.Operator = "Gt"
		case 2:
			r.Values = nil // invalid for In, NotIn
		case 3:
			r.Values = append(r.Values, "z") // invalid for Exists, DoesNotExist
		}
		s.MatchExpressions = append(s.MatchExpressions, r)
	}
	return s
}

func (g *fuzzGen) selectorPtr() *policy.Selector { s := g.selector(); return &s }

// maybeEmpty is a random selector, or often the empty one.
func (g *fuzzGen) maybeEmpty() policy.Selector {
	if g.n(3) == 0 {
		return policy.Selector{}
	}
	return g.selector()
}

// addr is an address of one of a few small regions of family v6: pods,
// documentation, nodes, and the first and last addresses of the family.
func (g *fuzzGen) addr(v6 bool) netip.Addr {
	region, host := g.n(6), byte(g.n(16))
	if v6 {
		b := [16]byte{0: 0xfd}
		switch region {
		case 2:
			b = [16]byte{0x20, 0x01, 0x0d, 0xb8}
		case 3:
			b[2], b[3] = 0xff, 0xff
			host %= 4
		case 4:
			b = [16]byte{}
		case 5:
			b = [16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff,
				8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff}
			host |= 0xf0
		}
		b[15] = host
		return netip.AddrFrom16(b)
	}
	switch region {
	case 2:
		return netip.AddrFrom4([4]byte{192, 0, 2, host % 4})
	case 3:
		return netip.AddrFrom4([4]byte{192, 168, 0, host % 4})
	case 4:
		return netip.AddrFrom4([4]byte{0, 0, 0, host})
	case 5:
		return netip.AddrFrom4([4]byte{255, 255, 255, 0xf0 | host})
	}
	return netip.AddrFrom4([4]byte{10, 0, 0, host})
}

func (g *fuzzGen) prefix(v6 bool) netip.Prefix {
	bits := []int{0, 8, 24, 28, 29, 30, 31, 32}[g.n(8)]
	if v6 {
		bits = []int{0, 64, 120, 124, 125, 126, 127, 128}[g.n(8)]
	}
	return netip.PrefixFrom(g.addr(v6), bits) // host bits may be set
}

// except is a prefix inside cidr, now and then one that is not (invalid).
func (g *fuzzGen) except(cidr netip.Prefix) netip.Prefix {
	switch g.n(10) {
	case 0:
		return g.prefix(cidr.Addr().Is6())
	case 1:
		if cidr.Addr().Is6() && cidr.Bits() == 0 {
			// IPv4-mapped addresses are IPv6 addresses.
			return netip.PrefixFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(g.n(16))}), 124+g.n(5))
		}
	}
	bits := min(cidr.Bits()+g.n(5), cidr.Addr().BitLen())
	b := cidr.Masked().Addr().AsSlice()
	for i := cidr.Bits(); i < len(b)*8; i++ {
		// Random host bits, mostly in the last byte (where pods are).
		if i >= len(b)*8-8 && g.n(2) == 1 || i < len(b)*8-8 && g.n(16) == 0 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, bits)
}

func (g *fuzzGen) peer() policy.Peer {
	switch g.n(20) {
	case 0, 1, 2, 3, 4:
		return policy.Peer{PodSelector: g.selectorPtr()}
	case 5, 6, 7, 8:
		return policy.Peer{NamespaceSelector: g.selectorPtr()}
	case 9, 10, 11, 12:
		return policy.Peer{PodSelector: g.selectorPtr(), NamespaceSelector: g.selectorPtr()}
	case 13, 14, 15, 16, 17, 18:
		b := &policy.IPBlock{CIDR: g.prefix(g.n(2) == 1)}
		for range g.n(3) {
			b.Except = append(b.Except, g.except(b.CIDR))
		}
		return policy.Peer{IPBlock: b}
	}
	switch g.n(4) { // invalid peers
	case 0:
		return policy.Peer{}
	case 1:
		return policy.Peer{PodSelector: g.selectorPtr(), IPBlock: &policy.IPBlock{CIDR: g.prefix(false)}}
	case 2:
		return policy.Peer{IPBlock: &policy.IPBlock{}}
	}
	return policy.Peer{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("::ffff:10.0.0.0/120")}}
}

func (g *fuzzGen) port() policy.PortSpec {
	ps := policy.PortSpec{Protocol: fzProtocols[g.n(3)]}
	switch g.n(20) {
	case 0, 1, 2, 3, 4:
		ps.Port = fzPorts[g.n(4)]
	case 5, 6, 7:
		ps.Port = fzPorts[g.n(4)]
		ps.EndPort = ps.Port + uint16(g.n(3))
		if g.n(8) == 0 {
			ps.EndPort = fzPorts[g.n(4)] // below Port now and then: invalid
		}
	case 8, 9, 10, 11, 12:
		ps.Name = fzPortNames[g.n(3)]
	case 13, 14, 15:
		// protocol only: every port
	case 16:
		switch g.n(5) { // invalid
		case 0:
			ps.Protocol = ""
		case 1:
			ps.Protocol = "ICMP"
		case 2:
			ps.Name, ps.Port = "http", 80
		case 3:
			ps.EndPort = 90
		default:
			ps.Name = "Bad_Name"
		}
	case 17:
		ps.Port = uint16(g.n(256))<<8 | uint16(g.n(256))
		if g.n(2) == 0 {
			ps.EndPort = 65535
		}
	default:
		ps.Port = fzPorts[g.n(4)] - 1
		ps.EndPort = ps.Port + 2
	}
	return ps
}

func (g *fuzzGen) rules() []policy.Rule {
	var rs []policy.Rule
	for range g.n(3) {
		var r policy.Rule
		for range g.n(3) {
			r.Peers = append(r.Peers, g.peer())
		}
		for range g.n(3) {
			r.Ports = append(r.Ports, g.port())
		}
		rs = append(rs, r)
	}
	return rs
}

// cluster builds a random cluster: 1-3 namespaces with pods and one
// without (now and then one of them unknown: no Namespace object), 3-8
// pods with addresses of one or both families (now and then none yet) on
// two nodes (or an unknown one, or none), 1-5 policies, some invalid.
func (g *fuzzGen) cluster() *policy.Cluster {
	c := &policy.Cluster{Nodes: slices.Clone(fzNodes)}
	nns := 1 + g.n(3)
	for _, ns := range fzNamespaces[:nns+1] {
		if g.n(16) == 0 {
			continue // the namespace is not known (yet): no namespaceSelector selects its pods
		}
		l := g.labels()
		if g.n(4) != 0 {
			if l == nil {
				l = policy.Labels{}
			}
			l["kubernetes.io/metadata.name"] = ns
		}
		c.Namespaces = append(c.Namespaces, policy.Namespace{Name: ns, Labels: l})
	}
	var used [2][16]bool
	alloc := func(fam int) netip.Addr {
		i := g.n(16)
		for used[fam][i] {
			i = (i + 1) % 16
		}
		used[fam][i] = true
		if fam == 0 {
			return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		}
		return netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i)})
	}
	// Names repeat across namespaces, never inside one.
	name := func(prefix string, ns string, i int, taken func(policy.Key) bool) policy.Key {
		k := policy.Key{Namespace: ns, Name: fmt.Sprintf("%s%d", prefix, g.n(3))}
		if taken(k) {
			k.Name = fmt.Sprintf("%s%d", prefix, 10+i)
		}
		return k
	}
	for i := range 3 + g.n(6) {
		k := name("p", fzNamespaces[g.n(nns)], i, func(k policy.Key) bool {
			return slices.ContainsFunc(c.Pods, func(p policy.Pod) bool { return p.Key == k })
		})
		p := policy.Pod{
			Key:    k,
			Labels: g.labels(),
			Node:   []string{"n0", "n1", "n0", "n9", ""}[g.n(5)],
		}
		switch g.n(10) {
		case 0, 1, 2:
			p.IPs = []netip.Addr{alloc(0)}
		case 3, 4, 5:
			p.IPs = []netip.Addr{alloc(1)}
		case 6:
			// Pending: no address yet. No policy selects it, no peer set
			// holds it.
		default:
			p.IPs = []netip.Addr{alloc(1), alloc(0)}
			if g.n(2) == 0 {
				p.IPs[0], p.IPs[1] = p.IPs[1], p.IPs[0]
			}
		}
		for range g.n(4) {
			np := policy.NamedPort{Name: fzPortNames[g.n(3)], Protocol: fzProtocols[g.n(3)], Port: fzPorts[g.n(4)]}
			if !slices.ContainsFunc(p.Ports, func(o policy.NamedPort) bool { return o.Name == np.Name && o.Protocol == np.Protocol }) {
				p.Ports = append(p.Ports, np)
			}
		}
		c.Pods = append(c.Pods, p)
	}
	for i := range 1 + g.n(5) {
		p := policy.Policy{
			Key: name("pol", fzNamespaces[g.n(nns+1)], i, func(k policy.Key) bool {
				return slices.ContainsFunc(c.Policies, func(p policy.Policy) bool { return p.Key == k })
			}),
			PodSelector: g.maybeEmpty(),
		}
		switch g.n(16) {
		case 0, 1, 2, 3, 4, 5:
			// nil: the default
		case 6, 7, 8:
			p.PolicyTypes = []policy.Direction{policy.Ingress}
		case 9, 10, 11:
			p.PolicyTypes = []policy.Direction{policy.Egress}
		case 12, 13:
			p.PolicyTypes = []policy.Direction{policy.Egress, policy.Ingress}
		case 14:
			p.PolicyTypes = []policy.Direction{} // empty: defaulted like nil
		default:
			p.PolicyTypes = []policy.Direction{policy.Ingress, policy.Direction(2 + g.n(2))} // invalid
		}
		p.Ingress, p.Egress = g.rules(), g.rules()
		c.Policies = append(c.Policies, p)
	}
	return c
}

// refEval is the reference evaluator: it decides each connection by
// looping over the policies, with the NetworkPolicy semantics written out
// directly, without the compiler.
type refEval struct {
	pols     []policy.Policy // the valid ones
	podByIP  map[netip.Addr]*policy.Pod
	nsLabels map[string]policy.Labels
	nodeIPs  map[string][]netip.Addr
}

func newRefEval(c *policy.Cluster) *refEval {
	r := &refEval{podByIP: map[netip.Addr]*policy.Pod{}, nsLabels: map[string]policy.Labels{}, nodeIPs: map[string][]netip.Addr{}}
	for _, p := range c.Policies {
		if p.Validate() == nil {
			r.pols = append(r.pols, p)
		}
	}
	for i := range c.Pods {
		for _, ip := range c.Pods[i].IPs {
			r.podByIP[ip] = &c.Pods[i]
		}
	}
	for _, ns := range c.Namespaces {
		r.nsLabels[ns.Name] = ns.Labels
	}
	for _, n := range c.Nodes {
		r.nodeIPs[n.Name] = n.IPs
	}
	return r
}

// refMatches is label selection: every matchLabels pair and every
// requirement holds.
func refMatches(s *policy.Selector, l policy.Labels) bool {
	for k, v := range s.MatchLabels {
		if got, ok := l[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, has := l[r.Key]
		in := has && slices.Contains(r.Values, v)
		ok := map[policy.Operator]bool{policy.OpIn: in, policy.OpNotIn: !in, policy.OpExists: has, policy.OpDoesNotExist: !has}[r.Operator]
		if !ok {
			return false
		}
	}
	return true
}

// allowed decides a new connection.
func (r *refEval) allowed(src, dst netip.Addr, proto policy.Protocol, port uint16) bool {
	sp, dp := r.podByIP[src], r.podByIP[dst]
	if sp != nil && sp == dp {
		return true // a pod reaching itself
	}
	return r.sideAllows(sp, policy.Egress, dst, dp, proto, port) && r.sideAllows(dp, policy.Ingress, src, dp, proto, port)
}

// sideAllows: does pod self (nil: not a pod) let traffic with peer through
// in direction dir? dstPod resolves named ports.
func (r *refEval) sideAllows(self *policy.Pod, dir policy.Direction, peer netip.Addr, dstPod *policy.Pod, proto policy.Protocol, port uint16) bool {
	if self == nil {
		return true
	}
	isolated := false
	for i := range r.pols {
		pol := &r.pols[i]
		if pol.Namespace != self.Namespace || !refMatches(&pol.PodSelector, self.Labels) {
			continue
		}
		var applies bool
		if len(pol.PolicyTypes) == 0 {
			applies = dir == policy.Ingress || len(pol.Egress) > 0
		} else {
			applies = slices.Contains(pol.PolicyTypes, dir)
		}
		if !applies {
			continue
		}
		isolated = true
		rules := pol.Ingress
		if dir == policy.Egress {
			rules = pol.Egress
		}
		for _, rule := range rules {
			if r.peerAllowed(pol.Namespace, rule.Peers, peer) && refPortAllowed(rule.Ports, dstPod, proto, port) {
				return true
			}
		}
	}
	if !isolated {
		return true
	}
	return slices.Contains(r.nodeIPs[self.Node], peer) // the pod's own node
}

func (r *refEval) peerAllowed(ns string, peers []policy.Peer, a netip.Addr) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if b := p.IPBlock; b != nil {
			if b.CIDR.Contains(a) && !slices.ContainsFunc(b.Except, func(e netip.Prefix) bool { return e.Contains(a) }) {
				return true
			}
			continue
		}
		q := r.podByIP[a]
		if q == nil {
			continue
		}
		if p.NamespaceSelector == nil {
			if q.Namespace != ns {
				continue
			}
		} else if l, ok := r.nsLabels[q.Namespace]; !ok || !refMatches(p.NamespaceSelector, l) {
			continue
		}
		if p.PodSelector == nil || refMatches(p.PodSelector, q.Labels) {
			return true
		}
	}
	return false
}

func refPortAllowed(ports []policy.PortSpec, dstPod *policy.Pod, proto policy.Protocol, port uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, ps := range ports {
		if ps.Protocol != proto {
			continue
		}
		switch {
		case ps.Name != "":
			if dstPod == nil {
				continue
			}
			for _, np := range dstPod.Ports {
				if np.Name == ps.Name && np.Protocol == proto {
					if np.Port == port {
						return true
					}
					break // the first port of the name is the one
				}
			}
		case ps.Port == 0:
			return true
		case ps.EndPort != 0:
			if ps.Port <= port && port <= ps.EndPort {
				return true
			}
		case ps.Port == port:
			return true
		}
	}
	return false
}

// fzProbe is one connection to decide.
type fzProbe struct {
	src, dst netip.Addr
	proto    policy.Protocol
	port     uint16
}

func (p fzProbe) String() string { return fmt.Sprintf("%s -> %s %s/%d", p.src, p.dst, p.proto, p.port) }

// fzProbes returns, for every pair of the cluster's pod and node
// addresses and a few others, one random protocol and port, and as many
// more fully random connections.
func fzProbes(c *policy.Cluster, rng *rand.Rand) []fzProbe {
	var as []netip.Addr
	for _, p := range c.Pods {
		as = append(as, p.IPs...)
	}
	for _, n := range c.Nodes {
		as = append(as, n.IPs...)
	}
	as = append(as, fzOutside...)
	// An unused address of each pod range.
	for _, a := range []netip.Addr{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("fd00::")} {
		for slices.Contains(as, a) {
			a = a.Next()
		}
		as = append(as, a)
	}
	ports := []uint16{0, 1, 52, 53, 54, 79, 80, 81, 82, 8080, 8081, 65535}
	pick := func() (policy.Protocol, uint16) {
		port := ports[rng.IntN(len(ports))]
		if rng.IntN(2) == 0 {
			port = fzPorts[rng.IntN(len(fzPorts))] // the ports rules name
		} else if rng.IntN(8) == 0 {
			port = uint16(rng.IntN(65536))
		}
		return fzProtocols[rng.IntN(3)], port
	}
	var out []fzProbe
	for _, s := range as {
		for _, d := range as {
			proto, port := pick()
			out = append(out, fzProbe{s, d, proto, port})
		}
	}
	for range len(as) * len(as) {
		proto, port := pick()
		out = append(out, fzProbe{as[rng.IntN(len(as))], as[rng.IntN(len(as))], proto, port})
	}
	return out
}

// renderValue writes v as stable text: exported fields only, pointers
// followed, maps in key order, errors and Stringers as their text.
func renderValue(w *strings.Builder, v reflect.Value) {
	if !v.IsValid() {
		w.WriteString("<nil>")
		return
	}
	if v.CanInterface() {
		switch x := v.Interface().(type) {
		case error:
			if x != nil {
				w.WriteString(x.Error())
				return
			}
		case fmt.Stringer:
			if v.Kind() != reflect.Pointer || !v.IsNil() {
				w.WriteString(x.String())
				return
			}
		}
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			w.WriteString("nil")
			return
		}
		renderValue(w, v.Elem())
	case reflect.Struct:
		w.WriteString("{")
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				fmt.Fprintf(w, "%s:", f.Name)
				renderValue(w, v.Field(i))
				w.WriteString(" ")
			}
		}
		w.WriteString("}")
	case reflect.Slice, reflect.Array:
		w.WriteString("[")
		for i := range v.Len() {
			renderValue(w, v.Index(i))
			w.WriteString(" ")
		}
		w.WriteString("]")
	case reflect.Map:
		var keys []string
		vals := map[string]reflect.Value{}
		for it := v.MapRange(); it.Next(); {
			var kb strings.Builder
			renderValue(&kb, it.Key())
			keys = append(keys, kb.String())
			vals[kb.String()] = it.Value()
		}
		sort.Strings(keys)
		w.WriteString("map[")
		for _, k := range keys {
			w.WriteString(k + ":")
			renderValue(w, vals[k])
			w.WriteString(" ")
		}
		w.WriteString("]")
	default:
		fmt.Fprint(w, v.Interface())
	}
}

// renderProgram is the stable text of everything a Program exports: its
// pod programs, errors and peer sets.
func renderProgram(p *policy.Program) string {
	var w strings.Builder
	renderValue(&w, reflect.ValueOf(p.Pods))
	w.WriteString("\nerrors ")
	renderValue(&w, reflect.ValueOf(p.Errors))
	w.WriteString("\nsets ")
	renderValue(&w, reflect.ValueOf(p.Sets()))
	return w.String()
}

func renderCluster(c *policy.Cluster) string {
	var w strings.Builder
	for _, x := range []any{c.Namespaces, c.Nodes, c.Pods} {
		renderValue(&w, reflect.ValueOf(x))
		w.WriteString("\n")
	}
	for _, p := range c.Policies {
		renderValue(&w, reflect.ValueOf(p))
		fmt.Fprintf(&w, " valid=%v\n", p.Validate() == nil)
	}
	return w.String()
}

// checkSets checks the invariants of every peer set: sorted, disjoint,
// non-adjacent ranges of one family each, and Prefixes covering exactly
// the same addresses (checked on the probes' addresses and their
// neighbours).
func checkSets(t *testing.T, prog *policy.Program, probes []fzProbe) {
	t.Helper()
	for _, s := range prog.Sets() {
		for i, r := range s.Ranges {
			if !r.From.IsValid() || r.From.Is4() != r.To.Is4() || r.To.Less(r.From) {
				t.Fatalf("set %s: bad range %v-%v", s.Name, r.From, r.To)
			}
			if i > 0 {
				prev := s.Ranges[i-1]
				if !prev.To.Less(r.From) || prev.To.Is4() == r.From.Is4() && prev.To.Next() == r.From {
					t.Fatalf("set %s: ranges %v-%v and %v-%v overlap, touch or are out of order", s.Name, prev.From, prev.To, r.From, r.To)
				}
			}
		}
		// Prefixes: masked, in order, disjoint, covering exactly the ranges,
		// no two of them halves of one prefix.
		pfx := s.Prefixes()
		var covered []policy.AddrRange
		for i, p := range pfx {
			if p != p.Masked() {
				t.Fatalf("set %s: prefix %v not masked", s.Name, p)
			}
			last := fzLastAddr(p)
			if n := len(covered); n > 0 && covered[n-1].To.Is4() == p.Addr().Is4() && covered[n-1].To.Next() == p.Addr() {
				covered[n-1].To = last
			} else {
				covered = append(covered, policy.AddrRange{From: p.Addr(), To: last})
			}
			if i > 0 {
				prev := pfx[i-1]
				if !fzLastAddr(prev).Less(p.Addr()) {
					t.Fatalf("set %s: prefixes %v and %v overlap or are out of order", s.Name, prev, p)
				}
				if prev.Bits() == p.Bits() && p.Bits() > 0 {
					if parent, _ := p.Addr().Prefix(p.Bits() - 1); parent.Addr() == prev.Addr() {
						t.Fatalf("set %s: prefixes %v and %v make one", s.Name, prev, p)
					}
				}
			}
		}
		if !slices.Equal(covered, s.Ranges) {
			t.Fatalf("set %s: prefixes %v cover %v, not the ranges %v", s.Name, pfx, covered, s.Ranges)
		}
		for _, p := range probes {
			for _, a := range []netip.Addr{p.src, p.src.Prev(), p.src.Next()} {
				if !a.IsValid() {
					continue
				}
				if in := slices.ContainsFunc(pfx, func(q netip.Prefix) bool { return q.Contains(a) }); in != s.Contains(a) {
					t.Fatalf("set %s: Contains(%v) = %v, prefixes %v say %v", s.Name, a, s.Contains(a), pfx, in)
				}
			}
		}
	}
}

// fzLastAddr is the last address of p.
func fzLastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// checkCluster runs every check on one cluster.
func checkCluster(t *testing.T, c *policy.Cluster, rng *rand.Rand) {
	t.Helper()
	prog := policy.Compile(c)
	ref := newRefEval(c)
	probes := fzProbes(c, rng)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\ncluster:\n%s\nprogram:\n%s", fmt.Sprintf(format, args...), renderCluster(c), renderProgram(prog))
	}

	// (a) Invalid policies are reported, one error each, and change no
	// verdict.
	var invalid, valid []policy.Policy
	for _, p := range c.Policies {
		if p.Validate() != nil {
			invalid = append(invalid, p)
		} else {
			valid = append(valid, p)
		}
	}
	if len(prog.Errors) != len(invalid) {
		fail("%d errors %v for %d invalid policies", len(prog.Errors), prog.Errors, len(invalid))
	}
	for _, p := range invalid {
		if !slices.ContainsFunc(prog.Errors, func(err error) bool {
			return errors.Is(err, policy.ErrInvalid) && strings.Contains(err.Error(), "networkpolicy "+p.Key.String()+":")
		}) {
			fail("no error names invalid policy %s: %v", p.Key, prog.Errors)
		}
	}
	withoutInvalid := *c
	withoutInvalid.Policies = valid
	progValid := policy.Compile(&withoutInvalid)
	if len(progValid.Errors) != 0 {
		fail("errors without the invalid policies: %v", progValid.Errors)
	}

	// (c) Determinism: the same cluster in another order.
	shuffled := *c
	shuffled.Pods, shuffled.Policies = slices.Clone(c.Pods), slices.Clone(c.Policies)
	shuffled.Namespaces, shuffled.Nodes = slices.Clone(c.Namespaces), slices.Clone(c.Nodes)
	rng.Shuffle(len(shuffled.Pods), func(i, j int) { shuffled.Pods[i], shuffled.Pods[j] = shuffled.Pods[j], shuffled.Pods[i] })
	rng.Shuffle(len(shuffled.Policies), func(i, j int) {
		shuffled.Policies[i], shuffled.Policies[j] = shuffled.Policies[j], shuffled.Policies[i]
	})
	rng.Shuffle(len(shuffled.Namespaces), func(i, j int) {
		shuffled.Namespaces[i], shuffled.Namespaces[j] = shuffled.Namespaces[j], shuffled.Namespaces[i]
	})
	slices.Reverse(shuffled.Nodes)
	progShuffled := policy.Compile(&shuffled)
	if got, want := renderProgram(progShuffled), renderProgram(prog); got != want {
		fail("shuffled input compiles differently:\n%s\nwant\n%s", got, want)
	}

	checkSets(t, prog, probes)

	for i, p := range probes {
		d := prog.Trace(p.src, p.dst, p.proto, p.port)
		// (b) The reference's verdict.
		if want := ref.allowed(p.src, p.dst, p.proto, p.port); d.Allowed != want {
			fail("%s: %s; the reference says allowed=%v", p, d, want)
		}
		if dv := progValid.Trace(p.src, p.dst, p.proto, p.port); !sameDecision(dv, d) {
			fail("%s: %s; without the invalid policies %s", p, d, dv)
		}
		ds := progShuffled.Trace(p.src, p.dst, p.proto, p.port)
		if !sameDecision(ds, d) || i%16 == 0 && !reflect.DeepEqual(ds, d) {
			fail("%s: %s; shuffled %s", p, d, ds)
		}
	}
}

// sameDecision compares decisions field by field (reflect.DeepEqual is
// the fuzzer's main cost otherwise).
func sameDecision(a, b policy.Decision) bool {
	same := func(x, y policy.Step) bool {
		return x.Pod == y.Pod && x.Isolated == y.Isolated && x.Node == y.Node && x.Self == y.Self &&
			slices.Equal(x.AllowedBy, y.AllowedBy) && slices.Equal(x.Policies, y.Policies)
	}
	return a.Allowed == b.Allowed && same(a.Egress, b.Egress) && same(a.Ingress, b.Ingress)
}

func fzRand(data []byte) *rand.Rand {
	h := fnv.New64a()
	h.Write(data)
	s := h.Sum64()
	return rand.New(rand.NewPCG(s, s>>32|s<<32))
}

// FuzzCompile compiles random clusters and checks the evaluator against
// the reference, invalid policies against leaving them out, and the
// result against compiling the same cluster in another order.
func FuzzCompile(f *testing.F) {
	f.Add([]byte{})
	// Three namespaces, eight dual-stack pods, five policies.
	f.Add([]byte{2, 1, 2, 3, 1, 2, 3, 1, 2, 5, 0, 1, 2, 2, 1, 3, 2, 0, 1, 2, 2, 2, 1, 1, 3, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
		14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40})
	f.Add([]byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0\xef\xee\xed\xec\xeb\xea\xe9\xe8"))
	f.Add([]byte(strings.Repeat("\x04\x02\x07\x01\x06\x03\x05", 40)))
	f.Add([]byte(strings.Repeat("\x02\x05\x06\x02", 60)))
	f.Add([]byte("a cluster with some namespaces, pods and policies built from text: ipBlock except, named ports, egress to dns"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := (&fuzzGen{b: data}).cluster()
		checkCluster(t, c, fzRand(data))
	})
}

// TestReferenceMatchesCases checks the reference evaluator itself against
// the hand-written truth table of driver/drivertest, then runs the fuzz
// checks on each of its clusters.
func TestReferenceMatchesCases(t *testing.T) {
	for i, c := range drivertest.PolicyCases() {
		if len(c.AdminPolicies) > 0 || c.Baseline != nil {
			continue // the reference models NetworkPolicy only
		}
		cl := c.Cluster()
		ref := newRefEval(cl)
		bad := 0
		for _, p := range drivertest.Probes() {
			src, dst := drivertest.PolicyPodAddr(p.From, p.Fam), drivertest.PolicyPodAddr(p.To, p.Fam)
			if got := ref.allowed(src, dst, p.Protocol, p.Port); got != c.Expect(p) {
				if bad++; bad <= 3 {
					t.Errorf("%s: %s: reference says allowed=%v, want %v", c.Name, p, got, c.Expect(p))
				}
			}
		}
		checkCluster(t, cl, rand.New(rand.NewPCG(uint64(i), 1)))
	}
}
