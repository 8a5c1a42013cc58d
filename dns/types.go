package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Protocol is a service port protocol.
type Protocol string

// The protocols a service port may use. SRV names carry them lowercased
// (_tcp, _udp, _sctp).
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

func (p Protocol) valid() bool { return p == TCP || p == UDP || p == SCTP }

// Port is one port of a Service or of an EndpointSlice. Only named ports
// get SRV records (_<name>._<protocol>.<service>.<ns>.svc.<zone>).
type Port struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Service is what cluster DNS needs of a Kubernetes Service. Exactly one of
// three kinds:
//
//   - ClusterIP (any service with a virtual IP, including NodePort and
//     LoadBalancer): ClusterIPs holds one or two addresses (one per family).
//   - Headless: no ClusterIPs and no ExternalName; its records come from the
//     ready endpoints of its EndpointSlices.
//   - ExternalName: ExternalName is a domain name the service name is a
//     CNAME for.
type Service struct {
	Namespace string
	Name      string
	// ClusterIPs holds at most one address per family, primary first.
	ClusterIPs []netip.Addr
	// ExternalName is the CNAME target of an ExternalName service (with or
	// without the trailing dot); "" for other services.
	ExternalName string
	Ports        []Port
}

// Headless reports whether s is a headless service.
func (s *Service) Headless() bool { return s.ExternalName == "" && len(s.ClusterIPs) == 0 }

// EndpointSlice is what cluster DNS needs of a discovery/v1 EndpointSlice.
// A Service's endpoints are the union of its slices.
type EndpointSlice struct {
	Namespace string
	// Name is the slice's own name, unique in its namespace.
	Name string
	// Service is the name of the Service the slice belongs to (the
	// kubernetes.io/service-name label).
	Service   string
	Ports     []Port
	Endpoints []Endpoint
}

// Endpoint is one endpoint of a slice.
type Endpoint struct {
	Addresses []netip.Addr
	// Hostname names the endpoint under a headless service
	// (<hostname>.<service>.<ns>.svc.<zone>); when "", the name is the
	// address with dashes (10-1-2-3, fd00--5).
	Hostname string
	// Ready is the effective readiness: the discovery/v1 ready condition,
	// where nil means true; converters set it for every endpoint of
	// services with publishNotReadyAddresses. Only ready endpoints get
	// records.
	Ready bool
}

// Pod is what cluster DNS needs of a Pod: its addresses, for verified pod
// records and for finding a client's namespace (autopath).
type Pod struct {
	Namespace string
	Name      string
	// IPs are the pod's addresses, every family. Host-network pods should
	// not be fed (their address is the node's): the converter skips them.
	IPs []netip.Addr
}

// Namespace is a Kubernetes namespace. Known namespaces exist in DNS
// (<ns>.svc.<zone> answers NODATA rather than NXDOMAIN) even without
// services.
type Namespace struct {
	Name string
}

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("dns: invalid")

func invalid(obj, field string, value any, reason string) error {
	if s, ok := value.(string); ok {
		value = fmt.Sprintf("%q", s)
	}
	return fmt.Errorf("%w: %s: %s %v: %s", ErrInvalid, obj, field, value, reason)
}

// validLabel reports whether s can be one label of a name this package
// serves: 1-63 characters of letters, digits and '-' (Kubernetes object
// names are DNS-1123 or DNS-1035 labels).
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validDomain reports whether s is a domain name of host-like labels
// (letters, digits, '-', '_'), with or without the trailing dot, at most
// 253 characters: what an ExternalName, a stub domain or a search domain
// may be.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func validAddr(ip netip.Addr) bool {
	return ip.IsValid() && !ip.Is4In6() && ip.Zone() == "" && !ip.IsUnspecified()
}

func validatePorts(obj string, ports []Port) error {
	for i, p := range ports {
		f := fmt.Sprintf("Ports[%d]", i)
		if !p.Protocol.valid() {
			return invalid(obj, f+".Protocol", string(p.Protocol), "want TCP, UDP or SCTP")
		}
		if p.Name != "" && !validLabel(p.Name) {
			return invalid(obj, f+".Name", p.Name, "not a DNS label")
		}
	}
	return nil
}

// Validate checks a Service, naming the first bad field and its value.
func (s *Service) Validate() error {
	obj := "service " + s.Namespace + "/" + s.Name
	if !validLabel(s.Namespace) {
		return invalid(obj, "Namespace", s.Namespace, "not a DNS label")
	}
	if !validLabel(s.Name) {
		return invalid(obj, "Name", s.Name, "not a DNS label")
	}
	if len(s.ClusterIPs) > 2 {
		return invalid(obj, "ClusterIPs", s.ClusterIPs, "want at most two addresses (one per family)")
	}
	for i, ip := range s.ClusterIPs {
		if !validAddr(ip) {
			return invalid(obj, fmt.Sprintf("ClusterIPs[%d]", i), ip, "not a unicast address")
		}
	}
	if len(s.ClusterIPs) == 2 && s.ClusterIPs[0].Is4() == s.ClusterIPs[1].Is4() {
		return invalid(obj, "ClusterIPs", s.ClusterIPs, "two addresses of one family")
	}
	if s.ExternalName != "" {
		if len(s.ClusterIPs) > 0 {
			return invalid(obj, "ExternalName", s.ExternalName, "an ExternalName service has no cluster IPs")
		}
		if _, err := netip.ParseAddr(s.ExternalName); err == nil {
			return invalid(obj, "ExternalName", s.ExternalName, "an address, not a domain name")
		}
		if !validDomain(s.ExternalName) {
			return invalid(obj, "ExternalName", s.ExternalName, "not a domain name")
		}
	}
	return validatePorts(obj, s.Ports)
}

// Validate checks an EndpointSlice, naming the first bad field and its
// value.
func (es *EndpointSlice) Validate() error {
	obj := "endpointslice " + es.Namespace + "/" + es.Name
	if !validLabel(es.Namespace) {
		return invalid(obj, "Namespace", es.Namespace, "not a DNS label")
	}
	if es.Name == "" {
		return invalid(obj, "Name", es.Name, "required")
	}
	if !validLabel(es.Service) {
		return invalid(obj, "Service", es.Service, "not a DNS label")
	}
	if err := validatePorts(obj, es.Ports); err != nil {
		return err
	}
	for i, e := range es.Endpoints {
		if e.Hostname != "" && !validLabel(e.Hostname) {
			return invalid(obj, fmt.Sprintf("Endpoints[%d].Hostname", i), e.Hostname, "not a DNS label")
		}
		for j, a := range e.Addresses {
			if !validAddr(a) {
				return invalid(obj, fmt.Sprintf("Endpoints[%d].Addresses[%d]", i, j), a, "not a unicast address")
			}
		}
	}
	return nil
}

// Validate checks a Pod, naming the first bad field and its value.
func (p *Pod) Validate() error {
	obj := "pod " + p.Namespace + "/" + p.Name
	if !validLabel(p.Namespace) {
		return invalid(obj, "Namespace", p.Namespace, "not a DNS label")
	}
	if p.Name == "" {
		return invalid(obj, "Name", p.Name, "required")
	}
	for i, a := range p.IPs {
		if !validAddr(a) {
			return invalid(obj, fmt.Sprintf("IPs[%d]", i), a, "not a unicast address")
		}
	}
	return nil
}

// Validate checks a Namespace.
func (n *Namespace) Validate() error {
	if !validLabel(n.Name) {
		return invalid("namespace "+n.Name, "Name", n.Name, "not a DNS label")
	}
	return nil
}
