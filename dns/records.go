package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PodMode says which pod records (<dashed-ip>.<ns>.pod.<zone>) exist, as
// CoreDNS's "pods" option does.
type PodMode string

// Pod record modes. The zero value means PodsDisabled.
const (
	// PodsDisabled: no pod records; pod.<zone> and everything under it is
	// NXDOMAIN.
	PodsDisabled PodMode = "disabled"
	// PodsInsecure: any well-formed dashed address in a known namespace
	// answers with that address (kube-dns compatible, spoofable).
	PodsInsecure PodMode = "insecure"
	// PodsVerified: the address must belong to a known pod in that
	// namespace.
	PodsVerified PodMode = "verified"
)

// DefaultZone is the cluster zone when Config.Zone is empty.
const DefaultZone = "cluster.local."

// DefaultTTL is the record TTL when Config.TTL is zero.
const DefaultTTL = 5 * time.Second

// SchemaVersion is the Kubernetes DNS-Based Service Discovery schema
// version served at dns-version.<zone> (TXT).
const SchemaVersion = "1.1.0"

// Config configures Records.
type Config struct {
	// Zone is the cluster zone (default "cluster.local."), with or without
	// the trailing dot; any case.
	Zone string
	// TTL of every record in the zone, and the SOA minimum (negative TTL).
	// Whole seconds; default 5 s; at most one day.
	TTL time.Duration
	// Pods selects pod records; "" means PodsDisabled.
	Pods PodMode
	// Nameservers, when set, are the addresses of this DNS service (its
	// cluster IPs): the zone apex then has an NS record ns.dns.<zone>
	// whose A/AAAA records are these addresses. When empty, NS queries at
	// the apex get NODATA.
	Nameservers []netip.Addr
	// ReverseCIDRs are address ranges (service and pod CIDRs) whose
	// reverse zones this server is authoritative for: a PTR query for an
	// unknown address in them is NXDOMAIN instead of being forwarded.
	// IPv4 prefixes must end on an octet boundary, IPv6 on a nibble one.
	// PTR queries for known addresses are answered whatever this holds.
	ReverseCIDRs []netip.Prefix
}

type svcKey struct{ ns, name string }

// nsEntry is one namespace: interned name, whether a Namespace object is
// known, and what refers to it.
type nsEntry struct {
	name     string
	known    bool
	services int32 // svcEntries with a Service
	pods     int32
	refs     int32 // svcEntries (with or without a Service) and pods
}

func (n *nsEntry) exists() bool { return n.known || n.services > 0 || n.pods > 0 }

type svcKind uint8

const (
	kindClusterIP svcKind = iota
	kindHeadless
	kindExternal
)

// svcEntry is everything kept for one service name: the service (once
// known), its slices, and for large headless services an index of their
// endpoint names.
type svcEntry struct {
	ns       *nsEntry
	name     string
	hasSvc   bool
	kind     svcKind
	ready    int32 // headless: ready endpoint addresses
	ips      []netip.Addr
	ports    []port
	external string // FQDN, lowercased
	slices   []*sliceEntry
	// hosts maps endpoint names to addresses, for headless services with
	// more than hostIndexMin ready addresses (smaller ones are scanned).
	hosts map[string][]netip.Addr
}

// hostIndexMin is the number of ready endpoints above which a headless
// service gets a hostname index.
const hostIndexMin = 16

func (e *svcEntry) fqdn(zone string) string {
	return e.name + "." + e.ns.name + ".svc." + zone
}

// port is a Port as kept in the index (24 bytes).
type port struct {
	name  string // lowercased; "" for an unnamed port
	port  uint16
	proto uint8
}

const (
	protoTCP uint8 = iota + 1
	protoUDP
	protoSCTP
)

func protoCode(p Protocol) uint8 {
	switch p {
	case TCP:
		return protoTCP
	case UDP:
		return protoUDP
	}
	return protoSCTP
}

