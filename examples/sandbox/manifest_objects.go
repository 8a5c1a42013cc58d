package main

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	dnsconv "github.com/kubewire/kubewire/dns/kubeconv"
	"github.com/kubewire/kubewire/internal/k8sparse"
	policyconv "github.com/kubewire/kubewire/policy/kubeconv"
	svcconv "github.com/kubewire/kubewire/service/kubeconv"
)

// The node port range of the sandbox's cluster (the Kubernetes default).
const (
	minNodePort = 30000
	maxNodePort = 32767
)

// nameRule is the API server's rule for the names of a kind.
type nameRule int

const (
	dns1123Label     nameRule = iota // Namespace
	dns1123Subdomain                 // Pod, EndpointSlice, NetworkPolicy
	dns1035Label                     // Service
)

// check returns the rule's name and what is wrong with name.
func (r nameRule) check(name string) (string, []string) {
	switch r {
	case dns1123Label:
		return "DNS-1123 label", validation.IsDNS1123Label(name)
	case dns1035Label:
		return "DNS-1035 label", validation.IsDNS1035Label(name)
	}
	return "DNS-1123 subdomain", validation.IsDNS1123Subdomain(name)
}

// checkMeta checks an object's name, namespace and labels as the API
// server does, and defaults the namespace of namespaced objects.
func checkMeta(at origin, m *metav1.ObjectMeta, rule nameRule, namespaced bool) error {
	if m.Name == "" {
		if m.GenerateName != "" {
			return at.fail("metadata.name", nil, "required (metadata.generateName is not supported: the sandbox needs fixed names)")
		}
		return at.fail("metadata.name", nil, "required")
	}
	if what, msgs := rule.check(m.Name); len(msgs) > 0 {
		return at.failf("metadata.name", m.Name, "not a %s: %s", what, strings.Join(msgs, "; "))
	}
	switch {
	case !namespaced && m.Namespace != "":
		return at.fail("metadata.namespace", m.Namespace, "not allowed: the object is cluster-scoped")
	case namespaced && m.Namespace == "":
		m.Namespace = corev1.NamespaceDefault
	case namespaced:
		if msgs := validation.IsDNS1123Label(m.Namespace); len(msgs) > 0 {
			return at.fail("metadata.namespace", m.Namespace, "not a DNS-1123 label: "+strings.Join(msgs, "; "))
		}
	}
	return checkLabels(at, "metadata.labels", m.Labels)
}

// checkLabels checks the keys and values of a label map (labels or a
// service's selector).
func checkLabels(at origin, field string, labels map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		f := fmt.Sprintf("%s[%q]", field, k)
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return at.fail(f, nil, "not a label key: "+strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(labels[k]); len(msgs) > 0 {
			return at.fail(f, labels[k], "not a label value: "+strings.Join(msgs, "; "))
		}
	}
	return nil
}

// converted surfaces the error of a kubeconv converter: nil when it
// converted the object or skipped it (a valid object the converter's
// component ignores), else the converter's field error located at at.
func converted(at origin, err, skip error) error {
	if err == nil || errors.Is(err, skip) {
		return nil
	}
	var fe *k8sparse.FieldError
	if errors.As(err, &fe) {
		return at.wrap(&fieldError{field: fe.Field, value: fe.Value, reason: fe.Reason, kind: fe.Kind})
	}
	return at.wrap(err)
}

// validator checks the objects of a manifest against its cluster and
// each other, and applies the API server's defaults.
type validator struct {
	cluster    *Cluster
	namespaces map[string]bool
	services   map[objectKey]*corev1.Service
	nodePorts  map[int32]string      // node port → its service ("Service ns/name")
	clusterIPs map[netip.Addr]string // requested cluster IP → its service
	nextNode   int                   // round-robin cursor for pods without spec.nodeName
}

func newValidator(c *Cluster) *validator {
	return &validator{
		cluster:    c,
		namespaces: make(map[string]bool),
		services:   make(map[objectKey]*corev1.Service),
		nodePorts:  make(map[int32]string),
		clusterIPs: make(map[netip.Addr]string),
	}
}

