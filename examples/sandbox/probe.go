package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kubewire/kubewire/internal/sandbox"
)

// Probe outcomes.
const (
	expectAllow = "allow" // the connection must succeed
	expectDeny  = "deny"  // it must be refused (policy, no endpoint)
	expectAny   = "any"   // backends disagree: either is right

	resultConnected = "connected"
	resultRefused   = "refused"
)

// Probe is one connection attempt of the matrix and its verdict.
type Probe struct {
	From     string `json:"from"`   // namespace/pod, or "outside"
	To       string `json:"to"`     // namespace/name
	Kind     string `json:"kind"`   // pod, service, nodeport
	Via      string `json:"via"`    // node of a node port
	Family   string `json:"family"` // IPv4, IPv6
	Target   string `json:"target"` // address:port dialled
	Protocol string `json:"protocol"`
	Expect   string `json:"expect"`
	Result   string `json:"result"`
	SeenAs   string `json:"seenAs,omitempty"` // client address the server saw
	OK       bool   `json:"ok"`
	Why      string `json:"why,omitempty"` // the policy trace, or why no endpoint answers
}

// task is a probe to run: from a namespace to a target, with what is
// expected and why.
type task struct {
	p        Probe
	src      *sandbox.NS
	srcAddr  netip.Addr // for the NAT check of pod-to-pod probes
	addr     netip.AddrPort
	timeout  time.Duration
	checkSrc bool
}

// backend is a ready endpoint of a service port, with its target port.
type backend struct {
	addr netip.Addr
	port uint16
	node string
}

// readyEndpoints calls f for every endpoint of service s of one family
// that answers (ready, or any with publishNotReadyAddresses), with its
// slice.
func (c *cluster) readyEndpoints(s *corev1.Service, v4 bool, f func(es *discoveryv1.EndpointSlice, ep discoveryv1.Endpoint)) {
	for _, es := range c.slices {
		if es.Namespace != s.Namespace || es.Labels[discoveryv1.LabelServiceName] != s.Name ||
			(es.AddressType == discoveryv1.AddressTypeIPv4) != v4 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready || s.Spec.PublishNotReadyAddresses {
				f(es, ep)
			}
		}
	}
}

// backends returns the ready endpoints of port portName of service s, of
// one family, with the port their slice gives it.
func (c *cluster) backends(s *corev1.Service, portName string, v4 bool) []backend {
	var out []backend
	c.readyEndpoints(s, v4, func(es *discoveryv1.EndpointSlice, ep discoveryv1.Endpoint) {
		i := slices.IndexFunc(es.Ports, func(p discoveryv1.EndpointPort) bool {
			return p.Name != nil && *p.Name == portName && p.Port != nil
		})
		if i < 0 {
			return // the port did not resolve for this slice's pods
		}
		node := ""
		if ep.NodeName != nil {
			node = *ep.NodeName
		}
		for _, a := range ep.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				out = append(out, backend{ip, uint16(*es.Ports[i].Port), node})
			}
		}
	})
	return out
}

// podByIP returns the pod with address a, or nil.
func (c *cluster) podByIP(a netip.Addr) *pod {
	for _, p := range c.pods {
		if slices.Contains(p.ips, a) {
			return p
		}
	}
	return nil
}

func familyName(v4 bool) string {
	if v4 {
		return "IPv4"
	}
	return "IPv6"
}

