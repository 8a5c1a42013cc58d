package main

// The manifest layer: the sandbox's cluster comes from ordinary Kubernetes
// YAML (Namespace, Pod, Service, EndpointSlice, NetworkPolicy) plus one
// small kubewire Cluster object. Load decodes, defaults and validates it
// as the API server would, so that the builder only allocates addresses
// and wires namespaces. This file holds the API and the decoding; the
// checks of each kind are in manifest_cluster.go and manifest_objects.go.

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Cluster is the kubewire cluster object of a manifest (apiVersion
// kubewire.dev/v1alpha1, kind Cluster; at most one per run; all fields
// optional). Load fills in the defaults, so every field of a loaded
// Cluster is set.
type Cluster struct {
	Nodes int // spec.nodes, default 2, 1..9; the nodes are node1..nodeN
	// IPFamilies is spec.ipFamilies: [IPv4], [IPv6], [IPv4, IPv6] or
	// [IPv6, IPv4]; the first is primary. Default: the families of
	// spec.serviceCIDRs, else of spec.podCIDRs, else [IPv4, IPv6].
	IPFamilies []string
	// PodCIDRs is spec.podCIDRs, one per family, in IPFamilies order;
	// default 10.244.0.0/16 and fd00:10:244::/48. Each node gets a /24
	// resp. /64 of it, so it must hold Nodes of those.
	PodCIDRs []netip.Prefix
	// ServiceCIDRs is spec.serviceCIDRs, one per family, in IPFamilies
	// order; default 10.96.0.0/16 and fd00:10:96::/112.
	ServiceCIDRs []netip.Prefix
	Overlay      string // spec.overlay: host-gw (default) | vxlan
	PodNetwork   string // spec.podNetwork: routed (default) | bridge
	Driver       string // spec.driver: nftables (default); ebpf is not available yet
	Domain       string // spec.clusterDomain, default cluster.local (no trailing dot)
}

// NodeNames returns the names of the cluster's nodes, node1..nodeN.
func (c *Cluster) NodeNames() []string {
	names := make([]string, c.Nodes)
	for i := range names {
		names[i] = clusterNodeName(i + 1)
	}
	return names
}

// Manifest is everything the -f files (or the embedded default) declare,
// validated and defaulted. Objects keep their declaration order (files in
// the order given, documents in file order).
type Manifest struct {
	Cluster Cluster
	// Namespaces always holds "default", first when it was not declared.
	// Every namespace carries the label kubernetes.io/metadata.name, as
	// the API server sets it.
	Namespaces []*corev1.Namespace
	// Pods all have spec.nodeName set (declared, else assigned round-robin
	// over node1..nodeN in declaration order) and TCP or UDP on every
	// container port. Their status holds only what the YAML declared of
	// status.phase and status.conditions (readiness); the builder fills in
	// the addresses.
	Pods []*corev1.Pod
	// Services have the API server's defaults: type, port protocols and
	// target ports, ipFamilyPolicy and ipFamilies, traffic policies,
	// session affinity. Cluster IPs and node ports are only those the YAML
	// requested (validated, not allocated).
	Services []*corev1.Service
	// EndpointSlices are those declared; DeriveEndpointSlices computes the
	// controller's ones once pods have addresses.
	EndpointSlices  []*discoveryv1.EndpointSlice
	NetworkPolicies []*networkingv1.NetworkPolicy
}

// Source is one manifest stream.
type Source struct {
	Name string    // the file name ("-" is stdin), used in errors
	R    io.Reader // multi-document YAML (or JSON)
}

//go:embed default.yaml
var defaultYAML string

// DefaultManifest loads the embedded default cluster (default.yaml).
func DefaultManifest() (*Manifest, error) {
	return Load([]Source{{Name: "default.yaml", R: strings.NewReader(defaultYAML)}})
}

// Load reads, defaults and validates the manifests of srcs, in order, as
// one cluster. The first problem found is returned as an error naming the
// source, the document (counted from 1, empty documents not counted), the
// object and the field with its value, such as
//
//	cluster.yaml: document 3: Service default/web: spec.ports[0].port 0: must be 1-65535
//
// Errors from the kubeconv converters wrap their package's ErrInvalid.
func Load(srcs []Source) (*Manifest, error) {
	l, err := newLoader()
	if err != nil {
		return nil, err
	}
	for _, src := range srcs {
		if err := l.read(src); err != nil {
			return nil, err
		}
	}
	return l.finish()
}

// API versions of the kinds a manifest may hold.
const (
	clusterAPIVersion = "kubewire.dev/v1alpha1"
	supportedKinds    = "Namespace, Pod, Service and List (v1), EndpointSlice (discovery.k8s.io/v1), " +
		"NetworkPolicy (networking.k8s.io/v1) and Cluster (" + clusterAPIVersion + ")"
)

// kindAPIVersion returns the apiVersion the sandbox reads a Kubernetes kind
// in, and whether the kind is namespaced; ok is false for kinds it does not
// read (List and Cluster are handled apart).
func kindAPIVersion(kind string) (apiVersion string, namespaced, ok bool) {
	switch kind {
	case "Namespace":
		return "v1", false, true
	case "Pod", "Service":
		return "v1", true, true
	case "EndpointSlice":
		return discoveryv1.SchemeGroupVersion.String(), true, true
	case "NetworkPolicy":
		return networkingv1.SchemeGroupVersion.String(), true, true
	}
	return "", false, false
}

// origin is where an object was declared.
type origin struct {
	source string
	doc    int    // 1-based, empty documents not counted
	item   int    // index in a List's items, -1 outside a List
	object string // "Service default/web", "Namespace shop", "" when unknown
}

// where names the document (and List item), for messages that point to
// another declaration.
func (o origin) where() string {
	s := fmt.Sprintf("%s document %d", o.source, o.doc)
	if o.item >= 0 {
		s += fmt.Sprintf(" items[%d]", o.item)
	}
	return s
}

// wrap locates err at o.
func (o origin) wrap(err error) error { return &loadError{at: o, err: err} }

// fail returns the error for field (with its value; nil shows none) at o.
func (o origin) fail(field string, value any, reason string) error {
	return o.wrap(&fieldError{field: field, value: value, reason: reason})
}

// failf is fail with a formatted reason.
func (o origin) failf(field string, value any, format string, args ...any) error {
	return o.fail(field, value, fmt.Sprintf(format, args...))
}

// loadError is a manifest error located at a document and object.
type loadError struct {
	at  origin
	err error
}

func (e *loadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: document %d: ", e.at.source, e.at.doc)
	if e.at.item >= 0 {
		fmt.Fprintf(&b, "items[%d]: ", e.at.item)
	}
	if e.at.object != "" {
		b.WriteString(e.at.object + ": ")
	}
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *loadError) Unwrap() error { return e.err }

// fieldError is a problem with one field of an object.
type fieldError struct {
	field  string
	value  any // nil: the field as a whole, no value shown
	reason string
	kind   error // what it wraps (a converter's ErrInvalid), or nil
}

func (e *fieldError) Error() string {
	switch v := e.value.(type) {
	case nil:
		return e.field + ": " + e.reason
	case string:
		return e.field + " " + strconv.Quote(v) + ": " + e.reason
	default:
		return fmt.Sprintf("%s %v: %s", e.field, v, e.reason)
	}
}

func (e *fieldError) Unwrap() error { return e.kind }

// loader accumulates the objects of every source; finish validates them.
type loader struct {
	decoder runtime.Decoder
	cluster *clusterObject // nil: none declared
	// clusterAt is where the Cluster object was declared.
	clusterAt origin
	entries   []entry // Kubernetes objects in declaration order
	seen      map[objectKey]origin
}

// entry is one decoded Kubernetes object.
type entry struct {
	at  origin
	obj runtime.Object // *corev1.Namespace, *corev1.Pod, ...
}

type objectKey struct{ kind, namespace, name string }

func newLoader() (*loader, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("manifest scheme: %w", err)
		}
	}
	return &loader{
		decoder: serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer(),
		seen:    make(map[objectKey]origin),
	}, nil
}