// check validates and defaults one object.
func (v *validator) check(at origin, obj runtime.Object) error {
	if o, ok := obj.(metav1.Object); ok && o.GetNamespace() != "" && !v.namespaces[o.GetNamespace()] {
		return at.failf("metadata.namespace", o.GetNamespace(),
			"no such namespace: declare a Namespace %s (only %q exists without one)", o.GetNamespace(), corev1.NamespaceDefault)
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		return v.namespace(at, o)
	case *corev1.Pod:
		return v.pod(at, o)
	case *corev1.Service:
		return v.service(at, o)
	case *discoveryv1.EndpointSlice:
		return v.endpointSlice(at, o)
	case *networkingv1.NetworkPolicy:
		_, err := policyconv.Policy(o)
		return converted(at, err, policyconv.ErrSkip)
	}
	return at.wrap(fmt.Errorf("unexpected %T", obj))
}

// defaultNamespace is the "default" namespace, which always exists.
func defaultNamespace() *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   corev1.NamespaceDefault,
			Labels: map[string]string{corev1.LabelMetadataName: corev1.NamespaceDefault},
		},
	}
}

func (v *validator) namespace(at origin, ns *corev1.Namespace) error {
	if ns.Labels == nil {
		ns.Labels = make(map[string]string)
	}
	ns.Labels[corev1.LabelMetadataName] = ns.Name // as the API server does
	_, err := policyconv.Namespace(ns)
	if err := converted(at, err, policyconv.ErrSkip); err != nil {
		return err
	}
	_, err = dnsconv.Namespace(ns)
	return converted(at, err, dnsconv.ErrSkip)
}

// checkProtocol defaults a port protocol to TCP and refuses what the
// sandbox cannot serve.
func checkProtocol(at origin, field string, p *corev1.Protocol) error {
	switch *p {
	case "":
		*p = corev1.ProtocolTCP
	case corev1.ProtocolTCP, corev1.ProtocolUDP:
	case corev1.ProtocolSCTP:
		return at.fail(field, string(*p), "not supported: the sandbox's kernel has no SCTP")
	default:
		return at.fail(field, string(*p), "want TCP or UDP")
	}
	return nil
}

// checkNode checks a node name against the cluster's nodes.
func (v *validator) checkNode(at origin, field, name string) error {
	if _, ok := clusterNodeNumber(name, v.cluster.Nodes); !ok {
		return at.failf(field, name, "no such node: the cluster has %s", clusterNodeRange(v.cluster.Nodes))
	}
	return nil
}

func (v *validator) pod(at origin, p *corev1.Pod) error {
	spec := &p.Spec
	if spec.HostNetwork {
		return at.fail("spec.hostNetwork", true, "not supported by the sandbox: every pod gets a network namespace of its own")
	}
	if len(spec.Containers) == 0 {
		return at.fail("spec.containers", nil, "required: at least one container")
	}
	pc := podContainers{at: at, names: make(map[string]string), portNames: make(map[string]string), ports: make(map[string]string)}
	for i := range spec.Containers {
		if err := pc.check(fmt.Sprintf("spec.containers[%d]", i), &spec.Containers[i]); err != nil {
			return err
		}
	}
	for i := range spec.InitContainers {
		if err := pc.check(fmt.Sprintf("spec.initContainers[%d]", i), &spec.InitContainers[i]); err != nil {
			return err
		}
	}

	if spec.NodeName == "" {
		spec.NodeName = clusterNodeName(v.nextNode%v.cluster.Nodes + 1)
		v.nextNode++
	} else if err := v.checkNode(at, "spec.nodeName", spec.NodeName); err != nil {
		return err
	}
	for _, f := range []struct{ field, value string }{{"spec.hostname", spec.Hostname}, {"spec.subdomain", spec.Subdomain}} {
		if f.value == "" {
			continue
		}
		if msgs := validation.IsDNS1123Label(f.value); len(msgs) > 0 {
			return at.fail(f.field, f.value, "not a DNS-1123 label: "+strings.Join(msgs, "; "))
		}
	}
	if err := checkPodStatus(at, &p.Status); err != nil {
		return err
	}

	// The converters check what they read (named ports, mainly); a pod
	// without addresses converts fine.
	_, err := policyconv.Pod(p)
	if err := converted(at, err, policyconv.ErrSkip); err != nil {
		return err
	}
	_, err = dnsconv.Pod(p)
	return converted(at, err, dnsconv.ErrSkip)
}

