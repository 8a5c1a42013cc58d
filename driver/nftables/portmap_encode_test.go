package nftables

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	nft "github.com/google/nftables"

	"github.com/kubewire/kubewire/network"
)

func TestValidateMappings(t *testing.T) {
	pod4, pod6 := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("fd00:10:244:1::2")
	ok := network.PortMapping{Protocol: "tcp", HostPort: 8080, PodIP: pod4, PodPort: 80}
	with := func(f func(*network.PortMapping)) []network.PortMapping {
		m := ok
		f(&m)
		return []network.PortMapping{ok, m}
	}
	for _, tc := range []struct {
		maps []network.PortMapping
		want string
	}{
		{with(func(m *network.PortMapping) { m.HostPort = 0 }), `nftables: PortMapping[1].HostPort 0: must be 1-65535`},
		{with(func(m *network.PortMapping) { m.PodPort = 0 }), `nftables: PortMapping[1].PodPort 0: must be 1-65535`},
		{with(func(m *network.PortMapping) { m.Protocol = "icmp" }), `nftables: PortMapping[1].Protocol "icmp": must be tcp, udp or sctp`},
		{with(func(m *network.PortMapping) { m.Protocol = "" }), `nftables: PortMapping[1].Protocol "": must be tcp, udp or sctp`},
		{with(func(m *network.PortMapping) { m.PodIP = netip.Addr{} }), `nftables: PortMapping[1].PodIP "": a pod address is required`},
		{with(func(m *network.PortMapping) { m.PodIP = netip.IPv4Unspecified() }), `nftables: PortMapping[1].PodIP "0.0.0.0": not a unicast address`},
		{with(func(m *network.PortMapping) { m.PodIP = netip.MustParseAddr("::ffff:10.0.0.1") }), `nftables: PortMapping[1].PodIP "::ffff:10.0.0.1": IPv4-mapped IPv6 address: write it as an IPv4 address`},
		{with(func(m *network.PortMapping) { m.HostIP = netip.MustParseAddr("2001:db8::1") }), `nftables: PortMapping[1].HostIP "2001:db8::1": IPv6, but PodIP 10.244.1.2 is IPv4`},
		{with(func(m *network.PortMapping) { m.HostIP = netip.MustParseAddr("127.0.0.1") }), `nftables: PortMapping[1].HostIP "127.0.0.1": loopback addresses cannot be mapped`},
		{with(func(m *network.PortMapping) { m.HostIP = netip.MustParseAddr("fe80::1%eth0"); m.PodIP = pod6 }), `nftables: PortMapping[1].HostIP "fe80::1%eth0": an address with a zone cannot be mapped`},
		{with(func(m *network.PortMapping) { m.PodPort = 81 }), `nftables: PortMapping[1] "tcp 0.0.0.0:8080": host side already mapped to 10.244.1.2:80 by PortMapping[0]`},
	} {
		_, err := validateMappings(tc.maps)
		if !errors.Is(err, ErrInvalid) || err.Error() != tc.want {
			t.Errorf("validateMappings(%v) = %v, want %s", tc.maps, err, tc.want)
		}
	}
	// Duplicates collapse; 0.0.0.0 and :: mean any address; case is ignored.
	got, err := validateMappings([]network.PortMapping{
		ok, ok,
		{Protocol: "TCP", HostIP: netip.IPv4Unspecified(), HostPort: 8080, PodIP: pod4, PodPort: 80},
		{Protocol: "udp", HostIP: netip.IPv6Unspecified(), HostPort: 53, PodIP: pod6, PodPort: 53},
	})
	if err != nil || len(got) != 2 || got[1].host.kind() != kindAnyV6 || got[0].host.kind() != kindAnyV4 {
		t.Errorf("validateMappings = %+v, %v", got, err)
	}
}

func TestValidateOwner(t *testing.T) {
	for _, o := range []string{"c0ffee/eth0", "a", "ns_1.pod-2:net1", strings.Repeat("a", MaxOwnerLen)} {
		if err := validateOwner(o); err != nil {
			t.Errorf("validateOwner(%q) = %v", o, err)
		}
	}
	for o, want := range map[string]string{
		"":                                 `nftables: owner "": an owner is required`,
		"a b":                              `nftables: owner "a b": only letters, digits, '/', '-', '_', '.' and ':' are allowed`,
		"~x":                               `nftables: owner "~x": only letters, digits, '/', '-', '_', '.' and ':' are allowed`,
		strings.Repeat("a", MaxOwnerLen+1): "longer than 256 bytes",
	} {
		err := validateOwner(o)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("validateOwner(%q) = %v, want %s", o, err, want)
		}
	}
}

func TestHostSideEncoding(t *testing.T) {
	for _, h := range []hostSide{
		{proto: 6, port: 8080},
		{proto: 17, port: 53, addr: netip.MustParseAddr("198.18.0.1")},
		{is6: true, proto: 132, port: 65535},
		{is6: true, proto: 6, port: 1, addr: netip.MustParseAddr("2001:db8::1")},
	} {
		k := h.kind()
		key := h.key()
		if want := int(map[mapKind]uint32{kindV4: concatV4.Bytes, kindV6: concatV6.Bytes, kindAnyV4: concatAny.Bytes, kindAnyV6: concatAny.Bytes}[k]); len(key) != want {
			t.Errorf("%v: key length %d, want %d", h, len(key), want)
		}
		back, ok := decodeHostSide(k, []byte(key))
		if !ok || back != h {
			t.Errorf("decode(%v) = %v, %v", h, back, ok)
		}
	}
	if _, ok := decodeHostSide(kindAnyV4, []byte{6, 1, 0, 0, 0, 80, 0, 0}); ok {
		t.Errorf("decoded a key with a non-zero pad")
	}
	for _, p := range []netip.AddrPort{netip.MustParseAddrPort("10.244.1.2:80"), netip.MustParseAddrPort("[fd00::2]:53")} {
		v := encodePod(p)
		if s := typedString(map[bool]nft.SetDatatype{false: podV4, true: podV6}[p.Addr().Is6()], []byte(v)); s != p.Addr().String()+" . "+"80" && s != p.Addr().String()+" . 53" {
			t.Errorf("typedString(%v) = %s", p, s)
		}
		back, ok := decodePod(p.Addr().Is6(), []byte(v))
		if !ok || back != p {
			t.Errorf("decodePod(%v) = %v, %v", p, back, ok)
		}
	}
}