// serviceIP returns the ClusterIP of s of one family.
func serviceIP(s *corev1.Service, v4 bool) netip.Addr {
	for _, x := range s.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(x); err == nil && a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// probeable reports whether the matrix probes a service's ClusterIP.
func probeable(s *corev1.Service) bool {
	return s.Spec.Type != corev1.ServiceTypeExternalName && s.Spec.ClusterIP != corev1.ClusterIPNone &&
		s.Spec.ClusterIP != "" && len(s.Spec.Ports) > 0
}

// expectation combines the policy verdicts of the backends a connection
// may reach.
func (c *cluster) expectation(src netip.Addr, proto corev1.Protocol, bs []backend, none string) (string, string) {
	if len(bs) == 0 {
		return expectDeny, none
	}
	allowed, denied := 0, 0
	var why string
	for _, b := range bs {
		if c.podByIP(b.addr) == nil {
			// A declared endpoint outside the sandbox: nothing answers
			// there (and no packet leaves the sandbox).
			denied++
			if why == "" {
				why = fmt.Sprintf("endpoint %s is no pod of the sandbox: nothing answers there", b.addr)
			}
			continue
		}
		d := c.trace(src, b.addr, proto, b.port)
		if d.Allowed {
			allowed++
		} else {
			denied++
			if why == "" {
				why = fmt.Sprintf("to %s: %s", b.addr, d)
			}
		}
	}
	switch {
	case denied == 0:
		return expectAllow, ""
	case allowed == 0:
		return expectDeny, why
	}
	return expectAny, fmt.Sprintf("%d of %d endpoints allowed; %s", allowed, len(bs), why)
}

// matrixTasks builds the probes of the connectivity matrix: every source
// pod to every pod (its first port) and to every service (its first
// port), per family; the outside client to every node port on every node.
func (c *cluster) matrixTasks(srcs, dstPods []*pod, svcs []*corev1.Service) []task {
	var out []task
	for _, src := range srcs {
		for _, dst := range dstPods {
			if dst == src {
				continue
			}
			cp := dst.ports[0]
			for _, v4 := range c.families() {
				sa, da := src.ip(v4), dst.ip(v4)
				if !sa.IsValid() || !da.IsValid() {
					continue
				}
				d := c.trace(sa, da, cp.Protocol, uint16(cp.ContainerPort))
				t := task{src: src.ns, srcAddr: sa, addr: netip.AddrPortFrom(da, uint16(cp.ContainerPort)), timeout: 2 * time.Second, checkSrc: true,
					p: Probe{From: src.key, To: dst.key, Kind: "pod", Family: familyName(v4), Protocol: string(cp.Protocol), Expect: expectAllow}}
				if !d.Allowed {
					t.p.Expect, t.p.Why = expectDeny, d.String()
				}
				out = append(out, t)
			}
		}
		for _, s := range svcs {
			if !probeable(s) {
				continue
			}
			sp := s.Spec.Ports[0]
			for _, v4 := range c.families() {
				sa, vip := src.ip(v4), serviceIP(s, v4)
				if !sa.IsValid() || !vip.IsValid() {
					continue
				}
				exp, why := c.expectation(sa, sp.Protocol, c.backends(s, sp.Name, v4), "no ready endpoint")
				out = append(out, task{src: src.ns, addr: netip.AddrPortFrom(vip, uint16(sp.Port)), timeout: 2 * time.Second,
					p: Probe{From: src.key, To: s.Namespace + "/" + s.Name, Kind: "service", Family: familyName(v4),
						Protocol: string(sp.Protocol), Expect: exp, Why: why}})
			}
		}
	}
	for _, s := range svcs {
		if s.Spec.Type != corev1.ServiceTypeNodePort || !probeable(s) {
			continue
		}
		sp := s.Spec.Ports[0]
		local := s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		for _, n := range c.nodes {
			for _, v4 := range c.families() {
				if !serviceIP(s, v4).IsValid() {
					continue
				}
				client := outsideV4
				if !v4 {
					client = outsideV6
				}
				bs := c.backends(s, sp.Name, v4)
				src, none := n.addr(v4), "no ready endpoint"
				if local {
					// The client's address is kept, and only this node's
					// endpoints serve.
					src, none = client, "externalTrafficPolicy Local: no ready endpoint on "+n.name
					bs = slices.DeleteFunc(bs, func(b backend) bool { return b.node != n.name })
				}
				exp, why := c.expectation(src, sp.Protocol, bs, none)
				out = append(out, task{src: c.outside, addr: netip.AddrPortFrom(n.addr(v4), uint16(sp.NodePort)), timeout: time.Second,
					p: Probe{From: "outside", To: s.Namespace + "/" + s.Name, Kind: "nodeport", Via: n.name, Family: familyName(v4),
						Protocol: string(sp.Protocol), Expect: exp, Why: why}})
			}
		}
	}
	return out
}

// run performs the probes, a few at a time.
func runTasks(ts []task) []Probe {
	out := make([]Probe, len(ts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, t := range ts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = t.run()
		})
	}
	wg.Wait()
	return out
}

func (t task) run() Probe {
	p := t.p
	p.Target = t.addr.String()
	tries := 1
	if p.Expect == expectAny {
		tries = 3 // the chosen endpoint is random: try for the allowed one
	}
	for range tries {
		from, err := t.src.Probe(strings.ToLower(p.Protocol), t.addr, t.timeout)
		if err != nil {
			p.Result = resultRefused
			continue
		}
		p.Result, p.SeenAs = resultConnected, from.Addr().Unmap().String()
		break
	}
	switch p.Expect {
	case expectAllow:
		p.OK = p.Result == resultConnected
	case expectDeny:
		p.OK = p.Result == resultRefused
	default:
		p.OK = true
	}
	if p.OK && t.checkSrc && p.Result == resultConnected && p.SeenAs != t.srcAddr.String() {
		p.OK = false
		p.Why = "the server saw " + p.SeenAs + ", not the pod's own address (unexpected NAT)"
	}
	return p
}

// DNSAnswer is the answer to one service name asked from a pod.
type DNSAnswer struct {
	From   string   `json:"from"`
	Name   string   `json:"name"`   // as asked: <service>.<namespace>
	FQDN   string   `json:"fqdn"`   // the search path candidate that answered
	Answer []string `json:"answer"` // addresses, or "CNAME <target>"
	Want   []string `json:"want"`
	OK     bool     `json:"ok"`
	Error  string   `json:"error,omitempty"`
}

