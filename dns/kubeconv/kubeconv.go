// Package kubeconv converts k8s.io/api objects (core/v1 Service, Pod and
// Namespace, discovery/v1 EndpointSlice) into the model of package dns,
// so that dns never imports k8s.io/api.
//
// The conversion follows the API's defaulting and CoreDNS's reading of
// the objects:
//
//   - Service: type ExternalName gives an ExternalName service (a CNAME),
//     clusterIP "None" a headless one, anything else a service with its
//     cluster IPs; a port protocol defaults to TCP. Addresses are parsed
//     as Kubernetes components do (IPv4 with leading zeros accepted,
//     IPv4-mapped IPv6 read as IPv4).
//   - EndpointSlice: an endpoint is ready when its ready condition is nil
//     or true (discovery/v1), or when the service publishes not-ready
//     addresses (spec.publishNotReadyAddresses: pass the Service to
//     EndpointSlice). The hostname comes from the endpoint's hostname
//     field.
//   - Pod: the addresses of status.podIPs (else status.podIP). A pod that
//     has finished (phase Succeeded or Failed) or is being deleted
//     converts with no address, so that an update removes its addresses,
//     as CoreDNS ignores such pods.
//
// PodDNS reads a Pod's DNS fields (dnsPolicy, hostNetwork, dnsConfig) for
// dns.PodResolvConf, which computes its resolv.conf as kubelet does.
//
// Objects DNS must ignore give an error wrapping ErrSkip; on an update,
// the caller should then delete the object's previous version from
// dns.Records:
//
//   - services without a cluster IP yet (being allocated);
//   - ExternalName services whose externalName is empty or an IP address
//     (CoreDNS serves nothing for them);
//   - EndpointSlices whose addressType is FQDN;
//   - host-network pods: their address is the node's, shared by many pods
//     of many namespaces.
//
// Invalid objects give an error naming the Kubernetes field and its value,
// such as
//
//	kubeconv: service default/web: spec.clusterIPs[1] "10.0.0.300": not an IP address
//
// which satisfies errors.Is(err, dns.ErrInvalid). Every result passes its
// Validate method.
package kubeconv

import (
	"errors"
	"fmt"
	"github.com/kubewire/kubewire/internal/k8sparse"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kubewire/kubewire/dns"
)

// ErrSkip is wrapped, with the reason, by the errors for objects DNS
// ignores (see the package documentation). Test with errors.Is.
var ErrSkip = errors.New("skipped")

func skip(obj, reason string) error {
	return fmt.Errorf("kubeconv: %s: %w: %s", obj, ErrSkip, reason)
}

func protocol(p *v1.Protocol) (dns.Protocol, bool) {
	if p == nil || *p == "" {
		return dns.TCP, true
	}
	switch *p {
	case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
		return dns.Protocol(*p), true
	}
	return "", false
}