// podContainers checks the containers of one pod, which share one network
// namespace: container names, port names and port/protocol pairs are
// unique in the pod.
type podContainers struct {
	at        origin
	names     map[string]string // container name → field
	portNames map[string]string // port name → field
	ports     map[string]string // "80/TCP" → field
}

func (pc *podContainers) check(field string, c *corev1.Container) error {
	at := pc.at
	switch msgs := validation.IsDNS1123Label(c.Name); {
	case c.Name == "":
		return at.fail(field+".name", nil, "required")
	case len(msgs) > 0:
		return at.fail(field+".name", c.Name, "not a DNS-1123 label: "+strings.Join(msgs, "; "))
	case pc.names[c.Name] != "":
		return at.failf(field+".name", c.Name, "duplicate of %s.name", pc.names[c.Name])
	}
	pc.names[c.Name] = field
	for j := range c.Ports {
		p := &c.Ports[j]
		f := fmt.Sprintf("%s.ports[%d]", field, j)
		if err := checkProtocol(at, f+".protocol", &p.Protocol); err != nil {
			return err
		}
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return at.fail(f+".containerPort", p.ContainerPort, "must be 1-65535")
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			return at.fail(f+".hostPort", p.HostPort, "must be 0-65535")
		}
		key := fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
		if prev := pc.ports[key]; prev != "" {
			return at.failf(f, key, "already served by %s: a pod's containers share one network namespace", prev)
		}
		pc.ports[key] = f
		if p.Name == "" {
			continue
		}
		if msgs := validation.IsValidPortName(p.Name); len(msgs) > 0 {
			return at.fail(f+".name", p.Name, "not a port name: "+strings.Join(msgs, "; "))
		}
		if prev := pc.portNames[p.Name]; prev != "" {
			return at.failf(f+".name", p.Name, "duplicate of %s.name: port names are unique in a pod", prev)
		}
		pc.portNames[p.Name] = f
	}
	return nil
}

// checkPodStatus keeps only the declared phase and conditions of a pod's
// status (the builder fills in the addresses), after checking them.
func checkPodStatus(at origin, st *corev1.PodStatus) error {
	switch st.Phase {
	case "", corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown:
	default:
		return at.fail("status.phase", string(st.Phase), "want Pending, Running, Succeeded, Failed or Unknown")
	}
	seen := make(map[corev1.PodConditionType]int)
	for i, c := range st.Conditions {
		f := fmt.Sprintf("status.conditions[%d]", i)
		if c.Type == "" {
			return at.fail(f+".type", nil, "required")
		}
		if j, dup := seen[c.Type]; dup {
			return at.failf(f+".type", string(c.Type), "duplicate of status.conditions[%d].type", j)
		}
		seen[c.Type] = i
		switch c.Status {
		case corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown:
		default:
			return at.fail(f+".status", string(c.Status), "want True, False or Unknown")
		}
	}
	*st = corev1.PodStatus{Phase: st.Phase, Conditions: st.Conditions}
	return nil
}

// isHeadless reports whether a service has clusterIP None.
func isHeadless(s *corev1.Service) bool {
	ip := s.Spec.ClusterIP
	if ip == "" && len(s.Spec.ClusterIPs) > 0 {
		ip = s.Spec.ClusterIPs[0]
	}
	return ip == corev1.ClusterIPNone
}

func (v *validator) service(at origin, s *corev1.Service) error {
	spec := &s.Spec
	if err := checkLabels(at, "spec.selector", spec.Selector); err != nil {
		return err
	}
	switch spec.Type {
	case "":
		spec.Type = corev1.ServiceTypeClusterIP
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeExternalName:
	case corev1.ServiceTypeLoadBalancer:
		return at.fail("spec.type", string(spec.Type), "not supported: the sandbox has no load balancer; use NodePort")
	default:
		return at.fail("spec.type", string(spec.Type), "want ClusterIP, NodePort or ExternalName")
	}
	headless := isHeadless(s)
	if spec.Type == corev1.ServiceTypeExternalName {
		if err := checkExternalName(at, s); err != nil {
			return err
		}
	} else if err := v.serviceIPs(at, s, headless); err != nil {
		return err
	}
	if err := v.servicePorts(at, s, headless); err != nil {
		return err
	}
	if err := defaultServicePolicies(at, s); err != nil {
		return err
	}

	// What the proxy and DNS read must convert. A service without its
	// cluster IPs yet converts with placeholders from the service CIDRs.
	c := s.DeepCopy()
	if spec.Type != corev1.ServiceTypeExternalName && !headless && len(c.Spec.ClusterIPs) == 0 {
		for _, f := range c.Spec.IPFamilies {
			c.Spec.ClusterIPs = append(c.Spec.ClusterIPs, v.cluster.serviceCIDR(string(f)).Addr().Next().String())
		}
		c.Spec.ClusterIP = c.Spec.ClusterIPs[0]
	}
	_, err := svcconv.Service(c, svcconv.Options{})
	if err := converted(at, err, svcconv.ErrSkip); err != nil {
		return err
	}
	_, err = dnsconv.Service(c)
	return converted(at, err, dnsconv.ErrSkip)
}

