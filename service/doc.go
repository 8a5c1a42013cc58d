// Package service is kubewire's service proxy: the Service and
// EndpointSlice model, endpoint selection (traffic policies, topology
// hints, terminating fallback), a change tracker and a Proxier whose
// bounded-frequency loop hands a Dataplane the whole desired State of the
// node. Semantics live here, once; drivers (driver/nftables, driver/fake)
// only render a State.
//
// Kubernetes API objects are converted by service/kubeconv; this package
// does not import client-go or k8s.io/api.
package service