// Service converts a Service.
func Service(svc *v1.Service) (*dns.Service, error) {
	if svc == nil {
		return nil, fmt.Errorf("kubeconv: nil Service: %w", dns.ErrInvalid)
	}
	obj := "service " + svc.Namespace + "/" + svc.Name
	fail := func(field string, value any, reason string) error {
		return &k8sparse.FieldError{Obj: obj, Field: field, Value: value, Reason: reason, Kind: dns.ErrInvalid}
	}
	out := &dns.Service{Namespace: svc.Namespace, Name: svc.Name}
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		ext := strings.TrimSpace(svc.Spec.ExternalName)
		if ext == "" {
			return nil, skip(obj, "ExternalName service without spec.externalName")
		}
		if _, err := netip.ParseAddr(ext); err == nil {
			return nil, skip(obj, fmt.Sprintf("spec.externalName %q is an IP address, not a name", ext))
		}
		out.ExternalName = ext
	} else {
		primary := svc.Spec.ClusterIP
		if primary == "" && len(svc.Spec.ClusterIPs) > 0 {
			primary = svc.Spec.ClusterIPs[0]
		}
		switch primary {
		case "":
			return nil, skip(obj, "no cluster IP allocated yet")
		case v1.ClusterIPNone:
			// Headless: no addresses of its own.
		default:
			ips := svc.Spec.ClusterIPs
			field := "spec.clusterIPs"
			if len(ips) == 0 {
				ips, field = []string{svc.Spec.ClusterIP}, "spec.clusterIP"
			}
			if len(ips) > 2 {
				return nil, fail(field, ips, "at most two addresses, one per family")
			}
			for i, s := range ips {
				f := field
				if field == "spec.clusterIPs" {
					f = fmt.Sprintf("%s[%d]", field, i)
				}
				ip, ok := k8sparse.IP(s)
				if !ok || ip.IsUnspecified() {
					return nil, fail(f, s, "not an IP address")
				}
				if i == 1 && ip.Is4() == out.ClusterIPs[0].Is4() {
					return nil, fail(f, s, "same IP family as spec.clusterIPs[0]")
				}
				out.ClusterIPs = append(out.ClusterIPs, ip)
			}
		}
	}
	for i, p := range svc.Spec.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		proto, ok := protocol(&p.Protocol)
		if !ok {
			return nil, fail(f+".protocol", string(p.Protocol), "want TCP, UDP or SCTP")
		}
		if p.Port < 1 || p.Port > 65535 {
			return nil, fail(f+".port", p.Port, "must be 1-65535")
		}
		out.Ports = append(out.Ports, dns.Port{Name: p.Name, Protocol: proto, Port: uint16(p.Port)})
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