// checkExternalName checks the fields of an ExternalName service.
func checkExternalName(at origin, s *corev1.Service) error {
	spec := &s.Spec
	switch name := spec.ExternalName; {
	case name == "":
		return at.fail("spec.externalName", nil, "required for type ExternalName")
	default:
		if msgs := validation.IsDNS1123Subdomain(strings.TrimSuffix(name, ".")); len(msgs) > 0 {
			return at.fail("spec.externalName", name, "not a DNS name: "+strings.Join(msgs, "; "))
		}
	}
	switch {
	case spec.ClusterIP != "":
		return at.fail("spec.clusterIP", spec.ClusterIP, "must be empty for type ExternalName")
	case len(spec.ClusterIPs) > 0:
		return at.fail("spec.clusterIPs", strings.Join(spec.ClusterIPs, ","), "must be empty for type ExternalName")
	case spec.IPFamilyPolicy != nil:
		return at.fail("spec.ipFamilyPolicy", string(*spec.IPFamilyPolicy), "must not be set for type ExternalName")
	case len(spec.IPFamilies) > 0:
		return at.fail("spec.ipFamilies", nil, "must not be set for type ExternalName")
	}
	return nil
}

// serviceCIDR returns the cluster's service CIDR of family fam (the zero
// Prefix when the cluster does not have that family).
func (c *Cluster) serviceCIDR(fam string) netip.Prefix {
	if i := slices.Index(c.IPFamilies, fam); i >= 0 {
		return c.ServiceCIDRs[i]
	}
	return netip.Prefix{}
}

