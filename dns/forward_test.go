package dns_test

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
)

func fwd(ups ...*upstream) []netip.AddrPort {
	var out []netip.AddrPort
	for _, u := range ups {
		out = append(out, u.addr)
	}
	return out
}

// drop never answers: clients time out.
func drop(mdns.ResponseWriter, *mdns.Msg) {}

func rcode(rc int) func(w mdns.ResponseWriter, r *mdns.Msg) {
	return func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetRcode(r, rc)
		_ = w.WriteMsg(m)
	}
}

// waitFor polls cond for up to 3 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestForwardFailoverAndHealth(t *testing.T) {
	dead := newUpstream(t, drop)
	good := newUpstream(t, answer(60, map[string]string{"a.example.": "192.0.2.1", "b.example.": "192.0.2.2", "c.example.": "192.0.2.3"}))
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Cache: dns.CacheConfig{Disabled: true},
		Forward: dns.ForwardConfig{Upstreams: fwd(dead, good), Timeout: 150 * time.Millisecond,
			HealthCheckInterval: 30 * time.Millisecond, MaxFails: 2}})

	// The first upstream times out; the second answers.
	for _, name := range []string{"a.example.", "b.example."} {
		r := ask(t, addr, "udp", name, mdns.TypeA)
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: %v", name, r)
		}
		if dead.count(name, mdns.TypeA) != 1 {
			t.Fatalf("%s: the first upstream was not tried first", name)
		}
	}
	// Two failures: the first upstream is down and tried last.
	if r := ask(t, addr, "udp", "c.example.", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("c.example.: %v", r)
	}
	if n := dead.count("c.example.", mdns.TypeA); n != 0 {
		t.Fatalf("a down upstream was tried first (%d queries)", n)
	}
	// Health checks (". NS") probe it; once it answers, it is first again.
	waitFor(t, "health checks", func() bool { return dead.count(".", mdns.TypeNS) > 0 })
	dead.set(answer(60, map[string]string{"d.example.": "192.0.2.4"}))
	waitFor(t, "recovery", func() bool {
		ask(t, addr, "udp", "d.example.", mdns.TypeA)
		return dead.count("d.example.", mdns.TypeA) > 0
	})
	if r := ask(t, addr, "udp", "d.example.", mdns.TypeA); len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "192.0.2.4") {
		t.Fatalf("after recovery: %v", r)
	}
}

func TestForwardRcodes(t *testing.T) {
	broken := newUpstream(t, rcode(mdns.RcodeServerFailure))
	refusing := newUpstream(t, rcode(mdns.RcodeRefused))
	good := newUpstream(t, answer(60, map[string]string{"a.example.": "192.0.2.1"}))
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: fwd(broken, refusing, good)}})
	r := ask(t, addr, "udp", "a.example.", mdns.TypeA)
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("SERVFAIL and REFUSED upstreams not skipped: %v", r)
	}
	// NXDOMAIN is an answer: no failover.
	r = ask(t, addr, "udp", "nope.example.", mdns.TypeA)
	if r.Rcode != mdns.RcodeNameError || broken.count("nope.example.", mdns.TypeA) != 1 || good.count("nope.example.", mdns.TypeA) != 1 {
		t.Fatalf("NXDOMAIN: %v", r)
	}

	// Only broken upstreams: their SERVFAIL is passed on, not cached.
	_, addr = startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: fwd(broken)}})
	for range 2 {
		if r := ask(t, addr, "udp", "x.example.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
			t.Fatalf("all upstreams broken: %v", r)
		}
	}
	if n := broken.count("x.example.", mdns.TypeA); n != 2 {
		t.Fatalf("SERVFAIL cached? upstream asked %d times, want 2", n)
	}
}

func TestForwardTransports(t *testing.T) {
	rec := fixture(t, dns.Config{})
	tcpOnly := newUpstream(t, answer(60, map[string]string{"a.example.": "192.0.2.1"}), "tcp")
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: fwd(tcpOnly), TCP: true}})
	if r := ask(t, addr, "udp", "a.example.", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("TCP upstream: %v", r)
	}
	if tcpOnly.countNet("a.example.", mdns.TypeA, "tcp") != 1 {
		t.Fatal("not asked over TCP")
	}

	// A truncated UDP answer is asked again over TCP; the client gets the
	// whole answer over TCP and a truncated one over UDP.
	many := func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated = true
		} else {
			for i := range 200 {
				m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
					A: net.IPv4(192, 0, 2, byte(i))})
			}
		}
		_ = w.WriteMsg(m)
	}
	tc := newUpstream(t, many)
	_, addr = startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: fwd(tc)}})
	if r := ask(t, addr, "tcp", "many.example.", mdns.TypeA); len(r.Answer) != 200 || r.Truncated {
		t.Fatalf("over TCP: %d answers, TC %v", len(r.Answer), r.Truncated)
	}
	if tc.countNet("many.example.", mdns.TypeA, "udp") != 1 || tc.countNet("many.example.", mdns.TypeA, "tcp") != 1 {
		t.Fatal("upstream not asked over UDP then TCP")
	}
	if r := ask(t, addr, "udp", "many.example.", mdns.TypeA, edns(1232)); !r.Truncated || len(r.Answer) == 0 || len(r.Answer) == 200 {
		t.Fatalf("over UDP (from the cache): %d answers, TC %v", len(r.Answer), r.Truncated)
	}
	if n := tc.count("many.example.", mdns.TypeA); n != 2 {
		t.Fatalf("upstream asked %d times, want 2 (then cached)", n)
	}
}

