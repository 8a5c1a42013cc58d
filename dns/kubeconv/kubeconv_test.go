package kubeconv

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubewire/kubewire/dns"
)

func ptr[T any](v T) *T { return &v }

var ip = netip.MustParseAddr

func svc(edit ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
	for _, e := range edit {
		e(s)
	}
	return s
}

func slice(edit ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-abc",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.5"}, Hostname: ptr("web-0")},
			{Addresses: []string{"10.1.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			{Addresses: []string{"10.1.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
		},
	}
	for _, e := range edit {
		e(es)
	}
	return es
}

func checkErr(t *testing.T, err error, skip bool, contains string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if errors.Is(err, ErrSkip) != skip || errors.Is(err, dns.ErrInvalid) == skip {
		t.Fatalf("error %q: ErrSkip %v, dns.ErrInvalid %v; want skip=%v", err, errors.Is(err, ErrSkip), errors.Is(err, dns.ErrInvalid), skip)
	}
	if !strings.HasPrefix(err.Error(), "kubeconv: ") || !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q, want it to contain %q", err, contains)
	}
}

func TestService(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *v1.Service
		want *dns.Service
	}{
		{"cluster IP", svc(), &dns.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{ip("10.96.0.10")},
			Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}}}},
		{"dual-stack, protocol defaulted", svc(func(s *v1.Service) {
			s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00::10"}
			s.Spec.Ports = []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53}, {Name: "dns-tcp", Port: 53}}
		}), &dns.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{ip("10.96.0.10"), ip("fd00::10")},
			Ports: []dns.Port{{Name: "dns", Protocol: dns.UDP, Port: 53}, {Name: "dns-tcp", Protocol: dns.TCP, Port: 53}}}},
		{"legacy clusterIP only, sloppy address", svc(func(s *v1.Service) { s.Spec.ClusterIPs = nil; s.Spec.ClusterIP = "010.096.000.010" }),
			&dns.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{ip("10.96.0.10")},
				Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}}}},
		{"IPv4-mapped", svc(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"::ffff:10.96.0.10"} }),
			&dns.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{ip("10.96.0.10")},
				Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}}}},
		{"headless", svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }),
			&dns.Service{Namespace: "default", Name: "web", Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}}}},
		{"ExternalName", svc(func(s *v1.Service) {
			s.Spec = v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "db.example.com"}
		}), &dns.Service{Namespace: "default", Name: "web", ExternalName: "db.example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Service(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name     string
		in       *v1.Service
		skip     bool
		contains string
	}{
		{"no cluster IP yet", svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }), true, "no cluster IP"},
		{"ExternalName IP", svc(func(s *v1.Service) {
			s.Spec = v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "192.0.2.1"}
		}), true, "IP address"},
		{"ExternalName empty", svc(func(s *v1.Service) { s.Spec = v1.ServiceSpec{Type: v1.ServiceTypeExternalName} }), true, "externalName"},
		{"ExternalName bad", svc(func(s *v1.Service) { s.Spec = v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "a..b"} }), false, "ExternalName"},
		{"bad IP", svc(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.10", "10.0.0.300"} }), false, `spec.clusterIPs[1] "10.0.0.300": not an IP address`},
		{"same family", svc(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.10", "10.96.0.11"} }), false, "same IP family"},
		{"three IPs", svc(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00::1", "10.0.0.1"} }), false, "at most two"},
		{"bad protocol", svc(func(s *v1.Service) { s.Spec.Ports[0].Protocol = "ICMP" }), false, `spec.ports[0].protocol "ICMP"`},
		{"bad port", svc(func(s *v1.Service) { s.Spec.Ports[0].Port = 70000 }), false, "spec.ports[0].port 70000"},
		{"bad port name", svc(func(s *v1.Service) { s.Spec.Ports[0].Name = "a.b" }), false, "Ports[0].Name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Service(tc.in)
			if got != nil {
				t.Fatalf("result %+v with error", got)
			}
			checkErr(t, err, tc.skip, tc.contains)
		})
	}
	if _, err := Service(nil); !errors.Is(err, dns.ErrInvalid) {
		t.Fatalf("nil: %v", err)
	}
}

func TestEndpointSlice(t *testing.T) {
	got, err := EndpointSlice(slice(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &dns.EndpointSlice{Namespace: "default", Name: "web-abc", Service: "web",
		Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 8080}},
		Endpoints: []dns.Endpoint{
			{Addresses: []netip.Addr{ip("10.1.0.5")}, Hostname: "web-0", Ready: true},
			{Addresses: []netip.Addr{ip("10.1.0.6")}, Ready: true},
			{Addresses: []netip.Addr{ip("10.1.0.7")}, Ready: false},
		}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	// publishNotReadyAddresses: every endpoint is ready.
	got, err = EndpointSlice(slice(), svc(func(s *v1.Service) { s.Spec.PublishNotReadyAddresses = true }))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got.Endpoints {
		if !e.Ready {
			t.Errorf("endpoint %d not ready with publishNotReadyAddresses", i)
		}
	}
	got, err = EndpointSlice(slice(func(es *discoveryv1.EndpointSlice) {
		es.AddressType = discoveryv1.AddressTypeIPv6
		es.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"fd00::5"}}}
		es.Ports = []discoveryv1.EndpointPort{{Port: ptr[int32](53), Protocol: ptr(v1.ProtocolUDP)}, {Name: ptr("none")}}
	}), svc())
	if err != nil || got.Endpoints[0].Addresses[0] != ip("fd00::5") || len(got.Ports) != 1 || got.Ports[0].Protocol != dns.UDP {
		t.Fatalf("IPv6 slice: %+v, %v", got, err)
	}

	for _, tc := range []struct {
		name     string
		in       *discoveryv1.EndpointSlice
		svc      *v1.Service
		skip     bool
		contains string
	}{
		{"FQDN", slice(func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeFQDN }), nil, true, "FQDN"},
		{"no service label", slice(func(es *discoveryv1.EndpointSlice) { es.Labels = nil }), nil, false, "kubernetes.io/service-name"},
		{"wrong family", slice(func(es *discoveryv1.EndpointSlice) { es.Endpoints[1].Addresses = []string{"fd00::1"} }), nil, false, `endpoints[1].addresses[0] "fd00::1": not an IPv4 address`},
		{"bad address", slice(func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Addresses = []string{"x"} }), nil, false, "not an IP address"},
		{"bad port", slice(func(es *discoveryv1.EndpointSlice) { es.Ports[0].Port = ptr[int32](-1) }), nil, false, "ports[0].port -1"},
		{"bad hostname", slice(func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Hostname = ptr("a.b") }), nil, false, "Hostname"},
		{"another service", slice(), svc(func(s *v1.Service) { s.Name = "other" }), false, "belongs to service default/web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EndpointSlice(tc.in, tc.svc)
			if got != nil {
				t.Fatalf("result %+v with error", got)
			}
			checkErr(t, err, tc.skip, tc.contains)
		})
	}
}