// serviceIPs checks the requested cluster IPs and defaults ipFamilyPolicy
// and ipFamilies as the API server does (its initIPFamilyFields),
// from the cluster's families.
func (v *validator) serviceIPs(at origin, s *corev1.Service, headless bool) error {
	spec := &s.Spec
	cl := v.cluster
	if spec.IPFamilyPolicy == nil {
		p := corev1.IPFamilyPolicySingleStack
		if headless && len(spec.Selector) == 0 {
			p = corev1.IPFamilyPolicyRequireDualStack // the API server's special case
		}
		spec.IPFamilyPolicy = &p
	}
	policy := *spec.IPFamilyPolicy
	switch policy {
	case corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack:
	default:
		return at.fail("spec.ipFamilyPolicy", string(policy), "want SingleStack, PreferDualStack or RequireDualStack")
	}
	if len(spec.IPFamilies) > 2 {
		return at.fail("spec.ipFamilies", nil, "at most two families")
	}
	for i, f := range spec.IPFamilies {
		field := fmt.Sprintf("spec.ipFamilies[%d]", i)
		switch {
		case f != corev1.IPv4Protocol && f != corev1.IPv6Protocol:
			return at.fail(field, string(f), "want IPv4 or IPv6")
		case i == 1 && f == spec.IPFamilies[0]:
			return at.fail(field, string(f), "duplicate of spec.ipFamilies[0]")
		}
	}

	// clusterIP is clusterIPs[0]; either may be given.
	switch {
	case spec.ClusterIP != "" && len(spec.ClusterIPs) == 0:
		spec.ClusterIPs = []string{spec.ClusterIP}
	case spec.ClusterIP == "" && len(spec.ClusterIPs) > 0:
		spec.ClusterIP = spec.ClusterIPs[0]
	case spec.ClusterIP != "" && spec.ClusterIP != spec.ClusterIPs[0]:
		return at.failf("spec.clusterIP", spec.ClusterIP, "must equal spec.clusterIPs[0] %q", spec.ClusterIPs[0])
	}
	var ips []netip.Addr
	if headless {
		if len(spec.ClusterIPs) > 1 {
			return at.fail("spec.clusterIPs", strings.Join(spec.ClusterIPs, ","), "a headless service has the single cluster IP None")
		}
		if spec.Type == corev1.ServiceTypeNodePort {
			return at.fail("spec.clusterIP", corev1.ClusterIPNone, "a NodePort service needs a cluster IP: a headless service is type ClusterIP")
		}
	} else {
		if len(spec.ClusterIPs) > 2 {
			return at.fail("spec.clusterIPs", strings.Join(spec.ClusterIPs, ","), "at most two addresses, one per family")
		}
		for i, str := range spec.ClusterIPs {
			f := fmt.Sprintf("spec.clusterIPs[%d]", i)
			ip, err := netip.ParseAddr(str)
			switch {
			case str == corev1.ClusterIPNone:
				return at.fail(f, str, "None must be the only cluster IP (headless service)")
			case err != nil || ip.Zone() != "" || ip.Is4In6() || ip.IsUnspecified():
				return at.fail(f, str, "not an IP address")
			case i == 1 && ipFamilyOf(ip) == ipFamilyOf(ips[0]):
				return at.fail(f, str, "same IP family as spec.clusterIPs[0]")
			case i < len(spec.IPFamilies) && string(spec.IPFamilies[i]) != ipFamilyOf(ip):
				return at.failf(f, str, "an %s address, but spec.ipFamilies[%d] is %s", ipFamilyOf(ip), i, spec.IPFamilies[i])
			}
			ips = append(ips, ip)
		}
	}
	if policy == corev1.IPFamilyPolicySingleStack {
		if len(ips) == 2 {
			return at.fail("spec.ipFamilyPolicy", string(policy), "must be RequireDualStack or PreferDualStack when two cluster IPs are given")
		}
		if len(spec.IPFamilies) == 2 {
			return at.fail("spec.ipFamilyPolicy", string(policy), "must be RequireDualStack or PreferDualStack when two IP families are given")
		}
	}

	// Families: from the cluster IPs, then the cluster's.
	for i, ip := range ips {
		fam := ipFamilyOf(ip)
		if !slices.Contains(cl.IPFamilies, fam) {
			return at.failf(fmt.Sprintf("spec.clusterIPs[%d]", i), spec.ClusterIPs[i],
				"%s is not configured on this cluster (the Cluster's ipFamilies are %v)", fam, cl.IPFamilies)
		}
		if i >= len(spec.IPFamilies) {
			spec.IPFamilies = append(spec.IPFamilies, corev1.IPFamily(fam))
		}
	}
	if headless && len(spec.Selector) == 0 {
		// Selectorless headless services may have both families even on a
		// single-stack cluster: they get no cluster IP.
		if len(spec.IPFamilies) == 0 {
			spec.IPFamilies = []corev1.IPFamily{corev1.IPFamily(cl.IPFamilies[0])}
		}
		if len(spec.IPFamilies) == 1 && policy != corev1.IPFamilyPolicySingleStack {
			spec.IPFamilies = append(spec.IPFamilies, corev1.IPFamily(otherIPFamily(string(spec.IPFamilies[0]))))
		}
		return nil
	}
	if policy == corev1.IPFamilyPolicyRequireDualStack && len(cl.IPFamilies) < 2 {
		return at.failf("spec.ipFamilyPolicy", string(policy),
			"this cluster is not configured for dual-stack services (the Cluster's ipFamilies are %v)", cl.IPFamilies)
	}
	for i, f := range spec.IPFamilies {
		if !slices.Contains(cl.IPFamilies, string(f)) {
			return at.failf(fmt.Sprintf("spec.ipFamilies[%d]", i), string(f),
				"not configured on this cluster (the Cluster's ipFamilies are %v)", cl.IPFamilies)
		}
	}
	if len(spec.IPFamilies) == 0 {
		spec.IPFamilies = []corev1.IPFamily{corev1.IPFamily(cl.IPFamilies[0])}
	}
	if policy != corev1.IPFamilyPolicySingleStack && len(spec.IPFamilies) == 1 && len(cl.IPFamilies) == 2 {
		spec.IPFamilies = append(spec.IPFamilies, corev1.IPFamily(otherIPFamily(string(spec.IPFamilies[0]))))
	}

	// Requested cluster IPs: in the service CIDR of their family, usable,
	// and not another service's.
	for i, ip := range ips {
		f, str := fmt.Sprintf("spec.clusterIPs[%d]", i), spec.ClusterIPs[i]
		cidr := cl.serviceCIDR(ipFamilyOf(ip))
		switch {
		case !cidr.Contains(ip):
			return at.failf(f, str, "not in the cluster's %s service CIDR %s", ipFamilyOf(ip), cidr)
		case ip == cidr.Addr() || (ip.Is4() && ip == lastAddr(cidr)):
			return at.failf(f, str, "the network or broadcast address of the service CIDR %s", cidr)
		case v.clusterIPs[ip] != "":
			return at.failf(f, str, "already the cluster IP of %s", v.clusterIPs[ip])
		}
	}
	for _, ip := range ips {
		v.clusterIPs[ip] = at.object
	}
	return nil
}

