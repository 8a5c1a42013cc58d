package dns

import (
	"strconv"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

var _ prometheus.Collector = (*metrics)(nil)

// metrics are a Server's Prometheus metrics, modelled on CoreDNS's (dns,
// cache, forward and autopath plugins). NewServer registers them on
// ServerConfig.Registerer; a nil *metrics records nothing.
type metrics struct {
	requests        *prometheus.CounterVec
	responses       *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	cacheHits       *prometheus.CounterVec
	cacheMisses     prometheus.Counter
	cacheEntries    *prometheus.GaugeVec
	fwdRequests     *prometheus.CounterVec
	fwdResponses    *prometheus.CounterVec
	fwdDuration     *prometheus.HistogramVec
	fwdHealthFails  *prometheus.CounterVec
	fwdHealthy      *prometheus.GaugeVec
	fwdRejects      prometheus.Counter
	fwdLoop         *prometheus.GaugeVec
	autopathSuccess prometheus.Counter
	panics          prometheus.Counter

	// The children the query path uses, made on first use and kept:
	// WithLabelValues hashes its labels on every call.
	reqChild   [2][2][len(labeledTypes) + 1]atomic.Pointer[prometheus.Counter] // tcp, v6, type slot
	durChild   [len(labeledTypes) + 1]atomic.Pointer[prometheus.Observer]
	rcodeChild [24]atomic.Pointer[prometheus.Counter] // rcodes 0-23 (the 12-bit extended ones are not kept)
}

// child returns *p, storing make() there first when p is empty.
func child[T any](p *atomic.Pointer[T], make func() T) T {
	if v := p.Load(); v != nil {
		return *v
	}
	v := make()
	p.CompareAndSwap(nil, &v) // a racing store holds the same child
	return v
}

func newMetrics() *metrics {
	const ns = "kubewire"
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "dns", Name: "requests_total",
			Help: "DNS queries received, by transport (udp, tcp), address family of the client (1 IPv4, 2 IPv6) and query type.",
		}, []string{"proto", "family", "type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "dns", Name: "responses_total",
			Help: "DNS responses sent, by response code.",
		}, []string{"rcode"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "dns", Name: "request_duration_seconds",
			Help:    "Time to answer a query, by query type.",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
		}, []string{"type"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "cache", Name: "hits_total",
			Help: "Forwarded answers served from the cache, by kind (success or denial).",
		}, []string{"type"}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "cache", Name: "misses_total",
			Help: "Forwarded queries not found in the cache.",
		}),
		cacheEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "cache", Name: "entries",
			Help: "Answers in the cache, by kind (success or denial).",
		}, []string{"type"}),
		fwdRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "forward", Name: "requests_total",
			Help: "Queries sent to an upstream.",
		}, []string{"to"}),
		fwdResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "forward", Name: "responses_total",
			Help: "Responses received from an upstream, by response code.",
		}, []string{"to", "rcode"}),
		fwdDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "forward", Name: "request_duration_seconds",
			Help:    "Round trip time of queries to an upstream.",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
		}, []string{"to"}),
		fwdHealthFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "forward", Name: "healthcheck_failures_total",
			Help: "Failed health checks of an upstream.",
		}, []string{"to"}),
		fwdHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "forward", Name: "upstream_healthy",
			Help: "1 when an upstream is considered healthy, 0 when it is down.",
		}, []string{"to"}),
		fwdRejects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "forward", Name: "max_concurrent_rejects_total",
			Help: "Queries refused because MaxConcurrent forwarded queries were in flight.",
		}),
		fwdLoop: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "forward", Name: "loop_detected",
			Help: "1 when a forwarding loop was detected for a domain (forwarding for it stopped).",
		}, []string{"domain"}),
		autopathSuccess: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "autopath", Name: "success_total",
			Help: "Queries answered from a later search path element by server-side search (autopath).",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "dns", Name: "panics_total",
			Help: "Queries whose handling panicked (answered SERVFAIL).",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.responses, m.duration, m.cacheHits, m.cacheMisses, m.cacheEntries,
		m.fwdRequests, m.fwdResponses, m.fwdDuration, m.fwdHealthFails, m.fwdHealthy, m.fwdRejects, m.fwdLoop,
		m.autopathSuccess, m.panics}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// labeledTypes are the query types counted by name, as CoreDNS does; any
