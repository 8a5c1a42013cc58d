package dns

import (
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
)

// Result is the answer Records gives for one question: a response code
// and the three sections of a reply (the question and header flags are
// the caller's).
type Result struct {
	Rcode  int
	Answer []mdns.RR
	Ns     []mdns.RR
	Extra  []mdns.RR
}

func want(qtype, t uint16) bool { return qtype == t || qtype == mdns.TypeANY }

func (r *Records) hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: r.ttl}
}

func (r *Records) addrRR(owner string, ip netip.Addr) mdns.RR {
	if ip.Is4() {
		return &mdns.A{Hdr: r.hdr(owner, mdns.TypeA), A: ip.AsSlice()}
	}
	return &mdns.AAAA{Hdr: r.hdr(owner, mdns.TypeAAAA), AAAA: ip.AsSlice()}
}

// addrs appends the A and AAAA records of ips that qtype asks for.
func (r *Records) addrs(out []mdns.RR, owner string, ips []netip.Addr, qtype uint16) []mdns.RR {
	for _, ip := range ips {
		if ip.Is4() && want(qtype, mdns.TypeA) || !ip.Is4() && want(qtype, mdns.TypeAAAA) {
			out = append(out, r.addrRR(owner, ip))
		}
	}
	return out
}

// SOA returns the SOA record of zone (the cluster zone or a reverse zone),
// whose minimum is the record TTL: it bounds negative caching.
func (r *Records) soa(zone string) *mdns.SOA {
	return &mdns.SOA{
		Hdr: r.hdr(zone, mdns.TypeSOA),
		Ns:  "ns.dns." + r.zone, Mbox: "hostmaster." + r.zone,
		Serial: r.serial.Load(), Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: r.ttl,
	}
}

func (r *Records) negative(rcode int, zone string) Result {
	return Result{Rcode: rcode, Ns: []mdns.RR{r.soa(zone)}}
}

// InZone reports whether name (any case) is the cluster zone or below it.
func (r *Records) InZone(name string) bool {
	_, ok := under(lowerASCII(name), r.zone)
	return ok
}

// Lookup answers one question from the index. The bool reports whether
// the name is this index's to answer: the cluster zone, a reverse zone of
// Config.ReverseCIDRs, or the reverse name of a known service or endpoint
// address. When false, the name belongs to someone else (the caller
// forwards it) and the Result is empty.
//
// In the cluster zone the answer follows DNS rules: NXDOMAIN for names
// that do not exist, NODATA (success, empty answer) for names that exist
// without records of the type, including empty non-terminals such as
// svc.<zone> and <ns>.svc.<zone>; both carry the zone SOA in Ns. Owner
// names in the answer are qname as given. Before MarkSynced, the zone is
// answered SERVFAIL.
func (r *Records) Lookup(qname string, qtype uint16) (Result, bool) {
	name := lowerASCII(qname)
	if rel, ok := under(name, r.zone); ok {
		if !r.synced.Load() {
			return Result{Rcode: mdns.RcodeServerFailure}, true
		}
		r.mu.RLock()
		res := r.zoneLookup(qname, rel, qtype)
		r.mu.RUnlock()
		return res, true
	}
	if reverseKind(name) != 0 {
		return r.reverseLookup(qname, name, qtype)
	}
	return Result{}, false
}

