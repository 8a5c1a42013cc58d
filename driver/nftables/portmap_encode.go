package nftables

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	nft "github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/network"
)

// This file holds the pure part of the port mapping driver: validation, the
// byte encoding of map elements and owner tags, and the computation of the
// incremental change for one owner. Nothing here talks to the kernel.

// MaxOwnerLen is the longest owner SyncPortMappings accepts.
const MaxOwnerLen = 256

// maxInlineOwner is the longest owner stored verbatim as the comment of its
// map elements: element userdata is at most NFT_USERDATA_MAXLEN (256) bytes,
// and the comment takes a 2-byte TLV header and a terminating NUL. Longer
// owners are tagged by digest (see ownerTag).
const maxInlineOwner = 253

// ownerChunk is how many bytes of a long owner one element of the
// owner-names set carries in its comment.
const ownerChunk = 128

// mapKind selects one of the four dnat maps.
type mapKind uint8

const (
	kindV4    mapKind = iota // specific IPv4 host address
	kindV6                   // specific IPv6 host address
	kindAnyV4                // any local IPv4 address
	kindAnyV6                // any local IPv6 address
	numKinds
)

func (k mapKind) is6() bool      { return k == kindV6 || k == kindAnyV6 }
func (k mapKind) wildcard() bool { return k == kindAnyV4 || k == kindAnyV6 }

// fam is 0 for IPv4 and 1 for IPv6, the index of per-family objects.
func (k mapKind) fam() int {
	if k.is6() {
		return 1
	}
	return 0
}

func kindOf(is6, wildcard bool) mapKind {
	k := kindV4
	if is6 {
		k = kindV6
	}
	if wildcard {
		k += kindAnyV4
	}
	return k
}

var protoNumbers = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

func protoName(p byte) string {
	for name, n := range protoNumbers {
		if n == p {
			return name
		}
	}
	return fmt.Sprintf("proto%d", p)
}

// hostSide is what identifies a mapping on the node: family, protocol,
// host address (invalid for the wildcard) and host port.
type hostSide struct {
	is6   bool
	proto byte
	addr  netip.Addr
	port  uint16
}

func (h hostSide) kind() mapKind { return kindOf(h.is6, !h.addr.IsValid()) }

// portOnly is h without its address: the wildcard that overlaps it.
func (h hostSide) portOnly() hostSide { h.addr = netip.Addr{}; return h }

func (h hostSide) String() string {
	a := h.addr
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
		if h.is6 {
			a = netip.IPv6Unspecified()
		}
	}
	return protoName(h.proto) + " " + netip.AddrPortFrom(a, h.port).String()
}

// key encodes h as a key of its map: proto . [addr .] port, each field
// padded to the 4-byte registers the concatenation is loaded into.
func (h hostSide) key() string {
	b := make([]byte, 0, 24)
	b = append(b, h.proto, 0, 0, 0)
	if h.addr.IsValid() {
		b = append(b, h.addr.AsSlice()...)
	}
	b = binary.BigEndian.AppendUint16(b, h.port)
	return string(append(b, 0, 0))
}

// decodeHostSide is the inverse of key for a key read from a map of kind k.
func decodeHostSide(k mapKind, key []byte) (hostSide, bool) {
	alen := 0
	if !k.wildcard() {
		alen = 4
		if k.is6() {
			alen = 16
		}
	}
	if len(key) != 8+alen || !isZero(key[1:4]) || !isZero(key[6+alen:]) {
		return hostSide{}, false
	}
	h := hostSide{is6: k.is6(), proto: key[0], port: binary.BigEndian.Uint16(key[4+alen:])}
	if alen > 0 {
		h.addr, _ = netip.AddrFromSlice(key[4 : 4+alen])
	}
	return h, true
}

// encodePod encodes the dnat target addr . port as a map value.
func encodePod(p netip.AddrPort) string {
	b := binary.BigEndian.AppendUint16(p.Addr().AsSlice(), p.Port())
	return string(append(b, 0, 0))
}