func TestPodAndNamespace(t *testing.T) {
	pod := func(edit ...func(*v1.Pod)) *v1.Pod {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "client"},
			Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: "10.244.1.5", PodIPs: []v1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:244::5"}}}}
		for _, e := range edit {
			e(p)
		}
		return p
	}
	got, err := Pod(pod())
	if err != nil || !reflect.DeepEqual(got, &dns.Pod{Namespace: "default", Name: "client", IPs: []netip.Addr{ip("10.244.1.5"), ip("fd00:244::5")}}) {
		t.Fatalf("pod: %+v, %v", got, err)
	}
	got, err = Pod(pod(func(p *v1.Pod) { p.Status.PodIPs = nil }))
	if err != nil || len(got.IPs) != 1 {
		t.Fatalf("podIP only: %+v, %v", got, err)
	}
	for name, edit := range map[string]func(*v1.Pod){
		"terminating": func(p *v1.Pod) { p.DeletionTimestamp = &metav1.Time{} },
		"succeeded":   func(p *v1.Pod) { p.Status.Phase = v1.PodSucceeded },
		"pending":     func(p *v1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil },
	} {
		if got, err := Pod(pod(edit)); err != nil || len(got.IPs) != 0 {
			t.Errorf("%s: %+v, %v; want no addresses", name, got, err)
		}
	}
	_, err = Pod(pod(func(p *v1.Pod) { p.Spec.HostNetwork = true }))
	checkErr(t, err, true, "host network")
	_, err = Pod(pod(func(p *v1.Pod) { p.Status.PodIPs[1].IP = "nope" }))
	checkErr(t, err, false, `status.podIPs[1].ip "nope"`)

	ns, err := Namespace(&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}})
	if err != nil || ns.Name != "kube-system" {
		t.Fatalf("namespace: %+v, %v", ns, err)
	}
	if _, err := Namespace(&v1.Namespace{}); !errors.Is(err, dns.ErrInvalid) {
		t.Fatalf("empty namespace: %v", err)
	}
}