// sliceEntry is an EndpointSlice reduced to what DNS answers from it.
// Endpoints are kept only while the service may be headless (unknown yet
// or headless): a ClusterIP service's endpoints have no records.
type sliceEntry struct {
	name  string
	ports []port
	eps   []epRec // ready endpoints, one per address
}

type epRec struct {
	addr netip.Addr
	host string // the endpoint hostname; "" means dashed(addr)
}

func (r epRec) hostname() string {
	if r.host != "" {
		return r.host
	}
	return dashed(r.addr)
}

// ptrKey is the host of an endpoint in the PTR index: its hostname, or
// dashedHost for the dashed address (derived from the key, not stored).
func (r epRec) ptrKey() string {
	if r.host != "" {
		return r.host
	}
	return dashedHost
}

// dashedHost marks, in a ptrRef, an endpoint named by its dashed address.
// It cannot be a hostname (a label cannot start with '-').
const dashedHost = "-"

// ptrRef is one PTR target: a service's name (host "") or one of its
// endpoints' names.
type ptrRef struct {
	svc  *svcEntry
	host string
}

type podEntry struct {
	ns  *nsEntry
	ips []netip.Addr
}

// Records is the cluster zone: an in-memory index of services, endpoints,
// pods and namespaces, updated one object at a time by the On* event
// methods, and answered from by Lookup. Every lookup is a few map reads;
// nothing is cached, so an event is visible to the next query.
//
// The event methods are idempotent: feeding an object again leaves the
// index as it was, deleting an unknown object does nothing. Objects are
// keyed by namespace and name (a slice also by its service), so an update
// needs only the new object; old, when given, matters only if the key
// changed. An invalid object is refused with an error wrapping ErrInvalid
// and changes nothing.
//
// All methods are safe for concurrent use.
type Records struct {
	zone    string
	ttl     uint32
	pods    PodMode
	ns      []netip.Addr
	reverse []string // reverse zones, lowercased FQDNs, longest first

	synced atomic.Bool
	serial atomic.Uint32
	gen    atomic.Uint64 // bumped by every change, with mu held

	mu         sync.RWMutex
	namespaces map[string]*nsEntry
	services   map[svcKey]*svcEntry
	ptr        map[netip.Addr][]ptrRef
	podsByName map[svcKey]*podEntry
	podsByIP   map[netip.Addr][]*podEntry
}

// NewRecords checks cfg and returns an empty index. Until MarkSynced is
// called, every query in the zone is answered SERVFAIL.
func NewRecords(cfg Config) (*Records, error) {
	zone := DefaultZone
	if cfg.Zone != "" {
		var err error
		if zone, err = canonicalDomain("Zone", cfg.Zone); err != nil {
			return nil, err
		}
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second || cfg.TTL > 24*time.Hour || cfg.TTL%time.Second != 0 {
		return nil, invalid("config", "TTL", cfg.TTL, "want whole seconds between 1s and 24h")
	}
	switch cfg.Pods {
	case "":
		cfg.Pods = PodsDisabled
	case PodsDisabled, PodsInsecure, PodsVerified:
	default:
		return nil, invalid("config", "Pods", string(cfg.Pods), "want disabled, insecure or verified")
	}
	for i, ip := range cfg.Nameservers {
		if !validAddr(ip) {
			return nil, invalid("config", fmt.Sprintf("Nameservers[%d]", i), ip, "not a unicast address")
		}
	}
	r := &Records{
		zone: zone, ttl: uint32(cfg.TTL / time.Second), pods: cfg.Pods,
		ns:         slices.Clone(cfg.Nameservers),
		namespaces: map[string]*nsEntry{},
		services:   map[svcKey]*svcEntry{},
		ptr:        map[netip.Addr][]ptrRef{},
		podsByName: map[svcKey]*podEntry{},
		podsByIP:   map[netip.Addr][]*podEntry{},
	}
	for i, p := range cfg.ReverseCIDRs {
		z, err := reverseZone(p)
		if !p.IsValid() || err != nil {
			why := "not a prefix"
			if err != nil {
				why = err.Error()
			}
			return nil, invalid("config", fmt.Sprintf("ReverseCIDRs[%d]", i), p, why)
		}
		r.reverse = append(r.reverse, z)
	}
	slices.SortFunc(r.reverse, func(a, b string) int { return len(b) - len(a) })
	r.touch()
	return r, nil
}

// Zone returns the cluster zone, lowercased, with the trailing dot.
func (r *Records) Zone() string { return r.zone }

// TTL returns the record TTL in seconds.
func (r *Records) TTL() uint32 { return r.ttl }

// MarkSynced tells Records that the initial list of every object kind
// has been fed (informers synced). Before, queries in the zone get
// SERVFAIL: an incomplete index must not deny names that exist.
func (r *Records) MarkSynced() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced.Store(true)
	r.gen.Add(1)
}

