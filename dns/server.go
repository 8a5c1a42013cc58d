package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Records answers the cluster zone (required).
	Records *Records

	// Listen are the addresses to serve on, over UDP and TCP each (port 0:
	// the kernel picks one, the same for both). Sockets are created by
	// Listen (or Run) in the network namespace of the calling thread.
	Listen []netip.AddrPort
	// PacketConns and Listeners are sockets the caller opened (in another
	// network namespace, or handed over by systemd). The Server closes
	// them when Run returns, or on Close.
	PacketConns []net.PacketConn
	Listeners   []net.Listener

	// Forward configures forwarding of names outside the cluster zone.
	// With no Upstreams and no ResolvConf, such names are REFUSED.
	Forward ForwardConfig
	// StubDomains forward the names of a domain (the key, e.g.
	// "corp.example.") to their own upstreams; the longest matching
	// domain wins. They must lie outside the cluster zone.
	StubDomains map[string]ForwardConfig
	// Cache keeps forwarded answers.
	Cache CacheConfig
	// ZoneAnswers keeps packed replies to repeated cluster-zone questions.
	ZoneAnswers ZoneAnswerConfig
	// Autopath enables server-side search path completion.
	Autopath AutopathConfig

	// MaxUDPSize is the largest UDP reply (and the EDNS buffer size
	// advertised and used upstream); default 1232, the DNS flag day 2020
	// value that avoids fragmentation. Clients get min(their EDNS buffer
	// size, MaxUDPSize), 512 without EDNS; larger replies are truncated
	// (TC set) and complete over TCP.
	MaxUDPSize uint16
	// QueryTimeout bounds the time spent on a forwarded query, failover
	// included (default 5 s).
	QueryTimeout time.Duration

	// Registerer, when set, gets the server's Prometheus metrics.
	Registerer prometheus.Registerer
	// QueryLog, when set, gets one Info record per query (client, type,
	// name, rcode, size, duration, where the answer came from).
	QueryLog *slog.Logger
	// Logger gets errors and events (loops, panics); nil discards.
	Logger *slog.Logger
}

// AutopathConfig configures server-side search path completion, as
// CoreDNS's autopath plugin does with "@kubernetes": a query for
// <name>.<ns>.svc.<zone> from a pod of namespace <ns> (found by its
// source address in the pod index) is tried with each search domain of a
// ClusterFirst pod in turn — <ns>.svc.<zone>, svc.<zone>, <zone>, then
// HostSearch — and finally as <name>. itself. The first candidate that
// exists answers, with a CNAME from the original name to it, saving the
// client one round trip per search domain. When none exists, the answer
// for the original name (NXDOMAIN) is returned and the client carries on
// with its own search.
type AutopathConfig struct {
	Enabled bool
	// HostSearch are the node's search domains (the ones kubelet appends
	// after the cluster ones), in order.
	HostSearch []string
}

// Server answers DNS queries: the cluster zone from Records, other names
// through forwarders and a cache. It serves UDP and TCP on every address
// of ServerConfig.Listen, and is also a miekg/dns Handler that can be
// mounted in another server.
type Server struct {
	records    *Records
	fwd        *forwarder   // nil: no forwarding
	stubs      []*forwarder // longest domain first
	forwarders []*forwarder // fwd and stubs
	cache      *cache
	answers    *answerCache // nil: replies are not reused
	metrics    *metrics
	log        *slog.Logger
	qlog       *slog.Logger
	maxUDP     int
	timeout    time.Duration
	autopath   bool
	svcZone    string // "svc.<zone>": autopath applies below it only
	hostSearch []string
	listen     []netip.AddrPort

	base atomic.Pointer[context.Context]

	mu       sync.Mutex
	pcs      []net.PacketConn
	lns      []net.Listener
	listened bool
	running  bool
	closed   bool
}

var _ mdns.Handler = (*Server)(nil)

