package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	anp "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	anpclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	anpinformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"

	"github.com/kubewire/kubewire/dns"
	dnskube "github.com/kubewire/kubewire/dns/kubeconv"
	netlinkdrv "github.com/kubewire/kubewire/driver/netlink"
	nftdrv "github.com/kubewire/kubewire/driver/nftables"
	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/network"
	netkube "github.com/kubewire/kubewire/network/kubeconv"
	"github.com/kubewire/kubewire/policy"
	policykube "github.com/kubewire/kubewire/policy/kubeconv"
	"github.com/kubewire/kubewire/service"
	servicekube "github.com/kubewire/kubewire/service/kubeconv"
)

// Config configures an Agent.
type Config struct {
	// Client reaches the Kubernetes API (required).
	Client kubernetes.Interface
	// Node is the name of this node's Node object (required).
	Node string
	// NetNS is the network namespace to program ("": the agent's own).
	NetNS string
	// ClusterCIDRs are the pod ranges.
	ClusterCIDRs []netip.Prefix
	// Fabric, "host-gw" or "vxlan", builds routes to the other nodes' pod
	// ranges from the Node objects, with egress masquerade; "" leaves the
	// fabric to something else.
	Fabric string
	// DNSListen, when set, serves the cluster DNS on these addresses.
	DNSListen     []netip.AddrPort
	ClusterDomain string
	// AdminClient, when set, watches AdminNetworkPolicies and the
	// BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1; the
	// CRDs must be installed, or the agent waits for them).
	AdminClient anpclient.Interface
	// HealthzAddr serves /healthz and /livez as kube-proxy does on 10256
	// (healthy once the service proxy synced recently); MetricsAddr serves
	// /metrics (the proxy's, the DNS server's and Go's). "": off.
	HealthzAddr, MetricsAddr string
	Logger                   *slog.Logger
}

// Agent keeps one node's dataplane in step with the Kubernetes API.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	factory informers.SharedInformerFactory
	nodes   corelisters.NodeLister

	services *nftdrv.ServiceProxy
	proxier  *service.Proxier
	policies *nftdrv.PolicyDataplane
	enforcer *policy.Enforcer

	fabricMode network.FabricMode
	links      *netlinkdrv.Driver
	masq       *nftdrv.Masquerade
	fabric     *network.Fabric
	kick       chan struct{} // a Node changed: recompute the fabric

	records *dns.Records
	dns     *dns.Server

	synced   []cache.InformerSynced // every handler has seen the initial list
	health   *service.ProxyHealth
	registry *prometheus.Registry
	admin    anpinformers.SharedInformerFactory
}

// New checks cfg, opens the drivers and registers the informers; it
// starts nothing.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("agent: Config.Client is required")
	case cfg.Node == "":
		return nil, errors.New("agent: Config.Node is required (-node)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
	made := false
	defer func() {
		if !made {
			_ = a.Close() // nothing half-made is left open
		}
	}()
	var err error
	if cfg.Fabric != "" {
		if err := a.fabricMode.UnmarshalText([]byte(cfg.Fabric)); err != nil {
			return nil, fmt.Errorf("agent: fabric %q: %w", cfg.Fabric, err)
		}
	}
	opts := func(table string) nftdrv.Options { return nftdrv.Options{NetNS: cfg.NetNS, Table: table} }
	if a.services, err = nftdrv.NewService(nftdrv.ServiceOptions{Options: opts("kubewire-services"), ClusterCIDRs: cfg.ClusterCIDRs}); err != nil {
		return nil, err
	}
	a.health = service.NewProxyHealth(0, nil)
	a.registry = prometheus.NewRegistry()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := service.NewMetrics()
	a.registry.MustRegister(metrics)
	if a.proxier, err = service.NewProxier(service.Config{Dataplane: a.services, Node: service.NodeInfo{Name: cfg.Node},
		Health: a.health, Metrics: metrics, Logger: a.log}); err != nil {
		return nil, err
	}
	if a.policies, err = nftdrv.NewPolicy(nftdrv.PolicyOptions{Options: opts("kubewire-policy"), Node: cfg.Node}); err != nil {
		return nil, err
	}
	if a.enforcer, err = policy.NewEnforcer(policy.Config{Dataplane: a.policies, Logger: a.log}); err != nil {
		return nil, err
	}
	if cfg.Fabric != "" {
		if a.links, err = netlinkdrv.New(netlinkdrv.Options{NetNS: cfg.NetNS}); err != nil {
			return nil, err
		}
		if a.masq, err = nftdrv.NewMasquerade(opts("kubewire-masq")); err != nil {
			return nil, err
		}
		if a.fabric, err = network.NewFabric(network.FabricConfig{Routes: a.links, Masquerade: a.masq,
			ClusterCIDRs: cfg.ClusterCIDRs, Logger: a.log}); err != nil {
			return nil, err
		}
	}
	if len(cfg.DNSListen) > 0 {
		if a.records, err = dns.NewRecords(dns.Config{Zone: cfg.ClusterDomain}); err != nil {
			return nil, err
		}
		if a.dns, err = dns.NewServer(dns.ServerConfig{Records: a.records, Listen: cfg.DNSListen, Registerer: a.registry, Logger: a.log}); err != nil {
			return nil, err
		}
		if err := a.listenDNS(); err != nil {
			return nil, err
		}
	}
	a.factory = informers.NewSharedInformerFactory(cfg.Client, 0)
	if cfg.AdminClient != nil {
		a.admin = anpinformers.NewSharedInformerFactory(cfg.AdminClient, 0)
	}
	if err := a.register(); err != nil {
		return nil, err
	}
	made = true
	return a, nil
}

