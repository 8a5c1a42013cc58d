package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Proxier's Prometheus metrics, modelled on kube-proxy's.
// They are registered by the caller (Metrics is a prometheus.Collector):
//
//	m := service.NewMetrics()
//	registry.MustRegister(m)
//	proxier, _ := service.NewProxier(service.Config{..., Metrics: m})
type Metrics struct {
	syncDuration       *prometheus.HistogramVec
	lastSync           prometheus.Gauge
	pendingChanges     prometheus.Gauge
	syncFailures       prometheus.Counter
	noLocalEndpoints   *prometheus.GaugeVec
	networkProgramming prometheus.Histogram
	ports              prometheus.Gauge
}

// NewMetrics returns unregistered metrics.
func NewMetrics() *Metrics {
	const ns, sub = "kubewire", "service"
	return &Metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "sync_duration_seconds",
			Help:    "Time to compute the desired state and program the dataplane, by kind (full or partial).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"kind"}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "last_sync_timestamp_seconds",
			Help: "When the dataplane was last synced successfully (Unix seconds).",
		}),
		pendingChanges: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "changes_pending",
			Help: "Service and EndpointSlice changes recorded but not yet synced.",
		}),
		syncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "sync_failures_total",
			Help: "Dataplane syncs that failed (the next one is full).",
		}),
		noLocalEndpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "no_local_endpoints",
			Help: "Service ports with a Local traffic policy and no local endpoint on this node, by policy (internal or external).",
		}, []string{"traffic_policy"}),
		networkProgramming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "network_programming_duration_seconds",
			Help:    "Time from an endpoint change (the EndpointSlice trigger time) until the dataplane serves it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
		}),
		ports: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "ports",
			Help: "Service ports in the dataplane.",
		}),
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.syncDuration, m.lastSync, m.pendingChanges, m.syncFailures, m.noLocalEndpoints, m.networkProgramming, m.ports}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// observeSync records one sync. A nil Metrics records nothing.
func (m *Metrics) observeSync(full bool, took time.Duration, err error, st *State, pending int, triggers []time.Time, now time.Time) {
	if m == nil {
		return
	}
	kind := "partial"
	if full {
		kind = "full"
	}
	m.syncDuration.WithLabelValues(kind).Observe(took.Seconds())
	if err != nil {
		m.syncFailures.Inc()
		return
	}
	m.lastSync.Set(float64(now.UnixNano()) / 1e9)
	m.pendingChanges.Set(float64(pending))
	m.ports.Set(float64(len(st.Ports)))
	var internal, external int
	for i := range st.Ports {
		p := &st.Ports[i]
		if p.InternalLocal && p.HasEndpoints && len(p.InternalEndpoints) == 0 {
			internal++
		}
		if p.ExternalLocal && p.HasEndpoints && len(p.ExternalEndpoints) == 0 {
			external++
		}
	}
	m.noLocalEndpoints.WithLabelValues("internal").Set(float64(internal))
	m.noLocalEndpoints.WithLabelValues("external").Set(float64(external))
	for _, t := range triggers {
		if d := now.Sub(t); d >= 0 {
			m.networkProgramming.Observe(d.Seconds())
		}
	}
}