// NewServer checks cfg and returns a Server. It reads the resolv.conf
// files named in cfg and registers the metrics; it opens no socket and
// starts nothing.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Records == nil {
		return nil, errors.New("dns: ServerConfig.Records is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		records: cfg.Records, log: log, qlog: cfg.QueryLog,
		maxUDP: int(cfg.MaxUDPSize), timeout: cfg.QueryTimeout,
		autopath: cfg.Autopath.Enabled, svcZone: "svc." + cfg.Records.Zone(), listen: slices.Clone(cfg.Listen),
		pcs: slices.Clone(cfg.PacketConns), lns: slices.Clone(cfg.Listeners),
	}
	if s.maxUDP == 0 {
		s.maxUDP = 1232
	}
	if s.maxUDP < mdns.MinMsgSize {
		return nil, invalid("config", "MaxUDPSize", cfg.MaxUDPSize, "want at least 512")
	}
	if s.timeout == 0 {
		s.timeout = 5 * time.Second
	}
	if s.timeout < 0 {
		return nil, invalid("config", "QueryTimeout", cfg.QueryTimeout, "must not be negative")
	}
	for i, ap := range cfg.Listen {
		if !ap.Addr().IsValid() {
			return nil, invalid("config", fmt.Sprintf("Listen[%d]", i), ap, "not an address")
		}
	}
	if cfg.Registerer != nil {
		s.metrics = newMetrics()
		if err := cfg.Registerer.Register(s.metrics); err != nil {
			return nil, fmt.Errorf("dns: register metrics: %w", err)
		}
	}
	for i, d := range cfg.Autopath.HostSearch {
		c, err := canonicalDomain(fmt.Sprintf("Autopath.HostSearch[%d]", i), d)
		if err != nil {
			return nil, err
		}
		s.hostSearch = append(s.hostSearch, c)
	}
	var err error
	fail := func(err error) (*Server, error) {
		if cfg.Registerer != nil {
			cfg.Registerer.Unregister(s.metrics)
		}
		return nil, err
	}
	if s.cache, err = newCache(cfg.Cache, s.metrics); err != nil {
		return fail(err)
	}
	if s.answers, err = newAnswerCache(cfg.ZoneAnswers); err != nil {
		return fail(err)
	}
	if len(cfg.Forward.Upstreams) > 0 || cfg.Forward.ResolvConf != "" {
		if s.fwd, err = newForwarder(".", "Forward", cfg.Forward, uint16(s.maxUDP), s.metrics, log); err != nil {
			return fail(err)
		}
		s.forwarders = append(s.forwarders, s.fwd)
	}
	for d, fc := range cfg.StubDomains {
		field := fmt.Sprintf("StubDomains[%q]", d)
		dom, err := canonicalDomain(field, d)
		if err != nil {
			return fail(err)
		}
		if _, in := under(dom, s.records.Zone()); in {
			return fail(invalid("config", field, d, "inside the cluster zone "+s.records.Zone()))
		}
		f, err := newForwarder(dom, field, fc, uint16(s.maxUDP), s.metrics, log)
		if err != nil {
			return fail(err)
		}
		s.stubs = append(s.stubs, f)
		s.forwarders = append(s.forwarders, f)
	}
	slices.SortFunc(s.stubs, func(a, b *forwarder) int {
		if d := len(b.domain) - len(a.domain); d != 0 {
			return d
		}
		return strings.Compare(a.domain, b.domain)
	})
	return s, nil
}

// Listen opens the UDP and TCP sockets of ServerConfig.Listen, in the
// network namespace of the calling thread: to serve inside another
// namespace, call Listen from a goroutine locked to a thread in it; Run
// may then be called from anywhere. Run calls Listen itself when it was
// not called before.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("dns: server closed")
	}
	if s.listened {
		return errors.New("dns: Listen called twice")
	}
	var pcs []net.PacketConn
	var lns []net.Listener
	for i, ap := range s.listen {
		pc, ln, err := listenPair(ap)
		if err != nil {
			for _, c := range pcs {
				c.Close()
			}
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("dns: listen on Listen[%d] %v: %w", i, ap, err)
		}
		pcs, lns = append(pcs, pc), append(lns, ln)
	}
	s.pcs, s.lns = append(s.pcs, pcs...), append(s.lns, lns...)
	s.listened = true
	return nil
}

// listenPair binds UDP and TCP on one address; with port 0, on the same
// kernel-chosen port for both.
func listenPair(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), uint16(port))))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if ap.Port() != 0 {
			break
		}
	}
	return nil, nil, lastErr
}

