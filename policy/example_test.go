package policy_test

import (
	"fmt"
	"net/netip"

	"github.com/kubewire/kubewire/policy"
)

// Compile turns a cluster's NetworkPolicies into per-pod rules; Trace
// tells whether a new connection passes and which policies decided. An
// Enforcer does the same incrementally from events and hands each Program
// to a dataplane (driver/nftables).
func ExampleCompile() {
	ip := netip.MustParseAddr
	cluster := &policy.Cluster{
		Namespaces: []policy.Namespace{{Name: "shop"}, {Name: "monitoring"}},
		Pods: []policy.Pod{
			{Key: policy.Key{Namespace: "shop", Name: "web"}, Labels: policy.Labels{"app": "web"}, IPs: []netip.Addr{ip("10.244.1.5")}, Node: "node1"},
			{Key: policy.Key{Namespace: "shop", Name: "db"}, Labels: policy.Labels{"app": "db"}, IPs: []netip.Addr{ip("10.244.2.7")}, Node: "node2",
				Ports: []policy.NamedPort{{Name: "postgres", Protocol: policy.TCP, Port: 5432}}},
			{Key: policy.Key{Namespace: "monitoring", Name: "prober"}, IPs: []netip.Addr{ip("10.244.1.9")}, Node: "node1"},
		},
		Policies: []policy.Policy{{
			Key:         policy.Key{Namespace: "shop", Name: "db-from-web"},
			PodSelector: policy.Selector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []policy.Rule{{
				Peers: []policy.Peer{{PodSelector: &policy.Selector{MatchLabels: map[string]string{"app": "web"}}}},
				Ports: []policy.PortSpec{{Protocol: policy.TCP, Name: "postgres"}},
			}},
		}},
	}
	prog := policy.Compile(cluster)
	fmt.Println(prog.Trace(ip("10.244.1.5"), ip("10.244.2.7"), policy.TCP, 5432))
	fmt.Println(prog.Trace(ip("10.244.1.9"), ip("10.244.2.7"), policy.TCP, 5432))
	fmt.Println(prog.Trace(ip("10.244.1.5"), ip("10.244.2.7"), policy.TCP, 22))
	// Output:
	// allowed: egress shop/web not isolated; ingress shop/db allowed by shop/db-from-web ingress[0]
	// denied: egress monitoring/prober not isolated; ingress shop/db isolated by shop/db-from-web, no rule allows it
	// denied: egress shop/web not isolated; ingress shop/db isolated by shop/db-from-web, no rule allows it
}
