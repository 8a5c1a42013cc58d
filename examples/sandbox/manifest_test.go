package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubewire/kubewire/policy"
	"github.com/kubewire/kubewire/service"
)

// loadText loads YAML documents given as one source named test.yaml.
func loadText(text string) (*Manifest, error) {
	return Load([]Source{{Name: "test.yaml", R: strings.NewReader(text)}})
}

func mustLoadText(t *testing.T, text string) *Manifest {
	t.Helper()
	m, err := loadText(text)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return m
}

func loadFile(t *testing.T, path string) (*Manifest, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Load([]Source{{Name: filepath.Base(path), R: f}})
}

func objNames[T interface {
	GetNamespace() string
	GetName() string
}](objs []T) []string {
	var out []string
	for _, o := range objs {
		if o.GetNamespace() == "" {
			out = append(out, o.GetName())
		} else {
			out = append(out, o.GetNamespace()+"/"+o.GetName())
		}
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func findObj[T interface {
	GetNamespace() string
	GetName() string
}](t *testing.T, objs []T, nsName string) T {
	t.Helper()
	for _, o := range objs {
		if o.GetNamespace()+"/"+o.GetName() == nsName {
			return o
		}
	}
	t.Fatalf("%s not found in %v", nsName, objNames(objs))
	var zero T
	return zero
}

// nodesOf maps each pod to its node.
func nodesOf(m *Manifest) map[string]string {
	out := make(map[string]string)
	for _, p := range m.Pods {
		out[p.Namespace+"/"+p.Name] = p.Spec.NodeName
	}
	return out
}

// svcFamilies renders a service's ipFamilyPolicy and ipFamilies.
func svcFamilies(s *corev1.Service) string {
	var fams []string
	for _, f := range s.Spec.IPFamilies {
		fams = append(fams, string(f))
	}
	policy := "<nil>"
	if s.Spec.IPFamilyPolicy != nil {
		policy = string(*s.Spec.IPFamilyPolicy)
	}
	return policy + " " + strings.Join(fams, ",")
}

func TestDefaultManifest(t *testing.T) {
	m, err := DefaultManifest()
	if err != nil {
		t.Fatal(err)
	}
	wantCluster := Cluster{
		Nodes:        2,
		IPFamilies:   []string{"IPv4", "IPv6"},
		PodCIDRs:     prefixes("10.244.0.0/16", "fd00:10:244::/48"),
		ServiceCIDRs: prefixes("10.96.0.0/16", "fd00:10:96::/112"),
		Overlay:      "host-gw", PodNetwork: "routed", Driver: "nftables", Domain: "cluster.local",
	}
	if !reflect.DeepEqual(m.Cluster, wantCluster) {
		t.Errorf("cluster %+v, want %+v", m.Cluster, wantCluster)
	}
	if got, want := objNames(m.Namespaces), []string{"default", "shop", "monitoring"}; !slices.Equal(got, want) {
		t.Errorf("namespaces %v, want %v", got, want)
	}
	for _, ns := range m.Namespaces {
		if ns.Labels[corev1.LabelMetadataName] != ns.Name {
			t.Errorf("namespace %s labels %v", ns.Name, ns.Labels)
		}
	}
	wantNodes := map[string]string{
		"shop/web-1": "node1", "shop/web-2": "node2", "shop/frontend-1": "node1", "shop/db-0": "node1",
		"shop/db-1": "node2", "monitoring/prober": "node1", "default/client": "node2",
	}
	if got := nodesOf(m); !reflect.DeepEqual(got, wantNodes) {
		t.Errorf("pod nodes %v, want %v", got, wantNodes)
	}
	for _, p := range m.Pods {
		want := []corev1.ContainerPort{
			{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
			{Name: "echo-udp", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
		}
		if got := p.Spec.Containers[0].Ports; !reflect.DeepEqual(got, want) {
			t.Errorf("pod %s ports %+v", p.Name, got)
		}
		if !reflect.DeepEqual(p.Status, corev1.PodStatus{}) {
			t.Errorf("pod %s status %+v, want empty", p.Name, p.Status)
		}
	}

	web := findObj(t, m.Services, "shop/web")
	if got := svcFamilies(web); got != "PreferDualStack IPv4,IPv6" {
		t.Errorf("web families %s", got)
	}
	if web.Spec.Type != corev1.ServiceTypeClusterIP || web.Spec.ClusterIP != "" || web.Spec.Ports[0].TargetPort != intstr.FromString("http") ||
		web.Spec.Ports[1].Protocol != corev1.ProtocolUDP {
		t.Errorf("web spec %+v", web.Spec)
	}
	fe := findObj(t, m.Services, "shop/frontend")
	if got := svcFamilies(fe); got != "SingleStack IPv4" {
		t.Errorf("frontend families %s", got)
	}
	if fe.Spec.Type != corev1.ServiceTypeNodePort || fe.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal ||
		fe.Spec.Ports[0].NodePort != 30080 {
		t.Errorf("frontend spec %+v", fe.Spec)
	}
	db := findObj(t, m.Services, "shop/db")
	if got := svcFamilies(db); got != "PreferDualStack IPv4,IPv6" || !isHeadless(db) || !slices.Equal(db.Spec.ClusterIPs, []string{"None"}) {
		t.Errorf("db: %s, clusterIPs %v", got, db.Spec.ClusterIPs)
	}
	if got := objNames(m.NetworkPolicies); !slices.Equal(got, []string{"shop/db-allow-web"}) {
		t.Errorf("policies %v", got)
	}
	if len(m.EndpointSlices) != 0 {
		t.Errorf("declared slices %v", objNames(m.EndpointSlices))
	}

	// With addresses, the slices follow the pods and policies of the tour.
	setIPs(m, map[string][]string{
		"shop/web-1": {"10.244.0.2", "fd00:10:244::2"}, "shop/web-2": {"10.244.1.2", "fd00:10:244:1::2"},
		"shop/frontend-1": {"10.244.0.3", "fd00:10:244::3"},
		"shop/db-0":       {"10.244.0.4", "fd00:10:244::4"}, "shop/db-1": {"10.244.1.3", "fd00:10:244:1::3"},
		"monitoring/prober": {"10.244.0.5", "fd00:10:244::5"}, "default/client": {"10.244.1.4", "fd00:10:244:1::4"},
	})
	want := `shop/db-ipv4 IPv4 [http/TCP/80]
  10.244.0.4 ready serving node1 shop/db-0 host=db-0
  10.244.1.3 ready serving node2 shop/db-1 host=db-1
shop/db-ipv6 IPv6 [http/TCP/80]
  fd00:10:244::4 ready serving node1 shop/db-0 host=db-0
  fd00:10:244:1::3 ready serving node2 shop/db-1 host=db-1
shop/frontend-ipv4 IPv4 [http/TCP/80]
  10.244.0.3 ready serving node1 shop/frontend-1
shop/web-ipv4 IPv4 [http/TCP/80 echo-udp/UDP/5353]
  10.244.0.2 ready serving node1 shop/web-1
  10.244.1.2 ready serving node2 shop/web-2
shop/web-ipv6 IPv6 [http/TCP/80 echo-udp/UDP/5353]
  fd00:10:244::2 ready serving node1 shop/web-1
  fd00:10:244:1::2 ready serving node2 shop/web-2
`
	if got := renderSlices(DeriveEndpointSlices(m)); got != want {
		t.Errorf("derived slices:\n%s\nwant:\n%s", got, want)
	}
}

func TestLoadTestdata(t *testing.T) {
	t.Run("dualstack-vxlan", func(t *testing.T) {
		m, err := loadFile(t, "testdata/dualstack-vxlan.yaml")
		if err != nil {
			t.Fatal(err)
		}
		wantCluster := Cluster{
			Nodes:        3,
			IPFamilies:   []string{"IPv6", "IPv4"},
			PodCIDRs:     prefixes("fd00:32::/48", "10.32.0.0/16"),
			ServiceCIDRs: prefixes("fd00:33::/112", "10.33.0.0/16"),
			Overlay:      "vxlan", PodNetwork: "bridge", Driver: "nftables", Domain: "cluster.local",
		}
		if !reflect.DeepEqual(m.Cluster, wantCluster) {
			t.Errorf("cluster %+v, want %+v", m.Cluster, wantCluster)
		}
		wantNodes := map[string]string{"app/api-1": "node1", "app/api-2": "node2", "app/api-3": "node3", "app/migrate": "node3", "app/cache-0": "node2"}
		if got := nodesOf(m); !reflect.DeepEqual(got, wantNodes) {
			t.Errorf("pod nodes %v, want %v", got, wantNodes)
		}
		if p := findObj(t, m.Pods, "app/migrate"); p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("migrate phase %q", p.Status.Phase)
		}
		if p := findObj(t, m.Pods, "app/cache-0"); len(p.Status.Conditions) != 1 || p.Status.Conditions[0].Status != corev1.ConditionFalse {
			t.Errorf("cache-0 conditions %+v", p.Status.Conditions)
		}
		for name, want := range map[string]string{
			"app/api":         "RequireDualStack IPv6,IPv4",
			"app/cache":       "SingleStack IPv6",
			"app/external-db": "PreferDualStack IPv6,IPv4",
			"app/docs":        "<nil> ",
		} {
			if got := svcFamilies(findObj(t, m.Services, name)); got != want {
				t.Errorf("%s: %s, want %s", name, got, want)
			}
		}
		if api := findObj(t, m.Services, "app/api"); api.Spec.ClusterIP != "fd00:33::100" {
			t.Errorf("api clusterIP %q", api.Spec.ClusterIP)
		}
		if got := objNames(m.EndpointSlices); !slices.Equal(got, []string{"app/external-db-v6", "app/external-db-v4"}) {
			t.Errorf("declared slices %v", got)
		}

		setIPs(m, map[string][]string{
			"app/api-1": {"fd00:32::2", "10.32.0.2"}, "app/api-2": {"fd00:32:0:1::2", "10.32.1.2"},
			"app/api-3": {"fd00:32:0:2::2", "10.32.2.2"}, "app/migrate": {"fd00:32:0:2::3", "10.32.2.3"},
			"app/cache-0": {"fd00:32:0:1::3", "10.32.1.3"},
		})
		want := `app/api-ipv4 IPv4 [http/TCP/80]
  10.32.0.2 ready serving node1 app/api-1
  10.32.1.2 ready serving node2 app/api-2
app/api-ipv4-2 IPv4 [http/TCP/8080]
  10.32.2.2 ready serving node3 app/api-3
app/api-ipv6 IPv6 [http/TCP/80]
  fd00:32::2 ready serving node1 app/api-1
  fd00:32:0:1::2 ready serving node2 app/api-2
app/api-ipv6-2 IPv6 [http/TCP/8080]
  fd00:32:0:2::2 ready serving node3 app/api-3
app/cache-ipv6 IPv6 [/TCP/6379]
  fd00:32:0:1::3 not-ready not-serving node2 app/cache-0
`
		if got := renderSlices(DeriveEndpointSlices(m)); got != want {
			t.Errorf("derived slices:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("policies", func(t *testing.T) {
		m, err := loadFile(t, "testdata/policies.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if c := m.Cluster; !slices.Equal(c.IPFamilies, []string{"IPv4"}) || !slices.Equal(c.PodCIDRs, prefixes("10.244.0.0/16")) ||
			!slices.Equal(c.ServiceCIDRs, prefixes("10.96.0.0/16")) || c.Nodes != 2 {
			t.Errorf("cluster %+v", c)
		}
		if got, want := objNames(m.Namespaces), []string{"default", "prod", "staging", "monitoring"}; !slices.Equal(got, want) {
			t.Errorf("namespaces %v, want %v", got, want)
		}
		want := []string{"prod/default-deny-ingress", "prod/allow-monitoring", "prod/api-from-frontend", "prod/db-from-api",
			"prod/frontend-from-office", "prod/frontend-egress", "staging/allow-all"}
		if got := objNames(m.NetworkPolicies); !slices.Equal(got, want) {
			t.Errorf("policies %v, want %v", got, want)
		}
		if got := svcFamilies(findObj(t, m.Services, "prod/api")); got != "SingleStack IPv4" {
			t.Errorf("api families %s", got)
		}
		if got := nodesOf(m); got["prod/frontend"] != "node1" || got["prod/api"] != "node2" || got["monitoring/prometheus"] != "node1" {
			t.Errorf("pod nodes %v", got)
		}
	})
}

func TestLoadBadFiles(t *testing.T) {
	for file, want := range map[string]string{
		"bad-unknown-field.yaml": `bad-unknown-field.yaml: document 2: Service shop/web: spec.selecter: unknown field`,
		"bad-port.yaml":          `bad-port.yaml: document 1: Service default/web: spec.ports[1].port 80800: must be 1-65535`,
		"bad-namespace.yaml":     `bad-namespace.yaml: document 1: Service staging/web: metadata.namespace "staging": no such namespace`,
		"bad-kind.yaml":          `bad-kind.yaml: document 2: Deployment web: kind Deployment (apps/v1) is not supported: the sandbox reads Namespace, Pod, Service`,
		"bad-duplicate.yaml":     `bad-duplicate.yaml: document 2: Pod default/web: metadata.name "web": already declared in bad-duplicate.yaml document 1`,
		"bad-nodename.yaml":      `bad-nodename.yaml: document 2: Pod default/web: spec.nodeName "node3": no such node: the cluster has node1-node2`,
	} {
		t.Run(file, func(t *testing.T) {
			m, err := loadFile(t, filepath.Join("testdata", file))
			if err == nil || m != nil {
				t.Fatalf("Load = %v, %v; want an error", m, err)
			}
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error\n  %v\nwant it to start with\n  %s", err, want)
			}
		})
	}
	// Every bad-* file is covered above.
	files, _ := filepath.Glob("testdata/bad-*.yaml")
	if len(files) != 6 {
		t.Errorf("testdata has %d bad files: %v", len(files), files)
	}
}

// podDoc is a minimal pod document.
func podDoc(name, extra string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  containers: [{name: c}]\n%s", name, extra)
}

const (
	ipv4Cluster = "apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nspec: {ipFamilies: [IPv4]}\n---\n"
	svcHead     = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n"
	sliceHead   = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\n"
	webSvc      = svcHead + "  selector: {app: web}\n  ports: [{port: 80}]\n---\n"
	clusterHead = "apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n"
)

func TestLoadErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		// Documents and kinds.
		{"not a mapping", "- a\n- b\n", `test.yaml: document 1: not a Kubernetes object`},
		{"bad YAML", "a: : b\n", `test.yaml: document 1: invalid YAML: yaml: mapping values are not allowed`},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", `test.yaml: document 1: kind: required`},
		{"old apiVersion", "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: np}\n",
			`test.yaml: document 1: NetworkPolicy default/np: apiVersion "networking.k8s.io/v1beta1": want networking.k8s.io/v1 for a NetworkPolicy`},
		{"ConfigMap", "---\n# empty\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: x}\n",
			`test.yaml: document 1: ConfigMap x/cm: kind ConfigMap (v1) is not supported`},
		{"type error", svcHead + "  ports: [{port: eighty}]\n", `test.yaml: document 1: Service default/web: spec.ports.port: got string, want int32`},
		{"duplicate key", svcHead + "  type: ClusterIP\n  type: NodePort\n", `Service default/web: yaml: unmarshal errors: line 6: key "type" already set in map`},
		{"two unknown fields", svcHead + "  foo: 1\n  ports: [{port: 80, bar: 2}]\n", `Service default/web: spec.foo: unknown field; spec.ports[0].bar: unknown field`},
		{"List item", "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(podDoc("a", ""), "\n", "\n  ") + "\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: B}\n",
			`test.yaml: document 1: items[1]: Pod default/B: metadata.name "B": not a DNS-1123 subdomain`},
		{"List in List", "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List, items: []}\n", `document 1: items[0]: List: a List inside a List`},
		{"List unknown field", "apiVersion: v1\nkind: List\nitemz: []\n", `document 1: List: itemz: unknown field`},

		// Metadata.
		{"no name", "apiVersion: v1\nkind: Pod\nspec: {}\n", `test.yaml: document 1: Pod: metadata.name: required`},
		{"generateName", "apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-}\n", `Pod: metadata.name: required (metadata.generateName is not supported`},
		{"service name", "apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\n", `Service default/1web: metadata.name "1web": not a DNS-1035 label`},
		{"namespace name", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n", `Namespace a.b: metadata.name "a.b": not a DNS-1123 label`},
		{"namespaced Namespace", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n", `Namespace a: metadata.namespace "b": not allowed: the object is cluster-scoped`},
		{"label key", podDoc("web", "") + "---\n" + "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {\"bad key\": v}}\n",
			`document 2: Pod default/x: metadata.labels["bad key"]: not a label key`},
		{"label value", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {app: \"a b\"}}\n", `Pod default/x: metadata.labels["app"] "a b": not a label value`},
		{"undeclared namespace", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: prod}\n",
			`NetworkPolicy prod/np: metadata.namespace "prod": no such namespace: declare a Namespace prod`},

		// Pods.
		{"hostNetwork", podDoc("web", "  hostNetwork: true\n"), `Pod default/web: spec.hostNetwork true: not supported by the sandbox`},
		{"no containers", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {}\n", `Pod default/web: spec.containers: required`},
		{"container name", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c}, {name: c}]}\n",
			`spec.containers[1].name "c": duplicate of spec.containers[0].name`},
		{"SCTP", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, ports: [{containerPort: 9, protocol: SCTP}]}]}\n",
			`Pod default/web: spec.containers[0].ports[0].protocol "SCTP": not supported: the sandbox's kernel has no SCTP`},
		{"ICMP", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, ports: [{containerPort: 9, protocol: ICMP}]}]}\n",
			`spec.containers[0].ports[0].protocol "ICMP": want TCP or UDP`},
		{"container port", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n",
			`spec.containers[0].ports[0].containerPort 0: must be 1-65535`},
		{"port name", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, ports: [{containerPort: 80, name: HTTP_1}]}]}\n",
			`spec.containers[0].ports[0].name "HTTP_1": not a port name`},
		{"port name twice", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: a, ports: [{containerPort: 80, name: http}]}, {name: b, ports: [{containerPort: 81, name: http}]}]}\n",
			`spec.containers[1].ports[0].name "http": duplicate of spec.containers[0].ports[0].name: port names are unique in a pod`},
		{"port twice", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: a, ports: [{containerPort: 80}]}, {name: b, ports: [{containerPort: 80, protocol: TCP}]}]}\n",
			`spec.containers[1].ports[0] "80/TCP": already served by spec.containers[0].ports[0]`},
		{"node name", podDoc("web", "  nodeName: worker-1\n"), `spec.nodeName "worker-1": no such node: the cluster has node1-node2`},
		{"hostname", podDoc("web", "  hostname: Web\n"), `spec.hostname "Web": not a DNS-1123 label`},
		{"phase", podDoc("web", "status: {phase: Done}\n"), `status.phase "Done": want Pending, Running, Succeeded, Failed or Unknown`},
		{"condition", podDoc("web", "status: {conditions: [{type: Ready, status: \"no\"}]}\n"), `status.conditions[0].status "no": want True, False or Unknown`},
		{"sidecar port name (policy kubeconv)", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c}], initContainers: [{name: i, ports: [{containerPort: 80, name: \"-x\"}]}]}\n",
			`spec.initContainers[0].ports[0].name "-x": not a port name`},

		// Services.
		{"LoadBalancer", svcHead + "  type: LoadBalancer\n  ports: [{port: 80}]\n",
			`Service default/web: spec.type "LoadBalancer": not supported: the sandbox has no load balancer; use NodePort`},
		{"type", svcHead + "  type: Ingress\n", `spec.type "Ingress": want ClusterIP, NodePort or ExternalName`},
		{"no ports", svcHead + "  selector: {app: web}\n", `Service default/web: spec.ports: required`},
		{"port 0", svcHead + "  ports: [{port: 0}]\n", `test.yaml: document 1: Service default/web: spec.ports[0].port 0: must be 1-65535`},
		{"unnamed ports", svcHead + "  ports: [{port: 80}, {port: 81}]\n", `spec.ports[0].name: required when a service has more than one port`},
		{"same port", svcHead + "  ports: [{name: a, port: 80}, {name: b, port: 80, protocol: TCP}]\n", `spec.ports[1] "80/TCP": same port and protocol as spec.ports[0]`},
		{"SCTP service", svcHead + "  ports: [{port: 80, protocol: SCTP}]\n", `spec.ports[0].protocol "SCTP": not supported: the sandbox's kernel has no SCTP`},
		{"targetPort", svcHead + "  ports: [{port: 80, targetPort: 70000}]\n", `spec.ports[0].targetPort 70000: must be 1-65535`},
		{"targetPort name", svcHead + "  ports: [{port: 80, targetPort: Http}]\n", `spec.ports[0].targetPort "Http": not a port name`},
		{"nodePort range", svcHead + "  type: NodePort\n  ports: [{port: 80, nodePort: 8080}]\n", `spec.ports[0].nodePort 8080: must be 30000-32767, the node port range`},
		{"nodePort on ClusterIP", svcHead + "  ports: [{port: 80, nodePort: 30080}]\n", `spec.ports[0].nodePort 30080: only NodePort services have node ports (type is ClusterIP)`},
		{"nodePort taken", svcHead + "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n---\n" +
			"apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec: {type: NodePort, ports: [{port: 81, nodePort: 30080}]}\n",
			`document 2: Service default/other: spec.ports[0].nodePort 30080: already a node port of Service default/web`},
		{"clusterIP outside", svcHead + "  clusterIP: 10.0.0.1\n  ports: [{port: 80}]\n",
			`spec.clusterIPs[0] "10.0.0.1": not in the cluster's IPv4 service CIDR 10.96.0.0/16`},
		{"clusterIP network", svcHead + "  clusterIP: 10.96.0.0\n  ports: [{port: 80}]\n", `spec.clusterIPs[0] "10.96.0.0": the network or broadcast address of the service CIDR 10.96.0.0/16`},
		{"clusterIP broadcast", svcHead + "  clusterIP: 10.96.255.255\n  ports: [{port: 80}]\n", `spec.clusterIPs[0] "10.96.255.255": the network or broadcast address`},
		{"clusterIP taken", svcHead + "  clusterIP: 10.96.0.20\n  ports: [{port: 80}]\n---\n" +
			"apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec: {clusterIPs: [fd00:10:96::20, 10.96.0.20], ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}\n",
			`Service default/other: spec.clusterIPs[1] "10.96.0.20": already the cluster IP of Service default/web`},
		{"clusterIP garbage", svcHead + "  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n", `spec.clusterIPs[0] "10.96.0.300": not an IP address`},
		{"clusterIP differs", svcHead + "  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.6]\n  ports: [{port: 80}]\n", `spec.clusterIP "10.96.0.5": must equal spec.clusterIPs[0] "10.96.0.6"`},
		{"two IPs single stack", svcHead + "  clusterIPs: [10.96.0.5, fd00:10:96::5]\n  ports: [{port: 80}]\n",
			`spec.ipFamilyPolicy "SingleStack": must be RequireDualStack or PreferDualStack when two cluster IPs are given`},
		{"two families single stack", svcHead + "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{port: 80}]\n",
			`spec.ipFamilyPolicy "SingleStack": must be RequireDualStack or PreferDualStack when two IP families are given`},
		{"IP and family differ", svcHead + "  ipFamilies: [IPv6]\n  clusterIPs: [10.96.0.5]\n  ports: [{port: 80}]\n", `spec.clusterIPs[0] "10.96.0.5": an IPv4 address, but spec.ipFamilies[0] is IPv6`},
		{"RequireDualStack on IPv4", ipv4Cluster + svcHead + "  ipFamilyPolicy: RequireDualStack\n  ports: [{port: 80}]\n",
			`document 2: Service default/web: spec.ipFamilyPolicy "RequireDualStack": this cluster is not configured for dual-stack services (the Cluster's ipFamilies are [IPv4])`},
		{"IPv6 on IPv4", ipv4Cluster + svcHead + "  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n",
			`spec.ipFamilies[0] "IPv6": not configured on this cluster (the Cluster's ipFamilies are [IPv4])`},
		{"IPv6 clusterIP on IPv4", ipv4Cluster + svcHead + "  clusterIP: fd00:10:96::1\n  ports: [{port: 80}]\n",
			`spec.clusterIPs[0] "fd00:10:96::1": IPv6 is not configured on this cluster`},
		{"policy", svcHead + "  ipFamilyPolicy: DualStack\n", `spec.ipFamilyPolicy "DualStack": want SingleStack, PreferDualStack or RequireDualStack`},
		{"headless NodePort", svcHead + "  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n", `spec.clusterIP "None": a NodePort service needs a cluster IP`},
		{"externalTrafficPolicy", svcHead + "  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n", `spec.externalTrafficPolicy "Local": may only be set for externally accessible services`},
		{"internalTrafficPolicy", svcHead + "  internalTrafficPolicy: Node\n  ports: [{port: 80}]\n", `spec.internalTrafficPolicy "Node": want Cluster or Local`},
		{"selector", svcHead + "  selector: {app: \"-web\"}\n  ports: [{port: 80}]\n", `spec.selector["app"] "-web": not a label value`},
		{"externalName missing", svcHead + "  type: ExternalName\n", `Service default/web: spec.externalName: required for type ExternalName`},
		{"externalName clusterIP", svcHead + "  type: ExternalName\n  externalName: example.com\n  clusterIP: 10.96.0.9\n", `spec.clusterIP "10.96.0.9": must be empty for type ExternalName`},
		// Surfaced from service/kubeconv.
		{"affinity timeout", svcHead + "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports: [{port: 80}]\n",
			`Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds 0: must be 1-86400`},
		{"externalIPs", svcHead + "  externalIPs: [1.2.3]\n  ports: [{port: 80}]\n", `Service default/web: spec.externalIPs[0] "1.2.3": not an IP address`},

		// EndpointSlices.
		{"slice label", webSvc + "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n",
			`document 2: EndpointSlice default/s: metadata.labels["kubernetes.io/service-name"]: required`},
		{"slice service", sliceHead + "addressType: IPv4\n", `EndpointSlice default/s: metadata.labels["kubernetes.io/service-name"] "web": no Service default/web is declared`},
		{"slice FQDN", webSvc + sliceHead + "addressType: FQDN\n", `EndpointSlice default/s: addressType "FQDN": not supported`},
		{"slice family", ipv4Cluster + webSvc + sliceHead + "addressType: IPv6\n", `addressType "IPv6": not one of the cluster's ipFamilies [IPv4]`},
		{"slice node", webSvc + sliceHead + "addressType: IPv4\nendpoints: [{addresses: [10.1.2.3], nodeName: node7}]\n",
			`endpoints[0].nodeName "node7": no such node`},
		{"slice address", webSvc + sliceHead + "addressType: IPv4\nendpoints: [{addresses: [10.1.2.300]}]\n",
			`EndpointSlice default/s: endpoints[0].addresses[0] "10.1.2.300": not an IP address`},
		{"slice port", webSvc + sliceHead + "addressType: IPv4\nports: [{port: 70000}]\n", `EndpointSlice default/s: ports[0].port 70000: must be 1-65535`},

		// NetworkPolicies (policy/kubeconv).
		{"ipBlock", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/33]}}]}]\n",
			`NetworkPolicy default/np: spec.ingress[0].from[0].ipBlock.except[0] "10.0.0.0/33": not a CIDR`},
		{"policy port", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  egress: [{ports: [{port: 0}]}]\n",
			`NetworkPolicy default/np: spec.egress[0].ports[0].port 0: must be 1-65535`},

		// The Cluster.
		{"nodes", clusterHead + "  nodes: 0\n", `test.yaml: document 1: Cluster c: spec.nodes 0: must be 1-9`},
		{"ebpf", clusterHead + "  driver: ebpf\n", `Cluster c: spec.driver "ebpf": not available yet: use nftables`},
		{"driver", clusterHead + "  driver: iptables\n", `spec.driver "iptables": want nftables`},
		{"overlay", clusterHead + "  overlay: geneve\n", `Cluster c: spec.overlay "geneve": want host-gw or vxlan`},
		{"podNetwork", clusterHead + "  podNetwork: macvlan\n", `spec.podNetwork "macvlan": want routed or bridge`},
		{"families", clusterHead + "  ipFamilies: [IPv4, IPv4]\n", `spec.ipFamilies[1] "IPv4": duplicate of spec.ipFamilies[0]`},
		{"family", clusterHead + "  ipFamilies: [ipv4]\n", `spec.ipFamilies[0] "ipv4": want IPv4 or IPv6`},
		{"CIDR", clusterHead + "  podCIDRs: [10.244.0.0]\n", `spec.podCIDRs[0] "10.244.0.0": not a CIDR`},
		{"host bits", clusterHead + "  podCIDRs: [10.244.1.0/16]\n", `spec.podCIDRs[0] "10.244.1.0/16": host bits set: want 10.244.0.0/16`},
		{"two IPv4 CIDRs", clusterHead + "  podCIDRs: [10.1.0.0/16, 10.2.0.0/16]\n", `spec.podCIDRs[1] "10.2.0.0/16": a second IPv4 CIDR (spec.podCIDRs[0] is 10.1.0.0/16): one per family`},
		{"missing family", clusterHead + "  ipFamilies: [IPv4, IPv6]\n  podCIDRs: [10.1.0.0/16]\n", `Cluster c: spec.podCIDRs: no IPv6 CIDR, but the cluster's ipFamilies [IPv4 IPv6] have IPv6`},
		{"extra family", clusterHead + "  ipFamilies: [IPv4]\n  serviceCIDRs: [10.96.0.0/16, fd00::/112]\n", `spec.serviceCIDRs[1] "fd00::/112": IPv6 is not in the cluster's ipFamilies [IPv4]`},
		{"pod CIDR too small", clusterHead + "  nodes: 3\n  podCIDRs: [10.1.0.0/23, fd00:1::/48]\n", `spec.podCIDRs[0] "10.1.0.0/23": too small for 3 nodes with a /24 each`},
		{"service CIDR too small", clusterHead + "  serviceCIDRs: [10.96.0.0/29, fd00:10:96::/112]\n", `spec.serviceCIDRs[0] "10.96.0.0/29": too small: want a /28 or larger`},
		{"overlap", clusterHead + "  serviceCIDRs: [10.244.128.0/20, fd00:10:96::/112]\n", `spec.serviceCIDRs[0] "10.244.128.0/20": overlaps the pod CIDR 10.244.0.0/16`},
		{"underlay", clusterHead + "  podCIDRs: [198.18.0.0/16, fd00:1::/48]\n", `spec.podCIDRs[0] "198.18.0.0/16": overlaps the sandbox's underlay network 198.18.0.0/15`},
		{"loopback", clusterHead + "  ipFamilies: [IPv6]\n  serviceCIDRs: [\"::/112\"]\n", `spec.serviceCIDRs[0] "::/112": overlaps the unspecified and loopback addresses ::/127`},
		{"domain", clusterHead + "  clusterDomain: Cluster_Local\n", `spec.clusterDomain "Cluster_Local": not a DNS domain`},
		{"cluster unknown field", clusterHead + "  node: 3\n", `test.yaml: document 1: Cluster c: spec.node: unknown field`},
		{"cluster type", clusterHead + "  nodes: two\n", `Cluster c: spec.nodes: got string, want int`},
		{"cluster apiVersion", "apiVersion: kubewire.dev/v1\nkind: Cluster\n", `Cluster: apiVersion "kubewire.dev/v1": want kubewire.dev/v1alpha1 for a Cluster`},
		{"second cluster", clusterHead + "  nodes: 3\n---\n" + clusterHead + "  nodes: 4\n",
			`test.yaml: document 2: Cluster c: a second Cluster object (the first is in test.yaml document 1): a run has at most one`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := loadText(c.yaml)
			if err == nil || m != nil {
				t.Fatalf("Load = %v, %v; want an error containing\n  %s", m, err, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "test.yaml: document ") {
				t.Errorf("error %q does not name the source and document", err)
			}
		})
	}
}

