package nftables

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nft "github.com/google/nftables"

	"github.com/kubewire/kubewire/network"
)

func TestBuildPlanErrors(t *testing.T) {
	var zero netip.Prefix
	tests := []struct {
		name  string
		rules network.MasqueradeRules
		want  string
	}{
		{"unmasked source",
			network.MasqueradeRules{Sources: prefixes("10.244.1.0/24", "10.0.0.1/8")},
			`nftables: MasqueradeRules.Sources[1] "10.0.0.1/8": not a masked prefix`},
		{"invalid source",
			network.MasqueradeRules{Sources: []netip.Prefix{zero}},
			`nftables: MasqueradeRules.Sources[0] "invalid Prefix": not a valid prefix`},
		{"unmasked except",
			network.MasqueradeRules{Sources: prefixes("10.244.1.0/24"), Except: prefixes("10.244.0.0/16", "fd00::1/48")},
			`nftables: MasqueradeRules.Except[1] "fd00::1/48": not a masked prefix`},
		{"v4-mapped v6",
			network.MasqueradeRules{Sources: prefixes("::ffff:10.0.0.0/104")},
			`nftables: MasqueradeRules.Sources[0] "::ffff:10.0.0.0/104": IPv4-mapped IPv6 prefix: write it as an IPv4 prefix`},
		{"bad except with empty sources",
			network.MasqueradeRules{Except: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), 33)}},
			`nftables: MasqueradeRules.Except[0] "invalid Prefix": not a valid prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildPlan(tt.rules)
			if err == nil {
				t.Fatalf("buildPlan(%+v) = nil error, want %q", tt.rules, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q\nwant    %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
		})
	}
}

func TestBuildPlan(t *testing.T) {
	p, err := buildPlan(network.MasqueradeRules{
		Sources:     prefixes("fd00:10:244:1::/64", "10.244.1.0/24"),
		Except:      prefixes("10.244.0.0/16", "10.245.0.0/16", "fd00:10:244::/48"),
		RandomFully: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := rangesString(p.src4); got != "10.244.1.0..10.244.1.255" {
		t.Errorf("src4 = %s", got)
	}
	if got := rangesString(p.src6); got != "fd00:10:244:1::..fd00:10:244:1:ffff:ffff:ffff:ffff" {
		t.Errorf("src6 = %s", got)
	}
	if got := rangesString(p.dst4); got != "10.244.0.0..10.245.255.255" {
		t.Errorf("dst4 = %s", got)
	}
	if got := rangesString(p.dst6); got != "fd00:10:244::..fd00:10:244:ffff:ffff:ffff:ffff:ffff" {
		t.Errorf("dst6 = %s", got)
	}
	if !p.randomFully || p.empty() {
		t.Errorf("plan = %+v", p)
	}
	if p, err := buildPlan(network.MasqueradeRules{Except: prefixes("10.0.0.0/8")}); err != nil || !p.empty() {
		t.Errorf("empty sources: plan %+v, err %v; want empty plan", p, err)
	}
}

func TestValidateTableName(t *testing.T) {
	good := []string{"kubewire", "kubewire-masq", "kw_masq_1", "_x", "A", strings.Repeat("a", MaxTableNameLen)}
	for _, n := range good {
		if err := validateTableName(n); err != nil {
			t.Errorf("validateTableName(%q) = %v, want nil", n, err)
		}
	}
	bad := map[string]string{
		"":                                     "a table name is required",
		strings.Repeat("a", MaxTableNameLen+1): "longer than 255 bytes",
		"kube wire":                            "only letters, digits, '-' and '_' are allowed",
		"kube.wire":                            "only letters, digits, '-' and '_' are allowed",
		"kube/wire":                            "only letters, digits, '-' and '_' are allowed",
		"kubé":                                 "only letters, digits, '-' and '_' are allowed",
		"1kubewire":                            "must start with a letter or '_'",
		"-kubewire":                            "must start with a letter or '_'",
	}
	for n, reason := range bad {
		err := validateTableName(n)
		if err == nil || !strings.Contains(err.Error(), reason) || !errors.Is(err, ErrInvalid) {
			t.Errorf("validateTableName(%q) = %v, want ErrInvalid with %q", n, err, reason)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "nftables: Options.Table ") {
			t.Errorf("error %q does not name the field", err)
		}
	}
}

func TestNewMasqueradeOptionErrors(t *testing.T) {
	notNS := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(notNS, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no table", Options{}, `nftables: Options.Table "": a table name is required`},
		{"bad table", Options{Table: "my table"}, `nftables: Options.Table "my table": only letters, digits, '-' and '_' are allowed`},
		{"missing netns", Options{Table: "kw", NetNS: "/nonexistent/netns"}, "/nonexistent/netns"},
		{"not a netns", Options{Table: "kw", NetNS: notNS}, "not a network namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMasquerade(tt.opts)
			if err == nil {
				m.Close()
				t.Fatalf("NewMasquerade(%+v) succeeded", tt.opts)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRuleString(t *testing.T) {
	src := &nft.Set{Name: SetMasqSrcV6, ID: idMasqSrcV6}
	dst := &nft.Set{Name: SetNoMasqDstV6, ID: idNoMasqDstV6}
	f := family{name: "ip6", nfproto: 10, saddrOff: 8, daddrOff: 24, addrLn: 16, src: src, dst: dst}
	r := &nft.Rule{Exprs: masqExprs(f, true), UserData: nil}
	want := "meta nfproto ipv6 ip6 saddr @masq-src-v6 ip6 daddr != @masq-src-v6 ip6 daddr != @no-masq-dst-v6 masquerade fully-random"
	if got := ruleString(r); got != want {
		t.Errorf("ruleString = %q\nwant         %q", got, want)
	}
}