// UDPAddrs returns the addresses the server's UDP sockets are bound to
// (after Listen or once Run started).
func (s *Server) UDPAddrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.AddrPort
	for _, pc := range s.pcs {
		if a, ok := pc.LocalAddr().(*net.UDPAddr); ok {
			out = append(out, a.AddrPort())
		}
	}
	return out
}

// TCPAddrs returns the addresses the server's TCP listeners are bound to.
func (s *Server) TCPAddrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.AddrPort
	for _, l := range s.lns {
		if a, ok := l.Addr().(*net.TCPAddr); ok {
			out = append(out, a.AddrPort())
		}
	}
	return out
}

// ForwardLoop returns nil, or an error wrapping ErrLoop for every
// forwarder (default or stub domain) whose loop probe came back to this
// server; forwarding through those stopped (their names get SERVFAIL).
func (s *Server) ForwardLoop() error {
	var errs []error
	for _, f := range s.forwarders {
		if err := f.loop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes the sockets when Run is not running. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running || s.closed {
		return nil
	}
	s.closed = true
	return s.closeSockets()
}

func (s *Server) closeSockets() error {
	var errs []error
	for _, pc := range s.pcs {
		if err := pc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, l := range s.lns {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type served struct {
	srv     *mdns.Server
	started chan struct{}
	done    chan error
}

// Run serves until ctx ends, then shuts the listeners down and closes the
// sockets; it returns nil then, or the error of a listener that failed.
// It also runs the forwarders' health checks and sends their loop probes.
// Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running || s.closed {
		s.mu.Unlock()
		return errors.New("dns: Run called twice or after Close")
	}
	s.running = true
	listened := s.listened
	s.mu.Unlock()
	if !listened {
		if err := s.Listen(); err != nil {
			s.mu.Lock()
			s.running = false
			s.mu.Unlock()
			return err
		}
	}
	s.mu.Lock()
	pcs, lns := slices.Clone(s.pcs), slices.Clone(s.lns)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running, s.closed = false, true
		_ = s.closeSockets()
		s.mu.Unlock()
	}()
	if len(pcs)+len(lns) == 0 {
		return errors.New("dns: nothing to serve on: set ServerConfig.Listen, PacketConns or Listeners")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.base.Store(&ctx)

	var all []*served
	add := func(srv *mdns.Server) {
		sv := &served{srv: srv, started: make(chan struct{}), done: make(chan error, 1)}
		srv.NotifyStartedFunc = func() { close(sv.started) }
		srv.Handler = s
		all = append(all, sv)
	}
	var fast []*udpServer
	for _, pc := range pcs {
		if u, ok := s.fastUDP(pc); ok {
			fast = append(fast, u)
			continue
		}
		add(&mdns.Server{PacketConn: pc, UDPSize: 65535})
	}
	var tcps []*tcpServer
	for _, l := range lns {
		tcps = append(tcps, s.newTCP(l))
	}
	failed := make(chan error, len(all))
	for _, sv := range all {
		go func() {
			err := sv.srv.ActivateAndServe()
			sv.done <- err
			if ctx.Err() == nil {
				failed <- err
			}
		}()
	}
	var fatal error
	var up []*served
	for _, sv := range all {
		select {
		case <-sv.started:
			up = append(up, sv)
		case err := <-sv.done:
			if fatal == nil {
				fatal = fmt.Errorf("dns: serve: %w", err)
			}
		}
	}

	for _, u := range fast {
		u.start()
	}
	for _, t := range tcps {
		t.start()
	}
	var bg sync.WaitGroup
	if fatal == nil {
		for _, f := range s.forwarders {
			bg.Go(func() { f.healthCheck(ctx) })
			bg.Go(func() { f.sendProbes(ctx) })
		}
		select {
		case <-ctx.Done():
		case err := <-failed:
			fatal = fmt.Errorf("dns: serve: %w", err)
		}
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	for _, sv := range up {
		_ = sv.srv.ShutdownContext(sctx)
	}
	for _, sv := range up {
		select {
		case <-sv.done:
		case <-sctx.Done():
		}
	}
	for _, u := range fast {
		_ = u.conn.Close() // the readers see net.ErrClosed and return
		u.wait()
	}
	for _, t := range tcps {
		t.stop()
	}
	bg.Wait()
	return fatal
}

func (s *Server) baseContext() context.Context {
	if p := s.base.Load(); p != nil {
		return *p
	}
	return context.Background()
}

// ServeDNS answers one query; it implements miekg/dns's Handler.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	if w == nil || req == nil {
		return
	}
	s.reply(w, req)
}

// reply answers req on w. It returns the reply sent (nil when none could
// be), the message it was packed from and where the answer came from.
func (s *Server) reply(w mdns.ResponseWriter, req *mdns.Msg) (buf []byte, m *mdns.Msg, source string) {
	start := time.Now()
	tcp, src := transport(w)
	defer func() {
		if p := recover(); p != nil {
			buf, m, source = nil, nil, "panic"
			s.metrics.panicked()
			s.log.Error("panic while answering a query", "panic", p, "stack", string(debug.Stack()))
			func() {
				defer func() { _ = recover() }() // the writer itself may be what panics
				m := new(mdns.Msg)
				m.Rcode = mdns.RcodeServerFailure
				s.send(w, s.pack(req, m, tcp))
			}()
		}
	}()
	var qtype uint16
	if len(req.Question) > 0 {
		qtype = req.Question[0].Qtype
	}
	s.metrics.request(tcp, src.Is6(), qtype)
	m, source = s.handle(s.baseContext(), req, src)
	buf = s.pack(req, m, tcp)
	// Account before sending, so that a client that got its answer finds
	// the query in the metrics and the log.
	took := time.Since(start)
	s.metrics.response(m.Rcode, qtype, took)
	if s.qlog != nil && len(req.Question) > 0 {
		proto := "udp"
		if tcp {
			proto = "tcp"
		}
		q := req.Question[0]
		s.qlog.LogAttrs(context.Background(), slog.LevelInfo, "query",
			slog.String("client", src.String()), slog.String("proto", proto), slog.Int("id", int(req.Id)),
			slog.String("type", mdns.Type(q.Qtype).String()), slog.String("class", mdns.Class(q.Qclass).String()),
			slog.String("name", q.Name), slog.String("rcode", rcodeLabel(m.Rcode)), slog.Int("answers", len(m.Answer)),
			slog.Int("size", len(buf)), slog.Bool("truncated", m.Truncated), slog.Duration("duration", took),
			slog.String("source", source))
	}
	s.send(w, buf)
	return buf, m, source
}

func (s *Server) send(w mdns.ResponseWriter, buf []byte) {
	if buf == nil {
		return
	}
	if _, err := w.Write(buf); err != nil {
		s.log.Debug("cannot send a reply", "err", err)
	}
}

// transport tells whether the query came over TCP, and from where.
func transport(w mdns.ResponseWriter) (bool, netip.Addr) {
	switch a := w.RemoteAddr().(type) {
	case *net.TCPAddr:
		return true, a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return false, a.AddrPort().Addr().Unmap()
	}
	return false, netip.Addr{}
}

// handle computes the reply to req (its header and question are filled
// by write) and names where it came from.
func (s *Server) handle(ctx context.Context, req *mdns.Msg, src netip.Addr) (*mdns.Msg, string) {
	m := new(mdns.Msg)
	if req.Response || len(req.Question) != 1 {
		m.Rcode = mdns.RcodeFormatError
		return m, "invalid"
	}
	if req.Opcode != mdns.OpcodeQuery {
		m.Rcode = mdns.RcodeNotImplemented
		return m, "invalid"
	}
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		m.Rcode = mdns.RcodeBadVers
		return m, "invalid"
	}
	q := req.Question[0]
	switch {
	case q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY:
		m.Rcode = mdns.RcodeRefused
		return m, "refused"
	case q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR:
		m.Rcode = mdns.RcodeRefused
		return m, "refused"
	case q.Qtype == mdns.TypeOPT || q.Qtype == mdns.TypeTSIG || q.Qtype == mdns.TypeNone:
		m.Rcode = mdns.RcodeFormatError
		return m, "invalid"
	}
	name := lowerASCII(q.Name)
	for _, f := range s.forwarders {
		if f.isProbe(name, q.Qtype) {
			m.Rcode = mdns.RcodeServerFailure
			return m, "loop"
		}
	}
	var do bool
	if opt != nil {
		do = opt.Do()
	}
	if s.autopath {
		if am, source, ok := s.autopathAnswer(ctx, q, name, src, do, req.CheckingDisabled); ok {
			return am, source
		}
	}
	return s.resolve(ctx, q.Name, name, q.Qtype, do, req.CheckingDisabled, 0)
}

