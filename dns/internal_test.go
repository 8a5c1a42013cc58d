package dns

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name, zone, rel string
		ok              bool
	}{
		{"cluster.local.", "cluster.local.", "", true},
		{"a.b.cluster.local.", "cluster.local.", "a.b", true},
		{"acluster.local.", "cluster.local.", "", false},
		{`a\.cluster.local.`, "local.", `a\.cluster`, true},
		{`a\.local.`, "local.", "", false},
		{`a\\.cluster.local.`, "cluster.local.", `a\\`, true},
		{"local.", "cluster.local.", "", false},
	} {
		rel, ok := under(tc.name, tc.zone)
		if rel != tc.rel || ok != tc.ok {
			t.Errorf("under(%q, %q) = %q, %v; want %q, %v", tc.name, tc.zone, rel, ok, tc.rel, tc.ok)
		}
	}
	var buf [3]string
	if n := labels("a.b.c", buf[:]); n != 3 || buf[0] != "c" || buf[2] != "a" {
		t.Errorf("labels: %d %q", n, buf)
	}
	if n := labels("a.b.c.d", buf[:]); n != -1 {
		t.Errorf("labels of too long a name: %d", n)
	}
	if n := labels(`a\.b`, buf[:]); n != -1 {
		t.Errorf("labels of an escaped name: %d", n)
	}
	if got := lowerASCII("Web.DEFAULT"); got != "web.default" {
		t.Errorf("lowerASCII: %q", got)
	}
	for _, a := range []string{"10.1.2.3", "fd00::5", "2001:db8::1:0:0:1", "::1", "255.255.255.255"} {
		addr := netip.MustParseAddr(a)
		got, ok := parseDashed(dashed(addr))
		if !ok || got != addr {
			t.Errorf("parseDashed(dashed(%v)) = %v, %v", addr, got, ok)
		}
		rev, ok := parseReverse(ReverseName(addr))
		if !ok || rev != addr {
			t.Errorf("parseReverse(%s) = %v, %v", ReverseName(addr), rev, ok)
		}
		want, _ := mdns.ReverseAddr(a)
		if ReverseName(addr) != want {
			t.Errorf("ReverseName(%v) = %s, miekg says %s", addr, ReverseName(addr), want)
		}
	}
	for _, bad := range []string{"1.2.3.in-addr.arpa.", "01.2.3.4.in-addr.arpa.", "256.2.3.4.in-addr.arpa.", "1.2.3.4.5.in-addr.arpa.",
		"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.ip6.arpa.", "10.in-addr.arpa."} {
		if _, ok := parseReverse(bad); ok {
			t.Errorf("parseReverse(%s) accepted", bad)
		}
	}
	for _, bad := range []string{"1-2-3", "1-2-3-4-5", "--1--", "a-b-c-d", "1-2-3-4-"} {
		if _, ok := parseDashed(bad); ok {
			t.Errorf("parseDashed(%s) accepted", bad)
		}
	}
	for p, want := range map[string]string{
		"10.96.0.0/12": "", "10.0.0.0/8": "10.in-addr.arpa.", "10.96.0.0/16": "96.10.in-addr.arpa.",
		"fd00::/8": "d.f.ip6.arpa.", "fd00::/10": "", "fd00::/16": "0.0.d.f.ip6.arpa.", "fd00:1::/32": "1.0.0.0.0.0.d.f.ip6.arpa.",
	} {
		got, err := reverseZone(netip.MustParsePrefix(p))
		if got != want || (err != nil) != (want == "") {
			t.Errorf("reverseZone(%s) = %q, %v; want %q", p, got, err, want)
		}
	}
}

func cachedMsg(name string, ttl uint32, rcode int) *mdns.Msg {
	m := new(mdns.Msg)
	m.Rcode = rcode
	if rcode == mdns.RcodeSuccess {
		m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: net.IPv4(192, 0, 2, 1)}}
	} else {
		m.Ns = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl}, Minttl: ttl / 2}}
	}
	return m
}

