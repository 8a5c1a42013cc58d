// Package ipam allocates IP addresses, node CIDRs, Service cluster IPs and
// node ports for Kubernetes networking. It is pure Go: it needs no kernel
// access beyond ordinary files, and imports only the standard library.
//
// # Pools and allocators
//
// Four allocators share one model:
//
//   - PodAllocator hands out pod addresses from per-node ranges, like the
//     CNI host-local plugin: round-robin from the last address handed out,
//     skipping network, IPv4 broadcast, gateway and excluded addresses, one
//     address per configured family.
//   - NodeCIDRAllocator carves node pod CIDRs out of cluster CIDRs, like
//     kube-controller-manager's cidrset, without ever enumerating the
//     (possibly 2^32 or more) candidate subnets.
//   - ClusterIPAllocator hands out Service cluster IPs with the Kubernetes
//     static/dynamic band split (KEP-3070).
//   - NodePortAllocator hands out node ports with the same split (KEP-3668).
//
// # Owners
//
// Every reservation belongs to an owner, an opaque non-empty string: a pod
// attachment (see PodOwner), a node name, a Service's namespace/name.
// Allocation is idempotent per owner, so a retried CNI ADD or a restarted
// controller gets the same answer; Release frees everything an owner holds
// and is idempotent too. Dual-stack allocations are all-or-nothing: if the
// second family cannot be allocated, the first is not kept.
//
// # Stores
//
// Allocators keep their reservations in a Store, which groups keys (the
// canonical text of an address, prefix or port) into independent spaces,
// one per allocator. Store.Transact gives a function exclusive access to a
// space and commits its changes atomically and durably, or not at all.
// MemoryStore keeps everything in memory; FileStore keeps an append-only,
// checksummed journal per space in a directory (its format is documented on
// FileStore). Each allocator keeps all of its families in one space, so
// even a crash cannot leave a dual-stack allocation half done.
//
// # Crash safety and the multi-process guarantee
//
// With a FileStore, any number of processes (CNI plugin invocations, a node
// agent) may allocate from the same directory at once: each transaction
// runs under an exclusive flock(2) on the space's lock file, reads what
// other processes committed since its last transaction, and appends its own
// record with a single write(2) followed by fsync(2). Hence two processes
// never hand out the same address, and a kill -9 or power loss at any
// instant loses no allocation whose Allocate returned and never produces a
// duplicate: an interrupted, torn record at the end of a journal is
// recognised by its checksum or missing newline and discarded. With
// FileStoreOptions.NoSync the same holds for process crashes but not for
// power loss.
//
// Constructors do no I/O and start no goroutines; the package has no
// global mutable state, does not log, and returns errors (never panics) for
// bad input. Configuration errors are *ConfigError values naming the field
// and value, and every error can be classified with errors.Is against
// ErrExhausted, ErrNotFound, ErrConflict, ErrOutOfRange, ErrInvalid,
// ErrCorrupt or ErrClosed.
package ipam