// TestLoadConverterErrors checks that errors found by the kubeconv
// converters still wrap their package's ErrInvalid.
func TestLoadConverterErrors(t *testing.T) {
	_, err := loadText("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {matchLabels: {\"a b\": x}}\n")
	if !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("policy error %v does not wrap policy.ErrInvalid", err)
	}
	_, err = loadText(svcHead + "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 90000}}\n  ports: [{port: 80}]\n")
	if !errors.Is(err, service.ErrInvalid) {
		t.Errorf("service error %v does not wrap service.ErrInvalid", err)
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Run("no Cluster object", func(t *testing.T) {
		m := mustLoadText(t, "")
		want := Cluster{Nodes: 2, IPFamilies: []string{"IPv4", "IPv6"}, PodCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/48"),
			ServiceCIDRs: prefixes("10.96.0.0/16", "fd00:10:96::/112"), Overlay: "host-gw", PodNetwork: "routed", Driver: "nftables", Domain: "cluster.local"}
		if !reflect.DeepEqual(m.Cluster, want) {
			t.Errorf("cluster %+v, want %+v", m.Cluster, want)
		}
		if got := objNames(m.Namespaces); !slices.Equal(got, []string{"default"}) {
			t.Errorf("namespaces %v", got)
		}
		if got := m.Cluster.NodeNames(); !slices.Equal(got, []string{"node1", "node2"}) {
			t.Errorf("NodeNames %v", got)
		}
	})

	t.Run("families from the service CIDRs", func(t *testing.T) {
		m := mustLoadText(t, clusterHead+"  serviceCIDRs: [fd00:1::/112]\n  clusterDomain: example.org.\n")
		c := m.Cluster
		if !slices.Equal(c.IPFamilies, []string{"IPv6"}) || !slices.Equal(c.PodCIDRs, prefixes("fd00:10:244::/48")) ||
			!slices.Equal(c.ServiceCIDRs, prefixes("fd00:1::/112")) || c.Domain != "example.org" {
			t.Errorf("cluster %+v", c)
		}
	})

	t.Run("round-robin nodes", func(t *testing.T) {
		a := clusterHead + "  nodes: 3\n---\n" + podDoc("a", "") + "---\n" + podDoc("b", "  nodeName: node3\n") + "---\n" + podDoc("c", "")
		b := podDoc("d", "") + "---\n" + podDoc("e", "  nodeName: node1\n") + "---\n" + podDoc("f", "")
		m, err := Load([]Source{{Name: "a.yaml", R: strings.NewReader(a)}, {Name: "b.yaml", R: strings.NewReader(b)}})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"default/a": "node1", "default/b": "node3", "default/c": "node2", "default/d": "node3", "default/e": "node1", "default/f": "node1"}
		if got := nodesOf(m); !reflect.DeepEqual(got, want) {
			t.Errorf("nodes %v, want %v", got, want)
		}
		if got := objNames(m.Pods); !slices.Equal(got, []string{"default/a", "default/b", "default/c", "default/d", "default/e", "default/f"}) {
			t.Errorf("pods not in declaration order: %v", got)
		}
	})

	t.Run("namespaces", func(t *testing.T) {
		// A namespace may be declared after (or in another file than) its
		// objects; a declared "default" keeps its labels and its place.
		m := mustLoadText(t, podDoc("web", "")+"---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {containers: [{name: c}]}\n---\n"+
			"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {team: all}}\n")
		if got := objNames(m.Namespaces); !slices.Equal(got, []string{"shop", "default"}) {
			t.Errorf("namespaces %v", got)
		}
		if got := m.Namespaces[1].Labels; !reflect.DeepEqual(got, map[string]string{"team": "all", corev1.LabelMetadataName: "default"}) {
			t.Errorf("default's labels %v", got)
		}
		if got := objNames(m.Pods); !slices.Equal(got, []string{"default/web", "shop/web"}) {
			t.Errorf("pods %v", got)
		}
	})

	t.Run("service fields", func(t *testing.T) {
		m := mustLoadText(t, svcHead+"  selector: {app: web}\n  clusterIP: 10.96.0.20\n  sessionAffinity: ClientIP\n  ports:\n  - {name: http, port: 80}\n  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}\n---\n"+
			"apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec: {type: NodePort, ports: [{port: 80, targetPort: http}]}\n")
		web := m.Services[0]
		s := web.Spec
		if s.Type != corev1.ServiceTypeClusterIP || !slices.Equal(s.ClusterIPs, []string{"10.96.0.20"}) || svcFamilies(web) != "SingleStack IPv4" ||
			s.SessionAffinity != corev1.ServiceAffinityClientIP || *s.SessionAffinityConfig.ClientIP.TimeoutSeconds != 10800 ||
			*s.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyCluster || s.ExternalTrafficPolicy != "" {
			t.Errorf("web spec %+v", s)
		}
		wantPorts := []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)},
		}
		if !reflect.DeepEqual(s.Ports, wantPorts) {
			t.Errorf("web ports %+v, want %+v", s.Ports, wantPorts)
		}
		np := m.Services[1].Spec
		if np.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster || np.SessionAffinity != corev1.ServiceAffinityNone ||
			np.Ports[0].NodePort != 0 || np.Ports[0].TargetPort != intstr.FromString("http") {
			t.Errorf("NodePort spec %+v", np)
		}
	})

	// ipFamilyPolicy and ipFamilies as the API server defaults them.
	for _, c := range []struct {
		name, cluster, spec, want string
	}{
		{"default", "[IPv4, IPv6]", "", "SingleStack IPv4"},
		{"IPv6 primary", "[IPv6, IPv4]", "", "SingleStack IPv6"},
		{"prefer", "[IPv4, IPv6]", "ipFamilyPolicy: PreferDualStack", "PreferDualStack IPv4,IPv6"},
		{"require, IPv6 primary", "[IPv6, IPv4]", "ipFamilyPolicy: RequireDualStack", "RequireDualStack IPv6,IPv4"},
		{"prefer, single-stack", "[IPv4]", "ipFamilyPolicy: PreferDualStack", "PreferDualStack IPv4"},
		{"secondary family", "[IPv4, IPv6]", "ipFamilies: [IPv6]", "SingleStack IPv6"},
		{"family from IP", "[IPv4, IPv6]", "clusterIP: fd00:10:96::5", "SingleStack IPv6"},
		{"families from IPs", "[IPv4, IPv6]", "clusterIPs: [fd00:10:96::5, 10.96.0.5], ipFamilyPolicy: PreferDualStack", "PreferDualStack IPv6,IPv4"},
		{"prefer from one family", "[IPv4, IPv6]", "ipFamilies: [IPv6], ipFamilyPolicy: PreferDualStack", "PreferDualStack IPv6,IPv4"},
		{"headless", "[IPv4, IPv6]", "clusterIP: None, selector: {app: x}", "SingleStack IPv4"},
		{"headless selectorless", "[IPv4]", "clusterIP: None", "RequireDualStack IPv4,IPv6"},
		{"headless selectorless single", "[IPv6, IPv4]", "clusterIP: None, ipFamilyPolicy: SingleStack", "SingleStack IPv6"},
	} {
		t.Run("families/"+c.name, func(t *testing.T) {
			spec := "ports: [{port: 80}]"
			if c.spec != "" {
				spec += ", " + c.spec
			}
			text := fmt.Sprintf("%s  ipFamilies: %s\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {%s}\n", clusterHead, c.cluster, spec)
			m := mustLoadText(t, text)
			if got := svcFamilies(m.Services[0]); got != c.want {
				t.Errorf("%s, want %s", got, c.want)
			}
		})
	}
}

