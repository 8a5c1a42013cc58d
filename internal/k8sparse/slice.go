package k8sparse

import (
	"fmt"
	"net/netip"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// SliceFamily reports whether an EndpointSlice of address type t holds
// IPv4 (true) or IPv6 addresses; ok is false for any other type (FQDN),
// which the converters skip.
func SliceFamily(t discoveryv1.AddressType) (is4, ok bool) {
	switch t {
	case discoveryv1.AddressTypeIPv4:
		return true, true
	case discoveryv1.AddressTypeIPv6:
		return false, true
	}
	return false, false
}

// SliceService returns the name of the Service an EndpointSlice belongs
// to: its kubernetes.io/service-name label, which is required.
func SliceService(obj string, es *discoveryv1.EndpointSlice, kind error) (string, error) {
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return "", &FieldError{Obj: obj, Field: fmt.Sprintf("metadata.labels[%q]", discoveryv1.LabelServiceName),
			Value: name, Reason: "required: the slice's service", Kind: kind}
	}
	return name, nil
}

// SlicePort returns the number of ports[i]: 0 when it has none (unset or
// 0, which kube-proxy and CoreDNS ignore), an error of kind when it is
// outside 1-65535.
func SlicePort(obj string, i int, port *int32, kind error) (uint16, error) {
	if port == nil || *port == 0 {
		return 0, nil
	}
	if *port < 1 || *port > 65535 {
		return 0, &FieldError{Obj: obj, Field: fmt.Sprintf("ports[%d].port", i), Value: *port, Reason: "must be 1-65535", Kind: kind}
	}
	return uint16(*port), nil
}

// EndpointAddrs parses endpoints[i].addresses of a slice of one family,
// refusing unspecified addresses and those of the other family.
func EndpointAddrs(obj string, i int, addrs []string, is4 bool, kind error) ([]netip.Addr, error) {
	family := "IPv6"
	if is4 {
		family = "IPv4"
	}
	var out []netip.Addr
	for j, s := range addrs {
		fail := func(reason string) error {
			return &FieldError{Obj: obj, Field: fmt.Sprintf("endpoints[%d].addresses[%d]", i, j), Value: s, Reason: reason, Kind: kind}
		}
		ip, ok := IP(s)
		switch {
		case !ok:
			return nil, fail("not an IP address")
		case ip.Is4() != is4:
			return nil, fail("not an " + family + " address (addressType " + family + ")")
		case ip.IsUnspecified():
			return nil, fail("not a unicast address")
		}
		out = append(out, ip)
	}
	return out, nil
}