// read decodes every document of src.
func (l *loader) read(src Source) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(src.R))
	doc := 0
	for {
		data, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: after document %d: %w", src.Name, doc, err)
		}
		if emptyDocument(data) {
			continue
		}
		doc++
		if err := l.document(origin{source: src.Name, doc: doc, item: -1}, data); err != nil {
			return err
		}
	}
}

// emptyDocument reports whether a YAML document holds nothing (only
// blanks and comments, or null).
func emptyDocument(data []byte) bool {
	j, err := yaml.YAMLToJSON(data)
	return err == nil && string(j) == "null"
}

// document decodes one document (or List item: YAML or JSON).
func (l *loader) document(at origin, data []byte) error {
	var fields map[string]any
	if err := yaml.Unmarshal(data, &fields); err != nil {
		if strings.Contains(err.Error(), "cannot unmarshal") {
			return at.wrap(errors.New("not a Kubernetes object: want a mapping with apiVersion, kind and metadata"))
		}
		return at.wrap(fmt.Errorf("invalid YAML: %s", yamlMessage(err)))
	}
	apiVersion, _ := fields["apiVersion"].(string)
	kind, _ := fields["kind"].(string)
	var name, namespace string
	if md, ok := fields["metadata"].(map[string]any); ok {
		name, _ = md["name"].(string)
		namespace, _ = md["namespace"].(string)
	}
	at.object = describe(kind, namespace, name)

	switch kind {
	case "":
		return at.fail("kind", nil, "required (one of "+supportedKinds+")")
	case "List":
		if at.item >= 0 {
			return at.wrap(errors.New("a List inside a List"))
		}
		if apiVersion != "v1" {
			return at.fail("apiVersion", apiVersion, "want v1 for a List")
		}
		return l.list(at, data)
	case "Cluster":
		return l.clusterDocument(at, apiVersion, data)
	}
	want, _, ok := kindAPIVersion(kind)
	if !ok {
		return at.wrap(fmt.Errorf("kind %s (%s) is not supported: the sandbox reads %s", kind, apiVersion, supportedKinds))
	}
	if apiVersion != want {
		return at.failf("apiVersion", apiVersion, "want %s for a %s", want, kind)
	}
	obj, _, err := l.decoder.Decode(data, nil, nil)
	if err != nil {
		return at.wrap(decodeError(err))
	}
	return l.add(at, obj)
}

