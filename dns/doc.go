// Package dns is kubewire's cluster DNS: an in-memory index of the
// records of the Kubernetes DNS-Based Service Discovery specification
// (schema 1.1.0), fed one object at a time, and a server that answers
// them over UDP and TCP and forwards every other name upstream. It is
// built on github.com/miekg/dns and follows CoreDNS's kubernetes, cache,
// forward, autopath and loop plugins where the specification is silent.
//
// Kubernetes API objects are converted by dns/kubeconv; this package does
// not import client-go or k8s.io/api.
//
// # Records
//
// Records is the zone (default cluster.local.). The embedder feeds it
// Service, EndpointSlice, Pod and Namespace events (OnServiceAdd, ...)
// and calls MarkSynced once the initial lists are in; until then every
// name in the zone is answered SERVFAIL, so a half-loaded index never
// denies a name that exists. An event changes only the records of its
// object; a lookup is a handful of map reads, and nothing in the zone is
// cached, so the next query sees every event.
//
// The names, with <zone> the cluster zone:
//
//	dns-version.<zone>                          TXT "1.1.0"
//	<svc>.<ns>.svc.<zone>                       A/AAAA: the cluster IPs (both for dual-stack);
//	                                            headless: every ready endpoint address;
//	                                            ExternalName: CNAME to the external name
//	_<port>._<proto>.<svc>.<ns>.svc.<zone>      SRV per named port: to <svc>.<ns>.svc.<zone>
//	                                            (cluster IP), or per ready endpoint to its name
//	                                            (headless); addresses in the additional section
//	<endpoint>.<svc>.<ns>.svc.<zone>            A/AAAA of a headless service's ready endpoint:
//	                                            its hostname, else its address with dashes
//	                                            (10-1-2-3, fd00--5)
//	<a-b-c-d>.<ns>.pod.<zone>                   A/AAAA of a pod address (Config.Pods)
//	<reverse>.in-addr.arpa. / ip6.arpa.         PTR of cluster IPs and headless endpoint
//	                                            addresses (full-nibble IPv6 names)
//
// SRV records have priority 0 and an equal share of weight 100, as
// CoreDNS gives them. Readiness comes from the EndpointSlice ready
// condition as converted (nil means ready; publishNotReadyAddresses makes
// every endpoint ready).
//
// # Negative answers
//
// Answers follow DNS rules (RFC 1034, RFC 8020): a name that does not
// exist is NXDOMAIN whatever the type asked; a name that exists without
// records of the type asked is NODATA (NOERROR, empty answer). Both carry
// the zone's SOA in the authority section, whose minimum (and TTL) is the
// record TTL, so negative answers are cached no longer than positive
// ones. Existing names include the empty non-terminals svc.<zone>;
// <ns>.svc.<zone> for a namespace that exists (a Namespace was fed, or a
// service or pod lives in it); pod.<zone>, and <ns>.pod.<zone> for a
// namespace that exists, unless pod records are disabled; and
// _<proto>.<svc>.<ns>.svc.<zone> when an SRV name exists below it. Matching is case-insensitive and "*" is an
// ordinary label: there are no wildcards.
//
// A headless service with no ready endpoint has no address records; like
// CoreDNS, its name is then NXDOMAIN (the specification defines no
// records for it, and no name below it exists either).
//
// Where this package deliberately differs from CoreDNS: a service's SRV
// records exist only under _<port>._<proto> names (CoreDNS also answers
// SRV at the service name), endpoint names exist only under headless
// services, and TXT or other types at a name that does not exist are
// NXDOMAIN (CoreDNS answers NODATA for any TXT).
//
// # Server
//
// Server answers the zone from Records and forwards other names:
//
//   - to the upstreams of ServerConfig.Forward (addresses, or a
//     resolv.conf), or of the longest matching StubDomains entry; tried
//     in order, failing over on timeouts, network errors, SERVFAIL and
//     REFUSED; an upstream that failed MaxFails times is tried last until
//     a health check (". IN NS") succeeds again;
//   - over UDP with a TCP retry of truncated answers, or always over TCP
//     (ForwardConfig.TCP);
//   - at most MaxConcurrent at once: beyond that the query is answered
//     REFUSED at once (as CoreDNS's max_concurrent), telling the client to
//     try another server rather than wait;
//   - through a cache of positive and negative answers (TTL capped by
//     CacheConfig, LRU bounded), which never holds cluster names.
//
// Without a forwarder for a name, the answer is REFUSED.
//
// Loop detection: when Run starts, each forwarder sends a random probe
// name (type HINFO) to each of its upstreams. If a probe comes back to
// this server, an upstream forwards to us: forwarding through that
// forwarder stops (its names get SERVFAIL), ForwardLoop reports an error
// wrapping ErrLoop, the loop_detected metric is set and the Logger gets
// an error.
//
// Autopath (AutopathConfig) answers a pod's first search path candidate
// <name>.<ns>.svc.<zone> with the first candidate of its whole search
// path that exists, saving the client a query per search domain.
//
// Repeated questions in the zone (UDP and TCP) are answered from the packed
// reply of the first (ZoneAnswerConfig): the same bytes with the query's
// ID, with no unpacking, lookup or packing, and no allocation. Every
// change to Records retires all kept replies at once, so a watch event
// is visible in the next answer as without reuse; replies that depend on
// the client (autopath) are never kept.
//
// Replies honour EDNS0: a client's advertised buffer size (at least 512,
// at most ServerConfig.MaxUDPSize) bounds UDP replies; larger ones are
// truncated with the TC bit and answered in full over TCP (up to 64 KiB).
// EDNS versions other than 0 get BADVERS.
//
// Metrics (Prometheus, on ServerConfig.Registerer) mirror CoreDNS's:
// requests by transport, family and type; responses by rcode; request
// duration by type; cache hits, misses and entries; forwarded requests,
// responses, round trip times, health check failures, upstream health,
// max-concurrent rejections and detected loops; autopath successes.
//
// # Lifetimes
//
// NewRecords and NewServer start nothing. Server.Listen opens the sockets
// in the network namespace of the calling thread (so a caller can run it
// inside another namespace and Run anywhere); Run serves until its
// context ends and then closes them. For a node-local cache (a link-local
// address on a link of its own, its traffic exempt from conntrack), see
// package dns/nodelocal, which opens the sockets to give the Server.
//
// PodResolvConf computes a pod's resolv.conf as kubelet does.
package dns
