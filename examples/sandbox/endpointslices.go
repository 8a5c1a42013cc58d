package main

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/internal/k8sparse"
)

// endpointSliceController is the managed-by label value of the slices the
// Kubernetes EndpointSlice controller publishes.
const endpointSliceController = "endpointslice-controller.k8s.io"

// DeriveEndpointSlices returns the EndpointSlices the Kubernetes
// EndpointSlice controller would publish for m's services. Call it once
// every pod has its addresses (status.podIPs, else status.podIP). It
// returns only the derived slices, not m.EndpointSlices, and does not
// modify m.
//
// Every Service with a selector gets slices unless it is of type
// ExternalName or some declared EndpointSlice names it (a service with
// declared slices keeps only those). For each of the service's
// spec.ipFamilies there is at least one slice, named <service>-<family>
// (web-ipv4, web-ipv6), labelled kubernetes.io/service-name,
// endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io,
// the service's own labels and, for a headless service (clusterIP None),
// service.kubernetes.io/headless. A slice of a service that selects no pod
// has no endpoints and no ports, as the controller's placeholder slice.
//
// The endpoints are the pods of the service's namespace whose labels match
// the selector, that are not terminal (phase Succeeded or Failed) and have
// an address of the slice's family. As the controller does, an endpoint is
// serving when the pod is Ready (in the sandbox, a pod without a Ready
// condition counts as ready), ready when serving and not terminating (or
// always, with spec.publishNotReadyAddresses), terminating when the pod
// has a deletionTimestamp; it has the pod's node name, a targetRef to the
// pod and, when the pod's spec.subdomain is the service's name, the pod's
// spec.hostname.
//
// Each service port becomes a slice port with the service port's name and
// protocol and the number its targetPort resolves to in the pod: a number
// as is, a name through the pod's container ports of that name and
// protocol (and those of its sidecars). As in the controller, a port whose
// name a pod does not define is left out of that pod's ports (the pod
// still serves the service's other ports), and pods are grouped by their
// resolved ports, one slice per group: the one with the most ports (then
// the lowest numbers) gets the plain name, the others
// <service>-<family>-2, -3, ...
//
// The result is sorted by namespace and name; endpoints by address.
func DeriveEndpointSlices(m *Manifest) []*discoveryv1.EndpointSlice {
	type svcKey struct{ namespace, name string }
	declared := make(map[svcKey]bool)
	for _, es := range m.EndpointSlices {
		declared[svcKey{es.Namespace, es.Labels[discoveryv1.LabelServiceName]}] = true
	}
	var out []*discoveryv1.EndpointSlice
	for _, svc := range m.Services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 ||
			declared[svcKey{svc.Namespace, svc.Name}] {
			continue
		}
		var pods []*corev1.Pod
		for _, p := range m.Pods {
			if p.Namespace == svc.Namespace && selects(svc.Spec.Selector, p.Labels) && !podTerminal(p) {
				pods = append(pods, p)
			}
		}
		for _, fam := range svc.Spec.IPFamilies {
			out = append(out, familySlices(svc, pods, string(fam))...)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

// selects reports whether a service selector matches a pod's labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if l, ok := labels[k]; !ok || l != v {
			return false
		}
	}
	return true
}

// podTerminal reports whether a pod has finished: its addresses are
// released.
func podTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podReady is the pod's Ready condition; a pod without one is ready (the
// sandbox has no kubelet to set it).
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return true
}