// lastAddr is the last address of p (the broadcast address of an IPv4
// network).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// servicePorts checks and defaults a service's ports.
func (v *validator) servicePorts(at origin, s *corev1.Service, headless bool) error {
	spec := &s.Spec
	if len(spec.Ports) == 0 && !headless && spec.Type != corev1.ServiceTypeExternalName {
		return at.fail("spec.ports", nil, "required: at least one port (only headless and ExternalName services may have none)")
	}
	names := make(map[string]int)
	ports := make(map[string]int)     // "80/TCP" → index
	nodePorts := make(map[string]int) // "30080/TCP" → index
	for i := range spec.Ports {
		p := &spec.Ports[i]
		f := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.Name == "" && len(spec.Ports) > 1:
			return at.fail(f+".name", nil, "required when a service has more than one port")
		case p.Name != "":
			if msgs := validation.IsDNS1123Label(p.Name); len(msgs) > 0 {
				return at.fail(f+".name", p.Name, "not a DNS-1123 label: "+strings.Join(msgs, "; "))
			}
			if j, dup := names[p.Name]; dup {
				return at.failf(f+".name", p.Name, "duplicate of spec.ports[%d].name", j)
			}
			names[p.Name] = i
		}
		if err := checkProtocol(at, f+".protocol", &p.Protocol); err != nil {
			return err
		}
		if p.Port < 1 || p.Port > 65535 {
			return at.fail(f+".port", p.Port, "must be 1-65535")
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if j, dup := ports[key]; dup {
			return at.failf(f, key, "same port and protocol as spec.ports[%d]", j)
		}
		ports[key] = i

		switch tp := p.TargetPort; {
		case tp.Type == intstr.Int && tp.IntVal == 0, tp.Type == intstr.String && tp.StrVal == "":
			p.TargetPort = intstr.FromInt32(p.Port) // the API default
		case tp.Type == intstr.Int && (tp.IntVal < 1 || tp.IntVal > 65535):
			return at.fail(f+".targetPort", tp.IntVal, "must be 1-65535")
		case tp.Type == intstr.String:
			if msgs := validation.IsValidPortName(tp.StrVal); len(msgs) > 0 {
				return at.fail(f+".targetPort", tp.StrVal, "not a port name: "+strings.Join(msgs, "; "))
			}
		}

		if p.NodePort == 0 {
			continue
		}
		nf := f + ".nodePort"
		switch {
		case spec.Type != corev1.ServiceTypeNodePort:
			return at.failf(nf, p.NodePort, "only NodePort services have node ports (type is %s)", spec.Type)
		case p.NodePort < minNodePort || p.NodePort > maxNodePort:
			return at.failf(nf, p.NodePort, "must be %d-%d, the node port range", minNodePort, maxNodePort)
		case v.nodePorts[p.NodePort] != "":
			return at.failf(nf, p.NodePort, "already a node port of %s", v.nodePorts[p.NodePort])
		}
		nkey := fmt.Sprintf("%d/%s", p.NodePort, p.Protocol)
		if j, dup := nodePorts[nkey]; dup {
			return at.failf(nf, p.NodePort, "duplicate of spec.ports[%d].nodePort", j)
		}
		nodePorts[nkey] = i
	}
	for _, p := range spec.Ports {
		if p.NodePort != 0 {
			v.nodePorts[p.NodePort] = at.object
		}
	}
	return nil
}

