package kubeconv

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/kubewire/kubewire/internal/k8sparse"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/service"
)

func mustJSON(tb testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// checkErr checks the shape of a conversion error: a skip or an invalid
// object, never both, with a message naming the object.
func checkErr(t *testing.T, err error) {
	t.Helper()
	skip, inv := errors.Is(err, ErrSkip), errors.Is(err, service.ErrInvalid)
	if skip == inv {
		t.Fatalf("error %q: ErrSkip %v, service.ErrInvalid %v; want exactly one", err, skip, inv)
	}
	if !strings.HasPrefix(err.Error(), "kubeconv: ") {
		t.Fatalf("error %q lacks the kubeconv prefix", err)
	}
	var fe *k8sparse.FieldError
	if errors.As(err, &fe) && (fe.Field == "" || fe.Reason == "") {
		t.Fatalf("error %q names no field", err)
	}
}

func serviceSeeds(tb testing.TB) [][]byte {
	lb := svc(func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.ClusterIPs = []string{"10.0.0.10", "fd00::10"}
		s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
		s.Spec.IPFamilyPolicy = ptr(v1.IPFamilyPolicyRequireDualStack)
		s.Spec.Ports = []v1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("web"), NodePort: 30080},
			{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053},
		}
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 31000
		s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24 ", "2001:db8::/32"}
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr[int32](600)}}
		s.Spec.InternalTrafficPolicy = ptr(v1.ServiceInternalTrafficPolicyLocal)
		s.Spec.TrafficDistribution = ptr(service.DistributionPreferSameZone)
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{
			{IP: "192.0.2.10", IPMode: ptr(v1.LoadBalancerIPModeProxy)},
			{IP: "2001:db8::10"},
			{Hostname: "lb.example.com"},
		}
	})
	objs := []*v1.Service{
		svc(),
		lb,
		svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }),
		svc(func(s *v1.Service) {
			s.Spec = v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "db.example.com"}
		}),
		svc(func(s *v1.Service) {
			s.Labels = map[string]string{LabelServiceProxyName: "kubewire"}
			s.Annotations = map[string]string{AnnotationLoadBalancerSourceRanges: "10.0.0.0/8, 192.168.0.0/16"}
			s.Spec.ExternalIPs = []string{"192.0.2.5"}
			s.Spec.Ports[0].TargetPort = intstr.FromString("http-alt")
		}),
		svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }),
	}
	var out [][]byte
	for _, o := range objs {
		out = append(out, mustJSON(tb, o))
	}
	out = append(out,
		[]byte(`{"metadata":{"namespace":"ns","name":"a"},"spec":{"clusterIP":"010.0.0.1","ports":[{"port":80,"targetPort":"8080"}]}}`),
		[]byte(`{"metadata":{"namespace":"ns","name":"a"},"spec":{"clusterIPs":["fd00::1","10.0.0.300"],"ports":[{"port":70000}]}}`),
		[]byte(`{"metadata":{"namespace":"ns","name":"a"},"spec":{"clusterIP":"10.0.0.1","sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":0}},"ports":[{"port":1}]}}`),
	)
	return out
}

func FuzzService(f *testing.F) {
	for _, s := range serviceSeeds(f) {
		f.Add(s, "")
		f.Add(s, "kubewire")
	}
	f.Fuzz(func(t *testing.T, data []byte, proxyName string) {
		var in v1.Service
		if json.Unmarshal(data, &in) != nil {
			t.Skip()
		}
		before := mustJSON(t, &in)
		got, err := Service(&in, Options{ProxyName: proxyName})
		if !bytes.Equal(before, mustJSON(t, &in)) {
			t.Fatal("Service modified its input")
		}
		if err != nil {
			if got != nil {
				t.Fatalf("Service returned %+v with error %v", got, err)
			}
			checkErr(t, err)
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("result fails Validate: %v\n%+v", err, got)
		}
		for _, ip := range got.ClusterIPs {
			if ip.Is4In6() {
				t.Fatalf("cluster IP %v not unmapped", ip)
			}
		}
		again, err := Service(&in, Options{ProxyName: proxyName})
		if err != nil || !again.Equal(got) {
			t.Fatalf("second conversion differs: %+v, %v", again, err)
		}
	})
}

