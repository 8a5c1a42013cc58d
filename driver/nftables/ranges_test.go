package nftables

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	nft "github.com/google/nftables"
)

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func rangesString(rs []addrRange) string {
	var ss []string
	for _, r := range rs {
		ss = append(ss, r.From.String()+".."+r.To.String())
	}
	return strings.Join(ss, " ")
}

func TestMergePrefixes(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want string // "from..to" ranges, space separated
	}{
		{"empty", nil, ""},
		{"single v4", []string{"10.244.1.0/24"}, "10.244.1.0..10.244.1.255"},
		{"host v4", []string{"192.0.2.7/32"}, "192.0.2.7..192.0.2.7"},
		{"sorted output", []string{"192.168.0.0/16", "10.0.0.0/8"}, "10.0.0.0..10.255.255.255 192.168.0.0..192.168.255.255"},
		{"adjacent v4", []string{"10.0.1.0/24", "10.0.0.0/24"}, "10.0.0.0..10.0.1.255"},
		{"adjacent chain v4", []string{"10.0.0.0/24", "10.0.2.0/24", "10.0.1.0/24"}, "10.0.0.0..10.0.2.255"},
		{"gap of one address", []string{"10.0.0.0/32", "10.0.0.2/32"}, "10.0.0.0..10.0.0.0 10.0.0.2..10.0.0.2"},
		{"nested v4", []string{"10.244.1.0/24", "10.0.0.0/8", "10.244.0.0/16"}, "10.0.0.0..10.255.255.255"},
		{"duplicates", []string{"10.0.0.0/8", "10.0.0.0/8"}, "10.0.0.0..10.255.255.255"},
		{"overlap keeps wider end", []string{"10.0.0.0/16", "10.0.0.0/24", "10.0.255.0/24"}, "10.0.0.0..10.0.255.255"},
		{"v4 /0", []string{"0.0.0.0/0"}, "0.0.0.0..255.255.255.255"},
		{"v4 /0 swallows all", []string{"10.0.0.0/8", "0.0.0.0/0", "255.255.255.255/32"}, "0.0.0.0..255.255.255.255"},
		{"top of v4 space", []string{"255.255.255.0/24", "128.0.0.0/1"}, "128.0.0.0..255.255.255.255"},
		{"halves make the whole space", []string{"128.0.0.0/1", "0.0.0.0/1"}, "0.0.0.0..255.255.255.255"},
		{"top host after range", []string{"255.255.255.254/32", "255.255.255.255/32"}, "255.255.255.254..255.255.255.255"},
		{"single v6", []string{"fd00:10:244:1::/64"}, "fd00:10:244:1::..fd00:10:244:1:ffff:ffff:ffff:ffff"},
		{"adjacent v6", []string{"fd00:10:244:1::/64", "fd00:10:244::/64"}, "fd00:10:244::..fd00:10:244:1:ffff:ffff:ffff:ffff"},
		{"nested v6", []string{"fd00:10:244:1::/64", "fd00:10:244::/48"}, "fd00:10:244::..fd00:10:244:ffff:ffff:ffff:ffff:ffff"},
		{"v6 /0", []string{"2001:db8::/32", "::/0"}, "::..ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"top of v6 space", []string{"ffff::/16", "8000::/1"}, "8000::..ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := prefixes(tt.in...)
			orig := slices.Clone(in)
			got := rangesString(mergePrefixes(in))
			if got != tt.want {
				t.Errorf("mergePrefixes(%v) = %q, want %q", tt.in, got, tt.want)
			}
			if !slices.Equal(in, orig) {
				t.Errorf("mergePrefixes modified its input: %v", in)
			}
		})
	}
}

func elementsString(els []nft.SetElement) string {
	var ss []string
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		s := a.String()
		if e.IntervalEnd {
			s += "(end)"
		}
		ss = append(ss, s)
	}
	return strings.Join(ss, " ")
}

func TestIntervalElements(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want string
	}{
		{"empty", nil, ""},
		{"one range", []string{"10.244.1.0/24"}, "0.0.0.0(end) 10.244.1.0 10.244.2.0(end)"},
		{"two ranges", []string{"10.0.0.0/8", "192.168.0.0/16"}, "0.0.0.0(end) 10.0.0.0 11.0.0.0(end) 192.168.0.0 192.169.0.0(end)"},
		{"starts at zero", []string{"0.0.0.0/8"}, "0.0.0.0 1.0.0.0(end)"},
		{"v4 /0 has no end", []string{"0.0.0.0/0"}, "0.0.0.0"},
		{"top of v4 space has no end", []string{"128.0.0.0/1"}, "0.0.0.0(end) 128.0.0.0"},
		{"v6", []string{"fd00:10:244::/48"}, "::(end) fd00:10:244:: fd00:10:245::(end)"},
		{"v6 /0", []string{"::/0"}, "::"},
		{"top of v6 space", []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"}, "::(end) ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := mergePrefixes(prefixes(tt.in...))
			els := intervalElements(rs)
			if got := elementsString(els); got != tt.want {
				t.Errorf("intervalElements(%v) = %q, want %q", tt.in, got, tt.want)
			}
			for _, e := range els {
				if len(tt.in) > 0 && len(e.Key) != rs[0].From.BitLen()/8 {
					t.Errorf("key %x has %d bytes, want %d", e.Key, len(e.Key), rs[0].From.BitLen()/8)
				}
			}
			// Decoding, in any order, gives the ranges back.
			slices.Reverse(els)
			if len(rs) > 0 {
				if got := rangesString(elementRanges(els, rs[0].From.BitLen())); got != rangesString(rs) {
					t.Errorf("elementRanges round trip = %q, want %q", got, rangesString(rs))
				}
			}
		})
	}
}

func TestAddrRangeString(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"10.0.0.0/24", "10.0.1.0/24"}, "10.0.0.0/23"},
		{[]string{"10.0.0.0/24", "10.0.1.0/25"}, "10.0.0.0-10.0.1.127"},
		{[]string{"0.0.0.0/0"}, "0.0.0.0/0"},
		{[]string{"192.0.2.1/32"}, "192.0.2.1/32"},
		{[]string{"::/0"}, "::/0"},
		{[]string{"fd00::/64", "fd00:0:0:1::/64"}, "fd00::/63"},
	}
	for _, tt := range tests {
		rs := mergePrefixes(prefixes(tt.in...))
		if len(rs) != 1 {
			t.Fatalf("%v merged into %d ranges", tt.in, len(rs))
		}
		if got := rs[0].String(); got != tt.want {
			t.Errorf("%v: String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}
