package kubeconv

import (
	"errors"
	"github.com/kubewire/kubewire/internal/k8sparse"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/service"
)

func ptr[T any](v T) *T { return &v }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// svc returns a minimal ClusterIP service default/web, modified by fs.
func svc(fs ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  "10.0.0.10",
			ClusterIPs: []string{"10.0.0.10"},
			Ports: []v1.ServicePort{{
				Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080),
			}},
		},
	}
	for _, f := range fs {
		f(s)
	}
	return s
}

// want returns the conversion of svc() with no modification, modified by fs.
func want(fs ...func(*service.Service)) *service.Service {
	s := &service.Service{
		Name:                  service.Name{Namespace: "default", Name: "web"},
		ClusterIPs:            addrs("10.0.0.10"),
		Ports:                 []service.Port{{Name: "http", Protocol: service.TCP, Port: 80, TargetPort: 8080}},
		ExternalTrafficPolicy: service.PolicyCluster,
		InternalTrafficPolicy: service.PolicyCluster,
	}
	for _, f := range fs {
		f(s)
	}
	return s
}

func TestService(t *testing.T) {
	tests := []struct {
		name string
		in   *v1.Service
		opts Options
		want *service.Service
	}{
		{name: "clusterIP", in: svc(), want: want()},
		{
			name: "protocol defaults to TCP",
			in:   svc(func(s *v1.Service) { s.Spec.Ports[0].Protocol = "" }),
			want: want(),
		},
		{
			name: "UDP and SCTP",
			in: svc(func(s *v1.Service) {
				s.Spec.Ports = []v1.ServicePort{
					{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
					{Name: "sig", Protocol: v1.ProtocolSCTP, Port: 3868, TargetPort: intstr.FromInt32(3868)},
				}
			}),
			want: want(func(s *service.Service) {
				s.Ports = []service.Port{
					{Name: "dns", Protocol: service.UDP, Port: 53, TargetPort: 5353},
					{Name: "sig", Protocol: service.SCTP, Port: 3868, TargetPort: 3868},
				}
			}),
		},
		{
			name: "target ports: named, unset, empty name, numeric",
			in: svc(func(s *v1.Service) {
				s.Spec.Ports = []v1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
					{Name: "https", Port: 443},
					{Name: "alt", Port: 8443, TargetPort: intstr.FromString("")},
					{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9100)},
				}
			}),
			want: want(func(s *service.Service) {
				s.Ports = []service.Port{
					{Name: "http", Protocol: service.TCP, Port: 80, TargetPortName: "web"},
					{Name: "https", Protocol: service.TCP, Port: 443, TargetPort: 443},
					{Name: "alt", Protocol: service.TCP, Port: 8443, TargetPort: 8443},
					{Name: "metrics", Protocol: service.TCP, Port: 9090, TargetPort: 9100},
				}
			}),
		},
		{
			name: "single unnamed port",
			in:   svc(func(s *v1.Service) { s.Spec.Ports[0].Name = "" }),
			want: want(func(s *service.Service) { s.Ports[0].Name = "" }),
		},
		{
			name: "dual-stack IPv4 primary",
			in: svc(func(s *v1.Service) {
				s.Spec.ClusterIPs = []string{"10.0.0.10", "fd00::10"}
				s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
			}),
			want: want(func(s *service.Service) { s.ClusterIPs = addrs("10.0.0.10", "fd00::10") }),
		},
		{
			name: "dual-stack IPv6 primary",
			in: svc(func(s *v1.Service) {
				s.Spec.ClusterIP = "fd00::10"
				s.Spec.ClusterIPs = []string{"fd00::10", "10.0.0.10"}
			}),
			want: want(func(s *service.Service) { s.ClusterIPs = addrs("fd00::10", "10.0.0.10") }),
		},
		{
			name: "clusterIP only (no clusterIPs)",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIPs = nil }),
			want: want(),
		},
		{
			name: "clusterIPs only (no clusterIP)",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP = "" }),
			want: want(),
		},
		{
			name: "sloppy addresses: leading zeros, IPv4-mapped, non-canonical CIDR",
			in: svc(func(s *v1.Service) {
				s.Spec.ClusterIP = "010.000.000.010"
				s.Spec.ClusterIPs = []string{"010.000.000.010"}
				s.Spec.ExternalIPs = []string{"::ffff:192.0.2.1"}
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.77/24", "010.1.0.0/16"}
			}),
			want: want(func(s *service.Service) {
				s.ExternalIPs = addrs("192.0.2.1")
				s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.1.0.0/16")}
			}),
		},
		{
			name: "NodePort",
			in: svc(func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 31000 // only LoadBalancer services use it
			}),
			want: want(func(s *service.Service) {
				s.Ports[0].NodePort = 30080
				s.ExternalTrafficPolicy = service.PolicyLocal
			}),
		},
		{
			name: "dual-stack LoadBalancer: ipMode nil, VIP, Proxy; hostname-only skipped",
			in: svc(func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.ClusterIPs = []string{"10.0.0.10", "fd00::10"}
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 31000
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{
					{IP: "192.0.2.10"},
					{IP: "2001:db8::10", IPMode: ptr(v1.LoadBalancerIPModeVIP)},
					{Hostname: "lb.example.com"},
					{IP: "192.0.2.11", Hostname: "lb2.example.com", IPMode: ptr(v1.LoadBalancerIPModeProxy)},
				}
			}),
			want: want(func(s *service.Service) {
				s.ClusterIPs = addrs("10.0.0.10", "fd00::10")
				s.Ports[0].NodePort = 30080
				s.ExternalTrafficPolicy = service.PolicyLocal
				s.HealthCheckNodePort = 31000
				s.LoadBalancerIngress = []service.LBIngress{
					{IP: netip.MustParseAddr("192.0.2.10"), Mode: service.IPModeVIP},
					{IP: netip.MustParseAddr("2001:db8::10"), Mode: service.IPModeVIP},
					{IP: netip.MustParseAddr("192.0.2.11"), Mode: service.IPModeProxy},
				}
			}),
		},
		{
			name: "LoadBalancer with Cluster policy has no health check port",
			in: svc(func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
				s.Spec.HealthCheckNodePort = 31000
			}),
			want: want(),
		},
		{
			name: "external IPs",
			in:   svc(func(s *v1.Service) { s.Spec.ExternalIPs = []string{"192.0.2.5", "2001:db8::5"} }),
			want: want(func(s *service.Service) { s.ExternalIPs = addrs("192.0.2.5", "2001:db8::5") }),
		},
		{
			name: "source ranges from spec, spaces trimmed",
			in: svc(func(s *v1.Service) {
				s.Spec.LoadBalancerSourceRanges = []string{" 192.0.2.0/24", "2001:db8::/32 "}
				s.Annotations = map[string]string{AnnotationLoadBalancerSourceRanges: "10.0.0.0/8"}
			}),
			want: want(func(s *service.Service) {
				s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
			}),
		},
		{
			name: "source ranges from the annotation when the spec has none",
			in: svc(func(s *v1.Service) {
				s.Annotations = map[string]string{AnnotationLoadBalancerSourceRanges: " 192.0.2.0/24 , 198.51.100.0/24,"}
			}),
			want: want(func(s *service.Service) {
				s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")}
			}),
		},
		{
			name: "blank annotation means no restriction",
			in: svc(func(s *v1.Service) {
				s.Annotations = map[string]string{AnnotationLoadBalancerSourceRanges: "  "}
			}),
			want: want(),
		},
		{
			name: "ClientIP affinity, default timeout",
			in:   svc(func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityClientIP }),
			want: want(func(s *service.Service) { s.AffinityTimeout = 10800 * time.Second }),
		},
		{
			name: "ClientIP affinity, config without timeout",
			in: svc(func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{}}
			}),
			want: want(func(s *service.Service) { s.AffinityTimeout = 3 * time.Hour }),
		},
		{
			name: "ClientIP affinity, explicit timeout",
			in: svc(func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr[int32](60)}}
			}),
			want: want(func(s *service.Service) { s.AffinityTimeout = time.Minute }),
		},
		{
			name: "affinity None ignores the config",
			in: svc(func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityNone
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr[int32](60)}}
			}),
			want: want(),
		},
		{
			name: "internal traffic policy Local, distribution",
			in: svc(func(s *v1.Service) {
				s.Spec.InternalTrafficPolicy = ptr(v1.ServiceInternalTrafficPolicyLocal)
				s.Spec.TrafficDistribution = ptr("PreferSameNode")
			}),
			want: want(func(s *service.Service) {
				s.InternalTrafficPolicy = service.PolicyLocal
				s.TrafficDistribution = service.DistributionPreferSameNode
			}),
		},
		{
			name: "explicit Cluster policies; unknown distribution passed through",
			in: svc(func(s *v1.Service) {
				s.Spec.InternalTrafficPolicy = ptr(v1.ServiceInternalTrafficPolicyCluster)
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
				s.Spec.TrafficDistribution = ptr("PreferSomethingNew")
			}),
			want: want(func(s *service.Service) { s.TrafficDistribution = "PreferSomethingNew" }),
		},
		{
			name: "proxy name label matches the option",
			in: svc(func(s *v1.Service) {
				s.Labels = map[string]string{LabelServiceProxyName: "kubewire"}
			}),
			opts: Options{ProxyName: "kubewire"},
			want: want(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Service(tt.in, tt.opts)
			if err != nil {
				t.Fatalf("Service: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Service:\n got %+v\nwant %+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestServiceSkip(t *testing.T) {
	tests := []struct {
		name string
		in   *v1.Service
		opts Options
		msg  string
	}{
		{
			name: "headless",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }),
			msg:  "kubeconv: service default/web: skipped: headless (clusterIP None)",
		},
		{
			name: "headless, clusterIPs only",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", []string{"None"} }),
			msg:  "kubeconv: service default/web: skipped: headless (clusterIP None)",
		},
		{
			name: "ExternalName",
			in: svc(func(s *v1.Service) {
				s.Spec = v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "db.example.com"}
			}),
			msg: "kubeconv: service default/web: skipped: type ExternalName",
		},
		{
			name: "ExternalName with a cluster IP",
			in:   svc(func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeExternalName }),
			msg:  "kubeconv: service default/web: skipped: type ExternalName",
		},
		{
			name: "no cluster IP yet",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }),
			msg:  "kubeconv: service default/web: skipped: no cluster IP allocated yet",
		},
		{
			name: "proxy name label, default proxy",
			in:   svc(func(s *v1.Service) { s.Labels = map[string]string{LabelServiceProxyName: "other"} }),
			msg:  `kubeconv: service default/web: skipped: label service.kubernetes.io/service-proxy-name="other" is not this proxy's`,
		},
		{
			name: "empty proxy name label, default proxy",
			in:   svc(func(s *v1.Service) { s.Labels = map[string]string{LabelServiceProxyName: ""} }),
			msg:  `kubeconv: service default/web: skipped: label service.kubernetes.io/service-proxy-name="" is not this proxy's`,
		},
		{
			name: "proxy name label, another named proxy",
			in:   svc(func(s *v1.Service) { s.Labels = map[string]string{LabelServiceProxyName: "other"} }),
			opts: Options{ProxyName: "kubewire"},
			msg:  `kubeconv: service default/web: skipped: label service.kubernetes.io/service-proxy-name="other" is not this proxy's`,
		},
		{
			name: "no proxy name label, named proxy",
			in:   svc(),
			opts: Options{ProxyName: "kubewire"},
			msg:  `kubeconv: service default/web: skipped: no label service.kubernetes.io/service-proxy-name="kubewire"`,
		},
		{
			name: "headless label",
			in:   svc(func(s *v1.Service) { s.Labels = map[string]string{LabelHeadless: ""} }),
			msg:  "kubeconv: service default/web: skipped: label service.kubernetes.io/headless set",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Service(tt.in, tt.opts)
			if got != nil || !errors.Is(err, ErrSkip) {
				t.Fatalf("Service = %+v, %v; want ErrSkip", got, err)
			}
			if errors.Is(err, service.ErrInvalid) {
				t.Errorf("skip error %v matches service.ErrInvalid", err)
			}
			if err.Error() != tt.msg {
				t.Errorf("error\n got %s\nwant %s", err, tt.msg)
			}
		})
	}
}

