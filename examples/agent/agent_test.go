package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nft "github.com/google/nftables"
	mdns "github.com/miekg/dns"
	vnl "github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	anp "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	anpfake "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned/fake"

	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/internal/testmain"
)

func TestMain(m *testing.M) { testmain.Run(m) }

func ptr[T any](v T) *T { return &v }

func k8sNode(name, ip, cidr string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDRs: []string{cidr}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}}}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 10 s", what)
}

// TestAgent runs the agent against a fake API server on a node namespace:
// objects created, changed and deleted through the API reach the service
// proxy's and the policy's tables, the fabric's routes and the DNS
// answers; an invalid object is ignored; Cleanup removes what it made.
func TestAgent(t *testing.T) {
	sb := sandbox.New(t)
	node, peer := sb.Namespace("node1"), sb.Namespace("node2")
	sb.Connect(node, "eth0", []netip.Prefix{netip.MustParsePrefix("198.18.1.11/24")},
		peer, "eth0", []netip.Prefix{netip.MustParsePrefix("198.18.1.12/24")})

	ctx := context.Background()
	web := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: v1.ServiceSpec{
		Type: v1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"},
		Ports: []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}}}}
	client := fake.NewClientset(
		&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		k8sNode("node1", "198.18.1.11", "10.244.0.0/24"),
		k8sNode("node2", "198.18.1.12", "10.244.1.0/24"),
		web,
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-x",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(v1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: ptr("node1")}}},
		&v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"}},
			Spec:   v1.PodSpec{NodeName: "node1"},
			Status: v1.PodStatus{Phase: v1.PodRunning, PodIPs: []v1.PodIP{{IP: "10.244.0.5"}}}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "isolate-web"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
		// Invalid: logged and ignored, the rest goes on.
		&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "broken"}, Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: "10.96.0.300", ClusterIPs: []string{"10.96.0.300"},
			Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}}},
	)
	adminClient := anpfake.NewSimpleClientset()
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logs)
		}
	})
	healthz, metrics := freeAddr(t), freeAddr(t)
	a, err := New(Config{Client: client, AdminClient: adminClient, Node: "node1", NetNS: node.Path(), Fabric: "host-gw",
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		DNSListen:    []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, ClusterDomain: "cluster.local",
		HealthzAddr: healthz, MetricsAddr: metrics, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	defer stop()

	dump := func(d interface {
		Dump(context.Context) (string, error)
	}) string {
		s, _ := d.Dump(ctx)
		return s
	}
	eventually(t, "the service in the service table", func() bool {
		s := dump(a.services)
		return strings.Contains(s, "10.96.0.20") && strings.Contains(s, "10.244.0.5")
	})
	eventually(t, "the isolated pod in the policy table", func() bool { return strings.Contains(dump(a.policies), "10.244.0.5") })
	routeTo := func(dst string) bool {
		routes, err := node.Netlink().RouteList(nil, vnl.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(routes, func(r vnl.Route) bool {
			return r.Dst != nil && r.Dst.String() == dst && r.Gw.String() == "198.18.1.12"
		})
	}
	eventually(t, "the route to node2's pods", func() bool { return routeTo("10.244.1.0/24") })
	ask := func(name string) *mdns.Msg {
		conn, err := node.Dial(ctx, "udp", a.DNSAddrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		r, _, err := (&mdns.Client{Net: "udp", Timeout: 3 * time.Second}).ExchangeWithConn(new(mdns.Msg).SetQuestion(name, mdns.TypeA), &mdns.Conn{Conn: conn})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask("web.shop.svc.cluster.local."); len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "10.96.0.20") {
		t.Fatalf("DNS: %v", r)
	}
	if strings.Contains(dump(a.services), "10.96.0.300") {
		t.Error("the invalid service was programmed")
	}
	if l := logs.String(); !strings.Contains(l, "ignoring an invalid object") || !strings.Contains(l, `10.96.0.300`) {
		t.Errorf("the invalid service was not reported:\n%s", l)
	}
	// kube-proxy's endpoints: healthy once the proxy synced; metrics.
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, "/healthz 200", func() bool { code, _ := get("http://" + healthz + "/healthz"); return code == http.StatusOK })
	eventually(t, "/metrics", func() bool {
		code, body := get("http://" + metrics + "/metrics")
		return code == http.StatusOK && strings.Contains(body, "kubewire_service_sync_duration_seconds") &&
			strings.Contains(body, "kubewire_dns_requests_total") && strings.Contains(body, "go_goroutines")
	})

	// Changes through the API.
	if err := client.CoreV1().Services("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Nodes().Delete(ctx, "node2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "isolate-web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the service gone from the table", func() bool { return !strings.Contains(dump(a.services), "10.96.0.20") })
	eventually(t, "the pod no longer isolated", func() bool { return !strings.Contains(dump(a.policies), "10.244.0.5") })
	eventually(t, "the route to the deleted node gone", func() bool { return !routeTo("10.244.1.0/24") })
	eventually(t, "NXDOMAIN for the deleted service", func() bool {
		return ask("web.shop.svc.cluster.local.").Rcode == mdns.RcodeNameError
	})
	// An AdminNetworkPolicy isolates the pod again, until it goes.
	deny := &anp.AdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-into-shop"}, Spec: anp.AdminNetworkPolicySpec{
		Priority: 10,
		Subject:  anp.AdminNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "shop"}}},
		Ingress: []anp.AdminNetworkPolicyIngressRule{{Name: "deny-all", Action: anp.AdminNetworkPolicyRuleActionDeny,
			From: []anp.AdminNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}}},
	}}
	if _, err := adminClient.PolicyV1alpha1().AdminNetworkPolicies().Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pod isolated by the admin policy", func() bool {
		return strings.Contains(dump(a.policies), "10.244.0.5 : jump admin-ingress-")
	})
	if err := adminClient.PolicyV1alpha1().AdminNetworkPolicies().Delete(ctx, "deny-into-shop", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the admin policy gone", func() bool { return !strings.Contains(dump(a.policies), "10.244.0.5") })

	if _, err := client.CoreV1().Nodes().Create(ctx, k8sNode("node3", "198.18.1.12", "10.244.2.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route to a new node", func() bool { return routeTo("10.244.2.0/24") })

	stop()
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if routeTo("10.244.2.0/24") {
		t.Error("Cleanup left the fabric's route")
	}
	c, err := nft.New(nft.WithNetNSFd(node.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		t.Errorf("Cleanup left table %s", tb.Name)
	}
}

// logBuffer keeps the agent's log, printed when the test fails.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{{}, {Client: fake.NewClientset()}, {Client: fake.NewClientset(), Node: "n", Fabric: "geneve"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