func decodePod(is6 bool, val []byte) (netip.AddrPort, bool) {
	alen := 4
	if is6 {
		alen = 16
	}
	if len(val) != alen+4 || !isZero(val[alen+2:]) {
		return netip.AddrPort{}, false
	}
	a, _ := netip.AddrFromSlice(val[:alen])
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(val[alen:])), true
}

// hairpinKey is the element of the hairpin set for a pod address: saddr .
// daddr, both the pod.
func hairpinKey(a netip.Addr) string {
	s := a.AsSlice()
	return string(append(s, s...))
}

func isZero(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }

// validateOwner accepts 1 to MaxOwnerLen letters, digits and / - _ . :
func validateOwner(owner string) error {
	const field = "owner"
	switch {
	case owner == "":
		return invalid(field, owner, "an owner is required")
	case len(owner) > MaxOwnerLen:
		return invalid(field, owner, fmt.Sprintf("longer than %d bytes", MaxOwnerLen))
	}
	for _, c := range []byte(owner) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/-_.:", c) >= 0 {
			continue
		}
		return invalid(field, owner, "only letters, digits, '/', '-', '_', '.' and ':' are allowed")
	}
	return nil
}

// ownerTag is what the comment of an owner's map elements holds: the owner
// itself when it fits, else "~" and a digest, the owner's name then being
// kept in the owner-names set ('~' cannot start an owner).
func ownerTag(owner string) string {
	if len(owner) <= maxInlineOwner {
		return owner
	}
	return "~" + hex.EncodeToString(ownerDigest(owner))
}

// ownerDigest is 15 bytes of SHA-256: keys of the owner-names set are the
// digest and a chunk number, in an ipv6_addr-typed set.
func ownerDigest(owner string) []byte {
	sum := sha256.Sum256([]byte(owner))
	return sum[:15]
}

// ownerNameElements returns the owner-names elements that spell a long
// owner: key digest . chunk number, comment the chunk.
func ownerNameElements(owner string) []nft.SetElement {
	if len(owner) <= maxInlineOwner {
		return nil
	}
	d := ownerDigest(owner)
	var els []nft.SetElement
	for i := 0; i*ownerChunk < len(owner); i++ {
		chunk := owner[i*ownerChunk : min(len(owner), (i+1)*ownerChunk)]
		els = append(els, nft.SetElement{Key: append(slices.Clip(d), byte(i)), Comment: chunk})
	}
	return els
}

// resolveOwnerNames reassembles long owners from owner-names elements:
// tag -> owner. Incomplete or inconsistent names are left out.
func resolveOwnerNames(els []nft.SetElement) map[string]string {
	chunks := map[string][]nft.SetElement{}
	for _, e := range els {
		if len(e.Key) == 16 {
			chunks[string(e.Key[:15])] = append(chunks[string(e.Key[:15])], e)
		}
	}
	out := map[string]string{}
	for d, cs := range chunks {
		slices.SortFunc(cs, func(a, b nft.SetElement) int { return int(a.Key[15]) - int(b.Key[15]) })
		var b strings.Builder
		for _, c := range cs {
			b.WriteString(c.Comment)
		}
		name := b.String()
		if bytes.Equal(ownerDigest(name), []byte(d)) {
			out[ownerTag(name)] = name
		}
	}
	return out
}

// portEntry is one validated mapping.
type portEntry struct {
	index int // in the caller's list
	host  hostSide
	pod   netip.AddrPort
}

// validateMappings checks maps and turns them into entries, dropping exact
// duplicates. Two mappings of one host side to different pods are refused.
func validateMappings(maps []network.PortMapping) ([]portEntry, error) {
	var out []portEntry
	seen := map[hostSide]int{} // -> index in out
	for i, m := range maps {
		e, err := validateMapping(i, m)
		if err != nil {
			return nil, err
		}
		if j, ok := seen[e.host]; ok {
			if out[j].pod == e.pod {
				continue
			}
			return nil, invalid(fmt.Sprintf("PortMapping[%d]", i), e.host.String(),
				fmt.Sprintf("host side already mapped to %s by PortMapping[%d]", out[j].pod, out[j].index))
		}
		seen[e.host] = len(out)
		out = append(out, e)
	}
	return out, nil
}