func TestServiceErrors(t *testing.T) {
	const pre = "kubeconv: service default/web: "
	tests := []struct {
		name string
		in   *v1.Service
		msg  string
	}{
		{
			name: "bad second cluster IP",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.0.0.10", "10.0.0.300"} }),
			msg:  pre + `spec.clusterIPs[1] "10.0.0.300": not an IP address`,
		},
		{
			name: "bad clusterIP without clusterIPs",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "ten", nil }),
			msg:  pre + `spec.clusterIP "ten": not an IP address`,
		},
		{
			name: "zoned cluster IP",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "fe80::1%eth0", []string{"fe80::1%eth0"} }),
			msg:  pre + `spec.clusterIPs[0] "fe80::1%eth0": not an IP address`,
		},
		{
			name: "unspecified cluster IP",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "0.0.0.0", []string{"0.0.0.0"} }),
			msg:  pre + `spec.clusterIPs[0] "0.0.0.0": not a unicast address`,
		},
		{
			name: "two IPv4 cluster IPs",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.0.0.10", "10.0.0.11"} }),
			msg:  pre + `spec.clusterIPs[1] "10.0.0.11": same IP family as spec.clusterIPs[0]`,
		},
		{
			name: "three cluster IPs",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.0.0.10", "fd00::1", "10.0.0.11"} }),
			msg:  pre + `spec.clusterIPs [10.0.0.10 fd00::1 10.0.0.11]: at most two addresses, one per family`,
		},
		{
			name: "clusterIP differs from clusterIPs[0]",
			in:   svc(func(s *v1.Service) { s.Spec.ClusterIP = "10.0.0.11" }),
			msg:  pre + `spec.clusterIP "10.0.0.11": differs from spec.clusterIPs[0]`,
		},
		{
			name: "port 0",
			in:   svc(func(s *v1.Service) { s.Spec.Ports[0].Port = 0 }),
			msg:  pre + `spec.ports[0].port 0: must be 1-65535`,
		},
		{
			name: "port too big",
			in:   svc(func(s *v1.Service) { s.Spec.Ports[0].Port = 70000 }),
			msg:  pre + `spec.ports[0].port 70000: must be 1-65535`,
		},
		{
			name: "negative node port",
			in:   svc(func(s *v1.Service) { s.Spec.Ports[0].NodePort = -1 }),
			msg:  pre + `spec.ports[0].nodePort -1: must be 0-65535`,
		},
		{
			name: "target port too big",
			in:   svc(func(s *v1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromInt32(65536) }),
			msg:  pre + `spec.ports[0].targetPort 65536: must be 1-65535`,
		},
		{
			name: "unknown protocol",
			in:   svc(func(s *v1.Service) { s.Spec.Ports[0].Protocol = "HTTP" }),
			msg:  pre + `spec.ports[0].protocol "HTTP": want TCP, UDP or SCTP`,
		},
		{
			name: "bad external IP",
			in:   svc(func(s *v1.Service) { s.Spec.ExternalIPs = []string{"192.0.2.1", "example.com"} }),
			msg:  pre + `spec.externalIPs[1] "example.com": not an IP address`,
		},
		{
			name: "bad ingress IP",
			in: svc(func(s *v1.Service) {
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "192.0.2.256"}}
			}),
			msg: pre + `status.loadBalancer.ingress[0].ip "192.0.2.256": not an IP address`,
		},
		{
			name: "bad ipMode",
			in: svc(func(s *v1.Service) {
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "192.0.2.1", IPMode: ptr(v1.LoadBalancerIPMode("DSR"))}}
			}),
			msg: pre + `status.loadBalancer.ingress[0].ipMode "DSR": want VIP or Proxy`,
		},
		{
			name: "bad source range",
			in:   svc(func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/33"} }),
			msg:  pre + `spec.loadBalancerSourceRanges[0] "192.0.2.0/33": not a CIDR`,
		},
		{
			name: "source range without a length",
			in:   svc(func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0"} }),
			msg:  pre + `spec.loadBalancerSourceRanges[0] "192.0.2.0": not a CIDR`,
		},
		{
			name: "bad source range annotation",
			in: svc(func(s *v1.Service) {
				s.Annotations = map[string]string{AnnotationLoadBalancerSourceRanges: "10.0.0.0/8, nope"}
			}),
			msg: pre + `metadata.annotations["service.beta.kubernetes.io/load-balancer-source-ranges"][1] "nope": not a CIDR`,
		},
		{
			name: "affinity timeout 0",
			in: svc(func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr[int32](0)}}
			}),
			msg: pre + `spec.sessionAffinityConfig.clientIP.timeoutSeconds 0: must be 1-86400`,
		},
		{
			name: "affinity timeout too long",
			in: svc(func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr[int32](86401)}}
			}),
			msg: pre + `spec.sessionAffinityConfig.clientIP.timeoutSeconds 86401: must be 1-86400`,
		},
		{
			name: "unknown affinity",
			in:   svc(func(s *v1.Service) { s.Spec.SessionAffinity = "Cookie" }),
			msg:  pre + `spec.sessionAffinity "Cookie": want None or ClientIP`,
		},
		{
			name: "unknown external policy",
			in:   svc(func(s *v1.Service) { s.Spec.ExternalTrafficPolicy = "Global" }),
			msg:  pre + `spec.externalTrafficPolicy "Global": want Cluster or Local`,
		},
		{
			name: "unknown internal policy",
			in:   svc(func(s *v1.Service) { s.Spec.InternalTrafficPolicy = ptr(v1.ServiceInternalTrafficPolicy("Zone")) }),
			msg:  pre + `spec.internalTrafficPolicy "Zone": want Cluster or Local`,
		},
		{
			name: "health check port out of range",
			in: svc(func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 65536
			}),
			msg: pre + `spec.healthCheckNodePort 65536: must be 0-65535`,
		},
		// Errors found by service.Validate.
		{
			name: "no ports",
			in:   svc(func(s *v1.Service) { s.Spec.Ports = nil }),
			msg:  "kubeconv: service: invalid: service default/web: Ports []: a service needs at least one port",
		},
		{
			name: "two ports, one unnamed",
			in: svc(func(s *v1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Port: 443})
			}),
			msg: `kubeconv: service: invalid: service default/web: Ports[1].Name "": required when a service has several ports`,
		},
		{
			name: "duplicate port",
			in: svc(func(s *v1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "http", Port: 8080})
			}),
			msg: "kubeconv: service: invalid: service default/web: Ports[1].Name http: duplicate port name and protocol",
		},
		{
			name: "no namespace",
			in:   svc(func(s *v1.Service) { s.Namespace = "" }),
			msg:  "kubeconv: service: invalid: service /web: Name /web: namespace and name are required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Service(tt.in, Options{})
			if got != nil || err == nil {
				t.Fatalf("Service = %+v, %v; want an error", got, err)
			}
			if !errors.Is(err, service.ErrInvalid) || errors.Is(err, ErrSkip) {
				t.Errorf("error %v: want service.ErrInvalid, not ErrSkip", err)
			}
			if err.Error() != tt.msg {
				t.Errorf("error\n got %s\nwant %s", err, tt.msg)
			}
		})
	}
}

