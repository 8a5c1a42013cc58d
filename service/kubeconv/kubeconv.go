// Package kubeconv converts k8s.io/api objects (core/v1 Service and
// discovery/v1 EndpointSlice) into the model of package service, so that
// service and the dataplane drivers never import k8s.io/api.
//
// The conversion follows the API server's defaulting and kube-proxy's
// reading of the objects:
//
//   - Service: protocol defaults to TCP; a zero targetPort means the
//     service port; sessionAffinity ClientIP without a timeout means
//     10800 s; a nil internalTrafficPolicy and an empty
//     externalTrafficPolicy mean Cluster; a nil load balancer ipMode means
//     VIP; IP addresses are parsed as kube-proxy does (IPv4 with leading
//     zeros accepted, IPv4-mapped IPv6 read as IPv4, CIDRs masked).
//   - EndpointSlice: a nil port name is "", a nil protocol TCP; a nil
//     ready condition is true, a nil serving condition is true and a nil
//     terminating condition false (the discovery/v1 API definitions, which
//     kube-proxy applies).
//
// Objects the proxy must ignore give an error wrapping ErrSkip:
//
//   - services labelled service.kubernetes.io/service-proxy-name that
//     belong to another proxy (see Options), and services or slices
//     labelled service.kubernetes.io/headless (kube-proxy's informers
//     filter both labels out);
//   - headless services (clusterIP None): there is no virtual IP to proxy,
//     DNS hands out the endpoints directly;
//   - ExternalName services: they are DNS CNAMEs, nothing to proxy;
//   - services without a cluster IP yet (being allocated): they will come
//     back as an update once they have one;
//   - EndpointSlices whose addressType is not IPv4 or IPv6 (FQDN): no
//     address the dataplane can forward to.
//
// Invalid objects (unparsable addresses or CIDRs, ports out of range,
// unknown enum values, a slice without its kubernetes.io/service-name
// label) give an error naming the Kubernetes field and its value, such as
//
//	kubeconv: service default/web: spec.clusterIPs[1] "10.0.0.300": not an IP address
//
// which, like the errors of service's Validate methods, satisfies
// errors.Is(err, service.ErrInvalid). Every result passes Validate.
package kubeconv

import (
	"errors"
	"fmt"
	"github.com/kubewire/kubewire/internal/k8sparse"
	"net/netip"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/service"
)

// ErrSkip is wrapped, with the reason, by the errors for objects the proxy
// must ignore (see the package documentation). Test with errors.Is.
var ErrSkip = errors.New("skipped")

// Labels and annotations the converters read.
const (
	// LabelServiceProxyName assigns a Service to a named proxy
	// implementation instead of the default one.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// LabelHeadless marks the Services and EndpointSlices of headless
	// services; kube-proxy ignores objects carrying it.
	LabelHeadless = v1.IsHeadlessService
	// AnnotationLoadBalancerSourceRanges is the legacy form of
	// spec.loadBalancerSourceRanges, read when the field is empty.
	AnnotationLoadBalancerSourceRanges = v1.AnnotationLoadBalancerSourceRangesKey
)

// maxAffinitySeconds is the API's bound on
// sessionAffinityConfig.clientIP.timeoutSeconds (one day).
const maxAffinitySeconds = 86400

// Options configure Service.
type Options struct {
	// ProxyName is this proxy's name. Services labelled
	// service.kubernetes.io/service-proxy-name=ProxyName are ours; services
	// without the label are ours only when ProxyName is "" (the default
	// proxy). Any other service is skipped.
	ProxyName string
}

func skip(obj, reason string) error {
	return fmt.Errorf("kubeconv: %s: %w: %s", obj, ErrSkip, reason)
}

