// Package nftables is kubewire's nftables driver. It talks to the kernel over
// netlink (github.com/google/nftables); it never runs the nft binary.
//
// This file set implements egress masquerade: Masquerade implements
// network.Masquerader.
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
// # Namespaces and kernel features
//
// NewMasquerade creates its netlink socket inside the target namespace, so
// the connection stays bound to it whatever goroutine or thread uses it.
// Kernel features (inet nat chains, masquerade, interval sets, Linux 5.2 or
// later) are probed once per process in a throwaway namespace; a missing one
// is reported as a *driver.UnsupportedError.
package nftables
