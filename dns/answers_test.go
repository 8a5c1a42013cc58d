package dns_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kubewire/kubewire/dns"
)

// exchangeRaw sends one wire query over UDP from a socket bound to from
// (zero: any loopback port) and returns the raw reply.
func exchangeRaw(t testing.TB, addr string, from netip.AddrPort, q []byte) []byte {
	t.Helper()
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(from), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return buf[:n]
}

func packQuery(t testing.TB, id uint16, name string, qtype uint16, edit ...func(*mdns.Msg)) []byte {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = id
	for _, e := range edit {
		e(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reuseServers returns a server that reuses replies and one that does
// not, over the same records (the fixture and a headless service "big"
// with n endpoints), and the questions to ask both: every zone case and
// big's A and SRV.
func reuseServers(t *testing.T, n int) (reusing, plain string, questions []zoneCase) {
	rec := fixture(t, dns.Config{Pods: dns.PodsVerified})
	bigHeadless(t, rec, "big", n)
	_, reusing = startServer(t, dns.ServerConfig{Records: rec})
	_, plain = startServer(t, dns.ServerConfig{Records: rec, ZoneAnswers: dns.ZoneAnswerConfig{Disabled: true}})
	questions = append([]zoneCase{{name: "big.default.svc.cluster.local.", qtype: mdns.TypeA},
		{name: "_http._tcp.big.default.svc.cluster.local.", qtype: mdns.TypeSRV}}, zoneCases()...)
	return reusing, plain, questions
}

// TestZoneAnswerReuse asks every zone question several times, with
// variations of ID, case, flags and EDNS, of a server that reuses replies
// and of one that does not: every reply must be the same bytes.
func TestZoneAnswerReuse(t *testing.T) {
	reusing, plain, questions := reuseServers(t, 300)
	variants := []struct {
		name string
		edit []func(*mdns.Msg)
	}{
		{"plain", nil},
		{"no RD", []func(*mdns.Msg){func(m *mdns.Msg) { m.RecursionDesired = false }}},
		{"CD", []func(*mdns.Msg){func(m *mdns.Msg) { m.CheckingDisabled = true }}},
		{"EDNS 1232", []func(*mdns.Msg){edns(1232)}},
		{"EDNS 4096 DO", []func(*mdns.Msg){func(m *mdns.Msg) { m.SetEdns0(4096, true) }}},
		{"EDNS 100", []func(*mdns.Msg){edns(100)}},
		{"EDNS cookie", []func(*mdns.Msg){func(m *mdns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &mdns.EDNS0_COOKIE{Code: mdns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
		}}},
	}
	id := uint16(1)
	for _, q := range questions {
		for _, v := range variants {
			var first []byte
			for round := range 3 {
				id++
				query := packQuery(t, id, q.name, q.qtype, v.edit...)
				want := exchangeRaw(t, plain, netip.AddrPort{}, query)
				got := exchangeRaw(t, reusing, netip.AddrPort{}, query)
				if !bytes.Equal(got, want) {
					t.Fatalf("%s %s (%s) round %d:\n reused %x\n wanted %x", q.name, mdns.TypeToString[q.qtype], v.name, round, got, want)
				}
				if binary.BigEndian.Uint16(got) != id {
					t.Fatalf("reply ID %d, want %d", binary.BigEndian.Uint16(got), id)
				}
				if round == 0 {
					first = got
				}
			}
			if len(first) < 12 {
				t.Fatalf("%s: short reply %x", q.name, first)
			}
		}
	}
}

// TestZoneAnswerReuseSeesEvents: a change to Records is in the next
// answer, also for a question whose reply was kept.
func TestZoneAnswerReuseSeesEvents(t *testing.T) {
	rec := fixture(t, dns.Config{})
	_, addr := startServer(t, dns.ServerConfig{Records: rec})
	const name = "fresh.default.svc.cluster.local."
	askA := func() *mdns.Msg {
		r := new(mdns.Msg)
		if err := r.Unpack(exchangeRaw(t, addr, netip.AddrPort{}, packQuery(t, 7, name, mdns.TypeA))); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for range 2 {
		if r := askA(); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("before the service: %v", r)
		}
	}
	svc := &dns.Service{Namespace: "default", Name: "fresh", ClusterIPs: []netip.Addr{ip("10.96.5.1")}}
	for i, step := range []struct {
		apply func() error
		want  string
	}{
		{func() error { return rec.OnServiceAdd(svc) }, name + " A 10.96.5.1"},
		{func() error {
			n := *svc
			n.ClusterIPs = []netip.Addr{ip("10.96.5.2")}
			return rec.OnServiceUpdate(svc, &n)
		}, name + " A 10.96.5.2"},
		{func() error { rec.OnServiceDelete(svc); return nil }, ""},
	} {
		for range 3 {
			askA() // keeps the reply of the current state
		}
		if err := step.apply(); err != nil {
			t.Fatal(err)
		}
		r := askA()
		switch {
		case step.want == "" && r.Rcode != mdns.RcodeNameError:
			t.Fatalf("step %d: after delete: %v", i, r)
		case step.want != "" && (len(r.Answer) != 1 || rrText(r.Answer[0]) != step.want):
			t.Fatalf("step %d: got %v, want %s", i, r.Answer, step.want)
		}
	}
}

// TestZoneAnswerReuseAutopath: with autopath, a name below svc.<zone>
// that does not exist is answered per client; its NXDOMAIN for one client
// must not be reused for a client of the namespace the search finds it
// in.
func TestZoneAnswerReuseAutopath(t *testing.T) {
	rec := fixture(t, dns.Config{})
	if err := rec.OnPodAdd(&dns.Pod{Namespace: "default", Name: "client", IPs: []netip.Addr{ip("127.0.0.2")}}); err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Autopath: dns.AutopathConfig{Enabled: true}})
	const name = "web.default.default.svc.cluster.local."
	unknown, known := netip.AddrPort{}, ipp("127.0.0.2:0")
	for i, from := range []netip.AddrPort{unknown, unknown, known, unknown, known} {
		r := new(mdns.Msg)
		if err := r.Unpack(exchangeRaw(t, addr, from, packQuery(t, uint16(i), name, mdns.TypeA))); err != nil {
			t.Fatal(err)
		}
		switch from {
		case unknown:
			if r.Rcode != mdns.RcodeNameError {
				t.Fatalf("query %d from a client of no known namespace: %v", i, r)
			}
		case known:
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 2 || r.Answer[0].Header().Rrtype != mdns.TypeCNAME {
				t.Fatalf("query %d from a client of namespace default: %v", i, r)
			}
		}
	}
	// A name that exists is the same for everyone and is reused; the
	// answer to the client of namespace default is that same answer.
	for i, from := range []netip.AddrPort{unknown, known, unknown} {
		r := new(mdns.Msg)
		if err := r.Unpack(exchangeRaw(t, addr, from, packQuery(t, uint16(i), "web.default.svc.cluster.local.", mdns.TypeA))); err != nil {
			t.Fatal(err)
		}
		if len(r.Answer) != 1 || rrText(r.Answer[0]) != webA {
			t.Fatalf("query %d: %v", i, r.Answer)
		}
	}
}

// TestZoneAnswerReuseMetrics: reused replies are counted like the others.
func TestZoneAnswerReuseMetrics(t *testing.T) {
	rec := fixture(t, dns.Config{})
	reg := prometheus.NewRegistry()
	_, addr := startServer(t, dns.ServerConfig{Records: rec, Registerer: reg})
	tc := dialTCP(t, addr)
	for i := range 5 {
		exchangeRaw(t, addr, netip.AddrPort{}, packQuery(t, uint16(i), "web.default.svc.cluster.local.", mdns.TypeA))
		exchangeRaw(t, addr, netip.AddrPort{}, packQuery(t, uint16(i), "nope.default.svc.cluster.local.", mdns.TypeAAAA))
		tc.send(packQuery(t, uint16(i), "web.default.svc.cluster.local.", mdns.TypeSRV))
		tc.recv()
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	count := func(family string, labels map[string]string) float64 {
		var sum float64
		for _, mf := range mfs {
			if mf.GetName() != family {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue next
					}
				}
				sum += metricValue(m)
			}
		}
		return sum
	}
	for _, c := range []struct {
		family string
		labels map[string]string
		want   float64
	}{
		{"kubewire_dns_requests_total", map[string]string{"proto": "udp", "type": "A"}, 5},
		{"kubewire_dns_requests_total", map[string]string{"proto": "udp", "type": "AAAA"}, 5},
		{"kubewire_dns_requests_total", map[string]string{"proto": "tcp", "type": "SRV"}, 5},
		{"kubewire_dns_responses_total", map[string]string{"rcode": "NOERROR"}, 10},
		{"kubewire_dns_responses_total", map[string]string{"rcode": "NXDOMAIN"}, 5},
		{"kubewire_dns_request_duration_seconds", map[string]string{"type": "A"}, 5},
	} {
		if got := count(c.family, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.family, c.labels, got, c.want)
		}
	}
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

func TestZoneAnswerConfig(t *testing.T) {
	rec := fixture(t, dns.Config{})
	if _, err := dns.NewServer(dns.ServerConfig{Records: rec, ZoneAnswers: dns.ZoneAnswerConfig{MaxBytes: -1}}); err == nil ||
		!bytes.Contains([]byte(err.Error()), []byte("ZoneAnswers.MaxBytes")) {
		t.Fatalf("negative MaxBytes: %v", err)
	}
}

// tcpConn is a raw DNS-over-TCP connection.
type tcpConn struct {
	t testing.TB
	c net.Conn
}

func dialTCP(t testing.TB, addr string) *tcpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &tcpConn{t, c}
}