// Service converts a Service. It returns an error wrapping ErrSkip for
// services the proxy ignores, and an error naming the field for invalid
// ones.
func Service(svc *v1.Service, opts Options) (*service.Service, error) {
	if svc == nil {
		return nil, fmt.Errorf("kubeconv: nil Service: %w", service.ErrInvalid)
	}
	obj := "service " + svc.Namespace + "/" + svc.Name
	fail := func(field string, value any, reason string) error {
		return &k8sparse.FieldError{Obj: obj, Field: field, Value: value, Reason: reason, Kind: service.ErrInvalid}
	}

	// Which proxy owns it (kube-proxy's informer label selector).
	if name, ok := svc.Labels[LabelServiceProxyName]; ok {
		if opts.ProxyName == "" || name != opts.ProxyName {
			return nil, skip(obj, fmt.Sprintf("label %s=%q is not this proxy's", LabelServiceProxyName, name))
		}
	} else if opts.ProxyName != "" {
		return nil, skip(obj, fmt.Sprintf("no label %s=%q", LabelServiceProxyName, opts.ProxyName))
	}
	if _, ok := svc.Labels[LabelHeadless]; ok {
		return nil, skip(obj, "label "+LabelHeadless+" set")
	}

	// kube-proxy's ShouldSkipService.
	primary := svc.Spec.ClusterIP
	if primary == "" && len(svc.Spec.ClusterIPs) > 0 {
		primary = svc.Spec.ClusterIPs[0]
	}
	switch {
	case svc.Spec.Type == v1.ServiceTypeExternalName:
		return nil, skip(obj, "type ExternalName")
	case primary == v1.ClusterIPNone:
		return nil, skip(obj, "headless (clusterIP None)")
	case primary == "":
		return nil, skip(obj, "no cluster IP allocated yet")
	}

	out := &service.Service{Name: service.Name{Namespace: svc.Namespace, Name: svc.Name}}

	// Cluster IPs: at most one per family, primary first.
	if len(svc.Spec.ClusterIPs) == 0 {
		ip, why := parseUnicast(svc.Spec.ClusterIP)
		if why != "" {
			return nil, fail("spec.clusterIP", svc.Spec.ClusterIP, why)
		}
		out.ClusterIPs = []netip.Addr{ip}
	} else {
		if len(svc.Spec.ClusterIPs) > 2 {
			return nil, fail("spec.clusterIPs", svc.Spec.ClusterIPs, "at most two addresses, one per family")
		}
		for i, s := range svc.Spec.ClusterIPs {
			f := fmt.Sprintf("spec.clusterIPs[%d]", i)
			ip, why := parseUnicast(s)
			if why != "" {
				return nil, fail(f, s, why)
			}
			if i == 1 && ip.Is4() == out.ClusterIPs[0].Is4() {
				return nil, fail(f, s, "same IP family as spec.clusterIPs[0]")
			}
			out.ClusterIPs = append(out.ClusterIPs, ip)
		}
		if svc.Spec.ClusterIP != "" {
			if ip, ok := k8sparse.IP(svc.Spec.ClusterIP); !ok || ip != out.ClusterIPs[0] {
				return nil, fail("spec.clusterIP", svc.Spec.ClusterIP, "differs from spec.clusterIPs[0]")
			}
		}
	}

	// Ports.
	for i, p := range svc.Spec.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		sp := service.Port{Name: p.Name}
		switch p.Protocol {
		case "":
			sp.Protocol = service.TCP // the API default
		case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
			sp.Protocol = service.Protocol(p.Protocol)
		default:
			return nil, fail(f+".protocol", string(p.Protocol), "want TCP, UDP or SCTP")
		}
		if p.Port < 1 || p.Port > 65535 {
			return nil, fail(f+".port", p.Port, "must be 1-65535")
		}
		sp.Port = uint16(p.Port)
		if p.NodePort < 0 || p.NodePort > 65535 {
			return nil, fail(f+".nodePort", p.NodePort, "must be 0-65535")
		}
		sp.NodePort = uint16(p.NodePort)
		switch tp := p.TargetPort; tp.Type {
		case intstr.Int:
			switch {
			case tp.IntVal == 0:
				sp.TargetPort = sp.Port // the API default
			case tp.IntVal < 1 || tp.IntVal > 65535:
				return nil, fail(f+".targetPort", tp.IntVal, "must be 1-65535")
			default:
				sp.TargetPort = uint16(tp.IntVal)
			}
		case intstr.String:
			if tp.StrVal == "" {
				sp.TargetPort = sp.Port
			} else {
				sp.TargetPortName = tp.StrVal
			}
		default:
			return nil, fail(f+".targetPort", tp.String(), "neither a number nor a name")
		}
		out.Ports = append(out.Ports, sp)
	}

	// External IPs.
	for i, s := range svc.Spec.ExternalIPs {
		f := fmt.Sprintf("spec.externalIPs[%d]", i)
		ip, why := parseUnicast(s)
		if why != "" {
			return nil, fail(f, s, why)
		}
		out.ExternalIPs = append(out.ExternalIPs, ip)
	}

	// Load balancer ingress: IP entries only; hostname-only ones are for
	// DNS-based load balancers the node has nothing to do for.
	for i, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP == "" {
			continue
		}
		f := fmt.Sprintf("status.loadBalancer.ingress[%d]", i)
		ip, why := parseUnicast(in.IP)
		if why != "" {
			return nil, fail(f+".ip", in.IP, why)
		}
		lb := service.LBIngress{IP: ip, Mode: service.IPModeVIP}
		if in.IPMode != nil {
			switch *in.IPMode {
			case v1.LoadBalancerIPModeVIP:
			case v1.LoadBalancerIPModeProxy:
				lb.Mode = service.IPModeProxy
			default:
				return nil, fail(f+".ipMode", string(*in.IPMode), "want VIP or Proxy")
			}
		}
		out.LoadBalancerIngress = append(out.LoadBalancerIngress, lb)
	}

	// Source ranges: the field (whose validation lets whitespace through),
	// else the legacy annotation, a comma-separated list.
	if len(svc.Spec.LoadBalancerSourceRanges) > 0 {
		for i, s := range svc.Spec.LoadBalancerSourceRanges {
			p, ok := k8sparse.Prefix(strings.TrimSpace(s))
			if !ok {
				return nil, fail(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), s, "not a CIDR")
			}
			out.LoadBalancerSourceRanges = append(out.LoadBalancerSourceRanges, p)
		}
	} else if val := strings.TrimSpace(svc.Annotations[AnnotationLoadBalancerSourceRanges]); val != "" {
		for i, s := range strings.Split(val, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			p, ok := k8sparse.Prefix(s)
			if !ok {
				return nil, fail(fmt.Sprintf("metadata.annotations[%q][%d]", AnnotationLoadBalancerSourceRanges, i), s, "not a CIDR")
			}
			out.LoadBalancerSourceRanges = append(out.LoadBalancerSourceRanges, p)
		}
	}

	// Session affinity.
	switch svc.Spec.SessionAffinity {
	case "", v1.ServiceAffinityNone:
	case v1.ServiceAffinityClientIP:
		secs := v1.DefaultClientIPServiceAffinitySeconds
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			secs = *c.ClientIP.TimeoutSeconds
		}
		if secs < 1 || secs > maxAffinitySeconds {
			return nil, fail("spec.sessionAffinityConfig.clientIP.timeoutSeconds", secs,
				fmt.Sprintf("must be 1-%d", maxAffinitySeconds))
		}
		out.AffinityTimeout = time.Duration(secs) * time.Second
	default:
		return nil, fail("spec.sessionAffinity", string(svc.Spec.SessionAffinity), "want None or ClientIP")
	}

	// Traffic policies. The external one is mapped as is: service applies it
	// only to externally accessible services, as kube-proxy does.
	switch svc.Spec.ExternalTrafficPolicy {
	case "", v1.ServiceExternalTrafficPolicyCluster:
		out.ExternalTrafficPolicy = service.PolicyCluster
	case v1.ServiceExternalTrafficPolicyLocal:
		out.ExternalTrafficPolicy = service.PolicyLocal
	default:
		return nil, fail("spec.externalTrafficPolicy", string(svc.Spec.ExternalTrafficPolicy), "want Cluster or Local")
	}
	out.InternalTrafficPolicy = service.PolicyCluster
	if p := svc.Spec.InternalTrafficPolicy; p != nil {
		switch *p {
		case v1.ServiceInternalTrafficPolicyCluster:
		case v1.ServiceInternalTrafficPolicyLocal:
			out.InternalTrafficPolicy = service.PolicyLocal
		default:
			return nil, fail("spec.internalTrafficPolicy", string(*p), "want Cluster or Local")
		}
	}

	// The health check node port is used only by LoadBalancer services
	// with the Local external policy (kube-proxy's NeedsHealthCheck).
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer && out.ExternalTrafficPolicy.Local() {
		if p := svc.Spec.HealthCheckNodePort; p < 0 || p > 65535 {
			return nil, fail("spec.healthCheckNodePort", p, "must be 0-65535")
		}
		out.HealthCheckNodePort = uint16(svc.Spec.HealthCheckNodePort)
	}

	if d := svc.Spec.TrafficDistribution; d != nil {
		out.TrafficDistribution = *d
	}

	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

