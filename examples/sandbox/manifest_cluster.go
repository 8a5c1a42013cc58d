package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// clusterObject is the wire form of the Cluster object:
//
//	apiVersion: kubewire.dev/v1alpha1
//	kind: Cluster
//	metadata: {name: sandbox}      # optional
//	spec:
//	  nodes: 2
//	  ipFamilies: [IPv4, IPv6]
//	  podCIDRs: [10.244.0.0/16, fd00:10:244::/48]
//	  serviceCIDRs: [10.96.0.0/16, fd00:10:96::/112]
//	  overlay: host-gw             # or vxlan
//	  podNetwork: routed           # or bridge
//	  driver: nftables
//	  clusterDomain: cluster.local
type clusterObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec       clusterSpec       `json:"spec,omitempty"`
}

type clusterSpec struct {
	Nodes         *int     `json:"nodes,omitempty"`
	IPFamilies    []string `json:"ipFamilies,omitempty"`
	PodCIDRs      []string `json:"podCIDRs,omitempty"`
	ServiceCIDRs  []string `json:"serviceCIDRs,omitempty"`
	Overlay       string   `json:"overlay,omitempty"`
	PodNetwork    string   `json:"podNetwork,omitempty"`
	Driver        string   `json:"driver,omitempty"`
	ClusterDomain string   `json:"clusterDomain,omitempty"`
}

// Limits and per-node subnet sizes of the sandbox's cluster.
const (
	maxNodes     = 9
	nodePodBits4 = 24 // each node's IPv4 pod CIDR is a /24
	nodePodBits6 = 64 // each node's IPv6 pod CIDR is a /64
	// A service CIDR holds at least 16 addresses: the builder gives the
	// cluster DNS service the 10th.
	maxServiceBits4 = 28
	maxServiceBits6 = 124
)

// clusterNodeName is the name of the i-th node (from 1).
func clusterNodeName(i int) string { return fmt.Sprintf("node%d", i) }

// clusterNodeNumber returns i for "node<i>" with 1 <= i <= n.
func clusterNodeNumber(name string, n int) (int, bool) {
	for i := 1; i <= n; i++ {
		if name == clusterNodeName(i) {
			return i, true
		}
	}
	return 0, false
}

// clusterNodeRange describes the node names of a cluster of n nodes.
func clusterNodeRange(n int) string {
	if n == 1 {
		return "node1"
	}
	return fmt.Sprintf("node1-node%d", n)
}

// clusterDocument records the document's Cluster object.
func (l *loader) clusterDocument(at origin, apiVersion string, data []byte) error {
	if apiVersion != clusterAPIVersion {
		return at.failf("apiVersion", apiVersion, "want %s for a Cluster", clusterAPIVersion)
	}
	if l.cluster != nil {
		return at.wrap(fmt.Errorf("a second Cluster object (the first is in %s): a run has at most one", l.clusterAt.where()))
	}
	var c clusterObject
	if err := strictUnmarshal(data, &c); err != nil {
		return at.wrap(err)
	}
	l.cluster, l.clusterAt = &c, at
	return nil
}

// clusterOrDefault validates and defaults the declared Cluster, or returns
// the default one.
func (l *loader) clusterOrDefault() (Cluster, error) {
	if l.cluster == nil {
		return buildCluster(origin{source: "(default cluster)", item: -1}, clusterSpec{})
	}
	return buildCluster(l.clusterAt, l.cluster.Spec)
}

// cidrField is a CIDR of the Cluster and where it comes from.
type cidrField struct {
	prefix netip.Prefix
	field  string // "spec.podCIDRs[1]"; "" for a default
}

