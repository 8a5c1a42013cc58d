// Command agent is a kubewire node agent fed by the Kubernetes API: the API
// server is the distributed engine, and what runs on every node is the
// library. It watches Services, EndpointSlices, Pods, Namespaces, Nodes and
// NetworkPolicies with client-go informers and keeps this node's
// dataplane in step:
//
//   - the service proxy (service.Proxier with the nftables driver), like
//     kube-proxy in nftables mode;
//   - NetworkPolicy for this node's pods (policy.Enforcer with the
//     nftables driver);
//   - optionally the cross-node fabric from the Node objects' pod CIDRs
//     (-fabric host-gw or vxlan, with egress masquerade), like flannel;
//   - optionally the cluster DNS (-dns-listen), like CoreDNS.
//
// Pods are attached by the CNI plugin (examples/cni), not by the agent.
//
//	agent -node $(hostname) -cluster-cidr 10.244.0.0/16 -fabric host-gw
//	agent -kubeconfig ~/.kube/config -node node1 -dns-listen 169.254.20.10:53
//
// Like kube-proxy it serves /healthz on :10256 and /metrics on
// 127.0.0.1:10249; -admin-network-policy also enforces
// AdminNetworkPolicy and BaselineAdminNetworkPolicy.
//
// On SIGINT/SIGTERM it stops; with -cleanup it also removes every table
// and route it made. This binary is a composition root, as DESIGN.md
// describes: it builds the drivers and the managers and connects them to
// informers through the kubeconv converters.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	anpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
)

func main() {
	var (
		cfg        Config
		kubeconfig string
		cidrs      string
		dnsListen  string
		cleanup    bool
	)
	flag.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default: in-cluster configuration)")
	flag.StringVar(&cfg.Node, "node", "", "this node's name (required)")
	flag.StringVar(&cfg.NetNS, "netns", "", "network namespace to program (default: the agent's own)")
	flag.StringVar(&cidrs, "cluster-cidr", "", "pod ranges, comma-separated (traffic from outside them to a ClusterIP is masqueraded)")
	flag.StringVar(&cfg.Fabric, "fabric", "", "cross-node fabric from Node pod CIDRs: host-gw or vxlan (default: none)")
	flag.StringVar(&dnsListen, "dns-listen", "", "serve the cluster DNS on this address (UDP and TCP), e.g. 169.254.20.10:53")
	flag.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "cluster DNS zone")
	flag.BoolVar(&cleanup, "cleanup", false, "remove the tables and routes made on exit")
	adminPolicies := flag.Bool("admin-network-policy", false, "also enforce AdminNetworkPolicy and BaselineAdminNetworkPolicy (their CRDs must be installed)")
	flag.StringVar(&cfg.HealthzAddr, "healthz-bind-address", "0.0.0.0:10256", "serve /healthz and /livez here, as kube-proxy does (\"\": off)")
	flag.StringVar(&cfg.MetricsAddr, "metrics-bind-address", "127.0.0.1:10249", "serve Prometheus /metrics here (\"\": off)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg.Logger = log
	for s := range strings.SplitSeq(cidrs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			fail(fmt.Errorf("-cluster-cidr %q: %w", s, err))
		}
		cfg.ClusterCIDRs = append(cfg.ClusterCIDRs, p.Masked())
	}
	if dnsListen != "" {
		ap, err := netip.ParseAddrPort(dnsListen)
		if err != nil {
			fail(fmt.Errorf("-dns-listen %q: %w", dnsListen, err))
		}
		cfg.DNSListen = []netip.AddrPort{ap}
	}
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		fail(fmt.Errorf("kubernetes client configuration: %w", err))
	}
	rc.UserAgent = "kubewire-agent"
	cfg.Client, err = kubernetes.NewForConfig(rc)
	if err != nil {
		fail(err)
	}
	if *adminPolicies {
		if cfg.AdminClient, err = anpclient.NewForConfig(rc); err != nil {
			fail(err)
		}
	}
	a, err := New(cfg)
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = a.Run(ctx)
	if cleanup {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = errors.Join(err, a.Cleanup(cctx))
		cancel()
	}
	err = errors.Join(err, a.Close())
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "agent:", err)
	os.Exit(1)
}