// HasSynced reports whether MarkSynced was called.
func (r *Records) HasSynced() bool { return r.synced.Load() }

// touch records a change, for the SOA serial (Unix seconds of the last
// change, as CoreDNS does) and for the generation. Called with mu held,
// so that a reader that sees the new generation sees the change.
func (r *Records) touch() {
	r.serial.Store(uint32(time.Now().Unix()))
	r.gen.Add(1)
}

// generation identifies the current contents: it changes with every
// change. Replies built after reading generation g reflect at least
// generation g.
func (r *Records) generation() uint64 { return r.gen.Load() }

// nsRef returns the namespace entry for name, creating it, with one more
// reference. Called with mu held.
func (r *Records) nsRef(name string) *nsEntry {
	n := r.namespaces[name]
	if n == nil {
		n = &nsEntry{name: strings.Clone(name)}
		r.namespaces[n.name] = n
	}
	n.refs++
	return n
}

// nsUnref drops one reference, forgetting the namespace when nothing
// refers to it and no Namespace object is known.
func (r *Records) nsUnref(n *nsEntry) {
	n.refs--
	r.nsGC(n)
}

func (r *Records) nsGC(n *nsEntry) {
	if n.refs <= 0 && !n.known && r.namespaces[n.name] == n {
		delete(r.namespaces, n.name)
	}
}

func (r *Records) nsExists(name string) bool {
	n := r.namespaces[name]
	return n != nil && n.exists()
}

// entry returns the service entry for k, creating it. Called with mu held.
func (r *Records) entry(k svcKey) *svcEntry {
	e := r.services[k]
	if e == nil {
		n := r.nsRef(k.ns)
		e = &svcEntry{ns: n, name: strings.Clone(k.name)}
		r.services[svcKey{n.name, e.name}] = e
	}
	return e
}

// dropIfEmpty forgets an entry with neither a service nor slices.
func (r *Records) dropIfEmpty(e *svcEntry) {
	if e.hasSvc || len(e.slices) > 0 {
		return
	}
	delete(r.services, svcKey{e.ns.name, e.name})
	r.nsUnref(e.ns)
}

func (r *Records) ptrAdd(ip netip.Addr, ref ptrRef) {
	refs := r.ptr[ip]
	if slices.Contains(refs, ref) {
		return
	}
	if refs == nil {
		refs = make([]ptrRef, 0, 1)
	}
	r.ptr[ip] = append(refs, ref)
}

func (r *Records) ptrDel(ip netip.Addr, ref ptrRef) {
	refs := r.ptr[ip]
	i := slices.Index(refs, ref)
	if i < 0 {
		return
	}
	if len(refs) == 1 {
		delete(r.ptr, ip)
		return
	}
	r.ptr[ip] = slices.Delete(slices.Clone(refs), i, i+1)
}

// unpublish removes the PTR records an entry contributes.
func (r *Records) unpublish(e *svcEntry) {
	if !e.hasSvc {
		return
	}
	for _, ip := range e.ips {
		r.ptrDel(ip, ptrRef{svc: e})
	}
	if e.kind == kindHeadless {
		for _, s := range e.slices {
			for _, ep := range s.eps {
				r.ptrDel(ep.addr, ptrRef{svc: e, host: ep.ptrKey()})
			}
		}
	}
	e.ready, e.hosts = 0, nil
}

