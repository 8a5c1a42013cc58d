package kubeconv_test

import (
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/service"
	"github.com/kubewire/kubewire/service/kubeconv"
)

func Example() {
	proxy := v1.LoadBalancerIPModeProxy
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeLoadBalancer,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10", "fd00:96::10"},
			Ports: []v1.ServicePort{{
				Name: "http", Port: 80, NodePort: 30080, TargetPort: intstr.FromString("web"),
			}},
			ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyLocal,
			HealthCheckNodePort:   31000,
		},
		Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{
			{IP: "192.0.2.10"},
			{IP: "192.0.2.11", IPMode: &proxy},
			{Hostname: "lb.example.com"},
		}}},
	}
	s, err := kubeconv.Service(svc, kubeconv.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Println(s.Name, s.ClusterIPs, s.PortNames())
	fmt.Printf("port %d -> %q, node port %d\n", s.Ports[0].Port, s.Ports[0].TargetPortName, s.Ports[0].NodePort)
	fmt.Println("ingress", s.LoadBalancerIngress, "health check", s.HealthCheckNodePort)

	name, port, ready := "http", int32(8080), false
	terminating := true
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "web-x7k2p",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.5"}},
			{Addresses: []string{"10.1.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready, Terminating: &terminating}},
		},
	}
	slice, err := kubeconv.EndpointSlice(es)
	if err != nil {
		panic(err)
	}
	for _, b := range service.Backends([]*service.EndpointSlice{slice}, s.PortNames()[0]) {
		fmt.Printf("%v ready=%v serving=%v terminating=%v\n", b, b.Ready, b.Serving, b.Terminating)
	}

	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = v1.ClusterIPNone, []string{v1.ClusterIPNone}
	_, err = kubeconv.Service(svc, kubeconv.Options{})
	fmt.Println(errors.Is(err, kubeconv.ErrSkip), err)

	// Output:
	// default/web [10.96.0.10 fd00:96::10] [default/web:http/tcp]
	// port 80 -> "web", node port 30080
	// ingress [{192.0.2.10 VIP} {192.0.2.11 Proxy}] health check 31000
	// 10.1.0.5:8080 ready=true serving=true terminating=false
	// 10.1.0.6:8080 ready=false serving=true terminating=true
	// true kubeconv: service default/web: skipped: headless (clusterIP None)
}