// resolve answers one name: from Records when it is theirs (following an
// ExternalName CNAME out of the zone through the forwarders), else through
// the cache and a forwarder. qname is the name as asked, name lowercased.
func (s *Server) resolve(ctx context.Context, qname, name string, qtype uint16, do, cd bool, depth int) (*mdns.Msg, string) {
	res, ok := s.records.Lookup(qname, qtype)
	if !ok {
		return s.forward(ctx, name, qtype, do, cd)
	}
	m := new(mdns.Msg)
	m.Authoritative = true
	m.Rcode, m.Answer, m.Ns, m.Extra = res.Rcode, res.Answer, res.Ns, res.Extra
	if res.Rcode != mdns.RcodeSuccess || len(res.Answer) == 0 || qtype == mdns.TypeCNAME || qtype == mdns.TypeANY {
		return m, "zone"
	}
	c, ok := res.Answer[len(res.Answer)-1].(*mdns.CNAME)
	if !ok || depth >= 8 {
		return m, "zone"
	}
	// An ExternalName: chase the target so the client gets the addresses
	// with the CNAME, as CoreDNS does. If that fails, the CNAME alone is
	// a valid answer the client can chase itself.
	t, tsource := s.resolve(ctx, c.Target, lowerASCII(c.Target), qtype, do, cd, depth+1)
	switch t.Rcode {
	case mdns.RcodeSuccess, mdns.RcodeNameError:
		m.Rcode = t.Rcode
		m.Answer = append(m.Answer, t.Answer...)
		if len(t.Answer) == 0 {
			m.Ns = t.Ns
		}
	}
	return m, "zone+" + tsource
}