func TestForwardMaxConcurrent(t *testing.T) {
	release := make(chan struct{})
	slow := newUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {
		if r.Question[0].Qtype == mdns.TypeA {
			<-release
		}
		answer(60, map[string]string{"slow.example.": "192.0.2.1"})(w, r)
	})
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: fwd(slow), MaxConcurrent: 1}})
	var wg sync.WaitGroup
	var first *mdns.Msg
	wg.Go(func() { first = ask(t, addr, "udp", "slow.example.", mdns.TypeA) })
	waitFor(t, "the first query upstream", func() bool { return slow.count("slow.example.", mdns.TypeA) == 1 })
	if r := ask(t, addr, "udp", "other.example.", mdns.TypeA); r.Rcode != mdns.RcodeRefused {
		t.Errorf("beyond MaxConcurrent: %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
	close(release)
	wg.Wait()
	if first.Rcode != mdns.RcodeSuccess || len(first.Answer) != 1 {
		t.Fatalf("the query in flight: %v", first)
	}
	if r := ask(t, addr, "udp", "other.example.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("after the slot freed: %s", mdns.RcodeToString[r.Rcode])
	}
}

func TestStubDomains(t *testing.T) {
	def := newUpstream(t, answer(60, map[string]string{"www.example.com.": "192.0.2.1"}))
	corp := newUpstream(t, answer(60, map[string]string{"db.corp.example.": "198.51.100.1"}))
	lab := newUpstream(t, answer(60, map[string]string{"x.lab.corp.example.": "203.0.113.1"}))
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec,
		Forward: dns.ForwardConfig{Upstreams: fwd(def)},
		StubDomains: map[string]dns.ForwardConfig{
			"Corp.Example":      {Upstreams: fwd(corp)},
			"lab.corp.example.": {Upstreams: fwd(lab)},
		}})
	for name, want := range map[string]string{
		"www.example.com.":    "192.0.2.1",
		"DB.corp.example.":    "198.51.100.1",
		"x.lab.corp.example.": "203.0.113.1",
	} {
		r := ask(t, addr, "udp", name, mdns.TypeA)
		if len(r.Answer) != 1 || !strings.HasSuffix(r.Answer[0].String(), want) {
			t.Errorf("%s: %v, want %s", name, r.Answer, want)
		}
	}
	if def.count("db.corp.example.", mdns.TypeA)+lab.count("db.corp.example.", mdns.TypeA) != 0 {
		t.Error("a stub domain name went elsewhere")
	}
}

