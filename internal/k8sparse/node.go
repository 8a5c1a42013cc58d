package k8sparse

import (
	"fmt"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
)

// NodeAddresses returns a Node's primary addresses, one per family
// (IPv4 first): its first InternalIP of the family, else its first
// ExternalIP, as the kubelet's node IPs and kube-proxy's nodePortAddresses
// "primary" read them. An unparsable InternalIP or ExternalIP is a
// FieldError of kind for object obj.
func NodeAddresses(n *v1.Node, obj string, kind error) ([]netip.Addr, error) {
	var byType [2][2]netip.Addr // [InternalIP, ExternalIP][v4, v6]
	for i, a := range n.Status.Addresses {
		t := slices.Index([]v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP}, a.Type)
		if t < 0 {
			continue
		}
		ip, ok := IP(a.Address)
		why := ""
		switch {
		case !ok:
			why = "not an IP address"
		case ip.IsUnspecified():
			why = "not a unicast address"
		}
		if why != "" {
			return nil, &FieldError{Obj: obj, Field: fmt.Sprintf("status.addresses[%d].address", i), Value: a.Address, Reason: why, Kind: kind}
		}
		fam := 0
		if ip.Is6() {
			fam = 1
		}
		if !byType[t][fam].IsValid() {
			byType[t][fam] = ip
		}
	}
	var out []netip.Addr
	for fam := range 2 {
		for t := range 2 {
			if a := byType[t][fam]; a.IsValid() {
				out = append(out, a)
				break
			}
		}
	}
	return out, nil
}
