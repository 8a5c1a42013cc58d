package kubeconv_test

import (
	"errors"
	"fmt"

	mdns "github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubewire/kubewire/dns"
	"github.com/kubewire/kubewire/dns/kubeconv"
)

func Example() {
	records, _ := dns.NewRecords(dns.Config{})

	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"},
		Spec: v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, PublishNotReadyAddresses: true,
			Ports: []v1.ServicePort{{Name: "pg", Port: 5432}}},
	}
	s, err := kubeconv.Service(svc)
	if err != nil {
		panic(err)
	}
	_ = records.OnServiceAdd(s)

	notReady, hostname := false, "db-0"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db-x7k2p",
			Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}, Hostname: &hostname,
			Conditions: discoveryv1.EndpointConditions{Ready: &notReady}}},
	}
	// The service publishes not-ready addresses: the endpoint counts.
	slice, err := kubeconv.EndpointSlice(es, svc)
	if err != nil {
		panic(err)
	}
	_ = records.OnEndpointSliceAdd(slice)
	records.MarkSynced()

	res, _ := records.Lookup("db-0.db.default.svc.cluster.local.", mdns.TypeA)
	fmt.Println(res.Answer[0].(*mdns.A).A)

	_, err = kubeconv.Pod(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "proxy"},
		Spec: v1.PodSpec{HostNetwork: true}})
	fmt.Println(errors.Is(err, kubeconv.ErrSkip), err)
	// Output:
	// 10.1.0.5
	// true kubeconv: pod kube-system/proxy: skipped: host network: its address is the node's
}