// EndpointSlice converts an EndpointSlice. It returns an error wrapping
// ErrSkip for slices the proxy ignores (FQDN address type, headless
// label), and an error naming the field for invalid ones. The caller
// should also drop slices of services that Service skipped.
func EndpointSlice(es *discoveryv1.EndpointSlice) (*service.EndpointSlice, error) {
	if es == nil {
		return nil, fmt.Errorf("kubeconv: nil EndpointSlice: %w", service.ErrInvalid)
	}
	obj := "endpointslice " + es.Namespace + "/" + es.Name
	fail := func(field string, value any, reason string) error {
		return &k8sparse.FieldError{Obj: obj, Field: field, Value: value, Reason: reason, Kind: service.ErrInvalid}
	}

	is4, ok := k8sparse.SliceFamily(es.AddressType)
	if !ok {
		return nil, skip(obj, fmt.Sprintf("addressType %q is not IPv4 or IPv6", es.AddressType))
	}
	if _, ok := es.Labels[LabelHeadless]; ok {
		return nil, skip(obj, "label "+LabelHeadless+" set")
	}
	svcName, err := k8sparse.SliceService(obj, es, service.ErrInvalid)
	if err != nil {
		return nil, err
	}

	out := &service.EndpointSlice{
		Name:    es.Name,
		Service: service.Name{Namespace: es.Namespace, Name: svcName},
	}
	// The slice controller stamps when the change it reflects happened; a
	// missing or malformed stamp only loses the latency metric.
	if ts, ok := es.Annotations[v1.EndpointsLastChangeTriggerTime]; ok {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			out.TriggerTime = t
		}
	}

	for i, p := range es.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		num, err := k8sparse.SlicePort(obj, i, p.Port, service.ErrInvalid)
		if err != nil {
			return nil, err
		}
		if num == 0 {
			continue // kube-proxy ignores ports without a number
		}
		sp := service.SlicePort{Protocol: service.TCP, Port: num}
		if p.Name != nil {
			sp.Name = *p.Name
		}
		if p.Protocol != nil {
			switch *p.Protocol {
			case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
				sp.Protocol = service.Protocol(*p.Protocol)
			default:
				return nil, fail(f+".protocol", string(*p.Protocol), "want TCP, UDP or SCTP")
			}
		}
		out.Ports = append(out.Ports, sp)
	}

	for i, e := range es.Endpoints {
		c := e.Conditions
		ep := service.Endpoint{
			Ready:       c.Ready == nil || *c.Ready,
			Serving:     c.Serving == nil || *c.Serving,
			Terminating: c.Terminating != nil && *c.Terminating,
		}
		if ep.Addresses, err = k8sparse.EndpointAddrs(obj, i, e.Addresses, is4, service.ErrInvalid); err != nil {
			return nil, err
		}
		if e.NodeName != nil {
			ep.NodeName = *e.NodeName
		}
		if e.Zone != nil {
			ep.Zone = *e.Zone
		}
		if h := e.Hints; h != nil {
			for _, z := range h.ForZones {
				ep.ZoneHints = append(ep.ZoneHints, z.Name)
			}
			for _, n := range h.ForNodes {
				ep.NodeHints = append(ep.NodeHints, n.Name)
			}
		}
		out.Endpoints = append(out.Endpoints, ep)
	}

	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("kubeconv: %w", err)
	}
	return out, nil
}

// parseUnicast parses an address a service or endpoint may use, returning
// why it cannot ("" when it can).
func parseUnicast(s string) (netip.Addr, string) {
	ip, ok := k8sparse.IP(s)
	switch {
	case !ok:
		return netip.Addr{}, "not an IP address"
	case ip.IsUnspecified():
		return netip.Addr{}, "not a unicast address"
	}
	return ip, ""
}

// Node converts the Node the proxy runs on: its name, its zone (label
// topology.kubernetes.io/zone) and its primary addresses, the first
// InternalIP of each family, else its first ExternalIP (as kube-proxy's
// nodePortAddresses "primary" and the kubelet's node IPs). Unparsable
// addresses are an error naming the field.
func Node(n *v1.Node) (service.NodeInfo, error) {
	if n == nil {
		return service.NodeInfo{}, fmt.Errorf("kubeconv: nil Node: %w", service.ErrInvalid)
	}
	addrs, err := k8sparse.NodeAddresses(n, "node "+n.Name, service.ErrInvalid)
	if err != nil {
		return service.NodeInfo{}, err
	}
	info := service.NodeInfo{Name: n.Name, Zone: n.Labels[v1.LabelTopologyZone], Addresses: addrs}
	return info, nil
}