// dnsTasks asks, from pod p and with its resolv.conf, every service's
// name: A and AAAA, as a glibc client would (search path, ndots).
func (c *cluster) askDNS(ctx context.Context, p *pod, svcs []*corev1.Service) ([]DNSAnswer, string, error) {
	rc, err := c.resolvConf(p)
	if err != nil {
		return nil, "", err
	}
	if len(rc.Nameservers) == 0 {
		return nil, rc.String(), errors.New("no nameserver in the pod's resolv.conf")
	}
	ndots := 1
	for _, o := range rc.Options {
		if v, ok := strings.CutPrefix(o, "ndots:"); ok {
			fmt.Sscan(v, &ndots)
		}
	}
	out := make([]DNSAnswer, len(svcs))
	var wg sync.WaitGroup
	for i, s := range svcs {
		wg.Go(func() {
			a := DNSAnswer{From: p.key, Name: s.Name + "." + s.Namespace, Want: c.wantDNS(s)}
			cands := searchCandidates(a.Name, rc.Search, ndots)
			for _, fq := range cands {
				ans, rcode, err := exchange(ctx, p.ns, rc.Nameservers[0], fq)
				if err != nil {
					a.Error = err.Error()
					break
				}
				if rcode == mdns.RcodeNameError {
					continue
				}
				a.FQDN, a.Answer, a.Error = fq, ans, ""
				break
			}
			a.OK = a.Error == "" && slices.Equal(a.Answer, a.Want)
			out[i] = a
		})
	}
	wg.Wait()
	return out, rc.String(), nil
}

// searchCandidates lists the names a resolver tries for name, as glibc
// does: the name as is first when it has at least ndots dots, else after
// the search domains.
func searchCandidates(name string, search []string, ndots int) []string {
	var out []string
	for _, d := range search {
		if d != "." {
			out = append(out, name+"."+d+".")
		}
	}
	if strings.Count(name, ".") >= ndots {
		return append([]string{name + "."}, out...)
	}
	return append(out, name+".")
}

// exchange asks A and AAAA for name from inside ns; it returns the sorted
// addresses (and CNAME targets), or the rcode NXDOMAIN.
func exchange(ctx context.Context, ns *sandbox.NS, server netip.Addr, name string) ([]string, int, error) {
	var out []string
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		conn, err := ns.Dial(ctx, "udp", netip.AddrPortFrom(server, 53))
		if err != nil {
			cancel()
			return nil, 0, err
		}
		q := new(mdns.Msg)
		q.SetQuestion(name, qt)
		cl := &mdns.Client{Net: "udp", Timeout: 3 * time.Second}
		r, _, err := cl.ExchangeWithConnContext(ctx, q, &mdns.Conn{Conn: conn})
		conn.Close()
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("%s %s: %w", name, mdns.TypeToString[qt], err)
		}
		if r.Rcode == mdns.RcodeNameError {
			return nil, r.Rcode, nil
		}
		if r.Rcode != mdns.RcodeSuccess {
			return nil, r.Rcode, fmt.Errorf("%s %s: %s", name, mdns.TypeToString[qt], mdns.RcodeToString[r.Rcode])
		}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *mdns.A:
				out = append(out, rr.A.String())
			case *mdns.AAAA:
				out = append(out, rr.AAAA.String())
			case *mdns.CNAME:
				out = append(out, "CNAME "+rr.Target)
			}
		}
	}
	return sortAddrs(slices.Compact(sortAddrs(out))), mdns.RcodeSuccess, nil
}

// sortAddrs sorts addresses (IPv4 first) and other strings after them.
func sortAddrs(s []string) []string {
	slices.SortFunc(s, func(a, b string) int {
		x, errx := netip.ParseAddr(a)
		y, erry := netip.ParseAddr(b)
		switch {
		case errx == nil && erry == nil:
			return x.Compare(y)
		case errx == nil:
			return -1
		case erry == nil:
			return 1
		}
		return strings.Compare(a, b)
	})
	return s
}

// wantDNS is what the cluster DNS must answer for a service's name.
func (c *cluster) wantDNS(s *corev1.Service) []string {
	var out []string
	switch {
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		out = append(out, "CNAME "+strings.TrimSuffix(s.Spec.ExternalName, ".")+".")
	case s.Spec.ClusterIP == corev1.ClusterIPNone:
		for _, v4 := range c.families() {
			c.readyEndpoints(s, v4, func(_ *discoveryv1.EndpointSlice, ep discoveryv1.Endpoint) {
				out = append(out, ep.Addresses...)
			})
		}
	default:
		out = append(out, s.Spec.ClusterIPs...)
	}
	return sortAddrs(slices.Compact(sortAddrs(out)))
}
