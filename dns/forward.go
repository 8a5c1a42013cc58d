package dns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// ForwardConfig configures forwarding to upstream servers, for all names
// outside the cluster zone (ServerConfig.Forward) or for one domain
// (ServerConfig.StubDomains).
type ForwardConfig struct {
	// Upstreams are tried in order; port 0 means 53.
	Upstreams []netip.AddrPort
	// ResolvConf is the path of a resolv.conf whose nameservers are the
	// upstreams (port 53), read once by NewServer; used when Upstreams is
	// empty.
	ResolvConf string
	// TCP sends every upstream query over TCP. Otherwise queries go over
	// UDP and are retried over TCP when the answer comes back truncated.
	TCP bool
	// MaxConcurrent bounds the queries in flight to the upstreams (default
	// 1000). A query beyond it is answered REFUSED at once, as CoreDNS's
	// forward plugin does, so clients try another server instead of
	// piling up.
	MaxConcurrent int
	// Timeout is the wait for one upstream's answer before trying the
	// next (default 2 s).
	Timeout time.Duration
	// HealthCheckInterval is how often an upstream that failed is probed
	// (a ". IN NS" query) until it answers again (default 500 ms).
	HealthCheckInterval time.Duration
	// MaxFails is how many consecutive failures (queries or health
	// checks) mark an upstream down (default 2). Down upstreams are
	// tried only after every healthy one failed.
	MaxFails int
}

// ErrLoop is wrapped by the error Server.ForwardLoop reports when a
// forwarding loop was detected.
var ErrLoop = errors.New("dns: forwarding loop")

// errOverloaded and errNoUpstream are returned by forwarder.exchange.
var (
	errOverloaded = errors.New("too many concurrent forwarded queries")
	errNoUpstream = errors.New("no upstream answered")
	errLooped     = errors.New("forwarding stopped: loop detected")
)

type upstream struct {
	addr  netip.AddrPort
	label string
	fails atomic.Int32
}

// forwarder sends queries to one set of upstreams, with failover, health
// checks, a concurrency bound and loop detection.
type forwarder struct {
	domain    string // lowercased FQDN, "." for the default forwarder
	upstreams []*upstream
	tcp       bool
	timeout   time.Duration
	interval  time.Duration
	maxFails  int32
	maxConc   int64
	udpSize   uint16
	metrics   *metrics
	log       *slog.Logger

	inflight atomic.Int64
	probe    atomic.Pointer[string] // the loop probe name, once sent
	loopErr  atomic.Pointer[error]
	loopOnce sync.Once
}

func newForwarder(domain string, field string, cfg ForwardConfig, udpSize uint16, m *metrics, log *slog.Logger) (*forwarder, error) {
	ups := cfg.Upstreams
	if len(ups) == 0 && cfg.ResolvConf != "" {
		rc, err := ReadResolvConf(cfg.ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("dns: config %s.ResolvConf: %w", field, err)
		}
		for _, ip := range rc.Nameservers {
			ups = append(ups, netip.AddrPortFrom(ip, 53))
		}
		if len(ups) == 0 {
			return nil, invalid("config", field+".ResolvConf", cfg.ResolvConf, "no nameserver in the file")
		}
	}
	if len(ups) == 0 {
		return nil, invalid("config", field+".Upstreams", "[]", "no upstream (set Upstreams or ResolvConf)")
	}
	f := &forwarder{
		domain: domain, tcp: cfg.TCP, timeout: cfg.Timeout, interval: cfg.HealthCheckInterval,
		maxFails: int32(cfg.MaxFails), maxConc: int64(cfg.MaxConcurrent), udpSize: udpSize,
		metrics: m, log: log,
	}
	if f.timeout == 0 {
		f.timeout = 2 * time.Second
	}
	if f.interval == 0 {
		f.interval = 500 * time.Millisecond
	}
	if f.maxFails == 0 {
		f.maxFails = 2
	}
	if f.maxConc == 0 {
		f.maxConc = 1000
	}
	switch {
	case f.timeout < 0:
		return nil, invalid("config", field+".Timeout", cfg.Timeout, "must not be negative")
	case f.interval < 0:
		return nil, invalid("config", field+".HealthCheckInterval", cfg.HealthCheckInterval, "must not be negative")
	case f.maxFails < 0:
		return nil, invalid("config", field+".MaxFails", cfg.MaxFails, "must not be negative")
	case f.maxConc < 0:
		return nil, invalid("config", field+".MaxConcurrent", cfg.MaxConcurrent, "must not be negative")
	}
	for i, ap := range ups {
		if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
			return nil, invalid("config", fmt.Sprintf("%s.Upstreams[%d]", field, i), ap, "not a unicast address")
		}
		if ap.Port() == 0 {
			ap = netip.AddrPortFrom(ap.Addr(), 53)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		u := &upstream{addr: ap, label: ap.String()}
		f.upstreams = append(f.upstreams, u)
		m.health(u.label, true, true)
	}
	return f, nil
}

func (f *forwarder) healthy(u *upstream) bool { return u.fails.Load() < f.maxFails }