func TestOwnerTags(t *testing.T) {
	short := strings.Repeat("s", maxInlineOwner)
	if ownerTag(short) != short || ownerNameElements(short) != nil {
		t.Errorf("an owner of %d bytes is not inline", maxInlineOwner)
	}
	for _, n := range []int{maxInlineOwner + 1, MaxOwnerLen} {
		long := strings.Repeat("l", n-1) + "z"
		tag := ownerTag(long)
		if !strings.HasPrefix(tag, "~") || len(tag) > maxInlineOwner {
			t.Errorf("tag of a %d-byte owner = %q", n, tag)
		}
		els := ownerNameElements(long)
		if len(els) != 2 {
			t.Fatalf("%d name elements", len(els))
		}
		for _, e := range els {
			if len(e.Key) != 16 || len(e.Comment) > ownerChunk {
				t.Errorf("name element %x %q", e.Key, e.Comment)
			}
		}
		// Order of elements does not matter; a missing chunk drops the name.
		got := resolveOwnerNames([]nft.SetElement{els[1], els[0]})
		if got[tag] != long {
			t.Errorf("resolve = %q", got)
		}
		if got := resolveOwnerNames(els[1:]); len(got) != 0 {
			t.Errorf("resolve of an incomplete name = %q", got)
		}
	}
}

func TestPlanPortChange(t *testing.T) {
	pod := netip.MustParseAddrPort("10.244.1.2:80")
	pod2 := netip.MustParseAddrPort("10.244.1.3:80")
	node := netip.MustParseAddr("198.18.0.1")
	wild := hostSide{proto: 6, port: 8080}
	spec := hostSide{proto: 6, port: 8080, addr: node}
	st := portState{
		elems: []portElem{
			{host: wild, pod: pod, tag: "a"},
			{host: hostSide{proto: 17, port: 53}, pod: pod, tag: "b"},
		},
		hairpin: [2]map[string]bool{{hairpinKey(pod.Addr()): true}, {}},
	}
	entry := func(h hostSide, p netip.AddrPort) portEntry { return portEntry{host: h, pod: p} }

	// Conflicts, exact and overlapping.
	for _, w := range []portEntry{entry(wild, pod2), entry(spec, pod2)} {
		if _, err := planPortChange(st, "c", []portEntry{w}); !errors.Is(err, network.ErrPortConflict) {
			t.Errorf("plan %v = %v, want conflict", w.host, err)
		}
	}
	st2 := st
	st2.elems = []portElem{{host: spec, pod: pod, tag: "a"}}
	if _, err := planPortChange(st2, "c", []portEntry{entry(wild, pod2)}); !errors.Is(err, network.ErrPortConflict) {
		t.Errorf("wildcard over an address: %v", err)
	}

	// No change: empty batch.
	ch, err := planPortChange(st, "a", []portEntry{entry(wild, pod)})
	if err != nil || !ch.empty() {
		t.Errorf("same mappings: %+v, %v", ch, err)
	}
	// New target: delete and add the key.
	ch, err = planPortChange(st, "a", []portEntry{entry(wild, pod2)})
	if err != nil || len(ch.del[kindAnyV4]) != 1 || len(ch.add[kindAnyV4]) != 1 || len(ch.hairpinAdd[0]) != 1 || len(ch.hairpinDel[0]) != 0 {
		t.Errorf("new target: %+v, %v", ch, err)
	}
	if e := ch.add[kindAnyV4][0]; e.Comment != "a" || string(e.Val) != encodePod(pod2) {
		t.Errorf("added element %+v", e)
	}
	// Removing a's mappings keeps the hairpin of a pod b still maps.
	ch, err = planPortChange(st, "a", nil)
	if err != nil || len(ch.del[kindAnyV4]) != 1 || len(ch.hairpinDel[0]) != 0 {
		t.Errorf("remove a: %+v, %v", ch, err)
	}
	// ... and drops it once nobody maps the pod.
	ch, _ = planPortChange(portState{elems: st.elems[:1], hairpin: st.hairpin}, "a", nil)
	if len(ch.hairpinDel[0]) != 1 {
		t.Errorf("hairpin not removed: %+v", ch)
	}
}

func TestOwnersOf(t *testing.T) {
	long := strings.Repeat("x", MaxOwnerLen)
	st := portState{
		elems: []portElem{{tag: "b"}, {tag: "a"}, {tag: "b"}, {tag: ownerTag(long)}, {tag: "~0000"}},
		names: ownerNameElements(long),
	}
	got := ownersOf(st)
	if strings.Join(got, ",") != "a,b,"+long {
		t.Errorf("ownersOf = %q", got)
	}
}

func TestPrefixBits(t *testing.T) {
	for mask, want := range map[string]int{"\xff\x00\x00\x00": 8, "\xff\xff\xff\xff": 32, "\x00\x00": 0, "\xff\x80": 9, "\xf0\x0f": -1} {
		n, ok := prefixBits([]byte(mask))
		if !ok && want != -1 || ok && n != want {
			t.Errorf("prefixBits(%x) = %d, %v", mask, n, ok)
		}
	}
}