// EndpointSlice converts an EndpointSlice. svc is the slice's Service
// when known (nil otherwise): with spec.publishNotReadyAddresses set, every
// endpoint counts as ready. When that field changes, convert the service's
// slices again.
func EndpointSlice(es *discoveryv1.EndpointSlice, svc *v1.Service) (*dns.EndpointSlice, error) {
	if es == nil {
		return nil, fmt.Errorf("kubeconv: nil EndpointSlice: %w", dns.ErrInvalid)
	}
	obj := "endpointslice " + es.Namespace + "/" + es.Name
	fail := func(field string, value any, reason string) error {
		return &k8sparse.FieldError{Obj: obj, Field: field, Value: value, Reason: reason, Kind: dns.ErrInvalid}
	}
	is4, ok := k8sparse.SliceFamily(es.AddressType)
	if !ok {
		return nil, skip(obj, fmt.Sprintf("addressType %q is not IPv4 or IPv6", es.AddressType))
	}
	svcName, err := k8sparse.SliceService(obj, es, dns.ErrInvalid)
	if err != nil {
		return nil, err
	}
	publishAll := false
	if svc != nil {
		if svc.Namespace != es.Namespace || svc.Name != svcName {
			return nil, fmt.Errorf("kubeconv: %s: belongs to service %s/%s, not %s/%s: %w",
				obj, es.Namespace, svcName, svc.Namespace, svc.Name, dns.ErrInvalid)
		}
		publishAll = svc.Spec.PublishNotReadyAddresses
	}
	out := &dns.EndpointSlice{Namespace: es.Namespace, Name: es.Name, Service: svcName}
	for i, p := range es.Ports {
		num, err := k8sparse.SlicePort(obj, i, p.Port, dns.ErrInvalid)
		if err != nil {
			return nil, err
		}
		if num == 0 {
			continue // no number: nothing an SRV record could carry
		}
		proto, ok := protocol(p.Protocol)
		if !ok {
			return nil, fail(fmt.Sprintf("ports[%d].protocol", i), string(*p.Protocol), "want TCP, UDP or SCTP")
		}
		dp := dns.Port{Protocol: proto, Port: num}
		if p.Name != nil {
			dp.Name = *p.Name
		}
		out.Ports = append(out.Ports, dp)
	}
	for i, e := range es.Endpoints {
		ep := dns.Endpoint{Ready: publishAll || e.Conditions.Ready == nil || *e.Conditions.Ready}
		if e.Hostname != nil {
			ep.Hostname = *e.Hostname
		}
		if ep.Addresses, err = k8sparse.EndpointAddrs(obj, i, e.Addresses, is4, dns.ErrInvalid); err != nil {
			return nil, err
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

// Pod converts a Pod.
func Pod(pod *v1.Pod) (*dns.Pod, error) {
	if pod == nil {
		return nil, fmt.Errorf("kubeconv: nil Pod: %w", dns.ErrInvalid)
	}
	obj := "pod " + pod.Namespace + "/" + pod.Name
	if pod.Spec.HostNetwork {
		return nil, skip(obj, "host network: its address is the node's")
	}
	out := &dns.Pod{Namespace: pod.Namespace, Name: pod.Name}
	if pod.DeletionTimestamp != nil || pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		if err := out.Validate(); err != nil {
			return nil, fmt.Errorf("kubeconv: %w", err)
		}
		return out, nil
	}
	add := func(field, s string) error {
		ip, ok := k8sparse.IP(s)
		if !ok || ip.IsUnspecified() {
			return &k8sparse.FieldError{Obj: obj, Field: field, Value: s, Reason: "not an IP address", Kind: dns.ErrInvalid}
		}
		for _, have := range out.IPs {
			if have == ip {
				return nil
			}
		}
		out.IPs = append(out.IPs, ip)
		return nil
	}
	if len(pod.Status.PodIPs) > 0 {
		for i, p := range pod.Status.PodIPs {
			if err := add(fmt.Sprintf("status.podIPs[%d].ip", i), p.IP); err != nil {
				return nil, err
			}
		}
	} else if pod.Status.PodIP != "" {
		if err := add("status.podIP", pod.Status.PodIP); err != nil {
			return nil, err
		}
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

// Namespace converts a Namespace. A namespace being deleted still exists.
func Namespace(ns *v1.Namespace) (*dns.Namespace, error) {
	if ns == nil {
		return nil, fmt.Errorf("kubeconv: nil Namespace: %w", dns.ErrInvalid)
	}
	out := &dns.Namespace{Name: ns.Name}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

// PodDNS reads the DNS fields of a Pod (spec.dnsPolicy, spec.hostNetwork,
// spec.dnsConfig) into the pod's part of dns.PodDNSParams; the caller adds
// the node's part (cluster domain, cluster DNS addresses, host
// resolv.conf) and calls dns.PodResolvConf, as kubelet does.
func PodDNS(pod *v1.Pod) (dns.PodDNSParams, error) {
	if pod == nil {
		return dns.PodDNSParams{}, fmt.Errorf("kubeconv: nil Pod: %w", dns.ErrInvalid)
	}
	obj := "pod " + pod.Namespace + "/" + pod.Name
	out := dns.PodDNSParams{Policy: dns.DNSPolicy(pod.Spec.DNSPolicy), HostNetwork: pod.Spec.HostNetwork, Namespace: pod.Namespace}
	switch out.Policy {
	case "", dns.DNSClusterFirst, dns.DNSClusterFirstWithHostNet, dns.DNSDefault, dns.DNSNone:
	default:
		return dns.PodDNSParams{}, &k8sparse.FieldError{Obj: obj, Field: "spec.dnsPolicy", Value: string(pod.Spec.DNSPolicy),
			Reason: "want ClusterFirst, ClusterFirstWithHostNet, Default or None", Kind: dns.ErrInvalid}
	}
	dc := pod.Spec.DNSConfig
	if dc == nil {
		return out, nil
	}
	out.Config = &dns.PodDNSConfig{Searches: slices.Clone(dc.Searches)}
	for i, s := range dc.Nameservers {
		ip, ok := k8sparse.IP(s)
		if !ok {
			return dns.PodDNSParams{}, &k8sparse.FieldError{Obj: obj, Field: fmt.Sprintf("spec.dnsConfig.nameservers[%d]", i), Value: s,
				Reason: "not an IP address", Kind: dns.ErrInvalid}
		}
		out.Config.Nameservers = append(out.Config.Nameservers, ip)
	}
	for _, o := range dc.Options {
		opt := dns.PodDNSOption{Name: o.Name}
		if o.Value != nil {
			opt.Value = *o.Value
		}
		out.Config.Options = append(out.Config.Options, opt)
	}
	return out, nil
}