// send writes queries with one write, so that the server reads them as
// one batch.
func (c *tcpConn) send(qs ...[]byte) {
	c.t.Helper()
	var b []byte
	for _, q := range qs {
		b = append(binary.BigEndian.AppendUint16(b, uint16(len(q))), q...)
	}
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *tcpConn) recv() []byte {
	c.t.Helper()
	var size [2]byte
	if _, err := io.ReadFull(c.c, size[:]); err != nil {
		c.t.Fatalf("no reply: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint16(size[:]))
	if _, err := io.ReadFull(c.c, b); err != nil {
		c.t.Fatalf("short reply: %v", err)
	}
	return b
}

// TestZoneAnswerReuseTCP: over TCP too, reused replies are the replies a
// server without reuse sends, also for answers too large for UDP, and
// pipelined queries get their replies in order.
func TestZoneAnswerReuseTCP(t *testing.T) {
	reusing, plain, questions := reuseServers(t, 1000)
	rc, pc := dialTCP(t, reusing), dialTCP(t, plain)
	id := uint16(0)
	for round := range 3 {
		// Every question of a round pipelined on one connection.
		var queries [][]byte
		for _, q := range questions {
			for _, edit := range [][]func(*mdns.Msg){nil, {edns(1232)}, {func(m *mdns.Msg) { m.SetEdns0(4096, true) }}} {
				id++
				query := packQuery(t, id, q.name, q.qtype, edit...)
				queries = append(queries, query)
				rc.send(query)
			}
		}
		for i, query := range queries {
			pc.send(query)
			want := pc.recv()
			got := rc.recv()
			if !bytes.Equal(got, want) {
				m := new(mdns.Msg)
				_ = m.Unpack(query)
				t.Fatalf("round %d, %v:\n reused %x\n wanted %x", round, m.Question, got, want)
			}
			if binary.BigEndian.Uint16(got) != binary.BigEndian.Uint16(queries[i]) {
				t.Fatalf("reply %d out of order", i)
			}
		}
	}
	r := new(mdns.Msg)
	rc.send(packQuery(t, 1, "big.default.svc.cluster.local.", mdns.TypeA))
	if err := r.Unpack(rc.recv()); err != nil || len(r.Answer) != 1000 || r.Truncated {
		t.Fatalf("1000 endpoints over TCP: %d answers, truncated %v, %v", len(r.Answer), r.Truncated, err)
	}
}

// TestTCPConnectionHandling: a reply held back for a pipelined batch is
// sent before a query that waits upstream; a malformed query gets FORMERR;
// Run returns promptly with idle connections open.
func TestTCPConnectionHandling(t *testing.T) {
	release := make(chan struct{})
	slow := newUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {
		<-release
		answer(60, nil)(w, r)
	})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the upstream's cleanup waits for its handlers
	rec := fixture(t, dns.Config{})
	_, addr, stop := runServer(t, dns.ServerConfig{Records: rec,
		Cache: dns.CacheConfig{Disabled: true}, Forward: dns.ForwardConfig{Upstreams: fwd(slow), Timeout: 5 * time.Second}})

	c := dialTCP(t, addr)
	// Warm the reply up so that it is reused (held back in the batch).
	c.send(packQuery(t, 1, "web.default.svc.cluster.local.", mdns.TypeA))
	c.recv()
	c.send(packQuery(t, 2, "web.default.svc.cluster.local.", mdns.TypeA), packQuery(t, 3, "slow.example.", mdns.TypeA))
	_ = c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if got := c.recv(); binary.BigEndian.Uint16(got) != 2 {
		t.Fatalf("first reply has ID %d", binary.BigEndian.Uint16(got))
	}
	releaseAll()
	if got := c.recv(); binary.BigEndian.Uint16(got) != 3 {
		t.Fatalf("second reply has ID %d", binary.BigEndian.Uint16(got))
	}

	bad := dialTCP(t, addr)
	bad.send([]byte{0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'e'})
	r := new(mdns.Msg)
	if err := r.Unpack(bad.recv()); err != nil || r.Rcode != mdns.RcodeFormatError || r.Id != 9 {
		t.Fatalf("malformed query: %v, %v", r, err)
	}

	dialTCP(t, addr) // idle
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return with idle TCP connections open")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run took %v to stop", took)
	}
	if _, err := c.c.Read(make([]byte, 1)); err == nil {
		t.Error("a connection survived Run")
	}
}
