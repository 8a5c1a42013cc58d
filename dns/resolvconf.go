package dns

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// ResolvConf is the content of a resolv.conf file that matters to
// Kubernetes: nameservers, search domains and options.
type ResolvConf struct {
	Nameservers []netip.Addr
	// Search domains, without trailing dots ("." alone means none).
	Search []string
	// Options as written: "ndots:5", "edns0", "timeout:1".
	Options []string
}

// maxResolvConfSize bounds what ParseResolvConf reads (kubelet's limit).
const maxResolvConfSize = 10 << 20

// ParseResolvConf reads a resolv.conf as kubelet does: nameserver lines
// accumulate, the last search line and the last options line win, search
// domains lose their trailing dot, '#' and ';' start comments. A
// nameserver that is not an IP address is an error naming its line.
func ParseResolvConf(r io.Reader) (ResolvConf, error) {
	var rc ResolvConf
	sc := bufio.NewScanner(io.LimitReader(r, maxResolvConfSize))
	sc.Buffer(make([]byte, 0, 4096), maxResolvConfSize)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexAny(text, "#;"); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 {
				return ResolvConf{}, fmt.Errorf("%w: resolv.conf line %d: nameserver without an address", ErrInvalid, line)
			}
			ip, err := netip.ParseAddr(f[1])
			if err != nil {
				return ResolvConf{}, fmt.Errorf("%w: resolv.conf line %d: nameserver %q: not an IP address", ErrInvalid, line, f[1])
			}
			rc.Nameservers = append(rc.Nameservers, ip.Unmap())
		case "search":
			rc.Search = rc.Search[:0]
			for _, s := range f[1:] {
				if s != "." {
					s = strings.TrimSuffix(s, ".")
				}
				rc.Search = append(rc.Search, s)
			}
		case "options":
			rc.Options = append([]string(nil), f[1:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return ResolvConf{}, fmt.Errorf("dns: read resolv.conf: %w", err)
	}
	return rc, nil
}

// ReadResolvConf parses the resolv.conf at path.
func ReadResolvConf(path string) (ResolvConf, error) {
	f, err := os.Open(path)
	if err != nil {
		return ResolvConf{}, fmt.Errorf("dns: read resolv.conf: %w", err)
	}
	defer f.Close()
	rc, err := ParseResolvConf(f)
	if err != nil {
		return ResolvConf{}, fmt.Errorf("%w (%s)", err, path)
	}
	return rc, nil
}

// String renders the file as a container runtime writes it.
func (rc ResolvConf) String() string {
	var b strings.Builder
	for _, ns := range rc.Nameservers {
		b.WriteString("nameserver " + ns.String() + "\n")
	}
	if len(rc.Search) > 0 {
		b.WriteString("search " + strings.Join(rc.Search, " ") + "\n")
	}
	if len(rc.Options) > 0 {
		b.WriteString("options " + strings.Join(rc.Options, " ") + "\n")
	}
	return b.String()
}

// DNSPolicy is a pod's spec.dnsPolicy.
type DNSPolicy string

// Pod DNS policies.
const (
	// DNSClusterFirst: the cluster DNS with the cluster search path; a
	// host-network pod gets DNSDefault instead.
	DNSClusterFirst DNSPolicy = "ClusterFirst"
	// DNSClusterFirstWithHostNet: ClusterFirst, for host-network pods too.
	DNSClusterFirstWithHostNet DNSPolicy = "ClusterFirstWithHostNet"
	// DNSDefault: the node's resolv.conf.
	DNSDefault DNSPolicy = "Default"
	// DNSNone: only what the pod's DNSConfig says.
	DNSNone DNSPolicy = "None"
)

// Kubelet's limits on a pod's resolv.conf (the ExpandedDNSConfig ones).
const (
	MaxDNSNameservers     = 3
	MaxDNSSearchPaths     = 32
	MaxDNSSearchListChars = 2048
	// maxSearchDomainLen drops longer search domains, which crash some
	// resolvers (glibc 2.28).
	maxSearchDomainLen = 253
)

// PodDNSOption is one entry of a pod's dnsConfig.options.
type PodDNSOption struct {
	Name string
	// Value is written as name:value; "" writes the name alone.
	Value string
}

// PodDNSConfig is a pod's spec.dnsConfig.
type PodDNSConfig struct {
	Nameservers []netip.Addr
	Searches    []string
	Options     []PodDNSOption
}

// PodDNSParams is what PodResolvConf needs: the pod's DNS fields and the
// node's settings (kubelet's --cluster-dns, --cluster-domain and
// --resolv-conf).
type PodDNSParams struct {
	// Policy is the pod's dnsPolicy; "" means ClusterFirst (the API
	// default).
	Policy      DNSPolicy
	HostNetwork bool
	Namespace   string
	// Config is the pod's dnsConfig (nil: none).
	Config *PodDNSConfig

	// ClusterDomain is the cluster zone, e.g. "cluster.local" (a trailing
	// dot is dropped); "" adds no cluster search domains.
	ClusterDomain string
	// ClusterDNS are the cluster DNS service addresses. Without them,
	// ClusterFirst pods fall back to Default (with a warning).
	ClusterDNS []netip.Addr
	// Host is the node's resolv.conf (kubelet --resolv-conf). nil means
	// none: Default pods then get the loopback nameserver of each node
	// address family and the search path ".".
	Host *ResolvConf
	// NodeIPs choose the loopback nameservers when Host is nil.
	NodeIPs []netip.Addr
}

// PodResolvConf computes the resolv.conf of a pod as kubelet does
// (pkg/kubelet/network/dns): the base from the policy, then the pod's
// dnsConfig merged in (nameservers and searches appended without
// duplicates, options overriding by name), then kubelet's limits applied:
// at most 3 nameservers, at most 32 search domains, none longer than 253
// characters, and a search line of at most 2048 characters (dropping
// domains from the end). Each limit applied, and the ClusterDNS fallback,
// adds a warning (kubelet records them as events).
//
// One difference: kubelet rebuilds options from a map, so their order
// varies; here existing options keep their place, overridden ones are
// replaced in place and new ones appended.
func PodResolvConf(p PodDNSParams) (ResolvConf, []string, error) {
	var rc ResolvConf
	var warnings []string
	domain := strings.TrimSuffix(p.ClusterDomain, ".")
	host := func() ResolvConf {
		if p.Host != nil {
			return ResolvConf{
				Nameservers: append([]netip.Addr(nil), p.Host.Nameservers...),
				Search:      append([]string(nil), p.Host.Search...),
				Options:     append([]string(nil), p.Host.Options...),
			}
		}
		var out ResolvConf
		for _, ip := range p.NodeIPs {
			lo := netip.MustParseAddr("127.0.0.1")
			if ip.Is6() && !ip.Is4In6() {
				lo = netip.IPv6Loopback()
			}
			out.Nameservers = append(out.Nameservers, lo)
		}
		if len(out.Nameservers) == 0 {
			out.Nameservers = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
		}
		out.Search = []string{"."}
		return out
	}
	policy := p.Policy
	if policy == "" {
		policy = DNSClusterFirst
	}
	switch policy {
	case DNSNone:
	case DNSClusterFirst, DNSClusterFirstWithHostNet:
		if policy == DNSClusterFirst && p.HostNetwork {
			rc = host()
			break
		}
		if len(p.ClusterDNS) == 0 {
			warnings = append(warnings, fmt.Sprintf("no cluster DNS address configured: cannot use the %q policy, falling back to %q", policy, DNSDefault))
			rc = host()
			break
		}
		var hostSearch []string
		if p.Host != nil {
			hostSearch = p.Host.Search
		}
		rc.Nameservers = append([]netip.Addr(nil), p.ClusterDNS...)
		if domain != "" {
			rc.Search = omitDuplicates(append([]string{p.Namespace + ".svc." + domain, "svc." + domain, domain}, hostSearch...))
		} else {
			rc.Search = append([]string(nil), hostSearch...)
		}
		rc.Options = []string{"ndots:5"}
	case DNSDefault:
		rc = host()
	default:
		return ResolvConf{}, nil, invalid("pod DNS", "Policy", string(p.Policy), "want ClusterFirst, ClusterFirstWithHostNet, Default or None")
	}

	if c := p.Config; c != nil {
		rc.Nameservers = omitDuplicates(append(rc.Nameservers, c.Nameservers...))
		rc.Search = omitDuplicates(append(rc.Search, c.Searches...))
		rc.Options = mergeOptions(rc.Options, c.Options)
	}

	if len(rc.Nameservers) > MaxDNSNameservers {
		rc.Nameservers = rc.Nameservers[:MaxDNSNameservers]
		warnings = append(warnings, fmt.Sprintf("nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: %s", joinAddrs(rc.Nameservers)))
	}
	exceeded := false
	if len(rc.Search) > MaxDNSSearchPaths {
		rc.Search = rc.Search[:MaxDNSSearchPaths]
		exceeded = true
	}
	kept := rc.Search[:0]
	for _, s := range rc.Search {
		if len(s) > maxSearchDomainLen {
			exceeded = true
			continue
		}
		kept = append(kept, s)
	}
	rc.Search = kept
	if l := len(strings.Join(rc.Search, " ")); l > MaxDNSSearchListChars {
		cut := 0
		for i := len(rc.Search) - 1; i >= 0; i-- {
			l -= len(rc.Search[i]) + 1
			cut++
			if l <= MaxDNSSearchListChars {
				break
			}
		}
		rc.Search = rc.Search[:len(rc.Search)-cut]
		exceeded = true
	}
	if exceeded {
		warnings = append(warnings, fmt.Sprintf("search line limits were exceeded, some search paths have been omitted, the applied search line is: %s", strings.Join(rc.Search, " ")))
	}
	if len(rc.Search) == 0 {
		rc.Search = nil
	}
	return rc, warnings, nil
}

func omitDuplicates[T comparable](in []T) []T {
	seen := make(map[T]bool, len(in))
	out := in[:0]
	for _, v := range in {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// mergeOptions merges options by name as kubelet does: the pod's
// options override existing ones with the same name.
func mergeOptions(existing []string, add []PodDNSOption) []string {
	var out []string
	idx := map[string]int{}
	put := func(name, opt string) {
		if i, ok := idx[name]; ok {
			out[i] = opt
			return
		}
		idx[name] = len(out)
		out = append(out, opt)
	}
	for _, o := range existing {
		name, _, _ := strings.Cut(o, ":")
		put(name, o)
	}
	for _, o := range add {
		opt := o.Name
		if o.Value != "" {
			opt += ":" + o.Value
		}
		put(o.Name, opt)
	}
	return out
}

func joinAddrs(a []netip.Addr) string {
	s := make([]string, len(a))
	for i, ip := range a {
		s[i] = ip.String()
	}
	return strings.Join(s, " ")
}
