package service_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/service"
)

// A Proxier turns Service and EndpointSlice events into syncs of a
// dataplane: here the in-memory one of driver/fake, whose Trace says where
// a packet would go; driver/nftables renders the same State in the kernel.
// A node agent calls Run(ctx) instead of Sync, and feeds the events from
// informers through service/kubeconv.
func ExampleProxier() {
	dp := fake.NewServices(netip.MustParseAddr("192.0.2.11"))
	p, err := service.NewProxier(service.Config{Dataplane: dp, Node: service.NodeInfo{Name: "node1"}})
	if err != nil {
		panic(err)
	}
	web := service.Name{Namespace: "shop", Name: "web"}
	if err := p.OnServiceAdd(&service.Service{Name: web,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.20")},
		Ports:      []service.Port{{Name: "http", Protocol: service.TCP, Port: 80, TargetPortName: "http"}}}); err != nil {
		panic(err)
	}
	if err := p.OnEndpointSliceAdd(&service.EndpointSlice{Name: "web-1", Service: web,
		Ports: []service.SlicePort{{Name: "http", Protocol: service.TCP, Port: 8080}},
		Endpoints: []service.Endpoint{
			{Addresses: []netip.Addr{netip.MustParseAddr("10.244.1.5")}, Ready: true, Serving: true, NodeName: "node1"},
			{Addresses: []netip.Addr{netip.MustParseAddr("10.244.2.7")}, Ready: true, Serving: true, NodeName: "node2"},
		}}); err != nil {
		panic(err)
	}
	if err := p.Sync(context.Background()); err != nil {
		panic(err)
	}
	r := dp.Trace(netip.MustParseAddr("10.244.1.9"), false, service.TCP, netip.MustParseAddrPort("10.96.0.20:80"))
	fmt.Println(r.Verdict, r.Targets)
	r = dp.Trace(netip.MustParseAddr("10.244.1.9"), false, service.TCP, netip.MustParseAddrPort("10.96.0.20:81"))
	fmt.Println(r.Verdict)
	// Output:
	// forward [{10.244.1.5 8080 true} {10.244.2.7 8080 false}]
	// reject
}