func TestCacheBehaviour(t *testing.T) {
	noSOA := func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeNameError)
		_ = w.WriteMsg(m)
	}
	up := newUpstream(t, answer(3600, map[string]string{"a.example.": "192.0.2.1", "nodata.example.": ""}))
	bare := newUpstream(t, noSOA)
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Cache: dns.CacheConfig{MaxTTL: 10 * time.Second, MaxNegativeTTL: 20 * time.Second},
		Forward:     dns.ForwardConfig{Upstreams: fwd(up)},
		StubDomains: map[string]dns.ForwardConfig{"bare.example.": {Upstreams: fwd(bare)}}})

	first := ask(t, addr, "udp", "a.example.", mdns.TypeA)
	second := ask(t, addr, "udp", "A.Example.", mdns.TypeA)
	if len(first.Answer) != 1 || len(second.Answer) != 1 || up.count("a.example.", mdns.TypeA) != 1 {
		t.Fatalf("positive answer not cached (case-insensitively): %v / %v", first, second)
	}
	if ttl := second.Answer[0].Header().Ttl; ttl > 10 || ttl == 0 {
		t.Errorf("cached TTL %d, want capped at 10", ttl)
	}
	if second.Question[0].Name != "A.Example." {
		t.Errorf("question %q not echoed", second.Question[0].Name)
	}
	// The DO bit is part of the key.
	ask(t, addr, "udp", "a.example.", mdns.TypeA, func(m *mdns.Msg) { m.SetEdns0(1232, true) })
	if up.count("a.example.", mdns.TypeA) != 2 {
		t.Error("a DO query was answered from a non-DO entry")
	}
	// Negative answers with an SOA are cached, capped.
	for _, q := range []struct {
		name  string
		rcode int
	}{{"nx.example.", mdns.RcodeNameError}, {"nodata.example.", mdns.RcodeSuccess}} {
		for range 2 {
			r := ask(t, addr, "udp", q.name, mdns.TypeA)
			if r.Rcode != q.rcode || len(r.Answer) != 0 || len(r.Ns) != 1 {
				t.Fatalf("%s: %v", q.name, r)
			}
			if ttl := r.Ns[0].Header().Ttl; ttl > 20 {
				t.Errorf("%s: negative TTL %d, want capped at 20", q.name, ttl)
			}
		}
		if n := up.count(q.name, mdns.TypeA); n != 1 {
			t.Errorf("%s asked %d times, want 1", q.name, n)
		}
	}
	// Without an SOA, a negative answer is not cached.
	for range 2 {
		if r := ask(t, addr, "udp", "x.bare.example.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("bare NXDOMAIN: %v", r)
		}
	}
	if n := bare.count("x.bare.example.", mdns.TypeA); n != 2 {
		t.Errorf("NXDOMAIN without SOA asked %d times, want 2", n)
	}
}

// TestLoopDetection forwards to the server itself: the loop probe comes
// back, forwarding stops with an error, the zone is still served.
func TestLoopDetection(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	rec := fixture(t, dns.Config{})
	s, addr := startServer(t, dns.ServerConfig{Records: rec, PacketConns: []net.PacketConn{pc},
		Forward: dns.ForwardConfig{Upstreams: []netip.AddrPort{self}, Timeout: 500 * time.Millisecond}})
	waitFor(t, "loop detection", func() bool { return s.ForwardLoop() != nil })
	if err := s.ForwardLoop(); !strings.Contains(err.Error(), "forwarding loop") {
		t.Fatalf("ForwardLoop: %v", err)
	}
	if r := ask(t, addr, "udp", "example.com.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("forwarded after a loop: %v", r)
	}
	if r := ask(t, addr, "udp", "web.default.svc.cluster.local.", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("zone after a loop: %v", r)
	}

	// No loop: the probe reaches the upstream and nothing comes back.
	up := newUpstream(t, answer(60, nil))
	s, _ = startServer(t, dns.ServerConfig{Records: rec, Forward: dns.ForwardConfig{Upstreams: fwd(up)}})
	waitFor(t, "the probe", func() bool {
		up.mu.Lock()
		defer up.mu.Unlock()
		for k := range up.queries {
			if strings.Contains(k, " HINFO ") {
				return true
			}
		}
		return false
	})
	time.Sleep(20 * time.Millisecond)
	if err := s.ForwardLoop(); err != nil {
		t.Fatalf("loop reported without one: %v", err)
	}
}

// TestSlowUpstreamDoesNotBlockZone holds more forwarded queries upstream
// than the server has UDP readers: names in the cluster zone must still be
// answered at once.
func TestSlowUpstreamDoesNotBlockZone(t *testing.T) {
	release := make(chan struct{})
	slow := newUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {
		if r.Question[0].Qtype == mdns.TypeA {
			<-release
		}
		answer(60, nil)(w, r)
	})
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Cache: dns.CacheConfig{Disabled: true},
		Forward: dns.ForwardConfig{Upstreams: fwd(slow), Timeout: 5 * time.Second}})
	held := 4*runtime.NumCPU() + 4
	var wg sync.WaitGroup
	for i := range held {
		wg.Go(func() {
			c := &mdns.Client{Net: "udp", Timeout: 5 * time.Second}
			if _, _, err := c.Exchange(new(mdns.Msg).SetQuestion(fmt.Sprintf("slow%d.example.", i), mdns.TypeA), addr); err != nil {
				t.Errorf("a held query: %v", err)
			}
		})
	}
	defer wg.Wait()
	defer close(release)
	waitFor(t, "the queries upstream", func() bool {
		n := 0
		for i := range held {
			n += slow.count(fmt.Sprintf("slow%d.example.", i), mdns.TypeA)
		}
		return n == held
	})
	c := &mdns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	m := new(mdns.Msg).SetQuestion("web.default.svc.cluster.local.", mdns.TypeA)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("an in-zone query while %d forwarded ones wait upstream: %v", held, err)
	}
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("in-zone answer: %v", r)
	}
}