// publish adds an entry's PTRs and, for a headless service, counts and
// indexes its ready endpoints.
func (r *Records) publish(e *svcEntry) {
	e.ready, e.hosts = 0, nil
	if !e.hasSvc {
		return
	}
	switch e.kind {
	case kindClusterIP:
		for _, ip := range e.ips {
			r.ptrAdd(ip, ptrRef{svc: e})
		}
	case kindHeadless:
		for _, s := range e.slices {
			for _, ep := range s.eps {
				r.ptrAdd(ep.addr, ptrRef{svc: e, host: ep.ptrKey()})
			}
			e.ready += int32(len(s.eps))
		}
		if e.ready > hostIndexMin {
			e.hosts = map[string][]netip.Addr{}
			for _, s := range e.slices {
				for _, ep := range s.eps {
					h := ep.hostname()
					if !slices.Contains(e.hosts[h], ep.addr) {
						e.hosts[h] = append(e.hosts[h], ep.addr)
					}
				}
			}
		}
	}
}

// endpointAddrs returns the addresses of a headless service's endpoint
// named host, without duplicates. Called with mu read-locked.
func (e *svcEntry) endpointAddrs(host string) []netip.Addr {
	if e.hosts != nil {
		return e.hosts[host]
	}
	var out []netip.Addr
	dashedIP, isDashed := parseDashed(host)
	for _, s := range e.slices {
		for _, ep := range s.eps {
			match := ep.host == host
			if ep.host == "" {
				match = isDashed && ep.addr == dashedIP && dashed(ep.addr) == host
			}
			if match && !slices.Contains(out, ep.addr) {
				out = append(out, ep.addr)
			}
		}
	}
	return out
}

// readyAddrs returns a headless service's ready addresses without
// duplicates. Called with mu read-locked.
func (e *svcEntry) readyAddrs() []netip.Addr {
	out := make([]netip.Addr, 0, e.ready)
	if len(e.slices) == 1 {
		for _, ep := range e.slices[0].eps {
			out = append(out, ep.addr)
		}
		return out
	}
	seen := make(map[netip.Addr]struct{}, e.ready)
	for _, s := range e.slices {
		for _, ep := range s.eps {
			if _, dup := seen[ep.addr]; !dup {
				seen[ep.addr] = struct{}{}
				out = append(out, ep.addr)
			}
		}
	}
	return out
}

func lowerPorts(in []Port) []port {
	if len(in) == 0 {
		return nil
	}
	out := make([]port, len(in))
	for i, p := range in {
		out[i] = port{name: lowerASCII(p.Name), proto: protoCode(p.Protocol), port: p.Port}
	}
	return out
}

// OnServiceAdd records a new Service. An invalid one is refused with an
// error and changes nothing.
func (r *Records) OnServiceAdd(s *Service) error { return r.OnServiceUpdate(nil, s) }

// OnServiceUpdate records a changed Service (old may be nil). Only that
// service's records change.
func (r *Records) OnServiceUpdate(old, s *Service) error {
	if s == nil {
		return fmt.Errorf("%w: nil Service", ErrInvalid)
	}
	if err := s.Validate(); err != nil {
		return err
	}
	k := svcKey{lowerASCII(s.Namespace), lowerASCII(s.Name)}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.touch()
	if old != nil {
		if prev := (svcKey{lowerASCII(old.Namespace), lowerASCII(old.Name)}); prev != k {
			r.deleteService(prev)
		}
	}
	e := r.entry(k)
	r.unpublish(e)
	if !e.hasSvc {
		e.hasSvc = true
		e.ns.services++
	}
	e.ips = slices.Clone(s.ClusterIPs)
	e.ports = lowerPorts(s.Ports)
	e.external = ""
	switch {
	case s.ExternalName != "":
		e.kind = kindExternal
		e.external = lowerASCII(strings.TrimSuffix(s.ExternalName, ".")) + "."
	case len(s.ClusterIPs) == 0:
		e.kind = kindHeadless
	default:
		e.kind = kindClusterIP
	}
	if e.kind != kindHeadless {
		// Endpoints of services with a virtual IP (or a CNAME) have no
		// records; keep only the slice names.
		for _, sl := range e.slices {
			sl.eps = nil
		}
	}
	r.publish(e)
	return nil
}

