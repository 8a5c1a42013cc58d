// Package kubeconv converts k8s.io/api Node objects into the model of
// package network, so that network and the drivers never import k8s.io/api.
//
// A node agent watching Nodes builds the cross-node fabric from them, as
// flannel does: every node learns every other node's pod ranges and
// underlay addresses.
//
//   - Addresses: the node's primary addresses, one per family, its first
//     InternalIP of the family, else its first ExternalIP (as the kubelet's
//     node IPs).
//   - PodCIDRs: spec.podCIDRs (else the older spec.podCIDR), at most one
//     per family, masked; empty until the node controller allocated them.
//
// Invalid objects give an error naming the Kubernetes field and its value,
// such as
//
//	kubeconv: node node2: spec.podCIDRs[0] "10.244.1.0/33": not a CIDR
//
// which satisfies errors.Is(err, network.ErrInvalidTopology).
package kubeconv

import (
	"fmt"

	v1 "k8s.io/api/core/v1"

	"github.com/kubewire/kubewire/internal/k8sparse"
	"github.com/kubewire/kubewire/network"
)

// Node converts a Node.
func Node(n *v1.Node) (network.Node, error) {
	if n == nil {
		return network.Node{}, fmt.Errorf("kubeconv: nil Node: %w", network.ErrInvalidTopology)
	}
	obj := "node " + n.Name
	addrs, err := k8sparse.NodeAddresses(n, obj, network.ErrInvalidTopology)
	if err != nil {
		return network.Node{}, err
	}
	out := network.Node{Name: n.Name, Addresses: addrs}
	cidrs, field := n.Spec.PodCIDRs, "spec.podCIDRs"
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs, field = []string{n.Spec.PodCIDR}, "spec.podCIDR"
	}
	var seen [2]bool
	for i, s := range cidrs {
		f := field
		if field == "spec.podCIDRs" {
			f = fmt.Sprintf("%s[%d]", field, i)
		}
		p, ok := k8sparse.Prefix(s)
		if !ok {
			return network.Node{}, &k8sparse.FieldError{Obj: obj, Field: f, Value: s, Reason: "not a CIDR", Kind: network.ErrInvalidTopology}
		}
		fam := 0
		if p.Addr().Is6() {
			fam = 1
		}
		if seen[fam] {
			return network.Node{}, &k8sparse.FieldError{Obj: obj, Field: f, Value: s, Reason: "a second range of the same family", Kind: network.ErrInvalidTopology}
		}
		seen[fam] = true
		out.PodCIDRs = append(out.PodCIDRs, p)
	}
	return out, nil
}
