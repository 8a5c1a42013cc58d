package service_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/service"
)

// loadProxier feeds n services with 10 endpoints each into a Proxier on a
// fake dataplane and syncs once.
func loadProxier(b *testing.B, n int) (*service.Proxier, []*service.EndpointSlice) {
	b.Helper()
	p, err := service.NewProxier(service.Config{Dataplane: fake.NewServices(), Node: service.NodeInfo{Name: "n1"}})
	if err != nil {
		b.Fatal(err)
	}
	var slices []*service.EndpointSlice
	for i := 0; i < n; i++ {
		name := service.Name{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i)}
		s := &service.Service{Name: name, ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports: []service.Port{{Protocol: service.TCP, Port: 80, TargetPort: 8080}}}
		if err := p.OnServiceAdd(s); err != nil {
			b.Fatal(err)
		}
		es := &service.EndpointSlice{Name: name.Name + "-1", Service: name, Ports: []service.SlicePort{{Protocol: service.TCP, Port: 8080}}}
		for j := 0; j < 10; j++ {
			es.Endpoints = append(es.Endpoints, service.Endpoint{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(i >> 4), byte(i<<4 | j)})},
				Ready: true, Serving: true, NodeName: fmt.Sprintf("n%d", j)})
		}
		if err := p.OnEndpointSliceAdd(es); err != nil {
			b.Fatal(err)
		}
		slices = append(slices, es)
	}
	if err := p.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	return p, slices
}

// BenchmarkProxierSync measures the Go side of a sync (state computation,
// no kernel): a full sync of n services, and one endpoint change with n
// present. It reports the heap held by n services.
//
//	go test -run '^$' -bench BenchmarkProxierSync -benchmem ./service/
func BenchmarkProxierSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("full-%d", n), func(b *testing.B) {
			for b.Loop() {
				loadProxier(b, n)
			}
		})
		b.Run(fmt.Sprintf("change-endpoint-with-%d", n), func(b *testing.B) {
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			p, slices := loadProxier(b, n)
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
			ctx := context.Background()
			es := *slices[n/2]
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				c := es
				c.Endpoints = append([]service.Endpoint(nil), es.Endpoints...)
				c.Endpoints[0].Ready = i%2 == 0
				if err := p.OnEndpointSliceUpdate(nil, &c); err != nil {
					b.Fatal(err)
				}
				if err := p.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
			runtime.KeepAlive(p)
			b.ReportMetric(heap, "heap-B/service")
		})
	}
}