// podAddr returns the pod's address of family fam.
func podAddr(p *corev1.Pod, fam string) (netip.Addr, bool) {
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	for _, s := range ips {
		if a, ok := k8sparse.IP(s.IP); ok && ipFamilyOf(a) == fam {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// sliceGroup is the endpoints of one family with the same resolved ports.
type sliceGroup struct {
	key       string // the ports, comparable
	ports     []discoveryv1.EndpointPort
	endpoints []addrEndpoint
}

type addrEndpoint struct {
	addr netip.Addr
	ep   discoveryv1.Endpoint
}

// familySlices builds the slices of one family of svc from the pods it
// selects.
func familySlices(svc *corev1.Service, pods []*corev1.Pod, fam string) []*discoveryv1.EndpointSlice {
	byKey := make(map[string]*sliceGroup)
	var groups []*sliceGroup
	for _, p := range pods {
		addr, ok := podAddr(p, fam)
		if !ok {
			continue
		}
		ports := endpointPorts(svc, p)
		key := portsKey(ports)
		g := byKey[key]
		if g == nil {
			g = &sliceGroup{key: key, ports: ports}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.endpoints = append(g.endpoints, addrEndpoint{addr, podEndpoint(svc, p, addr)})
	}
	if len(groups) == 0 {
		groups = []*sliceGroup{{}} // the controller's placeholder
	}
	slices.SortFunc(groups, func(a, b *sliceGroup) int {
		return cmp.Or(cmp.Compare(len(b.ports), len(a.ports)), strings.Compare(a.key, b.key))
	})

	base := svc.Name + "-" + strings.ToLower(fam)
	var out []*discoveryv1.EndpointSlice
	for i, g := range groups {
		es := &discoveryv1.EndpointSlice{
			TypeMeta:    metav1.TypeMeta{APIVersion: discoveryv1.SchemeGroupVersion.String(), Kind: "EndpointSlice"},
			AddressType: discoveryv1.AddressType(fam),
			Ports:       g.ports,
		}
		es.Name, es.Namespace, es.Labels = base, svc.Namespace, sliceLabels(svc)
		if i > 0 {
			es.Name = fmt.Sprintf("%s-%d", base, i+1)
		}
		slices.SortFunc(g.endpoints, func(a, b addrEndpoint) int { return a.addr.Compare(b.addr) })
		for _, e := range g.endpoints {
			es.Endpoints = append(es.Endpoints, e.ep)
		}
		out = append(out, es)
	}
	return out
}

// sliceLabels are the labels of a derived slice: the service's, except
// the ones the controller reserves, and the reserved ones.
func sliceLabels(svc *corev1.Service) map[string]string {
	l := make(map[string]string, len(svc.Labels)+3)
	for k, v := range svc.Labels {
		switch k {
		case discoveryv1.LabelServiceName, discoveryv1.LabelManagedBy, corev1.IsHeadlessService:
		default:
			l[k] = v
		}
	}
	// The controller marks slices of services without a cluster IP; the
	// sandbox's services get theirs after loading, so only clusterIP None
	// counts here.
	if isHeadless(svc) {
		l[corev1.IsHeadlessService] = ""
	}
	l[discoveryv1.LabelServiceName] = svc.Name
	l[discoveryv1.LabelManagedBy] = endpointSliceController
	return l
}

// podEndpoint is the endpoint of pod p at addr in a slice of svc.
func podEndpoint(svc *corev1.Service, p *corev1.Pod, addr netip.Addr) discoveryv1.Endpoint {
	serving := podReady(p)
	terminating := p.DeletionTimestamp != nil
	ready := svc.Spec.PublishNotReadyAddresses || (serving && !terminating)
	ep := discoveryv1.Endpoint{
		Addresses:  []string{addr.String()},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
	}
	if n := p.Spec.NodeName; n != "" {
		ep.NodeName = &n
	}
	if h := p.Spec.Hostname; h != "" && p.Spec.Subdomain == svc.Name {
		ep.Hostname = &h
	}
	return ep
}

// endpointPorts resolves the service's ports in pod p; ports p does not
// define are left out.
func endpointPorts(svc *corev1.Service, p *corev1.Pod) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		num, ok := findPodPort(p, sp)
		if !ok {
			continue
		}
		name, proto := sp.Name, protocolOrTCP(sp.Protocol)
		out = append(out, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &num, AppProtocol: sp.AppProtocol})
	}
	return out
}

// findPodPort resolves a service port's targetPort in pod p, as the
// controller's FindPort: a number as is, a name through the container
// ports (then the sidecars' ports) of that name and protocol.
func findPodPort(p *corev1.Pod, sp *corev1.ServicePort) (int32, bool) {
	tp := sp.TargetPort
	if tp.Type == intstr.Int || tp.StrVal == "" {
		if tp.IntVal == 0 {
			return sp.Port, true // the API default
		}
		return tp.IntVal, true
	}
	proto := protocolOrTCP(sp.Protocol)
	find := func(c *corev1.Container) (int32, bool) {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal && protocolOrTCP(cp.Protocol) == proto {
				return cp.ContainerPort, true
			}
		}
		return 0, false
	}
	for i := range p.Spec.Containers {
		if n, ok := find(&p.Spec.Containers[i]); ok {
			return n, true
		}
	}
	for i := range p.Spec.InitContainers {
		c := &p.Spec.InitContainers[i]
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			continue // not a sidecar
		}
		if n, ok := find(c); ok {
			return n, true
		}
	}
	return 0, false
}

func protocolOrTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// portsKey orders and identifies a set of resolved ports.
func portsKey(ports []discoveryv1.EndpointPort) string {
	var b strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&b, "%05d/%s/%s,", *p.Port, *p.Protocol, *p.Name)
	}
	return b.String()
}