func validateMapping(i int, m network.PortMapping) (portEntry, error) {
	f := func(name string) string { return fmt.Sprintf("PortMapping[%d].%s", i, name) }
	proto, ok := protoNumbers[strings.ToLower(m.Protocol)]
	if !ok {
		return portEntry{}, invalid(f("Protocol"), m.Protocol, "must be tcp, udp or sctp")
	}
	if m.HostPort == 0 {
		return portEntry{}, invalidNumber(f("HostPort"), 0, "must be 1-65535")
	}
	if m.PodPort == 0 {
		return portEntry{}, invalidNumber(f("PodPort"), 0, "must be 1-65535")
	}
	if err := checkAddr(f("PodIP"), m.PodIP); err != nil {
		return portEntry{}, err
	}
	if !m.PodIP.IsValid() {
		return portEntry{}, invalid(f("PodIP"), "", "a pod address is required")
	}
	if m.PodIP.IsUnspecified() || m.PodIP.IsMulticast() || m.PodIP.IsLoopback() {
		return portEntry{}, invalid(f("PodIP"), m.PodIP.String(), "not a unicast address")
	}
	host := m.HostIP
	if host.IsValid() {
		if err := checkAddr(f("HostIP"), host); err != nil {
			return portEntry{}, err
		}
		switch {
		case host.Is4() != m.PodIP.Is4():
			return portEntry{}, invalid(f("HostIP"), host.String(),
				fmt.Sprintf("%s, but PodIP %s is %s", familyWord(host), m.PodIP, familyWord(m.PodIP)))
		case host.IsUnspecified():
			host = netip.Addr{} // 0.0.0.0 and :: mean any local address
		case host.IsLoopback():
			return portEntry{}, invalid(f("HostIP"), host.String(), "loopback addresses cannot be mapped")
		case host.IsMulticast():
			return portEntry{}, invalid(f("HostIP"), host.String(), "not a unicast address")
		}
	}
	return portEntry{
		index: i,
		host:  hostSide{is6: m.PodIP.Is6(), proto: proto, addr: host, port: m.HostPort},
		pod:   netip.AddrPortFrom(m.PodIP, m.PodPort),
	}, nil
}

func checkAddr(field string, a netip.Addr) error {
	switch {
	case a.Is4In6():
		return invalid(field, a.String(), "IPv4-mapped IPv6 address: write it as an IPv4 address")
	case a.Zone() != "":
		return invalid(field, a.String(), "an address with a zone cannot be mapped")
	}
	return nil
}

