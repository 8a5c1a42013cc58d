package service

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Protocol is a service port protocol.
type Protocol string

// The protocols a service port may use.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

func (p Protocol) valid() bool { return p == TCP || p == UDP || p == SCTP }

// Name names a Service: its namespace and name.
type Name struct {
	Namespace, Name string
}

func (n Name) String() string { return n.Namespace + "/" + n.Name }

// PortName names one port of a Service (kube-proxy's ServicePortName).
type PortName struct {
	Service Name
	// Port is the port's name; "" for a service's single unnamed port.
	Port     string
	Protocol Protocol
}

func (p PortName) String() string {
	s := p.Service.String()
	if p.Port != "" {
		s += ":" + p.Port
	}
	return s + "/" + strings.ToLower(string(p.Protocol))
}

// TrafficPolicy is an internal or external traffic policy.
type TrafficPolicy string

// Traffic policies. The zero value means Cluster.
const (
	PolicyCluster TrafficPolicy = "Cluster"
	PolicyLocal   TrafficPolicy = "Local"
)

// Local reports whether p restricts traffic to node-local endpoints.
func (p TrafficPolicy) Local() bool { return p == PolicyLocal }

// TrafficDistribution values (Service.spec.trafficDistribution).
const (
	DistributionPreferClose    = "PreferClose" // deprecated alias of PreferSameZone
	DistributionPreferSameZone = "PreferSameZone"
	DistributionPreferSameNode = "PreferSameNode"
)

// IPMode says how a load balancer delivers traffic for an ingress IP.
type IPMode string

// Load balancer IP modes. VIP (the default) means the node must handle
// packets to the IP itself; Proxy means the load balancer rewrites them,
// so the node programs nothing for that IP.
const (
	IPModeVIP   IPMode = "VIP"
	IPModeProxy IPMode = "Proxy"
)

// LBIngress is one load balancer ingress address.
type LBIngress struct {
	IP   netip.Addr
	Mode IPMode
}

// Port is one port of a Service.
type Port struct {
	// Name is required when a service has several ports.
	Name     string
	Protocol Protocol
	Port     uint16
	// NodePort is 0 when the service has none for this port.
	NodePort uint16
	// TargetPort is the endpoint port when numeric; TargetPortName when the
	// target is a named container port (resolved per endpoint through the
	// EndpointSlice port of the same name as this service port).
	TargetPort     uint16
	TargetPortName string
}

// Service is the model of a Kubernetes Service the proxy needs. Headless
// and ExternalName services have no place here: converters drop them.
type Service struct {
	Name Name
	// ClusterIPs holds at most one address per family, primary first.
	ClusterIPs []netip.Addr
	Ports      []Port
	// ExternalIPs are addresses the node answers for on every port.
	ExternalIPs []netip.Addr
	// LoadBalancerIngress are the load balancer's addresses.
	LoadBalancerIngress []LBIngress
	// LoadBalancerSourceRanges restricts who may use the load balancer IPs
	// (empty: everyone).
	LoadBalancerSourceRanges []netip.Prefix
	// AffinityTimeout > 0 means sessionAffinity ClientIP with that timeout.
	AffinityTimeout       time.Duration
	ExternalTrafficPolicy TrafficPolicy
	InternalTrafficPolicy TrafficPolicy
	// HealthCheckNodePort serves the local-endpoint health of services with
	// ExternalTrafficPolicy Local (0: none).
	HealthCheckNodePort uint16
	// TrafficDistribution is "", or one of the Distribution* constants.
	TrafficDistribution string
}

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("service: invalid")

func invalid(obj, field string, value any, reason string) error {
	return fmt.Errorf("%w: %s: %s %v: %s", ErrInvalid, obj, field, value, reason)
}