// OnServiceDelete records a deleted Service. Its slices, if any remain,
// are kept until they are deleted too.
func (r *Records) OnServiceDelete(s *Service) {
	if s == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleteService(svcKey{lowerASCII(s.Namespace), lowerASCII(s.Name)})
	r.touch()
}

func (r *Records) deleteService(k svcKey) {
	e := r.services[k]
	if e == nil || !e.hasSvc {
		return
	}
	r.unpublish(e)
	e.hasSvc = false
	e.ns.services--
	e.ips, e.ports, e.external = nil, nil, ""
	r.dropIfEmpty(e)
}

// OnEndpointSliceAdd records a new EndpointSlice.
func (r *Records) OnEndpointSliceAdd(es *EndpointSlice) error {
	return r.OnEndpointSliceUpdate(nil, es)
}

// OnEndpointSliceUpdate records a changed EndpointSlice (old may be nil).
// Only the owning service's records change.
func (r *Records) OnEndpointSliceUpdate(old, es *EndpointSlice) error {
	if es == nil {
		return fmt.Errorf("%w: nil EndpointSlice", ErrInvalid)
	}
	if err := es.Validate(); err != nil {
		return err
	}
	k := svcKey{lowerASCII(es.Namespace), lowerASCII(es.Service)}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.touch()
	if old != nil {
		if prev := (svcKey{lowerASCII(old.Namespace), lowerASCII(old.Service)}); prev != k || old.Name != es.Name {
			r.deleteSlice(prev, old.Name)
		}
	}
	e := r.entry(k)
	sl := &sliceEntry{name: es.Name, ports: lowerPorts(es.Ports)}
	if !e.hasSvc || e.kind == kindHeadless {
		n := 0
		for _, ep := range es.Endpoints {
			if ep.Ready {
				n += len(ep.Addresses)
			}
		}
		if n > 0 {
			sl.eps = make([]epRec, 0, n)
			for _, ep := range es.Endpoints {
				if !ep.Ready {
					continue
				}
				for _, a := range ep.Addresses {
					sl.eps = append(sl.eps, epRec{addr: a, host: lowerASCII(ep.Hostname)})
				}
			}
		}
	}
	// Only a headless service's records depend on its slices.
	republish := !e.hasSvc || e.kind == kindHeadless
	if republish {
		r.unpublish(e)
	}
	if i := slices.IndexFunc(e.slices, func(s *sliceEntry) bool { return s.name == es.Name }); i >= 0 {
		sl.name = e.slices[i].name
		e.slices[i] = sl
	} else {
		sl.name = strings.Clone(es.Name)
		e.slices = append(e.slices, sl)
	}
	if republish {
		r.publish(e)
	}
	return nil
}

// OnEndpointSliceDelete records a deleted EndpointSlice.
func (r *Records) OnEndpointSliceDelete(es *EndpointSlice) {
	if es == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleteSlice(svcKey{lowerASCII(es.Namespace), lowerASCII(es.Service)}, es.Name)
	r.touch()
}

func (r *Records) deleteSlice(k svcKey, name string) {
	e := r.services[k]
	if e == nil {
		return
	}
	i := slices.IndexFunc(e.slices, func(s *sliceEntry) bool { return s.name == name })
	if i < 0 {
		return
	}
	r.unpublish(e)
	e.slices = slices.Delete(e.slices, i, i+1)
	if len(e.slices) == 0 {
		e.slices = nil
	}
	r.publish(e)
	r.dropIfEmpty(e)
}