func TestNil(t *testing.T) {
	if _, err := Service(nil, Options{}); !errors.Is(err, service.ErrInvalid) {
		t.Errorf("Service(nil): %v", err)
	}
	if _, err := EndpointSlice(nil); !errors.Is(err, service.ErrInvalid) {
		t.Errorf("EndpointSlice(nil): %v", err)
	}
	if _, err := Node(nil); !errors.Is(err, service.ErrInvalid) {
		t.Errorf("Node(nil): %v", err)
	}
}

// slice returns an IPv4 slice web-abc of default/web, modified by fs.
func slice(fs ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "web-abc",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(v1.ProtocolTCP), Port: ptr[int32](8080)}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.1.0.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
			NodeName:   ptr("node-a"),
			Zone:       ptr("zone-1"),
		}},
	}
	for _, f := range fs {
		f(es)
	}
	return es
}

func wantSlice(fs ...func(*service.EndpointSlice)) *service.EndpointSlice {
	s := &service.EndpointSlice{
		Name:    "web-abc",
		Service: service.Name{Namespace: "default", Name: "web"},
		Ports:   []service.SlicePort{{Name: "http", Protocol: service.TCP, Port: 8080}},
		Endpoints: []service.Endpoint{{
			Addresses: addrs("10.1.0.5"), Ready: true, Serving: true,
			NodeName: "node-a", Zone: "zone-1",
		}},
	}
	for _, f := range fs {
		f(s)
	}
	return s
}