func FuzzService(f *testing.F) {
	for _, s := range []*v1.Service{svc(), svc(func(s *v1.Service) { s.Spec.ClusterIP = "None" }),
		svc(func(s *v1.Service) {
			s.Spec = v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "x.example"}
		})} {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var in v1.Service
		if json.Unmarshal(data, &in) != nil {
			t.Skip()
		}
		before, _ := json.Marshal(&in)
		got, err := Service(&in)
		if after, _ := json.Marshal(&in); !bytes.Equal(before, after) {
			t.Fatal("input modified")
		}
		if err != nil {
			if got != nil || errors.Is(err, ErrSkip) == errors.Is(err, dns.ErrInvalid) {
				t.Fatalf("bad error %v (result %v)", err, got)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("result fails Validate: %v", err)
		}
		r, _ := dns.NewRecords(dns.Config{})
		if err := r.OnServiceAdd(got); err != nil {
			t.Fatalf("Records refused a converted service: %v", err)
		}
	})
}

func FuzzEndpointSlice(f *testing.F) {
	b, _ := json.Marshal(slice())
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var in discoveryv1.EndpointSlice
		if json.Unmarshal(data, &in) != nil {
			t.Skip()
		}
		got, err := EndpointSlice(&in, nil)
		if err != nil {
			if got != nil || errors.Is(err, ErrSkip) == errors.Is(err, dns.ErrInvalid) {
				t.Fatalf("bad error %v (result %v)", err, got)
			}
			return
		}
		r, _ := dns.NewRecords(dns.Config{})
		if err := r.OnEndpointSliceAdd(got); err != nil {
			t.Fatalf("Records refused a converted slice: %v", err)
		}
	})
}

func TestPodDNS(t *testing.T) {
	val := "2"
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: v1.PodSpec{
		DNSPolicy: v1.DNSNone,
		DNSConfig: &v1.PodDNSConfig{Nameservers: []string{"10.96.0.10", "fd00::a"}, Searches: []string{"corp.example"},
			Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &val}, {Name: "edns0"}}},
	}}
	got, err := PodDNS(pod)
	if err != nil {
		t.Fatal(err)
	}
	want := dns.PodDNSParams{Policy: dns.DNSNone, Namespace: "shop", Config: &dns.PodDNSConfig{
		Nameservers: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::a")},
		Searches:    []string{"corp.example"},
		Options:     []dns.PodDNSOption{{Name: "ndots", Value: "2"}, {Name: "edns0"}}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// The result is what PodResolvConf takes.
	rc, _, err := dns.PodResolvConf(got)
	if err != nil || rc.String() != "nameserver 10.96.0.10\nnameserver fd00::a\nsearch corp.example\noptions ndots:2 edns0\n" {
		t.Fatalf("resolv.conf %q, %v", rc.String(), err)
	}
	plain, err := PodDNS(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "b"}, Spec: v1.PodSpec{HostNetwork: true}})
	if err != nil || plain.Policy != "" || !plain.HostNetwork || plain.Config != nil || plain.Namespace != "a" {
		t.Fatalf("no DNS fields: %+v, %v", plain, err)
	}
	for _, tc := range []struct {
		spec v1.PodSpec
		want string
	}{
		{v1.PodSpec{DNSPolicy: "Cluster"}, `spec.dnsPolicy "Cluster"`},
		{v1.PodSpec{DNSConfig: &v1.PodDNSConfig{Nameservers: []string{"dns.example"}}}, `spec.dnsConfig.nameservers[0] "dns.example"`},
	} {
		_, err := PodDNS(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "b"}, Spec: tc.spec})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, dns.ErrInvalid) {
			t.Errorf("%+v: %v, want an error with %s", tc.spec, err, tc.want)
		}
	}
}