// forwarderFor returns the forwarder of the longest stub domain name is
// in, else the default one (nil when there is none).
func (s *Server) forwarderFor(name string) *forwarder {
	for _, f := range s.stubs {
		if _, ok := under(name, f.domain); ok {
			return f
		}
	}
	return s.fwd
}

// forward answers a name outside the zone from the cache or an upstream.
// It answers REFUSED when there is no forwarder for the name or too many
// forwarded queries are in flight, SERVFAIL when no upstream answered.
func (s *Server) forward(ctx context.Context, name string, qtype uint16, do, cd bool) (*mdns.Msg, string) {
	m := new(mdns.Msg)
	f := s.forwarderFor(name)
	if f == nil {
		m.Rcode = mdns.RcodeRefused
		return m, "refused"
	}
	k := cacheKey{name: name, qtype: qtype, qclass: mdns.ClassINET, do: do, cd: cd}
	if s.cache != nil {
		if cm, ok := s.cache.get(k); ok {
			return cm, "cache"
		}
	}
	q := new(mdns.Msg)
	q.Id = mdns.Id()
	q.RecursionDesired = true
	q.CheckingDisabled = cd
	q.Question = []mdns.Question{{Name: name, Qtype: qtype, Qclass: mdns.ClassINET}}
	q.SetEdns0(uint16(s.maxUDP), do)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := f.exchange(ctx, q)
	switch {
	case errors.Is(err, errOverloaded):
		m.Rcode = mdns.RcodeRefused
		return m, "overloaded"
	case err != nil:
		s.log.Debug("forwarding failed", "name", name, "type", mdns.Type(qtype).String(), "err", err)
		m.Rcode = mdns.RcodeServerFailure
		return m, "forward-error"
	case len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, name) || resp.Question[0].Qtype != qtype:
		m.Rcode = mdns.RcodeServerFailure
		return m, "forward-error"
	}
	if s.cache != nil {
		s.cache.put(k, resp)
	}
	out := new(mdns.Msg)
	out.Rcode, out.Answer, out.Ns, out.Extra = resp.Rcode, resp.Answer, resp.Ns, resp.Extra
	out.Authoritative, out.AuthenticatedData = resp.Authoritative, resp.AuthenticatedData
	return out, "forward"
}