func buildCluster(at origin, spec clusterSpec) (Cluster, error) {
	c := Cluster{Nodes: 2, Overlay: "host-gw", PodNetwork: "routed", Driver: "nftables", Domain: "cluster.local"}
	if spec.Nodes != nil {
		if n := *spec.Nodes; n < 1 || n > maxNodes {
			return Cluster{}, at.failf("spec.nodes", n, "must be 1-%d", maxNodes)
		}
		c.Nodes = *spec.Nodes
	}

	pods, err := parseCIDRs(at, "spec.podCIDRs", spec.PodCIDRs)
	if err != nil {
		return Cluster{}, err
	}
	svcs, err := parseCIDRs(at, "spec.serviceCIDRs", spec.ServiceCIDRs)
	if err != nil {
		return Cluster{}, err
	}
	switch {
	case len(spec.IPFamilies) > 0:
		if c.IPFamilies, err = parseFamilies(at, spec.IPFamilies); err != nil {
			return Cluster{}, err
		}
	case len(svcs) > 0:
		c.IPFamilies = familiesOf(svcs)
	case len(pods) > 0:
		c.IPFamilies = familiesOf(pods)
	default:
		c.IPFamilies = []string{string(corev1.IPv4Protocol), string(corev1.IPv6Protocol)}
	}
	if pods, err = perFamily(at, "spec.podCIDRs", pods, c.IPFamilies, defaultPodCIDR); err != nil {
		return Cluster{}, err
	}
	if svcs, err = perFamily(at, "spec.serviceCIDRs", svcs, c.IPFamilies, defaultServiceCIDR); err != nil {
		return Cluster{}, err
	}
	if err := checkCIDRs(at, c.Nodes, pods, svcs); err != nil {
		return Cluster{}, err
	}
	for i := range pods {
		c.PodCIDRs = append(c.PodCIDRs, pods[i].prefix)
		c.ServiceCIDRs = append(c.ServiceCIDRs, svcs[i].prefix)
	}

	switch spec.Overlay {
	case "":
	case "host-gw", "vxlan":
		c.Overlay = spec.Overlay
	default:
		return Cluster{}, at.fail("spec.overlay", spec.Overlay, "want host-gw or vxlan")
	}
	switch spec.PodNetwork {
	case "":
	case "routed", "bridge":
		c.PodNetwork = spec.PodNetwork
	default:
		return Cluster{}, at.fail("spec.podNetwork", spec.PodNetwork, "want routed or bridge")
	}
	switch spec.Driver {
	case "", "nftables":
	case "ebpf":
		return Cluster{}, at.fail("spec.driver", spec.Driver, "not available yet: use nftables")
	default:
		return Cluster{}, at.fail("spec.driver", spec.Driver, "want nftables (ebpf is not available yet)")
	}
	if d := spec.ClusterDomain; d != "" {
		c.Domain = strings.TrimSuffix(d, ".")
		if msgs := validation.IsDNS1123Subdomain(c.Domain); len(msgs) > 0 {
			return Cluster{}, at.fail("spec.clusterDomain", d, "not a DNS domain: "+strings.Join(msgs, "; "))
		}
	}
	return c, nil
}

// parseFamilies checks spec.ipFamilies.
func parseFamilies(at origin, in []string) ([]string, error) {
	if len(in) > 2 {
		return nil, at.failf("spec.ipFamilies", strings.Join(in, ","), "at most two families")
	}
	for i, f := range in {
		field := fmt.Sprintf("spec.ipFamilies[%d]", i)
		switch {
		case f != string(corev1.IPv4Protocol) && f != string(corev1.IPv6Protocol):
			return nil, at.fail(field, f, "want IPv4 or IPv6")
		case i == 1 && f == in[0]:
			return nil, at.fail(field, f, "duplicate of spec.ipFamilies[0]")
		}
	}
	return in, nil
}

// parseCIDRs parses a list of CIDRs, at most one per family.
func parseCIDRs(at origin, field string, in []string) ([]cidrField, error) {
	var out []cidrField
	for i, s := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			return nil, at.fail(f, s, "not a CIDR")
		case p.Addr().Is4In6():
			return nil, at.fail(f, s, "IPv4-mapped IPv6 CIDRs are not supported (write the IPv4 CIDR)")
		case p != p.Masked():
			return nil, at.failf(f, s, "host bits set: want %s", p.Masked())
		}
		for _, o := range out {
			if o.prefix.Addr().Is4() == p.Addr().Is4() {
				return nil, at.failf(f, s, "a second %s CIDR (%s is %s): one per family", ipFamilyOf(p.Addr()), o.field, o.prefix)
			}
		}
		out = append(out, cidrField{p, f})
	}
	return out, nil
}

// ipFamilyOf is the IP family of a, as Kubernetes spells it.
func ipFamilyOf(a netip.Addr) string {
	if a.Unmap().Is4() {
		return string(corev1.IPv4Protocol)
	}
	return string(corev1.IPv6Protocol)
}

// otherIPFamily returns IPv6 for IPv4 and IPv4 for IPv6.
func otherIPFamily(f string) string {
	if f == string(corev1.IPv4Protocol) {
		return string(corev1.IPv6Protocol)
	}
	return string(corev1.IPv4Protocol)
}