// defaultServicePolicies checks and defaults the traffic policies and
// session affinity of a service.
func defaultServicePolicies(at origin, s *corev1.Service) error {
	spec := &s.Spec
	// kube-proxy's "externally accessible": reachable from outside the
	// cluster through node ports or external IPs.
	external := spec.Type == corev1.ServiceTypeNodePort ||
		(spec.Type == corev1.ServiceTypeClusterIP && len(spec.ExternalIPs) > 0)
	switch etp := spec.ExternalTrafficPolicy; {
	case !external && etp != "":
		return at.fail("spec.externalTrafficPolicy", string(etp),
			"may only be set for externally accessible services (type NodePort, or with spec.externalIPs)")
	case external && etp == "":
		spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	case external && etp != corev1.ServiceExternalTrafficPolicyCluster && etp != corev1.ServiceExternalTrafficPolicyLocal:
		return at.fail("spec.externalTrafficPolicy", string(etp), "want Cluster or Local")
	}
	if spec.HealthCheckNodePort != 0 {
		return at.fail("spec.healthCheckNodePort", spec.HealthCheckNodePort,
			"only LoadBalancer services with externalTrafficPolicy Local have one")
	}
	if spec.Type != corev1.ServiceTypeExternalName {
		if p := spec.InternalTrafficPolicy; p == nil {
			cluster := corev1.ServiceInternalTrafficPolicyCluster
			spec.InternalTrafficPolicy = &cluster
		} else if *p != corev1.ServiceInternalTrafficPolicyCluster && *p != corev1.ServiceInternalTrafficPolicyLocal {
			return at.fail("spec.internalTrafficPolicy", string(*p), "want Cluster or Local")
		}
	}
	switch spec.SessionAffinity {
	case "":
		spec.SessionAffinity = corev1.ServiceAffinityNone
	case corev1.ServiceAffinityNone:
	case corev1.ServiceAffinityClientIP:
		if spec.SessionAffinityConfig == nil {
			spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
		}
		if spec.SessionAffinityConfig.ClientIP == nil {
			spec.SessionAffinityConfig.ClientIP = &corev1.ClientIPConfig{}
		}
		if spec.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			secs := corev1.DefaultClientIPServiceAffinitySeconds
			spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = &secs
		}
	default:
		return at.fail("spec.sessionAffinity", string(spec.SessionAffinity), "want None or ClientIP")
	}
	return nil
}

func (v *validator) endpointSlice(at origin, es *discoveryv1.EndpointSlice) error {
	switch t := es.AddressType; t {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		if !slices.Contains(v.cluster.IPFamilies, string(t)) {
			return at.failf("addressType", string(t), "not one of the cluster's ipFamilies %v", v.cluster.IPFamilies)
		}
	case discoveryv1.AddressTypeFQDN:
		return at.fail("addressType", string(t), "not supported: the sandbox forwards to IP addresses (want IPv4 or IPv6)")
	case "":
		return at.fail("addressType", nil, "required: IPv4 or IPv6")
	default:
		return at.fail("addressType", string(t), "want IPv4 or IPv6")
	}
	label := fmt.Sprintf("metadata.labels[%q]", discoveryv1.LabelServiceName)
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return at.fail(label, nil, "required: the name of the slice's Service")
	}
	svc := v.services[objectKey{"Service", es.Namespace, name}]
	if svc == nil {
		return at.failf(label, name, "no Service %s/%s is declared", es.Namespace, name)
	}
	for i, p := range es.Ports {
		if p.Protocol != nil {
			if err := checkProtocol(at, fmt.Sprintf("ports[%d].protocol", i), p.Protocol); err != nil {
				return err
			}
		}
	}
	for i, e := range es.Endpoints {
		if e.NodeName != nil && *e.NodeName != "" {
			if err := v.checkNode(at, fmt.Sprintf("endpoints[%d].nodeName", i), *e.NodeName); err != nil {
				return err
			}
		}
	}
	_, err := svcconv.EndpointSlice(es)
	if err := converted(at, err, svcconv.ErrSkip); err != nil {
		return err
	}
	_, err = dnsconv.EndpointSlice(es, svc)
	return converted(at, err, dnsconv.ErrSkip)
}