// autopathAnswer implements AutopathConfig.
// When the name itself exists, its answer is the one any client gets,
// and its source is resolve's.
func (s *Server) autopathAnswer(ctx context.Context, q mdns.Question, name string, src netip.Addr, do, cd bool) (*mdns.Msg, string, bool) {
	if _, ok := under(name, s.svcZone); !ok || !src.IsValid() || !s.records.HasSynced() {
		return nil, "", false
	}
	ns, ok := s.records.PodNamespace(src)
	if !ok {
		return nil, "", false
	}
	zone := s.records.Zone()
	first := ns + ".svc." + zone
	base, ok := under(name, first)
	if !ok || base == "" {
		return nil, "", false
	}
	search := make([]string, 0, 4+len(s.hostSearch))
	search = append(search, first, "svc."+zone, zone)
	for _, d := range s.hostSearch {
		if !slices.Contains(search, d) {
			search = append(search, d)
		}
	}
	search = append(search, "")
	var firstReply *mdns.Msg
	for i, dom := range search {
		cand := base + "." + dom
		var m *mdns.Msg
		var source string
		if i == 0 {
			m, source = s.resolve(ctx, q.Name, name, q.Qtype, do, cd, 0)
			firstReply = m
		} else {
			m, _ = s.resolve(ctx, cand, cand, q.Qtype, do, cd, 0)
		}
		switch m.Rcode {
		case mdns.RcodeNameError, mdns.RcodeServerFailure, mdns.RcodeRefused:
			continue
		}
		if i == 0 {
			return m, source, true
		}
		cname := &mdns.CNAME{
			Hdr:    mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeCNAME, Class: mdns.ClassINET, Ttl: s.records.TTL()},
			Target: cand,
		}
		m.Answer = append([]mdns.RR{cname}, m.Answer...)
		s.metrics.autopath()
		return m, "autopath", true
	}
	return firstReply, "autopath", true
}

// pack completes the reply (header, question, EDNS), fits it to the
// transport and packs it; nil when it cannot be packed at all.
func (s *Server) pack(req, m *mdns.Msg, tcp bool) []byte {
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	m.RecursionAvailable = true
	m.Zero = false
	m.Question = nil
	if len(req.Question) > 0 {
		m.Question = req.Question[:1]
	}
	m.Compress = true
	m.Extra = slices.DeleteFunc(m.Extra, func(rr mdns.RR) bool { return rr.Header().Rrtype == mdns.TypeOPT })
	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		o := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
		o.SetUDPSize(uint16(s.maxUDP))
		o.SetDo(opt.Do())
		m.Extra = append(m.Extra, o)
		size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), s.maxUDP)
	} else if m.Rcode > 0xF {
		m.Rcode = mdns.RcodeServerFailure
	}
	if tcp {
		size = mdns.MaxMsgSize
	}
	fit(m, size)
	buf, err := m.Pack()
	if err != nil {
		s.log.Warn("cannot pack a reply; answering SERVFAIL", "err", err)
		m.Rcode = mdns.RcodeServerFailure
		m.Answer, m.Ns = nil, nil
		m.Extra = slices.DeleteFunc(m.Extra, func(rr mdns.RR) bool { return rr.Header().Rrtype != mdns.TypeOPT })
		if buf, err = m.Pack(); err != nil {
			return nil
		}
	}
	return buf
}

// fit makes m at most size bytes. Records that do not fit are dropped;
// the TC bit is set only when answer or authority records were dropped
// (additional data is optional, RFC 2181 section 9).
func fit(m *mdns.Msg, size int) {
	if m.Len() <= size {
		return
	}
	tc, na, nn := m.Truncated, len(m.Answer), len(m.Ns)
	m.Truncate(size)
	if len(m.Answer) == na && len(m.Ns) == nn {
		m.Truncated = tc
	}
}
