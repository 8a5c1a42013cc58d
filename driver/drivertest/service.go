package drivertest

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/kubewire/kubewire/service"
)

// Peer is where a test connection starts.
type Peer int

// Connection sources a ServiceEnv must offer.
const (
	// FromPod is a pod on the node under test that is not an endpoint.
	FromPod Peer = iota
	// FromEndpoint is the pod of the first local endpoint (for hairpin).
	FromEndpoint
	// FromNode is the node itself.
	FromNode
	// FromOutside is a client outside the cluster, routed to the node.
	FromOutside
)

// Outcome is what one connection attempt did.
type Outcome struct {
	// Backend is the endpoint that answered (invalid when none did).
	Backend netip.AddrPort
	// Source is the client address the endpoint saw.
	Source netip.Addr
	// Refused: the connection was rejected at once (TCP reset or ICMP
	// unreachable). Neither Refused nor a Backend means it was dropped.
	Refused bool
}

// ServiceEnv is what the service dataplane suite needs from a driver under
// test: the driver, bound to a node, and a way to send traffic.
type ServiceEnv struct {
	Dataplane service.Dataplane
	// Node is the node's name (targets on it are local) and NodeIPs the
	// addresses node ports answer on, IPv4 first.
	Node    string
	NodeIPs []netip.Addr
	// LocalEndpoints and RemoteEndpoints are pod addresses (IPv4) that can
	// serve, on this node and on another; at least two local and one
	// remote. LocalEndpoints[0] is the FromEndpoint pod.
	LocalEndpoints, RemoteEndpoints []netip.Addr
	// Addr returns the address of a peer, as the node sees it unNATed.
	Addr func(p Peer) netip.Addr
	// Connect opens one TCP connection (or UDP exchange) from p to dst and
	// reports the outcome. Endpoints serve on every port the suite uses.
	Connect func(t *testing.T, p Peer, proto service.Protocol, dst netip.AddrPort) Outcome
}

// TestServiceDataplane runs the service.Dataplane conformance suite.
// newEnv is called once per subtest and must give a dataplane holding no
// service.
func TestServiceDataplane(t *testing.T, newEnv func(t *testing.T) ServiceEnv) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, e ServiceEnv)
	}{
		{"cluster-ip-balances", testBalances},
		{"no-endpoints-refused", testRefused},
		{"internal-local-drops", testInternalLocal},
		{"external-local-keeps-source", testExternalLocal},
		{"node-port-and-external-ips", testNodePort},
		{"hairpin", testHairpin},
		{"affinity", testAffinity},
		{"removal", testRemoval},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newEnv(t)) })
	}
}

var (
	clusterIP  = netip.MustParseAddr("10.96.0.10")
	externalIP = netip.MustParseAddr("198.18.77.7")
)

const svcPort, targetPort, nodePort = 80, 8080, 30080

// buildState makes a one-port service state with the given endpoints.
func buildState(e ServiceEnv, mut func(*service.Service), eps ...netip.Addr) *service.State {
	s := &service.Service{
		Name:       service.Name{Namespace: "conformance", Name: "svc"},
		ClusterIPs: []netip.Addr{clusterIP},
		Ports:      []service.Port{{Name: "p", Protocol: service.TCP, Port: svcPort, TargetPort: targetPort}},
	}
	if mut != nil {
		mut(s)
	}
	es := &service.EndpointSlice{Name: "s", Service: s.Name, Ports: []service.SlicePort{{Name: "p", Protocol: service.TCP, Port: targetPort}}}
	for _, a := range eps {
		node := "other"
		for _, l := range e.LocalEndpoints {
			if l == a {
				node = e.Node
			}
		}
		es.Endpoints = append(es.Endpoints, service.Endpoint{Addresses: []netip.Addr{a}, Ready: true, Serving: true, NodeName: node})
	}
	ps := service.BuildPort(s, s.Ports[0], service.Backends([]*service.EndpointSlice{es}, s.PortNames()[0]), service.NodeInfo{Name: e.Node})
	return &service.State{Ports: []service.PortState{ps}}
}

