package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/service"
)

func TestMetrics(t *testing.T) {
	m := service.NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	dp := fake.NewServices()
	p, err := service.NewProxier(service.Config{Dataplane: dp, Metrics: m, Node: service.NodeInfo{Name: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p.OnServiceAdd(svc(func(s *service.Service) { s.InternalTrafficPolicy = service.PolicyLocal }))
	es := slice("s", 8080, ready("10.244.2.2", "n2"))
	es.TriggerTime = time.Now().Add(-time.Second)
	p.OnEndpointSliceAdd(es)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	dp.FailNext(errors.New("boom"))
	p.OnServiceDelete(svc())
	_ = p.Sync(ctx)

	got := map[string]*dto.MetricFamily{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	if mf := got["kubewire_service_ports"]; mf == nil || mf.Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("ports gauge = %v", mf)
	}
	if mf := got["kubewire_service_sync_failures_total"]; mf == nil || mf.Metric[0].GetCounter().GetValue() != 1 {
		t.Fatalf("failures = %v", mf)
	}
	h := got["kubewire_service_network_programming_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() < 1 {
		t.Fatalf("network programming histogram = %v", h)
	}
	var internal float64 = -1
	for _, mm := range got["kubewire_service_no_local_endpoints"].GetMetric() {
		if mm.GetLabel()[0].GetValue() == "internal" {
			internal = mm.GetGauge().GetValue()
		}
	}
	if internal != 1 {
		t.Fatalf("no_local_endpoints{internal} = %v, want 1", internal)
	}
	var syncs uint64
	for _, mm := range got["kubewire_service_sync_duration_seconds"].GetMetric() {
		syncs += mm.GetHistogram().GetSampleCount()
	}
	if syncs != 2 {
		t.Fatalf("sync duration samples = %d, want 2", syncs)
	}
}
