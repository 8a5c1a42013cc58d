// Package nftables is kubewire's nftables driver. It talks to the kernel over
// netlink (github.com/google/nftables); it never runs the nft binary.
//
// It implements egress masquerade (Masquerade implements
// network.Masquerader), host ports (PortMap implements
// network.PortMapper), the service proxy (ServiceProxy implements
// service.Dataplane, modelled on kube-proxy's nftables mode; see
// service.go for its ruleset), NetworkPolicy enforcement (PolicyDataplane
// implements policy.Dataplane; see policy.go) and the NOTRACK rules of
// node-local DNS (NoTrack implements nodelocal.NoTracker).
//
// # Table ownership
//
// Every driver instance owns exactly one nftables table of family inet, named
// by Options.Table, in the one network namespace named by Options.NetNS. The
// contract is:
//
//   - The instance owns the whole table. Each SyncMasquerade replaces the
//     table's entire contents in one netlink transaction (the table is
//     deleted and rebuilt within the batch, so packets see the old or the new
//     ruleset, never a mix). Chains, sets or rules that others add to the
//     table are removed by the next sync. Do not put anything in it.
//   - The instance never reads, changes or deletes any other table, and never
//     flushes the ruleset. Other components (kube-proxy, firewalld, a CNI
//     plugin, another kubewire driver) keep their own tables and may flush or
//     rebuild them at will without affecting this one.
//   - Others may delete the table (an operator running
//     "nft delete table inet NAME", for instance): the masquerade stops
//     until the next SyncMasquerade, which recreates it. Callers that must
//     survive such interference should resync periodically.
//   - Two instances must not share a table name in one namespace: use one
//     name per instance (e.g. "kubewire-masq").
//   - Cleanup deletes the table; Close only releases the connection and
//     leaves the table in place, so a restarting process keeps masquerading
//     until it syncs again.
//
// # Ruleset
//
// For a table T the ruleset is:
//
//	table inet T {
//		set masq-src-v4 { type ipv4_addr; flags interval; elements = { <Sources> } }
//		set masq-src-v6 { type ipv6_addr; flags interval; elements = { <Sources> } }
//		set no-masq-dst-v4 { type ipv4_addr; flags interval; elements = { <Except> } }
//		set no-masq-dst-v6 { type ipv6_addr; flags interval; elements = { <Except> } }
//		chain postrouting {
//			type nat hook postrouting priority srcnat;
//			ip saddr @masq-src-v4 ip daddr != @masq-src-v4 ip daddr != @no-masq-dst-v4 masquerade [fully-random] comment "kubewire: ..."
//			ip6 saddr @masq-src-v6 ip6 daddr != @masq-src-v6 ip6 daddr != @no-masq-dst-v6 masquerade [fully-random] comment "kubewire: ..."
//		}
//	}
//
// Traffic from a source range to any source range is never masqueraded, in
// addition to the Except destinations. A family without sources gets no rule.
// Prefixes are merged (overlapping and adjacent ones) before they become
// interval set elements. Empty Sources deletes the table altogether.
//
// # Host ports
//
// A PortMap owns its table too, but unlike a Masquerade it is built to be
// shared by many instances and processes (a CNI plugin is a new process on
// every call): the table holds the mappings of every owner, each element
// tagged with its owner, and a sync changes only the elements of one owner,
// in one transaction. For a table T the ruleset, constant whatever the
// number of mappings, is:
//
//	table inet T {
//		map hostport-v4 { type inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service }
//		map hostport-v6 { type inet_proto . ipv6_addr . inet_service : ipv6_addr . inet_service }
//		map hostport-any-v4 { type inet_proto . inet_service : ipv4_addr . inet_service }
//		map hostport-any-v6 { type inet_proto . inet_service : ipv6_addr . inet_service }
//		set hairpin-v4 { type ipv4_addr . ipv4_addr }   # pod . pod, one per mapped pod
//		set hairpin-v6 { type ipv6_addr . ipv6_addr }
//		set owner-names { type ipv6_addr }   # owners longer than 253 bytes, by digest
//		set generation { type integer }      # one element, replaced by every change
//		chain prerouting { type nat hook prerouting priority dstnat; jump hostports }
//		chain output { type nat hook output priority dstnat; jump hostports }
//		chain hostports {
//			meta nfproto ipv4 dnat ip to meta l4proto . ip daddr . th dport map @hostport-v4
//			meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostport-any-v4
//			(the same for ipv6, with ::1)
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat;
//			meta nfproto ipv4 ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade
//			(the same for ipv6)
//		}
//	}
//
// A map element is "proto . [host address .] host port : pod address . pod
// port" with the owner as its comment (owners longer than fit in a comment
// are tagged "~digest" and spelled out in owner-names). A lookup miss ends
// the rule, so there are no verdicts in the maps; a specific host address
// is looked up before the wildcard. The hairpin rule masquerades a pod that
// reaches itself through a host port, so its reply comes back through the
// node. Loopback destinations are never mapped.
//
// SyncPortMappings reads the maps, refuses host sides another owner holds
// or overlaps (network.ErrPortConflict), and sends one batch that replaces
// the generation element and adds and deletes the owner's elements (and the
// hairpin elements that follow). Two writers that read the same generation
// cannot both commit: the second batch fails as a whole (its generation
// element is gone) and is retried after reading again, so conflicts are
// also detected between processes. A table whose sets, chains or rules are
// not as this version writes them is rebuilt, keeping the mappings that
// could be read. Removing or changing a mapping does not touch conntrack:
// established flows (UDP ones especially) keep their old translation until
// they expire, as with other nftables NAT rules.
//
// # Service proxy
//
// ServiceProxy's table is flat: a service port is elements of a few sets
// and maps keyed by "daddr . l4proto . dport" (node ports: "l4proto .
// dport"), not chains of its own as in kube-proxy. The endpoints of a key
// with N of them are "key . 0" to "key . N-1" in the map of that count, and
// one rule per count in use DNATs to "key . numgen random mod N" there:
//
//	chain service-dnat {
//		dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service-dnat-n3-v4
//		...
//	}
//
// Masquerade marks, the eTP Local short-circuit, loadBalancerSourceRanges,
// hairpin and the refusal of traffic without endpoints are set lookups in
// fixed chains (see skeleton in service.go). A service change is therefore
// only element additions and deletions: the kernel neither looks sets up by
// name nor revalidates the jump graph, and with service.Hint.Exact the Go
// side only looks at the ports that changed, so one change costs about the
// same with ten services or ten thousand. Ports with session affinity keep
// kube-proxy's per-service and per-endpoint chains (per-endpoint affinity
// sets with timeouts, which nft can read), reached through a verdict map.
// The table stays readable (and re-readable) with "nft list table".
//
// # Network policy
//
// PolicyDataplane enforces a policy.Program after service DNAT, in the
// forward hook: replies of allowed connections pass first (ct state
// established,related), then each packet is dispatched by source address
// to the egress chain of an isolated pod and by destination address to the
// ingress chain of an isolated pod, through verdict maps. A chain holds one
// rule per allowed port range, matching a peer interval set, and ends in
// drop (or reject) with an optional rate-limited nflog; pods with the same
// rules share a chain named after its contents. A label change changes the
// elements of peer sets. Hold drops the traffic of new pods until the
// Program that knows them is synced.
//
// # Namespaces and kernel features
//
// NewMasquerade creates its netlink socket inside the target namespace, so
// the connection stays bound to it whatever goroutine or thread uses it.
// Kernel features (inet nat chains, masquerade, interval sets, Linux 5.2 or
// later) are probed once per process in a throwaway namespace; a missing one
// is reported as a *driver.UnsupportedError.
package nftables