func TestCacheExpiryAndCapacity(t *testing.T) {
	now := time.Unix(1000, 0)
	c, err := newCache(CacheConfig{Capacity: 2, MaxTTL: 100 * time.Second, MaxNegativeTTL: 10 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return now }
	key := func(n string) cacheKey { return cacheKey{name: n, qtype: mdns.TypeA, qclass: mdns.ClassINET} }

	c.put(key("a."), cachedMsg("a.", 60, mdns.RcodeSuccess))
	now = now.Add(25 * time.Second)
	m, ok := c.get(key("a."))
	if !ok || m.Answer[0].Header().Ttl != 35 {
		t.Fatalf("after 25 s: %v, %v", m, ok)
	}
	// The entry served is a copy.
	m.Answer[0].Header().Ttl = 9999
	if m2, _ := c.get(key("a.")); m2.Answer[0].Header().Ttl != 35 {
		t.Fatal("cache entry modified through a returned message")
	}
	now = now.Add(35 * time.Second)
	if _, ok := c.get(key("a.")); ok {
		t.Fatal("expired entry served")
	}
	if c.len() != 0 {
		t.Fatalf("expired entry kept: %d", c.len())
	}
	// Capped TTLs: positive at MaxTTL, negative at MaxNegativeTTL and the
	// SOA minimum.
	c.put(key("long."), cachedMsg("long.", 86400, mdns.RcodeSuccess))
	c.put(key("nx."), cachedMsg("nx.", 3600, mdns.RcodeNameError))
	now = now.Add(10 * time.Second)
	if _, ok := c.get(key("nx.")); ok {
		t.Fatal("negative entry outlived MaxNegativeTTL")
	}
	if m, ok := c.get(key("long.")); !ok || m.Answer[0].Header().Ttl != 90 {
		t.Fatalf("capped positive entry: %v %v", m, ok)
	}
	// Capacity 2: the least recently used goes.
	c.put(key("b."), cachedMsg("b.", 60, mdns.RcodeSuccess))
	c.get(key("long."))
	c.put(key("c."), cachedMsg("c.", 60, mdns.RcodeSuccess))
	if _, ok := c.get(key("b.")); ok {
		t.Fatal("LRU entry not evicted")
	}
	if _, ok := c.get(key("long.")); !ok {
		t.Fatal("recently used entry evicted")
	}
	if c.len() != 2 {
		t.Fatalf("%d entries, capacity 2", c.len())
	}
	// Not cached: TTL 0, truncated, SERVFAIL, negative without SOA.
	zero := cachedMsg("z.", 0, mdns.RcodeSuccess)
	tc := cachedMsg("t.", 60, mdns.RcodeSuccess)
	tc.Truncated = true
	nosoa := new(mdns.Msg)
	nosoa.Rcode = mdns.RcodeNameError
	for _, m := range []*mdns.Msg{zero, tc, {MsgHdr: mdns.MsgHdr{Rcode: mdns.RcodeServerFailure}}, nosoa} {
		if ttl, _ := c.ttlOf(m); ttl != 0 {
			t.Errorf("cacheable for %v: %v", ttl, m)
		}
	}
	if c, _ := newCache(CacheConfig{Disabled: true}, nil); c != nil {
		t.Error("disabled cache exists")
	}
}

func TestForwarderFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte("# comment\nnameserver 192.0.2.53\nnameserver fd00::53 ; v6\nsearch corp.example.\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := newForwarder(".", "Forward", ForwardConfig{ResolvConf: path}, 1232, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range f.upstreams {
		got = append(got, u.label)
	}
	if len(got) != 2 || got[0] != "192.0.2.53:53" || got[1] != "[fd00::53]:53" {
		t.Fatalf("upstreams %v", got)
	}
	if f.maxConc != 1000 || f.timeout != 2*time.Second || f.maxFails != 2 {
		t.Fatalf("defaults: %+v", f)
	}
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("search x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newForwarder(".", "Forward", ForwardConfig{ResolvConf: empty}, 1232, nil, nil); err == nil {
		t.Fatal("resolv.conf without nameservers accepted")
	}
	// Explicit upstreams: port 0 means 53; down ones are tried last.
	f, err = newForwarder(".", "Forward", ForwardConfig{Upstreams: []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:0"), netip.MustParseAddrPort("192.0.2.2:5353")}}, 1232, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.upstreams[0].label != "192.0.2.1:53" {
		t.Fatalf("port 0: %s", f.upstreams[0].label)
	}
	f.upstreams[0].fails.Store(2)
	if o := f.order(); o[0] != f.upstreams[1] || o[1] != f.upstreams[0] {
		t.Fatal("a down upstream is not last")
	}
}
