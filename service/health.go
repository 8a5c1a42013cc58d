package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// ProxyHealth answers the proxy's /healthz and /livez like kube-proxy: the
// proxy is healthy when it has no queued change older than Timeout that a
// sync has not yet applied. /healthz also fails while the node is being
// deleted (so load balancers drain it); /livez does not.
type ProxyHealth struct {
	timeout time.Duration
	clock   Clock

	mu           sync.Mutex
	lastUpdated  time.Time // last successful sync
	oldestQueued time.Time // zero when nothing is queued
	nodeDeleting bool
}

// NewProxyHealth returns a health tracker; timeout 0 means 2 minutes.
func NewProxyHealth(timeout time.Duration, clock Clock) *ProxyHealth {
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if clock == nil {
		clock = wallClock{}
	}
	return &ProxyHealth{timeout: timeout, clock: clock}
}

// QueuedUpdate records that a change waits for a sync.
func (h *ProxyHealth) QueuedUpdate() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.oldestQueued.IsZero() {
		h.oldestQueued = h.clock.Now()
	}
}

// Updated records a successful sync that applied every queued change.
func (h *ProxyHealth) Updated() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastUpdated = h.clock.Now()
	h.oldestQueued = time.Time{}
}

// SetNodeDeleting marks the node as being deleted (or not).
func (h *ProxyHealth) SetNodeDeleting(deleting bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodeDeleting = deleting
}

type healthBody struct {
	LastUpdated  string `json:"lastUpdated"`
	CurrentTime  string `json:"currentTime"`
	NodeEligible *bool  `json:"nodeEligible,omitempty"`
}

// healthy reports liveness: no queued change older than the timeout.
func (h *ProxyHealth) healthy(now time.Time) bool {
	return h.oldestQueued.IsZero() || now.Sub(h.oldestQueued) < h.timeout
}

// ServeHTTP implements http.Handler for /healthz and /livez.
func (h *ProxyHealth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	now := h.clock.Now()
	ok := h.healthy(now)
	body := healthBody{LastUpdated: h.lastUpdated.UTC().Format(time.RFC3339Nano), CurrentTime: now.UTC().Format(time.RFC3339Nano)}
	if r.URL.Path != "/livez" {
		eligible := !h.nodeDeleting
		body.NodeEligible = &eligible
		ok = ok && eligible
	}
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }
func (wallClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// ServiceHealth serves the healthCheckNodePort of every service with
// externalTrafficPolicy Local: 200 with the number of local endpoints when
// there is at least one, 503 otherwise, so external load balancers send
// traffic only to nodes that can serve it.
type ServiceHealth struct {
	listen func(network, addr string) (net.Listener, error)
	addrs  []netip.Addr

	mu      sync.Mutex
	servers map[uint16]*hcServer
	counts  map[Name]int
	healthy func() bool
	closed  bool
}

type hcServer struct {
	name Name
	srv  *http.Server
	lns  []net.Listener
}

// ServiceHealthConfig configures ServiceHealth.
type ServiceHealthConfig struct {
	// Addresses to listen on; empty means every address.
	Addresses []netip.Addr
	// Listen opens listeners (net.Listen when nil); agents running in a
	// node namespace pass one bound to it.
	Listen func(network, addr string) (net.Listener, error)
	// ProxyHealthy, when set, is reported as serviceProxyHealthy.
	ProxyHealthy func() bool
}

// NewServiceHealth returns a ServiceHealth serving nothing yet.
func NewServiceHealth(cfg ServiceHealthConfig) *ServiceHealth {
	if cfg.Listen == nil {
		cfg.Listen = net.Listen
	}
	if cfg.ProxyHealthy == nil {
		cfg.ProxyHealthy = func() bool { return true }
	}
	return &ServiceHealth{listen: cfg.Listen, addrs: cfg.Addresses, servers: map[uint16]*hcServer{},
		counts: map[Name]int{}, healthy: cfg.ProxyHealthy}
}

// Sync makes the set of health servers match ports (service → port) and
// records each service's local endpoint count. A port that cannot be
// opened is reported; the others still serve.
func (sh *ServiceHealth) Sync(ports map[Name]uint16, localEndpoints map[Name]int) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.closed {
		return errors.New("service: health servers closed")
	}
	sh.counts = localEndpoints
	var errs []error
	want := map[uint16]Name{}
	for n, p := range ports {
		if p != 0 {
			want[p] = n
		}
	}
	for p, s := range sh.servers {
		if n, ok := want[p]; !ok || n != s.name {
			s.close()
			delete(sh.servers, p)
		}
	}
	for p, n := range want {
		if _, ok := sh.servers[p]; ok {
			continue
		}
		s, err := sh.start(p, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sh.servers[p] = s
	}
	return errors.Join(errs...)
}

func (sh *ServiceHealth) start(port uint16, n Name) (*hcServer, error) {
	s := &hcServer{name: n}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sh.serve(w, n) }),
		ReadHeaderTimeout: 5 * time.Second}
	addrs := sh.addrs
	if len(addrs) == 0 {
		addrs = []netip.Addr{{}}
	}
	for _, a := range addrs {
		host := ""
		if a.IsValid() {
			host = a.String()
		}
		ln, err := sh.listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("service: health check port %d of %s: %w", port, n, err)
		}
		s.lns = append(s.lns, ln)
		go func() { _ = s.srv.Serve(ln) }()
	}
	return s, nil
}

func (s *hcServer) close() {
	_ = s.srv.Close()
	for _, ln := range s.lns {
		ln.Close()
	}
}

type hcBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (sh *ServiceHealth) serve(w http.ResponseWriter, n Name) {
	sh.mu.Lock()
	count := sh.counts[n]
	sh.mu.Unlock()
	var b hcBody
	b.Service.Namespace, b.Service.Name = n.Namespace, n.Name
	b.LocalEndpoints = count
	b.ServiceProxyHealthy = sh.healthy()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if count == 0 || !b.ServiceProxyHealthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(b)
}

// Ports returns the ports being served.
func (sh *ServiceHealth) Ports() []uint16 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []uint16
	for p := range sh.servers {
		out = append(out, p)
	}
	return out
}

// Close stops every server.
func (sh *ServiceHealth) Close() error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.closed = true
	for p, s := range sh.servers {
		s.close()
		delete(sh.servers, p)
	}
	return nil
}

// RunHealthz serves h on addr ("127.0.0.1:10256" in kube-proxy) until ctx
// ends.
func RunHealthz(ctx context.Context, addr string, h *ProxyHealth) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}