func apply(t *testing.T, e ServiceEnv, st *service.State) {
	t.Helper()
	if err := e.Dataplane.Sync(context.Background(), st, service.Hint{Full: true}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func testBalances(t *testing.T, e ServiceEnv) {
	eps := append(append([]netip.Addr{}, e.LocalEndpoints[:2]...), e.RemoteEndpoints[0])
	apply(t, e, buildState(e, nil, eps...))
	seen := map[netip.Addr]int{}
	for i := 0; i < 60; i++ {
		o := e.Connect(t, FromPod, service.TCP, netip.AddrPortFrom(clusterIP, svcPort))
		if !o.Backend.IsValid() {
			t.Fatalf("connection %d to the ClusterIP failed: %+v", i, o)
		}
		if o.Backend.Port() != targetPort {
			t.Fatalf("reached %s, want target port %d", o.Backend, targetPort)
		}
		if o.Source != e.Addr(FromPod) {
			t.Fatalf("endpoint saw %s, want the pod's own %s (no NAT pod to service)", o.Source, e.Addr(FromPod))
		}
		seen[o.Backend.Addr()]++
	}
	for _, a := range eps {
		if seen[a] == 0 {
			t.Fatalf("endpoint %s never chosen in 60 connections: %v", a, seen)
		}
	}
}

func testRefused(t *testing.T, e ServiceEnv) {
	apply(t, e, buildState(e, nil))
	start := time.Now()
	o := e.Connect(t, FromPod, service.TCP, netip.AddrPortFrom(clusterIP, svcPort))
	if !o.Refused || o.Backend.IsValid() {
		t.Fatalf("connection to a service without endpoints = %+v, want refused", o)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("refusal took %v: it must be immediate, not a timeout", time.Since(start))
	}
}

func testInternalLocal(t *testing.T, e ServiceEnv) {
	local := func(s *service.Service) { s.InternalTrafficPolicy = service.PolicyLocal }
	apply(t, e, buildState(e, local, e.RemoteEndpoints[0]))
	o := e.Connect(t, FromPod, service.TCP, netip.AddrPortFrom(clusterIP, svcPort))
	if o.Refused || o.Backend.IsValid() {
		t.Fatalf("iTP Local without a local endpoint = %+v, want dropped", o)
	}
	apply(t, e, buildState(e, local, e.RemoteEndpoints[0], e.LocalEndpoints[1]))
	for i := 0; i < 10; i++ {
		if o := e.Connect(t, FromPod, service.TCP, netip.AddrPortFrom(clusterIP, svcPort)); o.Backend.Addr() != e.LocalEndpoints[1] {
			t.Fatalf("iTP Local reached %+v, want only the local %s", o, e.LocalEndpoints[1])
		}
	}
}

func testExternalLocal(t *testing.T, e ServiceEnv) {
	st := buildState(e, func(s *service.Service) {
		s.Ports[0].NodePort = nodePort
		s.ExternalTrafficPolicy = service.PolicyLocal
	}, e.LocalEndpoints[1], e.RemoteEndpoints[0])
	apply(t, e, st)
	for i := 0; i < 10; i++ {
		o := e.Connect(t, FromOutside, service.TCP, netip.AddrPortFrom(e.NodeIPs[0], nodePort))
		if o.Backend.Addr() != e.LocalEndpoints[1] || o.Source != e.Addr(FromOutside) {
			t.Fatalf("eTP Local from outside = %+v, want %s seeing the client %s", o, e.LocalEndpoints[1], e.Addr(FromOutside))
		}
	}
	// eTP Cluster: external traffic is masqueraded (the endpoint sees the node).
	apply(t, e, buildState(e, func(s *service.Service) { s.Ports[0].NodePort = nodePort }, e.RemoteEndpoints[0]))
	o := e.Connect(t, FromOutside, service.TCP, netip.AddrPortFrom(e.NodeIPs[0], nodePort))
	if !o.Backend.IsValid() || o.Source == e.Addr(FromOutside) {
		t.Fatalf("eTP Cluster from outside = %+v, want masqueraded", o)
	}
}

func testNodePort(t *testing.T, e ServiceEnv) {
	apply(t, e, buildState(e, func(s *service.Service) {
		s.Ports[0].NodePort = nodePort
		s.ExternalIPs = []netip.Addr{externalIP}
	}, e.LocalEndpoints[0]))
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(e.NodeIPs[0], nodePort), netip.AddrPortFrom(externalIP, svcPort)} {
		if o := e.Connect(t, FromOutside, service.TCP, dst); o.Backend.Addr() != e.LocalEndpoints[0] {
			t.Fatalf("%s from outside = %+v, want %s", dst, o, e.LocalEndpoints[0])
		}
	}
}

func testHairpin(t *testing.T, e ServiceEnv) {
	apply(t, e, buildState(e, nil, e.LocalEndpoints[0]))
	o := e.Connect(t, FromEndpoint, service.TCP, netip.AddrPortFrom(clusterIP, svcPort))
	if o.Backend.Addr() != e.LocalEndpoints[0] {
		t.Fatalf("hairpin = %+v, want the pod to reach itself", o)
	}
}

func testAffinity(t *testing.T, e ServiceEnv) {
	apply(t, e, buildState(e, func(s *service.Service) { s.AffinityTimeout = time.Hour }, e.LocalEndpoints[0], e.LocalEndpoints[1], e.RemoteEndpoints[0]))
	first := e.Connect(t, FromPod, service.TCP, netip.AddrPortFrom(clusterIP, svcPort))
	for i := 0; i < 20; i++ {
		if o := e.Connect(t, FromPod, service.TCP, netip.AddrPortFrom(clusterIP, svcPort)); o.Backend != first.Backend {
			t.Fatalf("affinity broke on connection %d: %s then %s", i, first.Backend, o.Backend)
		}
	}
}

func testRemoval(t *testing.T, e ServiceEnv) {
	apply(t, e, buildState(e, nil, e.LocalEndpoints[0]))
	apply(t, e, &service.State{})
	o := e.Connect(t, FromPod, service.TCP, netip.AddrPortFrom(clusterIP, svcPort))
	if o.Backend.IsValid() {
		t.Fatalf("removed service still answers: %+v", o)
	}
}

// String renders an outcome for messages.
func (o Outcome) String() string {
	switch {
	case o.Backend.IsValid():
		return fmt.Sprintf("%s (seen from %s)", o.Backend, o.Source)
	case o.Refused:
		return "refused"
	}
	return "dropped"
}
