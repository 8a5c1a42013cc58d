package dns_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
	"github.com/kubewire/kubewire/internal/testmain"
)

func TestMain(m *testing.M) { testmain.Run(m) }

var (
	ip  = netip.MustParseAddr
	ipp = netip.MustParseAddrPort
)

// startServer listens on 127.0.0.1:0 (UDP and TCP) and runs the server
// until the test ends.
func startServer(t testing.TB, cfg dns.ServerConfig) (*dns.Server, string) {
	t.Helper()
	s, addr, stop := runServer(t, cfg)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s, addr
}

// runServer listens on 127.0.0.1:0 (UDP and TCP) and runs the server;
// stop ends Run and returns its error (the first call; later ones nil).
func runServer(t testing.TB, cfg dns.ServerConfig) (s *dns.Server, addr string, stop func() error) {
	t.Helper()
	if cfg.Listen == nil && cfg.PacketConns == nil {
		cfg.Listen = []netip.AddrPort{ipp("127.0.0.1:0")}
	}
	s, err := dns.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() (err error) {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() }) // also when the test fails before stop
	addrs := s.UDPAddrs()
	if len(addrs) == 0 {
		t.Fatal("no UDP address")
	}
	if tcp := s.TCPAddrs(); len(tcp) > 0 && tcp[0] != addrs[0] {
		t.Fatalf("TCP addresses %v, UDP %v: want the same", tcp, addrs)
	}
	return s, addrs[0].String(), stop
}

// ask sends one query and returns the reply.
func ask(t testing.TB, addr, network, name string, qtype uint16, edit ...func(*mdns.Msg)) *mdns.Msg {
	t.Helper()
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	for _, e := range edit {
		e(q)
	}
	c := &mdns.Client{Net: network, Timeout: 3 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, mdns.TypeToString[qtype], err)
	}
	return r
}

func edns(size uint16) func(*mdns.Msg) {
	return func(m *mdns.Msg) { m.SetEdns0(size, false) }
}

// rrText renders a record without its TTL: "name TYPE rdata".
func rrText(rr mdns.RR) string {
	f := strings.Split(rr.String(), "\t")
	if len(f) < 5 {
		return rr.String()
	}
	return strings.ToLower(f[0]) + " " + f[3] + " " + strings.Join(f[4:], " ")
}

func texts(rrs []mdns.RR) []string {
	out := []string{}
	for _, rr := range rrs {
		if rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		out = append(out, rrText(rr))
	}
	slices.Sort(out)
	return out
}

// upstream is a fake DNS server on loopback, UDP and TCP on one port.
type upstream struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	queries map[string]int // "name TYPE net" → count
	handler func(w mdns.ResponseWriter, r *mdns.Msg)
}

func (u *upstream) count(name string, qtype uint16) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for k, v := range u.queries {
		if strings.HasPrefix(k, name+" "+mdns.TypeToString[qtype]+" ") {
			n += v
		}
	}
	return n
}

func (u *upstream) countNet(name string, qtype uint16, network string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries[name+" "+mdns.TypeToString[qtype]+" "+network]
}

func (u *upstream) set(h func(w mdns.ResponseWriter, r *mdns.Msg)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handler = h
}

// newUpstream starts a fake upstream answering with h on the given
// networks ("udp", "tcp").
func newUpstream(t testing.TB, h func(w mdns.ResponseWriter, r *mdns.Msg), networks ...string) *upstream {
	t.Helper()
	if len(networks) == 0 {
		networks = []string{"udp", "tcp"}
	}
	u := &upstream{queries: map[string]int{}, handler: h}
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if attempt > 20 {
			t.Fatal(err)
		}
	}
	u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	handler := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		network := "udp"
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			network = "tcp"
		}
		u.mu.Lock()
		if len(r.Question) == 1 {
			u.queries[strings.ToLower(r.Question[0].Name)+" "+mdns.TypeToString[r.Question[0].Qtype]+" "+network]++
		}
		h := u.handler
		u.mu.Unlock()
		if h != nil {
			h(w, r)
		}
	})
	for _, n := range networks {
		srv := &mdns.Server{Handler: handler}
		switch n {
		case "udp":
			srv.PacketConn = pc
			pc = nil
		case "tcp":
			srv.Listener = ln
			ln = nil
		}
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			_ = srv.ActivateAndServe()
			close(done)
		}()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	// A network not served keeps its socket open but unanswered (UDP:
	// queries time out) until the test ends.
	if pc != nil {
		t.Cleanup(func() { pc.Close() })
	}
	if ln != nil {
		t.Cleanup(func() { ln.Close() })
	}
	return u
}

// answer builds a handler answering A queries from a table (name → IPv4),
// NXDOMAIN with an SOA for other names.
func answer(ttl uint32, table map[string]string) func(w mdns.ResponseWriter, r *mdns.Msg) {
	return func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		addr, ok := table[strings.ToLower(q.Name)]
		switch {
		case ok && addr != "" && q.Qtype == mdns.TypeA:
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: net.ParseIP(addr)})
		case ok:
			m.Ns = append(m.Ns, upstreamSOA(ttl))
		default:
			m.Rcode = mdns.RcodeNameError
			m.Ns = append(m.Ns, upstreamSOA(ttl))
		}
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(o.UDPSize(), o.Do())
		}
		_ = w.WriteMsg(m)
	}
}

func upstreamSOA(ttl uint32) *mdns.SOA {
	return &mdns.SOA{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl},
		Ns: "a.root-servers.net.", Mbox: "nstld.verisign-grs.com.", Serial: 1, Refresh: 1800, Retry: 900, Expire: 604800, Minttl: ttl}
}

// fakeWriter is a ResponseWriter that keeps the reply.
type fakeWriter struct {
	remote net.Addr
	msgs   [][]byte
}

func (w *fakeWriter) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (w *fakeWriter) RemoteAddr() net.Addr { return w.remote }
func (w *fakeWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *fakeWriter) Write(b []byte) (int, error) {
	w.msgs = append(w.msgs, append([]byte(nil), b...))
	return len(b), nil
}
func (w *fakeWriter) Close() error        { return nil }
func (w *fakeWriter) TsigStatus() error   { return nil }
func (w *fakeWriter) TsigTimersOnly(bool) {}
func (w *fakeWriter) Hijack()             {}

func udpFrom(a string) *fakeWriter {
	return &fakeWriter{remote: net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip(a), 40000))}
}

func tcpFrom(a string) *fakeWriter {
	return &fakeWriter{remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip(a), 40000))}
}
