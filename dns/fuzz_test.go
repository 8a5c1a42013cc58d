package dns_test

import (
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
)

func fuzzSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	add := func(name string, qtype uint16, edit ...func(*mdns.Msg)) {
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		for _, e := range edit {
			e(m)
		}
		b, err := m.Pack()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	for _, q := range zoneCases() {
		add(q.name, q.qtype)
	}
	add("big.default.svc.cluster.local.", mdns.TypeA)
	add("_http._tcp.big.default.svc.cluster.local.", mdns.TypeSRV, edns(1232))
	add("web.default.default.svc.cluster.local.", mdns.TypeA, edns(4096))
	add("example.com.", mdns.TypeA)
	add("web.default.svc.cluster.local.", mdns.TypeA, func(m *mdns.Msg) { m.SetEdns0(1232, true); m.IsEdns0().SetVersion(3) })
	add("web.default.svc.cluster.local.", mdns.TypeA, func(m *mdns.Msg) { m.Question = append(m.Question, m.Question[0]) })
	add("web.default.svc.cluster.local.", mdns.TypeA, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeUpdate })
	add(`we\.b.default.svc.cluster.local.`, mdns.TypeA)
	add(`a\000b.cluster.local.`, mdns.TypeA)
	out = append(out, []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'e'}, []byte("garbage"))
	return out
}

// FuzzServeDNS feeds arbitrary wire messages to the query path. Every
// message that unpacks gets exactly one well-formed reply that fits the
// transport; messages with a header but an unparsable body get FORMERR
// from the listener.
func FuzzServeDNS(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s, false)
		f.Add(s, true)
	}
	rec := fixture(f, dns.Config{Pods: dns.PodsInsecure})
	bigHeadless(f, rec, "big", 300)
	s, err := dns.NewServer(dns.ServerConfig{Records: rec, Autopath: dns.AutopathConfig{Enabled: true, HostSearch: []string{"corp.example"}}})
	if err != nil {
		f.Fatal(err)
	}
	_, addr := startServer(f, dns.ServerConfig{Records: rec})
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		req := new(mdns.Msg)
		if err := req.Unpack(data); err != nil {
			// The listener answers these itself: FORMERR when the header
			// parses and the message is a query, nothing otherwise.
			if len(data) < 12 || data[2]&0x80 != 0 || (data[2]>>3)&0xF != 0 || data[4] != 0 || data[5] != 1 {
				return
			}
			r := new(mdns.Msg)
			if err := r.Unpack(exchangeRaw(t, addr, netip.AddrPort{}, data)); err != nil || r.Rcode != mdns.RcodeFormatError {
				t.Fatalf("reply to an unparsable query: %v, %v", r, err)
			}
			return
		}
		w := udpFrom("10.244.1.5")
		if tcp {
			w = tcpFrom("10.244.1.5")
		}
		s.ServeDNS(w, req)
		if len(w.msgs) != 1 {
			t.Fatalf("%d replies", len(w.msgs))
		}
		r := new(mdns.Msg)
		if err := r.Unpack(w.msgs[0]); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if r.Id != req.Id || !r.Response || r.Opcode != req.Opcode {
			t.Fatalf("reply header %+v for %+v", r.MsgHdr, req.MsgHdr)
		}
		limit := 512
		if opt := req.IsEdns0(); opt != nil {
			limit = min(max(int(opt.UDPSize()), 512), 1232)
		}
		if tcp {
			limit = 65535
		}
		if len(w.msgs[0]) > limit {
			t.Fatalf("reply of %d bytes, limit %d", len(w.msgs[0]), limit)
		}
		if req.Response || len(req.Question) != 1 {
			if r.Rcode != mdns.RcodeFormatError {
				t.Fatalf("rcode %s for a malformed query", mdns.RcodeToString[r.Rcode])
			}
			return
		}
		if len(r.Question) != 1 || r.Question[0] != req.Question[0] {
			t.Fatalf("question %v, asked %v", r.Question, req.Question)
		}
		switch r.Rcode {
		case mdns.RcodeSuccess, mdns.RcodeNameError, mdns.RcodeServerFailure, mdns.RcodeRefused,
			mdns.RcodeFormatError, mdns.RcodeNotImplemented, mdns.RcodeBadVers:
		default:
			t.Fatalf("rcode %d", r.Rcode)
		}
		if (r.IsEdns0() != nil) != (req.IsEdns0() != nil) {
			t.Fatalf("EDNS in reply %v, in query %v", r.IsEdns0() != nil, req.IsEdns0() != nil)
		}
	})
}