func familyWord(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// portElem is one element of a dnat map as read from the kernel.
type portElem struct {
	host hostSide
	pod  netip.AddrPort
	tag  string
}

// portState is what the table holds, as read in one conversation.
type portState struct {
	elems   []portElem
	hairpin [2]map[string]bool // per family, hairpin keys present
	names   []nft.SetElement   // owner-names elements
}

// portChange is the incremental batch for one owner.
type portChange struct {
	del, add               [numKinds][]nft.SetElement
	hairpinDel, hairpinAdd [2][]nft.SetElement
	namesDel, namesAdd     []nft.SetElement
}

func (c *portChange) empty() bool {
	n := len(c.namesDel) + len(c.namesAdd)
	for k := range numKinds {
		n += len(c.del[k]) + len(c.add[k])
	}
	for f := range 2 {
		n += len(c.hairpinDel[f]) + len(c.hairpinAdd[f])
	}
	return n == 0
}

// planPortChange computes what turns st into a state where owner holds
// exactly want. It refuses (ErrPortConflict) a host side that another
// owner holds, or that overlaps one (a wildcard and a specific address of
// the same family, protocol and port).
func planPortChange(st portState, owner string, want []portEntry) (portChange, error) {
	tag := ownerTag(owner)
	names := resolveOwnerNames(st.names)
	others := map[hostSide]string{}       // host side -> tag
	othersByPort := map[hostSide]string{} // port-only host side -> tag of some holder
	mine := map[hostSide]portElem{}
	pods := [2]map[string]bool{{}, {}} // hairpin keys wanted
	tags := map[string]bool{}          // tags still holding after the change
	for _, e := range st.elems {
		if e.tag == tag {
			mine[e.host] = e
			continue
		}
		others[e.host] = e.tag
		othersByPort[e.host.portOnly()] = e.tag
		pods[e.host.kind().fam()][hairpinKey(e.pod.Addr())] = true
		tags[e.tag] = true
	}
	for _, w := range want {
		holder, ok := others[w.host]
		if !ok && w.host.addr.IsValid() {
			holder, ok = others[w.host.portOnly()]
		}
		if !ok && !w.host.addr.IsValid() {
			holder, ok = othersByPort[w.host]
		}
		if ok {
			if name, found := names[holder]; found {
				holder = name
			}
			return portChange{}, fmt.Errorf("nftables: PortMapping[%d] %s: held by owner %q: %w",
				w.index, w.host, holder, network.ErrPortConflict)
		}
	}

	var ch portChange
	wanted := map[hostSide]bool{}
	for _, w := range want {
		wanted[w.host] = true
		k := w.host.kind()
		pods[k.fam()][hairpinKey(w.pod.Addr())] = true
		if cur, ok := mine[w.host]; ok {
			if cur.pod == w.pod {
				continue
			}
			ch.del[k] = append(ch.del[k], nft.SetElement{Key: []byte(w.host.key())})
		}
		ch.add[k] = append(ch.add[k], nft.SetElement{Key: []byte(w.host.key()), Val: []byte(encodePod(w.pod)), Comment: tag})
	}
	for h := range mine {
		if !wanted[h] {
			ch.del[h.kind()] = append(ch.del[h.kind()], nft.SetElement{Key: []byte(h.key())})
		}
	}
	for f := range 2 {
		for k := range pods[f] {
			if !st.hairpin[f][k] {
				ch.hairpinAdd[f] = append(ch.hairpinAdd[f], nft.SetElement{Key: []byte(k)})
			}
		}
		for k := range st.hairpin[f] {
			if !pods[f][k] {
				ch.hairpinDel[f] = append(ch.hairpinDel[f], nft.SetElement{Key: []byte(k)})
			}
		}
	}
	// Owner names: keep those of long owners still holding, drop the rest.
	if len(want) > 0 {
		tags[tag] = true
	}
	have := map[string]bool{}
	for _, e := range st.names {
		have[string(e.Key)] = true
		if len(e.Key) != 16 || !tags["~"+hex.EncodeToString(e.Key[:15])] {
			ch.namesDel = append(ch.namesDel, nft.SetElement{Key: e.Key})
		}
	}
	if len(want) > 0 {
		for _, e := range ownerNameElements(owner) {
			if !have[string(e.Key)] {
				ch.namesAdd = append(ch.namesAdd, e)
			}
		}
	}
	ch.sort()
	return ch, nil
}

// sort orders every element list by key so batches are deterministic.
func (c *portChange) sort() {
	byKey := func(a, b nft.SetElement) int { return bytes.Compare(a.Key, b.Key) }
	for k := range numKinds {
		slices.SortFunc(c.del[k], byKey)
		slices.SortFunc(c.add[k], byKey)
	}
	for f := range 2 {
		slices.SortFunc(c.hairpinDel[f], byKey)
		slices.SortFunc(c.hairpinAdd[f], byKey)
	}
	slices.SortFunc(c.namesDel, byKey)
	slices.SortFunc(c.namesAdd, byKey)
}

// ownersOf lists the owners holding elements, resolving long-owner tags.
// Tags that do not resolve (their name elements were removed by someone
// else) are left out.
func ownersOf(st portState) []string {
	names := resolveOwnerNames(st.names)
	seen := map[string]bool{}
	var out []string
	for _, e := range st.elems {
		o := e.tag
		if strings.HasPrefix(o, "~") {
			if o = names[e.tag]; o == "" {
				continue
			}
		}
		if validateOwner(o) == nil && !seen[o] {
			seen[o] = true
			out = append(out, o)
		}
	}
	slices.Sort(out)
	return out
}
