// Package policy is kubewire's NetworkPolicy engine: its own model of
// networking.k8s.io/v1 NetworkPolicy, namespaces and pods; a compiler to a
// kernel-neutral program (per pod and direction, the rules that allow
// traffic: peer address sets × protocol/port ranges, each with a stable
// RuleID naming the policy and rule); and an evaluator over the same
// program, Trace, that says whether a packet may pass and which policies
// and rules decide it. Drivers (driver/nftables, driver/fake) enforce a
// Program; the evaluator and the kernel must agree, and the tests check
// that they do with real packets.
//
// Semantics are Kubernetes': a pod selected by some policy for a direction
// is isolated in that direction and only what some rule of those policies
// allows passes; allows are additive; replies to allowed connections always
// pass; traffic between a pod and its own node always passes; ipBlock
// matches any address, pod addresses included; a named port is resolved
// against the destination pod and matches nothing where the pod does not
// expose it. An invalid policy is refused as a whole with an error naming
// the field; it never widens what other policies allow.
//
// Kubernetes API objects are converted by policy/kubeconv; this package
// does not import client-go or k8s.io/api.
package policy