func TestEndpointSlice(t *testing.T) {
	conds := func(ready, serving, terminating *bool) func(*discoveryv1.EndpointSlice) {
		return func(es *discoveryv1.EndpointSlice) {
			es.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}
		}
	}
	state := func(ready, serving, terminating bool) func(*service.EndpointSlice) {
		return func(s *service.EndpointSlice) {
			e := &s.Endpoints[0]
			e.Ready, e.Serving, e.Terminating = ready, serving, terminating
		}
	}
	tests := []struct {
		name string
		in   *discoveryv1.EndpointSlice
		want *service.EndpointSlice
	}{
		{name: "IPv4", in: slice(), want: wantSlice()},
		{
			name: "IPv6",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				es.AddressType = discoveryv1.AddressTypeIPv6
				es.Endpoints[0].Addresses = []string{"fd00:1::5"}
			}),
			want: wantSlice(func(s *service.EndpointSlice) { s.Endpoints[0].Addresses = addrs("fd00:1::5") }),
		},
		{
			name: "port defaults: nil name, nil protocol; nil and zero ports dropped",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				es.Ports = []discoveryv1.EndpointPort{
					{Port: ptr[int32](8080)},
					{Name: ptr("dns"), Protocol: ptr(v1.ProtocolUDP), Port: ptr[int32](53)},
					{Name: ptr("all")},
					{Name: ptr("zero"), Port: ptr[int32](0)},
					{Name: ptr("sctp"), Protocol: ptr(v1.ProtocolSCTP), Port: ptr[int32](3868)},
				}
			}),
			want: wantSlice(func(s *service.EndpointSlice) {
				s.Ports = []service.SlicePort{
					{Name: "", Protocol: service.TCP, Port: 8080},
					{Name: "dns", Protocol: service.UDP, Port: 53},
					{Name: "sctp", Protocol: service.SCTP, Port: 3868},
				}
			}),
		},
		{name: "conditions all nil", in: slice(conds(nil, nil, nil)), want: wantSlice(state(true, true, false))},
		{
			name: "not ready, serving nil: serving is true (API definition, kube-proxy)",
			in:   slice(conds(ptr(false), nil, nil)),
			want: wantSlice(state(false, true, false)),
		},
		{
			name: "terminating, ready and serving nil",
			in:   slice(conds(nil, nil, ptr(true))),
			want: wantSlice(state(true, true, true)),
		},
		{
			name: "terminating and serving, not ready",
			in:   slice(conds(ptr(false), ptr(true), ptr(true))),
			want: wantSlice(state(false, true, true)),
		},
		{
			name: "terminating, not serving, serving given",
			in:   slice(conds(ptr(false), ptr(false), ptr(true))),
			want: wantSlice(state(false, false, true)),
		},
		{
			name: "hints, no node or zone, several addresses",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				e := &es.Endpoints[0]
				e.NodeName, e.Zone = nil, nil
				e.Addresses = []string{"10.1.0.5", "10.1.0.6"}
				e.Hints = &discoveryv1.EndpointHints{
					ForZones: []discoveryv1.ForZone{{Name: "zone-1"}, {Name: "zone-2"}},
					ForNodes: []discoveryv1.ForNode{{Name: "node-a"}},
				}
			}),
			want: wantSlice(func(s *service.EndpointSlice) {
				e := &s.Endpoints[0]
				e.NodeName, e.Zone = "", ""
				e.Addresses = addrs("10.1.0.5", "10.1.0.6")
				e.ZoneHints = []string{"zone-1", "zone-2"}
				e.NodeHints = []string{"node-a"}
			}),
		},
		{
			name: "empty hints",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				es.Endpoints[0].Hints = &discoveryv1.EndpointHints{}
			}),
			want: wantSlice(),
		},
		{
			name: "endpoint without addresses is kept (service.Backends ignores it)",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{})
			}),
			want: wantSlice(func(s *service.EndpointSlice) {
				s.Endpoints = append(s.Endpoints, service.Endpoint{Ready: true, Serving: true})
			}),
		},
		{
			name: "sloppy IPv4: leading zeros, mapped",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				es.Endpoints[0].Addresses = []string{"010.001.000.005", "::ffff:10.1.0.6"}
			}),
			want: wantSlice(func(s *service.EndpointSlice) { s.Endpoints[0].Addresses = addrs("10.1.0.5", "10.1.0.6") }),
		},
		{
			name: "no ports, no endpoints",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Ports, es.Endpoints = nil, nil }),
			want: wantSlice(func(s *service.EndpointSlice) { s.Ports, s.Endpoints = nil, nil }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EndpointSlice(tt.in)
			if err != nil {
				t.Fatalf("EndpointSlice: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("EndpointSlice:\n got %+v\nwant %+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestEndpointSliceSkip(t *testing.T) {
	tests := []struct {
		name string
		in   *discoveryv1.EndpointSlice
		msg  string
	}{
		{
			name: "FQDN",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				es.AddressType = discoveryv1.AddressTypeFQDN
				es.Endpoints[0].Addresses = []string{"db.example.com"}
			}),
			msg: `kubeconv: endpointslice default/web-abc: skipped: addressType "FQDN" is not IPv4 or IPv6`,
		},
		{
			name: "no address type",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.AddressType = "" }),
			msg:  `kubeconv: endpointslice default/web-abc: skipped: addressType "" is not IPv4 or IPv6`,
		},
		{
			name: "headless label",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Labels[LabelHeadless] = "" }),
			msg:  "kubeconv: endpointslice default/web-abc: skipped: label service.kubernetes.io/headless set",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EndpointSlice(tt.in)
			if got != nil || !errors.Is(err, ErrSkip) || errors.Is(err, service.ErrInvalid) {
				t.Fatalf("EndpointSlice = %+v, %v; want ErrSkip", got, err)
			}
			if err.Error() != tt.msg {
				t.Errorf("error\n got %s\nwant %s", err, tt.msg)
			}
		})
	}
}