func sliceSeeds(tb testing.TB) [][]byte {
	objs := []*discoveryv1.EndpointSlice{
		slice(),
		slice(func(es *discoveryv1.EndpointSlice) {
			es.AddressType = discoveryv1.AddressTypeIPv6
			es.Ports = []discoveryv1.EndpointPort{{Port: ptr[int32](8080)}, {Name: ptr("dns"), Protocol: ptr(v1.ProtocolUDP), Port: ptr[int32](53)}, {Name: ptr("none")}}
			es.Endpoints = []discoveryv1.Endpoint{
				{Addresses: []string{"fd00:1::5"}, NodeName: ptr("node-a"), Zone: ptr("zone-1"),
					Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-1"}}, ForNodes: []discoveryv1.ForNode{{Name: "node-a"}}}},
				{Addresses: []string{"fd00:1::6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Terminating: ptr(true)}},
				{Addresses: []string{"fd00:1::7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(false), Terminating: ptr(true)}},
			}
		}),
		slice(func(es *discoveryv1.EndpointSlice) {
			es.AddressType = discoveryv1.AddressTypeFQDN
			es.Endpoints[0].Addresses = []string{"db.example.com"}
		}),
		slice(func(es *discoveryv1.EndpointSlice) { es.Labels = nil }),
	}
	var out [][]byte
	for _, o := range objs {
		out = append(out, mustJSON(tb, o))
	}
	out = append(out,
		[]byte(`{"metadata":{"namespace":"ns","name":"s","labels":{"kubernetes.io/service-name":"a"}},"addressType":"IPv4","ports":[{"port":70000}],"endpoints":[{"addresses":["10.0.0.300"]}]}`),
		[]byte(`{"metadata":{"namespace":"ns","name":"s","labels":{"kubernetes.io/service-name":"a"}},"addressType":"IPv4","endpoints":[{"addresses":["010.0.0.1","::ffff:10.0.0.2"],"conditions":{}}]}`),
	)
	return out
}

func FuzzEndpointSlice(f *testing.F) {
	for _, s := range sliceSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var in discoveryv1.EndpointSlice
		if json.Unmarshal(data, &in) != nil {
			t.Skip()
		}
		before := mustJSON(t, &in)
		got, err := EndpointSlice(&in)
		if !bytes.Equal(before, mustJSON(t, &in)) {
			t.Fatal("EndpointSlice modified its input")
		}
		if err != nil {
			if got != nil {
				t.Fatalf("EndpointSlice returned %+v with error %v", got, err)
			}
			checkErr(t, err)
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("result fails Validate: %v\n%+v", err, got)
		}
		if len(got.Endpoints) != len(in.Endpoints) {
			t.Fatalf("%d endpoints, want %d", len(got.Endpoints), len(in.Endpoints))
		}
		is4 := in.AddressType == discoveryv1.AddressTypeIPv4
		for i, e := range got.Endpoints {
			c := in.Endpoints[i].Conditions
			if e.Ready != (c.Ready == nil || *c.Ready) || e.Serving != (c.Serving == nil || *c.Serving) ||
				e.Terminating != (c.Terminating != nil && *c.Terminating) {
				t.Fatalf("endpoint %d: conditions %+v from %+v", i, e, c)
			}
			for _, a := range e.Addresses {
				if a.Is4() != is4 || a.Is4In6() {
					t.Fatalf("endpoint %d: address %v in a %s slice", i, a, in.AddressType)
				}
			}
		}
		for _, p := range got.Ports {
			if p.Port == 0 {
				t.Fatalf("port %+v kept", p)
			}
		}
	})
}
