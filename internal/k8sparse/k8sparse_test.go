package k8sparse

import (
	"net/netip"
	"testing"
)

func TestIP(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{
		{"10.0.0.1", "10.0.0.1"}, {"010.000.000.001", "10.0.0.1"}, {"::ffff:10.0.0.1", "10.0.0.1"},
		{"fd00::1", "fd00::1"}, {"fe80::1%eth0", ""}, {"10.0.0", ""}, {"10.0.0.256", ""}, {"", ""}, {"1.2.3.-4", ""},
	} {
		got, ok := IP(c.in)
		if (c.want == "") == ok || (ok && got != netip.MustParseAddr(c.want)) {
			t.Errorf("IP(%q) = %v, %v; want %q", c.in, got, ok, c.want)
		}
	}
}

func TestPrefix(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{
		{"10.0.0.0/8", "10.0.0.0/8"}, {"10.1.2.3/8", "10.0.0.0/8"}, {"010.001.0.0/16", "10.1.0.0/16"},
		{"::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"}, {"::ffff:0:0/96", "::ffff:0.0.0.0/96"}, {"fd00::/48", "fd00::/48"},
		{"10.0.0.0/33", ""}, {"10.0.0.0", ""}, {"10.0.0.0/", ""}, {"10.0.0.0/0008", ""}, {"fe80::%eth0/64", ""},
	} {
		got, ok := Prefix(c.in)
		if (c.want == "") == ok || (ok && got != netip.MustParsePrefix(c.want)) {
			t.Errorf("Prefix(%q) = %v, %v; want %q", c.in, got, ok, c.want)
		}
	}
}