// order lists the upstreams to try: healthy ones in configured order,
// then the ones marked down (they may have recovered; trying them beats
// failing outright, as CoreDNS does when all are down).
func (f *forwarder) order() []*upstream {
	out := make([]*upstream, 0, len(f.upstreams))
	for _, u := range f.upstreams {
		if f.healthy(u) {
			out = append(out, u)
		}
	}
	for _, u := range f.upstreams {
		if !f.healthy(u) {
			out = append(out, u)
		}
	}
	return out
}

func (f *forwarder) failed(u *upstream) {
	n := u.fails.Add(1)
	f.metrics.health(u.label, true, n < f.maxFails)
}

// query sends q to addr and waits for the answer at most timeout, or
// until ctx ends (miekg/dns only honours a context's deadline, not its
// cancellation, once the query is sent).
func (f *forwarder) query(ctx context.Context, q *mdns.Msg, addr string, tcp bool, timeout time.Duration) (*mdns.Msg, error) {
	c := &mdns.Client{Net: "udp", Timeout: timeout, UDPSize: f.udpSize}
	if tcp {
		c.Net = "tcp"
	}
	conn, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return r, err
}

// exchangeOne sends q to u: over TCP when asked, else UDP with a TCP
// retry of truncated answers.
func (f *forwarder) exchangeOne(ctx context.Context, u *upstream, q *mdns.Msg, tcp bool) (*mdns.Msg, error) {
	start := time.Now()
	resp, err := f.query(ctx, q, u.label, tcp, f.timeout)
	if err == nil && resp.Truncated && !tcp {
		resp, err = f.query(ctx, q, u.label, true, f.timeout)
	}
	rcode := 0
	if err == nil {
		rcode = resp.Rcode
	}
	f.metrics.forwarded(u.label, rcode, err, time.Since(start))
	return resp, err
}

// exchange forwards q (its question, RD, CD and EDNS set by the caller)
// and returns the first usable answer. Transport errors mark the upstream
// failed and move on; SERVFAIL and REFUSED answers also move on to the
// next upstream (as a stub resolver does) but are returned when no
// upstream does better.
func (f *forwarder) exchange(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	if f.loopErr.Load() != nil {
		return nil, errLooped
	}
	if n := f.inflight.Add(1); n > f.maxConc {
		f.inflight.Add(-1)
		f.metrics.rejected()
		return nil, errOverloaded
	}
	defer f.inflight.Add(-1)
	var last *mdns.Msg
	var lastErr error
	for _, u := range f.order() {
		if ctx.Err() != nil {
			break
		}
		resp, err := f.exchangeOne(ctx, u, q, f.tcp)
		if err != nil {
			lastErr = err
			if ctx.Err() == nil {
				f.failed(u)
			}
			continue
		}
		if u.fails.Load() != 0 {
			u.fails.Store(0)
			f.metrics.health(u.label, true, true)
		}
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			last = resp
			continue
		}
		return resp, nil
	}
	if last != nil {
		return last, nil
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return nil, fmt.Errorf("%w: %w", errNoUpstream, lastErr)
}

// healthCheck probes every upstream that failed, until ctx ends.
func (f *forwarder) healthCheck(ctx context.Context) {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, u := range f.upstreams {
			if u.fails.Load() == 0 {
				continue
			}
			q := new(mdns.Msg)
			q.SetQuestion(".", mdns.TypeNS)
			_, err := f.query(ctx, q, u.label, f.tcp, min(f.timeout, f.interval*4))
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				n := u.fails.Add(1)
				f.metrics.health(u.label, false, n < f.maxFails)
				continue
			}
			u.fails.Store(0)
			f.metrics.health(u.label, true, true)
		}
	}
}

// sendProbes sends the loop probe (a random name under the forwarder's
// domain, type HINFO, as CoreDNS's loop plugin does) to every upstream.
// If any upstream forwards it back to this server, isProbe sees it.
func (f *forwarder) sendProbes(ctx context.Context) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return
	}
	name := hex.EncodeToString(b[:8]) + "." + hex.EncodeToString(b[8:]) + "."
	if f.domain != "." {
		name += f.domain
	}
	f.probe.Store(&name)
	var wg sync.WaitGroup
	for _, u := range f.upstreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := new(mdns.Msg)
			q.SetQuestion(name, mdns.TypeHINFO)
			_, _ = f.query(ctx, q, u.label, f.tcp, f.timeout)
		}()
	}
	wg.Wait()
}

// isProbe reports whether a query (lowercased name) is this forwarder's
// loop probe coming back, and if so stops forwarding.
func (f *forwarder) isProbe(name string, qtype uint16) bool {
	if qtype != mdns.TypeHINFO {
		return false
	}
	p := f.probe.Load()
	if p == nil || *p != name {
		return false
	}
	f.loopOnce.Do(func() {
		err := fmt.Errorf("%w: the probe %s sent to the upstreams of %s came back to this server; forwarding for %s stopped", ErrLoop, name, f.domain, f.domain)
		f.loopErr.Store(&err)
		f.metrics.loop(f.domain)
		f.log.Error("forwarding loop detected", "domain", f.domain, "probe", name, "err", err)
	})
	return true
}

func (f *forwarder) loop() error {
	if p := f.loopErr.Load(); p != nil {
		return *p
	}
	return nil
}
