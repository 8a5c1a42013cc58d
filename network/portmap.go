package network

import (
	"context"
	"errors"
	"net/netip"
)

// PortMapping forwards a port of the node to a port of a pod (CNI
// portMappings, Kubernetes hostPort).
type PortMapping struct {
	Protocol string     // "tcp", "udp" or "sctp"
	HostIP   netip.Addr // only traffic to this node address; invalid = any local address of its family
	HostPort uint16
	PodIP    netip.Addr
	PodPort  uint16
}

// PortMapper programs port mappings. Implemented by driver/nftables.
type PortMapper interface {
	// SyncPortMappings makes the mappings of owner exactly maps (an empty
	// list removes them). Idempotent. A mapping whose host side (protocol,
	// host IP, host port) another owner already holds is refused with an
	// error matching ErrPortConflict, and nothing of the call is applied.
	SyncPortMappings(ctx context.Context, owner string, maps []PortMapping) error
	// PortMappingOwners lists the owners that hold mappings (for GC).
	PortMappingOwners(ctx context.Context) ([]string, error)
}

// ErrPortConflict is matched (with errors.Is) by the error a PortMapper
// returns when a host port is already mapped by another owner.
var ErrPortConflict = errors.New("network: host port already mapped")