// listenDNS opens the DNS sockets in the node's namespace.
func (a *Agent) listenDNS() error {
	if a.cfg.NetNS == "" {
		return a.dns.Listen()
	}
	h, err := netns.Open(a.cfg.NetNS)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Do(a.dns.Listen)
}

// DNSAddrs returns the UDP addresses the cluster DNS serves on.
func (a *Agent) DNSAddrs() []netip.AddrPort {
	if a.dns == nil {
		return nil
	}
	return a.dns.UDPAddrs()
}

// hook is an informer and a handler of its events.
type hook struct {
	inf cache.SharedIndexInformer
	h   cache.ResourceEventHandler
}

// register connects the informers to the components through the
// kubeconv converters.
func (a *Agent) register() error {
	core, disc, netw := a.factory.Core().V1(), a.factory.Discovery().V1(), a.factory.Networking().V1()
	svcs, slices_, pods := core.Services().Informer(), disc.EndpointSlices().Informer(), core.Pods().Informer()
	nss, nodes, nps := core.Namespaces().Informer(), core.Nodes().Informer(), netw.NetworkPolicies().Informer()
	a.nodes = core.Nodes().Lister()
	p, e, log := a.proxier, a.enforcer, a.log
	otherNode := fmt.Errorf("%w: another node", servicekube.ErrSkip)
	handlers := []hook{
		// The service proxy.
		{svcs, bridge[*v1.Service, *service.Service]{kind: "Service", log: log, skip: servicekube.ErrSkip,
			conv: func(s *v1.Service) (*service.Service, error) { return servicekube.Service(s, servicekube.Options{}) },
			add:  p.OnServiceAdd, update: p.OnServiceUpdate, del: p.OnServiceDelete}},
		{slices_, bridge[*discoveryv1.EndpointSlice, *service.EndpointSlice]{kind: "EndpointSlice", log: log, skip: servicekube.ErrSkip,
			conv: servicekube.EndpointSlice, add: p.OnEndpointSliceAdd, update: p.OnEndpointSliceUpdate, del: p.OnEndpointSliceDelete}},
		{nodes, bridge[*v1.Node, service.NodeInfo]{kind: "Node", log: log, skip: servicekube.ErrSkip,
			conv: func(n *v1.Node) (service.NodeInfo, error) {
				if n.Name != a.cfg.Node {
					return service.NodeInfo{}, otherNode
				}
				return servicekube.Node(n)
			},
			add: noErr(p.OnNodeUpdate), update: func(_, n service.NodeInfo) error { p.OnNodeUpdate(n); return nil }, del: func(service.NodeInfo) {}}},
		// NetworkPolicy.
		{nss, bridge[*v1.Namespace, policy.Namespace]{kind: "Namespace", log: log, skip: policykube.ErrSkip,
			conv: policykube.Namespace, add: noErr(e.OnNamespaceAdd), update: noErr2(e.OnNamespaceUpdate), del: e.OnNamespaceDelete}},
		{pods, bridge[*v1.Pod, *policy.Pod]{kind: "Pod", log: log, skip: policykube.ErrSkip,
			conv: policykube.Pod, add: noErr(e.OnPodAdd), update: noErr2(e.OnPodUpdate), del: e.OnPodDelete}},
		{nodes, bridge[*v1.Node, policy.Node]{kind: "Node", log: log, skip: policykube.ErrSkip,
			conv: policykube.Node, add: noErr(e.OnNodeAdd), update: noErr2(e.OnNodeUpdate), del: e.OnNodeDelete}},
		{nps, bridge[*networkingv1.NetworkPolicy, *policy.Policy]{kind: "NetworkPolicy", log: log, skip: policykube.ErrSkip,
			conv: policykube.Policy, add: noErr(e.OnPolicyAdd), update: noErr2(e.OnPolicyUpdate), del: e.OnPolicyDelete}},
	}
	if a.admin != nil {
		v := a.admin.Policy().V1alpha1()
		handlers = append(handlers,
			hook{v.AdminNetworkPolicies().Informer(), bridge[*anp.AdminNetworkPolicy, *policy.AdminPolicy]{kind: "AdminNetworkPolicy",
				log: log, skip: policykube.ErrSkip, conv: policykube.AdminPolicy,
				add: noErr(e.OnAdminPolicyAdd), update: noErr2(e.OnAdminPolicyUpdate), del: e.OnAdminPolicyDelete}},
			hook{v.BaselineAdminNetworkPolicies().Informer(), bridge[*anp.BaselineAdminNetworkPolicy, *policy.AdminPolicy]{
				kind: "BaselineAdminNetworkPolicy", log: log, skip: policykube.ErrSkip, conv: policykube.BaselineAdminPolicy,
				add:    func(b *policy.AdminPolicy) error { e.OnBaselinePolicyUpdate(nil, b); return nil },
				update: noErr2(e.OnBaselinePolicyUpdate),
				del:    func(b *policy.AdminPolicy) { e.OnBaselinePolicyUpdate(b, nil) }}})
	}
	if a.fabric != nil {
		handlers = append(handlers, hook{nodes, cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { a.kickFabric() }, UpdateFunc: func(any, any) { a.kickFabric() }, DeleteFunc: func(any) { a.kickFabric() },
		}})
	}
	if r := a.records; r != nil {
		svcLister := core.Services().Lister()
		handlers = append(handlers, []hook{
			{nss, bridge[*v1.Namespace, *dns.Namespace]{kind: "Namespace", log: log, skip: dnskube.ErrSkip,
				conv: dnskube.Namespace, add: r.OnNamespaceAdd, update: func(_, n *dns.Namespace) error { return r.OnNamespaceAdd(n) },
				del: r.OnNamespaceDelete}},
			{svcs, bridge[*v1.Service, *dns.Service]{kind: "Service", log: log, skip: dnskube.ErrSkip,
				conv: dnskube.Service, add: r.OnServiceAdd, update: r.OnServiceUpdate, del: r.OnServiceDelete}},
			{slices_, bridge[*discoveryv1.EndpointSlice, *dns.EndpointSlice]{kind: "EndpointSlice", log: log, skip: dnskube.ErrSkip,
				conv: func(es *discoveryv1.EndpointSlice) (*dns.EndpointSlice, error) {
					// The Service tells whether not-ready addresses are
					// published; without it (not seen yet), they are not.
					svc, _ := svcLister.Services(es.Namespace).Get(es.Labels[discoveryv1.LabelServiceName])
					return dnskube.EndpointSlice(es, svc)
				},
				add: r.OnEndpointSliceAdd, update: r.OnEndpointSliceUpdate, del: r.OnEndpointSliceDelete}},
			{pods, bridge[*v1.Pod, *dns.Pod]{kind: "Pod", log: log, skip: dnskube.ErrSkip,
				conv: dnskube.Pod, add: r.OnPodAdd, update: r.OnPodUpdate, del: r.OnPodDelete}},
		}...)
	}
	for _, h := range handlers {
		reg, err := h.inf.AddEventHandler(h.h)
		if err != nil {
			return err
		}
		a.synced = append(a.synced, reg.HasSynced)
	}
	return nil
}

