package kubeconv_test

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/policy"
	"github.com/kubewire/kubewire/policy/kubeconv"
)

func Example() {
	// The objects an informer would deliver.
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	nodeObj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.168.1.10"},
			{Type: corev1.NodeHostName, Address: "node-a"},
		}},
	}
	podObj := func(name, app, ip string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}},
		}
	}
	npObj := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &intstr.IntOrString{Type: intstr.String, StrVal: "http"}}},
			}},
		},
	}

	// Convert them.
	var c policy.Cluster
	ns, err := kubeconv.Namespace(nsObj)
	if err != nil {
		panic(err)
	}
	node, err := kubeconv.Node(nodeObj)
	if err != nil {
		panic(err)
	}
	c.Namespaces, c.Nodes = append(c.Namespaces, ns), append(c.Nodes, node)
	for _, p := range []*corev1.Pod{podObj("web", "web", "10.244.0.5"), podObj("api", "api", "10.244.0.6"), podObj("batch", "batch", "10.244.0.7")} {
		pod, err := kubeconv.Pod(p)
		if err != nil {
			panic(err)
		}
		c.Pods = append(c.Pods, *pod)
	}
	pol, err := kubeconv.Policy(npObj)
	if err != nil {
		panic(err)
	}
	c.Policies = append(c.Policies, *pol)
	fmt.Println(ns.Labels)
	fmt.Printf("%s: ingress from %v on %+v\n", pol.Key, pol.Ingress[0].Peers[0].PodSelector.MatchLabels, pol.Ingress[0].Ports[0])

	// Compile and ask.
	prog := policy.Compile(&c)
	api := netip.MustParseAddr("10.244.0.6")
	fmt.Println(prog.Trace(netip.MustParseAddr("10.244.0.5"), api, policy.TCP, 8080))
	fmt.Println(prog.Trace(netip.MustParseAddr("10.244.0.7"), api, policy.TCP, 8080))
	fmt.Println(prog.Trace(netip.MustParseAddr("192.168.1.10"), api, policy.TCP, 9090))

	// Host-network pods are not subject to NetworkPolicy; bad fields are
	// named.
	hostPod := podObj("agent", "agent", "192.168.1.10")
	hostPod.Spec.HostNetwork = true
	_, err = kubeconv.Pod(hostPod)
	fmt.Println(errors.Is(err, kubeconv.ErrSkip), err)
	npObj.Spec.Ingress[0].From = append(npObj.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{
		IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.0.0.0/33"}},
	})
	_, err = kubeconv.Policy(npObj)
	fmt.Println(errors.Is(err, policy.ErrInvalid), err)

	// Output:
	// map[kubernetes.io/metadata.name:shop]
	// shop/api: ingress from map[app:web] on {Protocol:TCP Port:0 EndPort:0 Name:http}
	// allowed: egress shop/web not isolated; ingress shop/api allowed by shop/api ingress[0]
	// denied: egress shop/batch not isolated; ingress shop/api isolated by shop/api, no rule allows it
	// allowed: egress not a pod; ingress shop/api with its own node
	// true kubeconv: pod shop/agent: skipped: on the host network
	// true kubeconv: networkpolicy shop/api: spec.ingress[0].from[1].ipBlock.except[0] "10.0.0.0/33": not a CIDR
}