func TestEndpointSliceErrors(t *testing.T) {
	const pre = "kubeconv: endpointslice default/web-abc: "
	tests := []struct {
		name string
		in   *discoveryv1.EndpointSlice
		msg  string
	}{
		{
			name: "no service label",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Labels = nil }),
			msg:  pre + `metadata.labels["kubernetes.io/service-name"] "": required: the slice's service`,
		},
		{
			name: "empty service label",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Labels[discoveryv1.LabelServiceName] = "" }),
			msg:  pre + `metadata.labels["kubernetes.io/service-name"] "": required: the slice's service`,
		},
		{
			name: "bad address",
			in: slice(func(es *discoveryv1.EndpointSlice) {
				es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.1.0.6", "10.1.0.999"}})
			}),
			msg: pre + `endpoints[1].addresses[1] "10.1.0.999": not an IP address`,
		},
		{
			name: "IPv6 address in an IPv4 slice",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Addresses = []string{"fd00::5"} }),
			msg:  pre + `endpoints[0].addresses[0] "fd00::5": not an IPv4 address (addressType IPv4)`,
		},
		{
			name: "IPv4 address in an IPv6 slice",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeIPv6 }),
			msg:  pre + `endpoints[0].addresses[0] "10.1.0.5": not an IPv6 address (addressType IPv6)`,
		},
		{
			name: "unspecified address",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Addresses = []string{"0.0.0.0"} }),
			msg:  pre + `endpoints[0].addresses[0] "0.0.0.0": not a unicast address`,
		},
		{
			name: "port out of range",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Ports[0].Port = ptr[int32](-80) }),
			msg:  pre + `ports[0].port -80: must be 1-65535`,
		},
		{
			name: "unknown protocol",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Ports[0].Protocol = ptr(v1.Protocol("QUIC")) }),
			msg:  pre + `ports[0].protocol "QUIC": want TCP, UDP or SCTP`,
		},
		{
			name: "no name (service.Validate)",
			in:   slice(func(es *discoveryv1.EndpointSlice) { es.Name = "" }),
			msg:  "kubeconv: service: invalid: endpointslice default/: Name : slice name and service namespace/name are required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EndpointSlice(tt.in)
			if got != nil || err == nil {
				t.Fatalf("EndpointSlice = %+v, %v; want an error", got, err)
			}
			if !errors.Is(err, service.ErrInvalid) || errors.Is(err, ErrSkip) {
				t.Errorf("error %v: want service.ErrInvalid, not ErrSkip", err)
			}
			if err.Error() != tt.msg {
				t.Errorf("error\n got %s\nwant %s", err, tt.msg)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for s, want := range map[string]string{
		"10.0.0.1":        "10.0.0.1",
		"010.0.0.01":      "10.0.0.1",
		"0000255.0.0.1":   "255.0.0.1",
		"::ffff:10.0.0.1": "10.0.0.1",
		"2001:db8::1":     "2001:db8::1",
		"256.0.0.1":       "",
		"1.2.3":           "",
		"1.2.3.4.5":       "",
		"+1.2.3.4":        "",
		"1..3.4":          "",
		"fe80::1%eth0":    "",
		"":                "",
	} {
		ip, ok := k8sparse.IP(s)
		if got := map[bool]string{true: ip.String(), false: ""}[ok]; got != want {
			t.Errorf("parseIP(%q) = %q, want %q", s, got, want)
		}
	}
	for s, want := range map[string]string{
		"10.0.0.0/8":     "10.0.0.0/8",
		"10.1.2.3/8":     "10.0.0.0/8",
		"010.1.2.3/16":   "10.1.0.0/16",
		"2001:db8::1/32": "2001:db8::/32",
		"0.0.0.0/0":      "0.0.0.0/0",
		"10.0.0.0/08":    "10.0.0.0/8",
		"10.0.0.0/33":    "",
		"10.0.0.0/-1":    "",
		"10.0.0.0/":      "",
		"10.0.0.0":       "",
		"fe80::/64%eth0": "",
		"fe80::%eth0/64": "",
		"2001:db8::/129": "",
		"10.0.0.0/8/8":   "",
		"10.0.0.0/+8":    "",
		"10.0.0.0/ 8":    "",
		"::ffff:0:0/96":  "::ffff:0.0.0.0/96",
	} {
		p, ok := k8sparse.Prefix(s)
		if got := map[bool]string{true: p.String(), false: ""}[ok]; got != want {
			t.Errorf("parsePrefix(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestEndpointSliceTriggerTime(t *testing.T) {
	es := &discoveryv1.EndpointSlice{}
	es.Name, es.Namespace = "web-abc", "default"
	es.AddressType = discoveryv1.AddressTypeIPv4
	es.Labels = map[string]string{discoveryv1.LabelServiceName: "web"}
	es.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: "2026-11-25T15:00:00.5Z"}
	got, err := EndpointSlice(es)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 25, 15, 0, 0, 5e8, time.UTC); !got.TriggerTime.Equal(want) {
		t.Fatalf("TriggerTime = %v, want %v", got.TriggerTime, want)
	}
	es.Annotations[v1.EndpointsLastChangeTriggerTime] = "yesterday"
	if got, err := EndpointSlice(es); err != nil || !got.TriggerTime.IsZero() {
		t.Fatalf("malformed stamp: %v, %v", got.TriggerTime, err)
	}
}

func TestNode(t *testing.T) {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{v1.LabelTopologyZone: "zone-1"}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeHostName, Address: "node-a"},
			{Type: v1.NodeExternalIP, Address: "203.0.113.7"},
			{Type: v1.NodeExternalIP, Address: "2001:db8::7"},
			{Type: v1.NodeInternalIP, Address: "192.168.1.7"},
			{Type: v1.NodeInternalIP, Address: "192.168.1.8"},
		}}}
	got, err := Node(n)
	if err != nil {
		t.Fatal(err)
	}
	want := service.NodeInfo{Name: "node-a", Zone: "zone-1", Addresses: []netip.Addr{netip.MustParseAddr("192.168.1.7"), netip.MustParseAddr("2001:db8::7")}}
	if !got.Equal(want) {
		t.Errorf("Node = %+v, want %+v (first InternalIP per family, else ExternalIP)", got, want)
	}
	n.Status.Addresses[3].Address = "192.168.1"
	if _, err := Node(n); !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), "status.addresses[3].address") {
		t.Errorf("bad address: %v", err)
	}
}