// OnPodAdd records a new Pod.
func (r *Records) OnPodAdd(p *Pod) error { return r.OnPodUpdate(nil, p) }

// OnPodUpdate records a changed Pod (old may be nil): its addresses
// replace the ones recorded before.
func (r *Records) OnPodUpdate(old, p *Pod) error {
	if p == nil {
		return fmt.Errorf("%w: nil Pod", ErrInvalid)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	k := svcKey{lowerASCII(p.Namespace), p.Name}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.touch()
	if old != nil {
		if prev := (svcKey{lowerASCII(old.Namespace), old.Name}); prev != k {
			r.deletePod(prev)
		}
	}
	pe := r.podsByName[k]
	if pe == nil {
		n := r.nsRef(k.ns)
		n.pods++
		pe = &podEntry{ns: n}
		r.podsByName[svcKey{n.name, strings.Clone(k.name)}] = pe
	}
	r.podUnindex(pe)
	pe.ips = slices.Clone(p.IPs)
	for _, ip := range pe.ips {
		if !slices.Contains(r.podsByIP[ip], pe) {
			r.podsByIP[ip] = append(r.podsByIP[ip], pe)
		}
	}
	return nil
}

// OnPodDelete records a deleted Pod.
func (r *Records) OnPodDelete(p *Pod) {
	if p == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deletePod(svcKey{lowerASCII(p.Namespace), p.Name})
	r.touch()
}

func (r *Records) podUnindex(pe *podEntry) {
	for _, ip := range pe.ips {
		list := r.podsByIP[ip]
		if i := slices.Index(list, pe); i >= 0 {
			if len(list) == 1 {
				delete(r.podsByIP, ip)
			} else {
				r.podsByIP[ip] = slices.Delete(slices.Clone(list), i, i+1)
			}
		}
	}
}

func (r *Records) deletePod(k svcKey) {
	pe := r.podsByName[k]
	if pe == nil {
		return
	}
	r.podUnindex(pe)
	delete(r.podsByName, k)
	pe.ns.pods--
	r.nsUnref(pe.ns)
}

// OnNamespaceAdd records a Namespace: <ns>.svc.<zone> exists from now on.
func (r *Records) OnNamespaceAdd(n *Namespace) error {
	if n == nil {
		return fmt.Errorf("%w: nil Namespace", ErrInvalid)
	}
	if err := n.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.nsRef(lowerASCII(n.Name))
	e.known = true
	e.refs--
	r.touch()
	return nil
}

// OnNamespaceDelete records a deleted Namespace. Services and pods still
// recorded in it keep it in existence until they are deleted too.
func (r *Records) OnNamespaceDelete(n *Namespace) {
	if n == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.namespaces[lowerASCII(n.Name)]; e != nil {
		e.known = false
		r.nsGC(e)
	}
	r.touch()
}

// PodNamespace returns the namespace of the pod with address ip, when
// exactly one namespace has a pod with it.
func (r *Records) PodNamespace(ip netip.Addr) (string, bool) {
	ip = ip.Unmap()
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.podsByIP[ip]
	if len(list) == 0 {
		return "", false
	}
	ns := list[0].ns
	for _, p := range list[1:] {
		if p.ns != ns {
			return "", false
		}
	}
	return ns.name, true
}

// Stats counts what the index holds.
type Stats struct {
	Namespaces, Services, EndpointSlices, Pods, PTRs int
}

// Stats returns the current counts.
func (r *Records) Stats() Stats {
	r.mu.RLock()
	defer r.mu.RUnlock()
	st := Stats{Namespaces: len(r.namespaces), Pods: len(r.podsByName), PTRs: len(r.ptr)}
	for _, e := range r.services {
		if e.hasSvc {
			st.Services++
		}
		st.EndpointSlices += len(e.slices)
	}
	return st
}