// Validate checks a Service, naming the first bad field and its value.
func (s *Service) Validate() error {
	obj := "service " + s.Name.String()
	if s.Name.Namespace == "" || s.Name.Name == "" {
		return invalid(obj, "Name", s.Name, "namespace and name are required")
	}
	if len(s.ClusterIPs) == 0 || len(s.ClusterIPs) > 2 {
		return invalid(obj, "ClusterIPs", s.ClusterIPs, "want one or two addresses (one per family)")
	}
	for i, ip := range s.ClusterIPs {
		if !ip.IsValid() || ip.Is4In6() || ip.Zone() != "" || ip.IsUnspecified() {
			return invalid(obj, fmt.Sprintf("ClusterIPs[%d]", i), ip, "not a unicast address")
		}
	}
	if len(s.ClusterIPs) == 2 && s.ClusterIPs[0].Is4() == s.ClusterIPs[1].Is4() {
		return invalid(obj, "ClusterIPs", s.ClusterIPs, "two addresses of one family")
	}
	if len(s.Ports) == 0 {
		return invalid(obj, "Ports", "[]", "a service needs at least one port")
	}
	seen := map[string]bool{}
	for i, p := range s.Ports {
		f := fmt.Sprintf("Ports[%d]", i)
		if !p.Protocol.valid() {
			return invalid(obj, f+".Protocol", p.Protocol, "want TCP, UDP or SCTP")
		}
		if p.Port == 0 {
			return invalid(obj, f+".Port", 0, "must be 1-65535")
		}
		if p.TargetPort == 0 && p.TargetPortName == "" {
			return invalid(obj, f+".TargetPort", 0, "a number or a name is required")
		}
		if len(s.Ports) > 1 && p.Name == "" {
			return invalid(obj, f+".Name", `""`, "required when a service has several ports")
		}
		key := p.Name + "/" + string(p.Protocol)
		if seen[key] {
			return invalid(obj, f+".Name", p.Name, "duplicate port name and protocol")
		}
		seen[key] = true
	}
	for i, ip := range s.ExternalIPs {
		if !ip.IsValid() || ip.IsUnspecified() {
			return invalid(obj, fmt.Sprintf("ExternalIPs[%d]", i), ip, "not a unicast address")
		}
	}
	for i, in := range s.LoadBalancerIngress {
		if !in.IP.IsValid() || in.IP.IsUnspecified() {
			return invalid(obj, fmt.Sprintf("LoadBalancerIngress[%d].IP", i), in.IP, "not a unicast address")
		}
		if in.Mode != "" && in.Mode != IPModeVIP && in.Mode != IPModeProxy {
			return invalid(obj, fmt.Sprintf("LoadBalancerIngress[%d].Mode", i), in.Mode, "want VIP or Proxy")
		}
	}
	for i, p := range s.LoadBalancerSourceRanges {
		if !p.IsValid() {
			return invalid(obj, fmt.Sprintf("LoadBalancerSourceRanges[%d]", i), p, "not a prefix")
		}
	}
	if s.AffinityTimeout < 0 || s.AffinityTimeout > 24*time.Hour {
		return invalid(obj, "AffinityTimeout", s.AffinityTimeout, "must be between 0 and 24h")
	}
	for _, tp := range []struct {
		f string
		v TrafficPolicy
	}{{"ExternalTrafficPolicy", s.ExternalTrafficPolicy}, {"InternalTrafficPolicy", s.InternalTrafficPolicy}} {
		if tp.v != "" && tp.v != PolicyCluster && tp.v != PolicyLocal {
			return invalid(obj, tp.f, tp.v, "want Cluster or Local")
		}
	}
	switch s.TrafficDistribution {
	case "", DistributionPreferClose, DistributionPreferSameZone, DistributionPreferSameNode:
	default:
		// Unknown values are ignored by Kubernetes proxies, as the API
		// allows new values: treat as unset rather than refuse.
	}
	return nil
}

// PortNames lists the service's port names.
func (s *Service) PortNames() []PortName {
	out := make([]PortName, len(s.Ports))
	for i, p := range s.Ports {
		out[i] = PortName{Service: s.Name, Port: p.Name, Protocol: p.Protocol}
	}
	return out
}

// Equal reports whether two services are the same in every field the proxy
// uses (the change tracker drops updates that change nothing).
func (s *Service) Equal(o *Service) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Name == o.Name && slices.Equal(s.ClusterIPs, o.ClusterIPs) && slices.Equal(s.Ports, o.Ports) &&
		slices.Equal(s.ExternalIPs, o.ExternalIPs) && slices.Equal(s.LoadBalancerIngress, o.LoadBalancerIngress) &&
		slices.Equal(s.LoadBalancerSourceRanges, o.LoadBalancerSourceRanges) && s.AffinityTimeout == o.AffinityTimeout &&
		s.ExternalTrafficPolicy == o.ExternalTrafficPolicy && s.InternalTrafficPolicy == o.InternalTrafficPolicy &&
		s.HealthCheckNodePort == o.HealthCheckNodePort && s.TrafficDistribution == o.TrafficDistribution
}

// ExternallyAccessible reports whether the service takes traffic from
// outside the cluster (node ports, external or load balancer IPs).
func (s *Service) ExternallyAccessible() bool {
	if len(s.ExternalIPs) > 0 || len(s.LoadBalancerIngress) > 0 {
		return true
	}
	for _, p := range s.Ports {
		if p.NodePort != 0 {
			return true
		}
	}
	return false
}