// describe names an object for messages: "Service default/web",
// "Namespace shop"; namespaced kinds default to namespace "default".
func describe(kind, namespace, name string) string {
	if kind == "" {
		return ""
	}
	if _, namespaced, ok := kindAPIVersion(kind); ok && namespaced && namespace == "" {
		namespace = corev1.NamespaceDefault
	}
	switch {
	case name == "":
		return kind
	case namespace == "" || kind == "Namespace" || kind == "Cluster":
		return kind + " " + name
	}
	return kind + " " + namespace + "/" + name
}

// list decodes the items of a kind: List document.
func (l *loader) list(at origin, data []byte) error {
	var list struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   map[string]any    `json:"metadata,omitempty"`
		Items      []json.RawMessage `json:"items"`
	}
	if err := strictUnmarshal(data, &list); err != nil {
		return at.wrap(err)
	}
	for i, item := range list.Items {
		it := origin{source: at.source, doc: at.doc, item: i}
		if err := l.document(it, item); err != nil {
			return err
		}
	}
	return nil
}

// strictUnmarshal decodes a YAML document into v, refusing unknown and
// duplicate fields with errors naming their path.
func strictUnmarshal(data []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("invalid YAML: %s", yamlMessage(err))
	}
	strict, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return decodeError(err)
	}
	if len(strict) > 0 {
		return decodeError(runtime.NewStrictDecodingError(strict))
	}
	return nil
}

// typeErrorRE matches a JSON type error: what was found, the field path
// after the Go struct name, and the Go type wanted.
var typeErrorRE = regexp.MustCompile(`^json: cannot unmarshal (.+) into Go struct field [^.]+\.(\S+) of type (\S+)$`)