// Run starts the informers, waits until they have listed everything (a
// partial view must not delete rules or deny names), then runs the
// components until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.factory.Start(ctx.Done())
	defer a.factory.Shutdown()
	synced := a.factory.WaitForCacheSync(ctx.Done())
	if a.admin != nil {
		a.admin.Start(ctx.Done())
		defer a.admin.Shutdown()
		maps.Copy(synced, a.admin.WaitForCacheSync(ctx.Done()))
	}
	for typ, ok := range synced {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agent: the %v informer did not sync", typ)
		}
	}
	// The stores are full; the handlers may still be delivering the
	// initial list. Wait for them too, or the first sync would delete
	// rules of objects not handed over yet (kube-proxy waits likewise).
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return nil // ctx ended
	}
	a.log.Info("informers synced; programming the node", "node", a.cfg.Node)
	if a.records != nil {
		a.records.MarkSynced()
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				cancel() // one component failing stops the agent: let it restart
			}
		})
	}
	run("service proxy", a.proxier.Run)
	run("network policy", a.enforcer.Run)
	if a.fabric != nil {
		run("fabric", a.runFabric)
	}
	if a.dns != nil {
		run("dns", a.dns.Run)
	}
	if a.cfg.HealthzAddr != "" {
		run("healthz", func(ctx context.Context) error { return service.RunHealthz(ctx, a.cfg.HealthzAddr, a.health) })
	}
	if a.cfg.MetricsAddr != "" {
		run("metrics", a.serveMetrics)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serveMetrics serves /metrics on MetricsAddr until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: a.cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runFabric syncs the fabric with the Node objects whenever one changes.
func (a *Agent) runFabric(ctx context.Context) error {
	a.kickFabric() // a first sync
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		}
		t, ok, err := a.topology()
		if err != nil {
			a.log.Warn("fabric: cannot read the nodes", "err", err)
			continue
		}
		if !ok {
			continue // this node has no pod CIDR yet
		}
		if err := a.fabric.Sync(ctx, t); err != nil {
			a.log.Warn("fabric sync failed", "err", err)
		}
	}
}

