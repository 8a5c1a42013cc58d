// Package kubewire is an embeddable library for Kubernetes networking: pod
// networking, IP address management, service proxying, network policy and
// cluster DNS, with netlink, nftables and eBPF drivers. This package holds
// no code; it describes how the others fit together.
//
// # Packages
//
//   - ipam: pure Go address management. Node CIDRs carved from cluster CIDRs,
//     pod IPs per node range (host-local semantics: owner = container ID +
//     interface, round-robin, reserved addresses skipped), ClusterIPs and
//     NodePorts. Stores: memory, and a crash-safe append-only file store that
//     several processes can share (flock).
//   - network: pod attachment. Manager allocates addresses, builds the veth
//     through a LinkDriver and rolls both back on failure; Check reports
//     drift; GC removes attachments that are no longer live. Fabric turns a
//     cluster topology into node routes (host-gw) or a VXLAN overlay, and
//     hands egress masquerade rules to a Masquerader.
//   - service: the service proxy. Service and EndpointSlice model, endpoint
//     selection (traffic policies, topology hints, terminating fallback),
//     a Proxier with change tracking and a bounded-frequency sync loop that
//     hands a Dataplane the node's whole desired State; /healthz, health
//     check node ports, stale UDP conntrack cleanup, Prometheus metrics.
//     service/kubeconv converts k8s.io/api objects.
//   - policy: NetworkPolicy. Own model of policies, namespaces and pods, a
//     compiler to per-pod rules (peer address sets × port ranges, each with
//     the policy and rule it comes from) and Trace, which says whether a
//     connection may pass and which rules decide it. An Enforcer turns
//     pod, namespace, node and policy events into incremental recompiles
//     and dataplane syncs. policy/kubeconv converts k8s.io/api objects.
//   - dns: cluster DNS per the Kubernetes DNS specification: a record index
//     fed by service, endpoint slice, pod and namespace events, and a
//     server (UDP and TCP, EDNS0, truncation) that forwards other names
//     upstream with health checks, a cache and autopath; pod resolv.conf
//     generation. dns/kubeconv converts k8s.io/api objects; dns/nodelocal
//     runs the server on a link-local address of the node with NOTRACK
//     rules (node-local DNS).
//   - driver: the vocabulary drivers share (UnsupportedError, First).
//   - driver/netlink: implements network.LinkDriver, network.RouteDriver and
//     service.Conntrack with vishvananda/netlink. Needs veth, bridge, VXLAN
//     (IPv6 underlay: Linux 3.12), IFA_F_NODAD and conntrack over netlink.
//   - driver/nftables: implements network.Masquerader, network.PortMapper,
//     service.Dataplane, policy.Dataplane and nodelocal.NoTracker with
//     google/nftables, each in a table of its own (inet family nat chains:
//     Linux 5.2; the service proxy's concatenated ranges: 5.6).
//   - driver/fake: in-memory implementations with Dump (and a packet tracer
//     for services), for tests without root.
//   - driver/drivertest: conformance suites every driver runs.
//
// Domain packages (network, ipam, service, policy, dns) own their types and
// the small interfaces they consume; drivers import them, never the reverse,
// and they never import client-go (converters live in kubeconv subpackages).
//
// # Lifetimes
//
// Constructors take a Config or Options struct, check it, probe the kernel
// once and start no goroutine. Drivers are bound to one network namespace at
// construction (Options.NetNS, a path; empty means the caller's) and are safe
// for concurrent use afterwards. Close releases file descriptors and leaves
// kernel state; Cleanup, where offered, removes every kernel object the
// instance owns.
//
// # Ownership
//
// Every driver touches only what it made: host veths are named with a fixed
// prefix and carry the alias "kubewire:<container>/<ifname>"; fabric routes
// carry their own route protocol number; each nftables component instance
// owns exactly one table, named in its Options. Other components may flush
// or delete their own tables freely; a kubewire driver restores its own on
// the next sync.
package kubewire