func TestLoadSources(t *testing.T) {
	t.Run("stdin", func(t *testing.T) {
		m, err := Load([]Source{{Name: "-", R: strings.NewReader(podDoc("web", ""))}})
		if err != nil || len(m.Pods) != 1 {
			t.Fatalf("Load = %v, %v", m, err)
		}
		_, err = Load([]Source{{Name: "-", R: strings.NewReader("---\n" + svcHead + "  ports: [{port: 0}]\n")}})
		if want := `-: document 1: Service default/web: spec.ports[0].port 0: must be 1-65535`; err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
	})
	t.Run("duplicate across files", func(t *testing.T) {
		_, err := Load([]Source{
			{Name: "a.yaml", R: strings.NewReader(podDoc("x", "") + "---\n" + podDoc("web", ""))},
			{Name: "b.yaml", R: strings.NewReader("# just a comment\n---\n" + podDoc("web", ""))},
		})
		if want := `b.yaml: document 1: Pod default/web: metadata.name "web": already declared in a.yaml document 2`; err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		m, err := Load([]Source{{Name: "p.json", R: strings.NewReader(`{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}]}}`)}})
		if err != nil || len(m.Pods) != 1 || m.Pods[0].Spec.NodeName != "node1" {
			t.Fatalf("Load = %v, %v", m, err)
		}
	})
}