// kickFabric asks runFabric for a sync (coalesced with pending ones).
func (a *Agent) kickFabric() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// topology reads this node and its peers from the Node lister.
func (a *Agent) topology() (network.Topology, bool, error) {
	list, err := a.nodes.List(labels.Everything())
	if err != nil {
		return network.Topology{}, false, err
	}
	t := network.Topology{Mode: a.fabricMode}
	found := false
	for _, kn := range list {
		n, err := netkube.Node(kn)
		if err != nil {
			a.log.Warn("ignoring a node", "err", err)
			continue
		}
		if a.fabricMode == network.FabricVXLAN {
			// The overlay runs over the IPv4 underlay.
			n.Addresses = slices.DeleteFunc(n.Addresses, netip.Addr.Is6)
		}
		if n.Name == a.cfg.Node {
			t.Local, found = n, len(n.PodCIDRs) > 0
			continue
		}
		if len(n.PodCIDRs) > 0 && len(n.Addresses) > 0 {
			t.Peers = append(t.Peers, n)
		}
	}
	slices.SortFunc(t.Peers, func(x, y network.Node) int { return strings.Compare(x.Name, y.Name) })
	return t, found, nil
}

// Cleanup removes every table the agent made, and the fabric's routes to
// peers.
func (a *Agent) Cleanup(ctx context.Context) error {
	var errs []error
	if a.fabric != nil {
		// Routes first: a fabric sync also writes the masquerade rules.
		if t, ok, err := a.topology(); err == nil && ok {
			t.Peers = nil
			errs = append(errs, a.fabric.Sync(ctx, t))
		}
	}
	if a.services != nil {
		errs = append(errs, a.services.Cleanup(ctx))
	}
	if a.policies != nil {
		errs = append(errs, a.policies.Cleanup(ctx))
	}
	if a.masq != nil {
		errs = append(errs, a.masq.Cleanup(ctx))
	}
	return errors.Join(errs...)
}

// Close releases the drivers' descriptors.
func (a *Agent) Close() error {
	var errs []error
	if a.services != nil {
		errs = append(errs, a.services.Close())
	}
	if a.policies != nil {
		errs = append(errs, a.policies.Close())
	}
	if a.masq != nil {
		errs = append(errs, a.masq.Close())
	}
	if a.links != nil {
		errs = append(errs, a.links.Close())
	}
	if a.dns != nil {
		errs = append(errs, a.dns.Close())
	}
	return errors.Join(errs...)
}