func familiesOf(cidrs []cidrField) []string {
	var out []string
	for _, c := range cidrs {
		out = append(out, ipFamilyOf(c.prefix.Addr()))
	}
	return out
}

// perFamily returns one CIDR per family, in families order: the given
// ones, or the defaults when none is given.
func perFamily(at origin, field string, cidrs []cidrField, families []string, def func(string) netip.Prefix) ([]cidrField, error) {
	if len(cidrs) == 0 {
		var out []cidrField
		for _, f := range families {
			out = append(out, cidrField{prefix: def(f)})
		}
		return out, nil
	}
	for _, c := range cidrs {
		if fam := ipFamilyOf(c.prefix.Addr()); !slices.Contains(families, fam) {
			return nil, at.failf(c.field, c.prefix.String(), "%s is not in the cluster's ipFamilies %v", fam, families)
		}
	}
	var out []cidrField
	for _, f := range families {
		i := slices.IndexFunc(cidrs, func(c cidrField) bool { return ipFamilyOf(c.prefix.Addr()) == f })
		if i < 0 {
			return nil, at.failf(field, nil, "no %s CIDR, but the cluster's ipFamilies %v have %s", f, families, f)
		}
		out = append(out, cidrs[i])
	}
	return out, nil
}

func defaultPodCIDR(fam string) netip.Prefix {
	if fam == string(corev1.IPv4Protocol) {
		return netip.MustParsePrefix("10.244.0.0/16")
	}
	return netip.MustParsePrefix("fd00:10:244::/48")
}

func defaultServiceCIDR(fam string) netip.Prefix {
	if fam == string(corev1.IPv4Protocol) {
		return netip.MustParsePrefix("10.96.0.0/16")
	}
	return netip.MustParsePrefix("fd00:10:96::/112")
}

// checkCIDRs checks the sizes of the CIDRs and that they overlap neither
// each other nor ranges the sandbox or the kernel use otherwise.
func checkCIDRs(at origin, nodes int, pods, svcs []cidrField) error {
	for _, p := range pods {
		nodeBits := nodePodBits6
		if p.prefix.Addr().Is4() {
			nodeBits = nodePodBits4
		}
		free := nodeBits - p.prefix.Bits()
		if free < 0 || (free < 8 && 1<<free < nodes) {
			return at.failf(p.field, p.prefix.String(), "too small for %d nodes with a /%d each", nodes, nodeBits)
		}
	}
	for _, s := range svcs {
		maxBits := maxServiceBits6
		if s.prefix.Addr().Is4() {
			maxBits = maxServiceBits4
		}
		if s.prefix.Bits() > maxBits {
			return at.failf(s.field, s.prefix.String(), "too small: want a /%d or larger", maxBits)
		}
		for _, p := range pods {
			if s.prefix.Overlaps(p.prefix) {
				return at.failf(s.field, s.prefix.String(), "overlaps the pod CIDR %s", p.prefix)
			}
		}
	}
	for _, c := range append(pods[:len(pods):len(pods)], svcs...) {
		for _, r := range reservedRanges() {
			if c.prefix.Overlaps(r.prefix) {
				return at.failf(c.field, c.prefix.String(), "overlaps %s %s", r.what, r.prefix)
			}
		}
	}
	return nil
}

// reservedRanges are the ranges a pod or service CIDR must stay out of:
// the sandbox's own underlay (node and "remote" host addresses) and
// addresses with a special meaning.
func reservedRanges() []struct {
	prefix netip.Prefix
	what   string
} {
	return []struct {
		prefix netip.Prefix
		what   string
	}{
		{netip.MustParsePrefix("198.18.0.0/15"), "the sandbox's underlay network"},
		{netip.MustParsePrefix("2001:db8::/32"), "the sandbox's underlay network"},
		{netip.MustParsePrefix("0.0.0.0/8"), "the reserved network"},
		{netip.MustParsePrefix("127.0.0.0/8"), "the loopback network"},
		{netip.MustParsePrefix("169.254.0.0/16"), "the link-local network"},
		{netip.MustParsePrefix("224.0.0.0/3"), "the multicast and reserved networks"},
		{netip.MustParsePrefix("::/127"), "the unspecified and loopback addresses"},
		{netip.MustParsePrefix("fe80::/10"), "the link-local network"},
		{netip.MustParsePrefix("ff00::/8"), "the multicast network"},
	}
}