// other type is counted as "other" (slot len(labeledTypes)).
var labeledTypes = [...]uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypePTR, mdns.TypeTXT,
	mdns.TypeCNAME, mdns.TypeMX, mdns.TypeNS, mdns.TypeSOA, mdns.TypeANY, mdns.TypeHTTPS, mdns.TypeSVCB,
	mdns.TypeDS, mdns.TypeDNSKEY, mdns.TypeHINFO, mdns.TypeNAPTR, mdns.TypeCAA}

func typeSlot(t uint16) int {
	for i, lt := range labeledTypes {
		if lt == t {
			return i
		}
	}
	return len(labeledTypes)
}

func typeLabel(slot int) string {
	if slot < len(labeledTypes) {
		return mdns.TypeToString[labeledTypes[slot]]
	}
	return "other"
}

func rcodeLabel(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return strconv.Itoa(rc)
}

func (m *metrics) request(tcp, v6 bool, qtype uint16) {
	if m == nil {
		return
	}
	t := typeSlot(qtype)
	child(&m.reqChild[b2i(tcp)][b2i(v6)][t], func() prometheus.Counter {
		proto, fam := "udp", "1"
		if tcp {
			proto = "tcp"
		}
		if v6 {
			fam = "2"
		}
		return m.requests.WithLabelValues(proto, fam, typeLabel(t))
	}).Inc()
}

func (m *metrics) response(rcode int, qtype uint16, took time.Duration) {
	if m == nil {
		return
	}
	if rcode >= 0 && rcode < len(m.rcodeChild) {
		child(&m.rcodeChild[rcode], func() prometheus.Counter { return m.responses.WithLabelValues(rcodeLabel(rcode)) }).Inc()
	} else {
		m.responses.WithLabelValues(rcodeLabel(rcode)).Inc()
	}
	t := typeSlot(qtype)
	child(&m.durChild[t], func() prometheus.Observer { return m.duration.WithLabelValues(typeLabel(t)) }).Observe(took.Seconds())
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) cacheHit(denial bool) {
	if m == nil {
		return
	}
	if denial {
		m.cacheHits.WithLabelValues("denial").Inc()
	} else {
		m.cacheHits.WithLabelValues("success").Inc()
	}
}

func (m *metrics) cacheMiss() {
	if m != nil {
		m.cacheMisses.Inc()
	}
}

func (m *metrics) cacheSize(success, denial int) {
	if m == nil {
		return
	}
	m.cacheEntries.WithLabelValues("success").Set(float64(success))
	m.cacheEntries.WithLabelValues("denial").Set(float64(denial))
}

func (m *metrics) forwarded(to string, rcode int, err error, took time.Duration) {
	if m == nil {
		return
	}
	m.fwdRequests.WithLabelValues(to).Inc()
	if err == nil {
		m.fwdResponses.WithLabelValues(to, rcodeLabel(rcode)).Inc()
		m.fwdDuration.WithLabelValues(to).Observe(took.Seconds())
	}
}

func (m *metrics) health(to string, ok, healthy bool) {
	if m == nil {
		return
	}
	if !ok {
		m.fwdHealthFails.WithLabelValues(to).Inc()
	}
	v := 0.0
	if healthy {
		v = 1
	}
	m.fwdHealthy.WithLabelValues(to).Set(v)
}

func (m *metrics) rejected() {
	if m != nil {
		m.fwdRejects.Inc()
	}
}

func (m *metrics) loop(domain string) {
	if m != nil {
		m.fwdLoop.WithLabelValues(domain).Set(1)
	}
}

func (m *metrics) autopath() {
	if m != nil {
		m.autopathSuccess.Inc()
	}
}

func (m *metrics) panicked() {
	if m != nil {
		m.panics.Inc()
	}
}