// setIPs gives the pods their addresses, as the builder does.
func setIPs(m *Manifest, ips map[string][]string) {
	for _, p := range m.Pods {
		for i, ip := range ips[p.Namespace+"/"+p.Name] {
			if i == 0 {
				p.Status.PodIP = ip
			}
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
	}
}

// renderSlices prints slices compactly: one line per slice (namespace/name,
// address type, ports name/protocol/number), one per endpoint (address,
// conditions, node, pod, hostname).
func renderSlices(ss []*discoveryv1.EndpointSlice) string {
	var b strings.Builder
	for _, s := range ss {
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d", *p.Name, *p.Protocol, *p.Port))
		}
		fmt.Fprintf(&b, "%s/%s %s [%s]\n", s.Namespace, s.Name, s.AddressType, strings.Join(ports, " "))
		for _, e := range s.Endpoints {
			cond := func(p *bool, yes, no string) string {
				if p == nil {
					return "nil"
				}
				if *p {
					return yes
				}
				return no
			}
			c := e.Conditions
			fmt.Fprintf(&b, "  %s %s %s", strings.Join(e.Addresses, ","), cond(c.Ready, "ready", "not-ready"), cond(c.Serving, "serving", "not-serving"))
			if cond(c.Terminating, "terminating", "") != "" {
				fmt.Fprintf(&b, " %s", cond(c.Terminating, "terminating", ""))
			}
			if e.NodeName != nil {
				fmt.Fprintf(&b, " %s", *e.NodeName)
			}
			if r := e.TargetRef; r != nil {
				fmt.Fprintf(&b, " %s/%s", r.Namespace, r.Name)
			}
			if e.Hostname != nil {
				fmt.Fprintf(&b, " host=%s", *e.Hostname)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func TestDeriveEndpointSlices(t *testing.T) {
	const ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n---\n"
	podIn := func(namespace, name, labels, extra string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s, labels: {%s}}\nspec:\n  nodeName: node1\n  containers: [{name: c, ports: [{name: http, containerPort: 80}]}]\n%s---\n",
			name, namespace, labels, extra)
	}
	webPod := func(name, labels, extra string) string { return podIn("default", name, labels, extra) }
	ips := map[string][]string{
		"default/a": {"10.244.0.10", "fd00:10:244::a"}, "default/b": {"10.244.0.9", "fd00:10:244::b"},
		"default/c": {"10.244.0.11", "fd00:10:244::c"}, "default/d": {"10.244.0.12"},
		"other/a": {"10.244.0.20", "fd00:10:244::20"},
	}
	for _, c := range []struct{ name, yaml, want string }{
		{"selector",
			ns + webPod("a", "app: web", "") + webPod("b", "app: web, tier: x", "") + webPod("c", "app: other", "") + podIn("other", "a", "app: web", "") +
				svcHead + "  selector: {app: web}\n  ports: [{name: http, port: 8000, targetPort: http}]\n",
			`default/web-ipv4 IPv4 [http/TCP/80]
  10.244.0.9 ready serving node1 default/b
  10.244.0.10 ready serving node1 default/a
`},
		{"readiness",
			webPod("a", "app: web", "status: {conditions: [{type: Ready, status: \"False\"}]}\n") +
				webPod("b", "app: web", "status: {conditions: [{type: Ready, status: \"True\"}]}\n") +
				webPod("c", "app: web", "status: {conditions: [{type: Ready, status: Unknown}, {type: PodScheduled, status: \"True\"}]}\n") +
				webPod("d", "app: web", "status: {conditions: [{type: PodScheduled, status: \"True\"}]}\n") +
				svcHead + "  selector: {app: web}\n  ports: [{port: 80}]\n",
			`default/web-ipv4 IPv4 [/TCP/80]
  10.244.0.9 ready serving node1 default/b
  10.244.0.10 not-ready not-serving node1 default/a
  10.244.0.11 not-ready not-serving node1 default/c
  10.244.0.12 ready serving node1 default/d
`},
		{"publishNotReadyAddresses",
			webPod("a", "app: web", "status: {conditions: [{type: Ready, status: \"False\"}]}\n") +
				svcHead + "  selector: {app: web}\n  publishNotReadyAddresses: true\n  ports: [{port: 80}]\n",
			`default/web-ipv4 IPv4 [/TCP/80]
  10.244.0.10 ready not-serving node1 default/a
`},
		{"named targetPort, two numbers",
			webPod("a", "app: web", "") + webPod("b", "app: web", "") +
				strings.Replace(webPod("c", "app: web", ""), "containerPort: 80", "containerPort: 8080", 1) +
				svcHead + "  selector: {app: web}\n  ports: [{name: web, port: 80, targetPort: http}]\n",
			`default/web-ipv4 IPv4 [web/TCP/80]
  10.244.0.9 ready serving node1 default/b
  10.244.0.10 ready serving node1 default/a
default/web-ipv4-2 IPv4 [web/TCP/8080]
  10.244.0.11 ready serving node1 default/c
`},
		{"named targetPort, protocol must match",
			webPod("a", "app: web", "") +
				svcHead + "  selector: {app: web}\n  ports: [{name: web, port: 80, targetPort: http, protocol: UDP}, {name: num, port: 81, targetPort: 9000}]\n",
			`default/web-ipv4 IPv4 [num/TCP/9000]
  10.244.0.10 ready serving node1 default/a
`},
		{"named targetPort unresolved",
			webPod("a", "app: web", "") + strings.Replace(webPod("b", "app: web", ""), "name: http", "name: web", 1) +
				svcHead + "  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}, {name: metrics, port: 9090}]\n" +
				"---\napiVersion: v1\nkind: Service\nmetadata: {name: only}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n",
			`default/only-ipv4 IPv4 [/TCP/80]
  10.244.0.10 ready serving node1 default/a
default/only-ipv4-2 IPv4 []
  10.244.0.9 ready serving node1 default/b
default/web-ipv4 IPv4 [http/TCP/80 metrics/TCP/9090]
  10.244.0.10 ready serving node1 default/a
default/web-ipv4-2 IPv4 [metrics/TCP/9090]
  10.244.0.9 ready serving node1 default/b
`},
		{"sidecar port",
			"apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: web}}\nspec:\n  containers: [{name: c}]\n" +
				"  initContainers: [{name: proxy, restartPolicy: Always, ports: [{name: http, containerPort: 82}]}]\n---\n" +
				"apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {app: web}}\nspec:\n  containers: [{name: c}]\n" +
				"  initContainers: [{name: init, ports: [{name: http, containerPort: 81}]}]\n---\n" +
				svcHead + "  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n",
			`default/web-ipv4 IPv4 [/TCP/82]
  10.244.0.10 ready serving node1 default/a
default/web-ipv4-2 IPv4 []
  10.244.0.9 ready serving node2 default/b
`},
		{"headless hostname",
			webPod("a", "app: db", "  hostname: db-a\n  subdomain: db\n") + webPod("b", "app: db", "  hostname: db-b\n  subdomain: other\n") + webPod("c", "app: db", "  subdomain: db\n") +
				"apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {clusterIP: None, selector: {app: db}}\n",
			`default/db-ipv4 IPv4 []
  10.244.0.9 ready serving node1 default/b
  10.244.0.10 ready serving node1 default/a host=db-a
  10.244.0.11 ready serving node1 default/c
`},
		{"dual-stack",
			webPod("a", "app: web", "") + webPod("d", "app: web", "") +
				svcHead + "  selector: {app: web}\n  ipFamilyPolicy: RequireDualStack\n  ports: [{name: http, port: 80, targetPort: http}]\n",
			`default/web-ipv4 IPv4 [http/TCP/80]
  10.244.0.10 ready serving node1 default/a
  10.244.0.12 ready serving node1 default/d
default/web-ipv6 IPv6 [http/TCP/80]
  fd00:10:244::a ready serving node1 default/a
`},
		{"declared slices win",
			webPod("a", "app: web", "") + svcHead + "  selector: {app: web}\n  ports: [{port: 80}]\n---\n" +
				sliceHead + "addressType: IPv4\nendpoints: [{addresses: [192.0.2.1]}]\n",
			``},
		{"terminal pods",
			webPod("a", "app: web", "status: {phase: Succeeded}\n") + webPod("b", "app: web", "status: {phase: Failed}\n") + webPod("c", "app: web", "status: {phase: Running}\n") +
				svcHead + "  selector: {app: web}\n  ports: [{port: 80}]\n",
			`default/web-ipv4 IPv4 [/TCP/80]
  10.244.0.11 ready serving node1 default/c
`},
		{"no pods: placeholder",
			svcHead + "  selector: {app: web}\n  ipFamilyPolicy: PreferDualStack\n  ports: [{port: 80}]\n",
			`default/web-ipv4 IPv4 []
default/web-ipv6 IPv6 []
`},
		{"ExternalName and selectorless",
			webPod("a", "app: web", "") +
				svcHead + "  type: ExternalName\n  externalName: example.com\n  selector: {app: web}\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec: {ports: [{port: 80}]}\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {selector: {}, ports: [{port: 80}]}\n",
			``},
		{"order",
			ns + podIn("other", "a", "app: web", "") + webPod("a", "app: web", "") +
				"apiVersion: v1\nkind: Service\nmetadata: {name: svc-z, namespace: other}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata: {name: svc-y, namespace: other}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata: {name: svc-x}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
			`default/svc-x-ipv4 IPv4 [/TCP/80]
  10.244.0.10 ready serving node1 default/a
other/svc-y-ipv4 IPv4 [/TCP/80]
  10.244.0.20 ready serving node1 other/a
other/svc-z-ipv4 IPv4 [/TCP/80]
  10.244.0.20 ready serving node1 other/a
`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mustLoadText(t, c.yaml)
			setIPs(m, ips)
			before := renderSlices(m.EndpointSlices)
			got := renderSlices(DeriveEndpointSlices(m))
			if got != c.want {
				t.Errorf("derived:\n%s\nwant:\n%s", got, c.want)
			}
			if after := renderSlices(m.EndpointSlices); after != before {
				t.Errorf("declared slices changed:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

func TestDeriveEndpointSlicesMetadata(t *testing.T) {
	m := mustLoadText(t, podDoc("a", "")+"---\n"+
		"apiVersion: v1\nkind: Service\nmetadata: {name: db, labels: {team: x, kubernetes.io/service-name: wrong}}\nspec: {clusterIP: None, selector: {app: db}}\n---\n"+
		"apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{name: h, port: 80, appProtocol: http}]}\n")
	m.Pods[0].Labels = map[string]string{"app": "web"}
	m.Pods[0].UID = "uid-a"
	setIPs(m, map[string][]string{"default/a": {"10.244.0.2"}})
	got := DeriveEndpointSlices(m)
	if len(got) != 2 {
		t.Fatalf("%d slices: %s", len(got), renderSlices(got))
	}
	wantLabels := map[string]string{
		"team":                       "x",
		corev1.IsHeadlessService:     "",
		discoveryv1.LabelServiceName: "db",
		discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
	}
	if db := got[0]; db.Name != "db-ipv4" || !reflect.DeepEqual(db.Labels, wantLabels) {
		t.Errorf("db slice %s labels %v, want %v", db.Name, db.Labels, wantLabels)
	}
	web := got[1]
	if want := map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}; !reflect.DeepEqual(web.Labels, want) {
		t.Errorf("web labels %v, want %v", web.Labels, want)
	}
	ep := web.Endpoints[0]
	if ep.TargetRef.Kind != "Pod" || ep.TargetRef.UID != "uid-a" || *ep.Conditions.Terminating || web.Ports[0].AppProtocol == nil || *web.Ports[0].AppProtocol != "http" {
		t.Errorf("web slice %+v", web)
	}
}

// FuzzLoad checks that Load never panics, that its errors name the source
// and that what it accepts derives slices.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	files = append(files, "default.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Load([]Source{{Name: "fuzz.yaml", R: strings.NewReader(string(data))}})
		if err != nil {
			if m != nil || !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
				t.Fatalf("Load = %v, %v", m, err)
			}
			return
		}
		if !slices.ContainsFunc(m.Namespaces, func(n *corev1.Namespace) bool { return n.Name == "default" }) {
			t.Fatal("no default namespace")
		}
		for _, p := range m.Pods {
			if _, ok := clusterNodeNumber(p.Spec.NodeName, m.Cluster.Nodes); !ok {
				t.Fatalf("pod %s on %q", p.Name, p.Spec.NodeName)
			}
		}
		DeriveEndpointSlices(m)
	})
}