// zoneLookup answers a name under the zone; rel is the lowercased part
// before the zone. Called with mu read-locked.
func (r *Records) zoneLookup(qname, rel string, qtype uint16) Result {
	var l [6]string
	n := labels(rel, l[:])
	var (
		exists     bool
		ans, extra []mdns.RR
	)
	switch {
	case n < 0:
	case n == 0: // the apex
		exists = true
		if want(qtype, mdns.TypeSOA) {
			s := r.soa(r.zone)
			s.Hdr.Name = qname
			ans = append(ans, s)
		}
		if want(qtype, mdns.TypeNS) && len(r.ns) > 0 {
			ans = append(ans, &mdns.NS{Hdr: r.hdr(qname, mdns.TypeNS), Ns: "ns.dns." + r.zone})
			extra = r.addrs(extra, "ns.dns."+r.zone, r.ns, mdns.TypeANY)
		}
	case n == 1:
		switch l[0] {
		case "dns-version":
			exists = true
			if want(qtype, mdns.TypeTXT) {
				ans = append(ans, &mdns.TXT{Hdr: r.hdr(qname, mdns.TypeTXT), Txt: []string{SchemaVersion}})
			}
		case "svc":
			exists = true
		case "pod":
			exists = r.pods != PodsDisabled
		case "dns":
			exists = len(r.ns) > 0
		}
	case n == 2:
		switch l[0] {
		case "svc":
			exists = r.nsExists(l[1])
		case "pod":
			exists = r.pods != PodsDisabled && r.nsExists(l[1])
		case "dns":
			if l[1] == "ns" && len(r.ns) > 0 {
				exists = true
				ans = r.addrs(ans, qname, r.ns, qtype)
			}
		}
	case l[0] == "pod" && n == 3:
		ip, ok := parseDashed(l[2])
		if ok && r.podExists(l[1], ip) {
			exists = true
			ans = r.addrs(ans, qname, []netip.Addr{ip}, qtype)
		}
	case l[0] == "svc":
		e := r.services[svcKey{l[1], l[2]}]
		if e == nil || !e.hasSvc {
			break
		}
		switch n {
		case 3: // <svc>.<ns>.svc
			switch e.kind {
			case kindClusterIP:
				exists = true
				ans = r.addrs(ans, qname, e.ips, qtype)
			case kindHeadless:
				// No ready endpoint: no records, and the name does not
				// exist (CoreDNS answers NXDOMAIN too).
				if e.ready > 0 {
					exists = true
					ans = r.addrs(ans, qname, e.readyAddrs(), qtype)
				}
			case kindExternal:
				exists = true
				ans = append(ans, &mdns.CNAME{Hdr: r.hdr(qname, mdns.TypeCNAME), Target: e.external})
			}
		case 4: // _<proto>.<svc>.<ns>.svc or <endpoint>.<svc>.<ns>.svc
			if strings.HasPrefix(l[3], "_") {
				if proto, ok := protoLabel(l[3]); ok {
					exists, _, _ = r.srv(nil, qname, e, "", proto, 0)
				}
			} else if e.kind == kindHeadless && e.ready > 0 {
				if ips := e.endpointAddrs(l[3]); len(ips) > 0 {
					exists = true
					ans = r.addrs(ans, qname, ips, qtype)
				}
			}
		case 5: // _<port>._<proto>.<svc>.<ns>.svc
			proto, ok := protoLabel(l[3])
			if ok && len(l[4]) > 1 && l[4][0] == '_' {
				exists, ans, extra = r.srv(ans, qname, e, l[4][1:], proto, qtype)
			}
		}
	}
	if !exists {
		return r.negative(mdns.RcodeNameError, r.zone)
	}
	if len(ans) == 0 {
		return r.negative(mdns.RcodeSuccess, r.zone)
	}
	return Result{Answer: ans, Extra: extra}
}

func protoLabel(l string) (uint8, bool) {
	switch l {
	case "_tcp":
		return protoTCP, true
	case "_udp":
		return protoUDP, true
	case "_sctp":
		return protoSCTP, true
	}
	return 0, false
}

func (r *Records) podExists(ns string, ip netip.Addr) bool {
	switch r.pods {
	case PodsInsecure:
		return r.nsExists(ns)
	case PodsVerified:
		for _, p := range r.podsByIP[ip] {
			if p.ns.name == ns {
				return true
			}
		}
	}
	return false
}