// decodeError rewrites the decoder's errors to name the field first.
func decodeError(err error) error {
	if se, ok := runtime.AsStrictDecodingError(err); ok {
		var msgs []string
		for _, e := range se.Errors() {
			var fe kjson.FieldError
			if errors.As(e, &fe) {
				path := fe.FieldPath()
				msgs = append(msgs, path+": "+strings.TrimSuffix(e.Error(), " "+strconv.Quote(path)))
			} else {
				msgs = append(msgs, yamlMessage(e))
			}
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	if m := typeErrorRE.FindStringSubmatch(err.Error()); m != nil {
		return &fieldError{field: m[2], reason: "got " + m[1] + ", want " + m[3]}
	}
	if ok, _ := kjson.SyntaxErrorOffset(err); ok || strings.HasPrefix(err.Error(), "yaml:") || strings.Contains(err.Error(), "YAML") {
		return fmt.Errorf("invalid YAML: %s", yamlMessage(err))
	}
	return err
}

// yamlMessage flattens a YAML error to one line.
func yamlMessage(err error) string {
	s := err.Error()
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: "} {
		s = strings.TrimPrefix(s, p)
	}
	return strings.Join(strings.Fields(s), " ")
}

// add checks an object's metadata (name, namespace, labels), refuses
// duplicates and records it.
func (l *loader) add(at origin, obj runtime.Object) error {
	var (
		kind string
		meta *metav1.ObjectMeta
		rule nameRule
	)
	switch o := obj.(type) {
	case *corev1.Namespace:
		kind, meta, rule = "Namespace", &o.ObjectMeta, dns1123Label
	case *corev1.Pod:
		kind, meta, rule = "Pod", &o.ObjectMeta, dns1123Subdomain
	case *corev1.Service:
		kind, meta, rule = "Service", &o.ObjectMeta, dns1035Label
	case *discoveryv1.EndpointSlice:
		kind, meta, rule = "EndpointSlice", &o.ObjectMeta, dns1123Subdomain
	case *networkingv1.NetworkPolicy:
		kind, meta, rule = "NetworkPolicy", &o.ObjectMeta, dns1123Subdomain
	default:
		return at.wrap(fmt.Errorf("decoded to an unexpected %T", obj))
	}
	_, namespaced, _ := kindAPIVersion(kind)
	if err := checkMeta(at, meta, rule, namespaced); err != nil {
		return err
	}
	key := objectKey{kind, meta.Namespace, meta.Name}
	if first, dup := l.seen[key]; dup {
		return at.failf("metadata.name", meta.Name, "already declared in %s", first.where())
	}
	l.seen[key] = at
	l.entries = append(l.entries, entry{at, obj})
	return nil
}

// finish applies the cluster's defaults, validates every object against
// the cluster and the others, and builds the Manifest.
func (l *loader) finish() (*Manifest, error) {
	m := &Manifest{}
	var err error
	if m.Cluster, err = l.clusterOrDefault(); err != nil {
		return nil, err
	}
	v := newValidator(&m.Cluster)
	for _, e := range l.entries {
		switch o := e.obj.(type) {
		case *corev1.Namespace:
			v.namespaces[o.Name] = true
		case *corev1.Service:
			v.services[objectKey{"Service", o.Namespace, o.Name}] = o
		}
	}
	if !v.namespaces[corev1.NamespaceDefault] {
		v.namespaces[corev1.NamespaceDefault] = true
		m.Namespaces = append(m.Namespaces, defaultNamespace())
	}
	for _, e := range l.entries {
		if err := v.check(e.at, e.obj); err != nil {
			return nil, err
		}
		switch o := e.obj.(type) {
		case *corev1.Namespace:
			m.Namespaces = append(m.Namespaces, o)
		case *corev1.Pod:
			m.Pods = append(m.Pods, o)
		case *corev1.Service:
			m.Services = append(m.Services, o)
		case *discoveryv1.EndpointSlice:
			m.EndpointSlices = append(m.EndpointSlices, o)
		case *networkingv1.NetworkPolicy:
			m.NetworkPolicies = append(m.NetworkPolicies, o)
		}
	}
	return m, nil
}