// srv finds the SRV records of _<port>._<proto> under service e. With
// port "" it only reports whether any named port of that protocol has
// records (the _<proto> empty non-terminal). qtype 0 builds nothing.
func (r *Records) srv(ans []mdns.RR, qname string, e *svcEntry, name string, proto uint8, qtype uint16) (bool, []mdns.RR, []mdns.RR) {
	match := func(p port) bool {
		return p.name != "" && p.proto == proto && (name == "" || p.name == name)
	}
	build := qtype != 0 && want(qtype, mdns.TypeSRV)
	var extra []mdns.RR
	first := len(ans)
	switch e.kind {
	case kindClusterIP:
		for _, p := range e.ports {
			if !match(p) {
				continue
			}
			if !build {
				return true, ans, nil
			}
			target := e.fqdn(r.zone)
			ans = append(ans, &mdns.SRV{Hdr: r.hdr(qname, mdns.TypeSRV), Port: p.port, Target: target})
			extra = r.addrs(extra, target, e.ips, mdns.TypeANY)
		}
		if len(ans) == first {
			return false, ans, nil
		}
	case kindHeadless:
		if e.ready == 0 {
			return false, ans, nil
		}
		type key struct {
			host string
			port uint16
		}
		var seenSRV map[key]bool
		var seenAddr map[netip.Addr]bool
		if len(e.slices) > 1 {
			seenSRV, seenAddr = map[key]bool{}, map[netip.Addr]bool{}
		}
		suffix := "." + e.fqdn(r.zone)
		found := false
		for _, s := range e.slices {
			for _, p := range s.ports {
				if !match(p) || len(s.eps) == 0 {
					continue
				}
				found = true
				if !build {
					return true, ans, nil
				}
				for _, ep := range s.eps {
					host := ep.hostname()
					target := host + suffix
					if seenSRV != nil {
						if k := (key{host, p.port}); !seenSRV[k] {
							seenSRV[k] = true
							ans = append(ans, &mdns.SRV{Hdr: r.hdr(qname, mdns.TypeSRV), Port: p.port, Target: target})
						}
						if seenAddr[ep.addr] {
							continue
						}
						seenAddr[ep.addr] = true
					} else {
						ans = append(ans, &mdns.SRV{Hdr: r.hdr(qname, mdns.TypeSRV), Port: p.port, Target: target})
					}
					extra = append(extra, r.addrRR(target, ep.addr))
				}
			}
		}
		if !found {
			return false, ans, nil
		}
	default:
		return false, ans, nil
	}
	// Weights as CoreDNS computes them: an equal share of 100, at least 1.
	if n := len(ans) - first; n > 0 {
		w := uint16(100 / n)
		if w == 0 {
			w = 1
		}
		for _, rr := range ans[first:] {
			rr.(*mdns.SRV).Weight = w
		}
	}
	return true, ans, extra
}

// reverseLookup answers a name under in-addr.arpa. or ip6.arpa.
func (r *Records) reverseLookup(qname, name string, qtype uint16) (Result, bool) {
	auth := ""
	for _, z := range r.reverse {
		if _, ok := under(name, z); ok {
			auth = z
			break
		}
	}
	if auth != "" && !r.synced.Load() {
		return Result{Rcode: mdns.RcodeServerFailure}, true
	}
	ip, full := parseReverse(name)
	if full {
		r.mu.RLock()
		refs := r.ptr[ip]
		var ans []mdns.RR
		if len(refs) > 0 && want(qtype, mdns.TypePTR) {
			ans = make([]mdns.RR, 0, len(refs))
			for _, ref := range refs {
				target := ref.svc.fqdn(r.zone)
				switch ref.host {
				case "":
				case dashedHost:
					target = dashed(ip) + "." + target
				default:
					target = ref.host + "." + target
				}
				ans = append(ans, &mdns.PTR{Hdr: r.hdr(qname, mdns.TypePTR), Ptr: target})
			}
		}
		known := len(refs) > 0
		r.mu.RUnlock()
		switch {
		case len(ans) > 0:
			return Result{Answer: ans}, true
		case known && auth != "":
			return r.negative(mdns.RcodeSuccess, auth), true
		case auth == "":
			return Result{}, false
		}
		return r.negative(mdns.RcodeNameError, auth), true
	}
	if auth == "" {
		return Result{}, false
	}
	// A partial reverse name (fewer labels than an address) may have
	// addresses below it: answer NODATA, never NXDOMAIN. Longer or
	// malformed names do not exist.
	rel, _ := under(name, arpa4)
	max := 4
	if reverseKind(name) == 6 {
		rel, _ = under(name, arpa6)
		max = 32
	}
	if n := strings.Count(rel, ".") + 1; n < max && strings.IndexByte(rel, '\\') < 0 {
		return r.negative(mdns.RcodeSuccess, auth), true
	}
	return r.negative(mdns.RcodeNameError, auth), true
}
