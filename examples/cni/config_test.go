package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "podcidr.json")
	os.WriteFile(jsonFile, []byte(`{"podCIDRs": ["10.244.7.0/24", "fd00:10:244:7::/64"]}`), 0o644)
	lineFile := filepath.Join(dir, "podcidr")
	os.WriteFile(lineFile, []byte("# node range\n10.244.8.0/24\n"), 0o644)

	c, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"kubewire-cni","podCIDRFile":"` + jsonFile + `","mode":"bridge","unknownKey":{"x":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.podCIDRs) != 2 || c.podCIDRs[0].String() != "10.244.7.0/24" || c.mode.String() != "bridge" || c.dataDir != "/var/lib/cni/kubewire/n" {
		t.Fatalf("config = %+v", c)
	}
	c, err = parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","podCIDRFile":"` + lineFile + `","args":{"cni":{"ips":["10.244.8.9"]}}}`))
	if err != nil || c.podCIDRs[0].String() != "10.244.8.0/24" || c.requested[0].String() != "10.244.8.9" {
		t.Fatalf("line file config = %+v, %v", c, err)
	}

	for _, tc := range []struct {
		in   string
		code uint
		want string
	}{
		{`{`, types.ErrDecodingFailure, "network configuration"},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRs":"10.0.0.0/8"}`, types.ErrDecodingFailure, `"podCIDRs"`},
		{`{"cniVersion":"1.1.0","name":"n","ipMasq":"yes","podCIDRs":["10.244.1.0/24"]}`, types.ErrDecodingFailure, `"ipMasq"`},
		{`{"cniVersion":"1.1.0","podCIDRs":["10.244.1.0/24"]}`, types.ErrInvalidNetworkConfig, `"name"`},
		{`{"cniVersion":"1.1.0","name":"../x","podCIDRs":["10.244.1.0/24"]}`, types.ErrInvalidNetworkConfig, `"../x"`},
		{`{"cniVersion":"1.1.0","name":"n"}`, types.ErrInvalidNetworkConfig, "podCIDRs"},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.244.1.0/24","10.245.1.0/24"]}`, types.ErrInvalidNetworkConfig, "one range per family"},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.244.1.0/31"]}`, types.ErrInvalidNetworkConfig, "too small"},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.244.1.0/24"],"mtu":70000}`, types.ErrInvalidNetworkConfig, `"mtu" 70000`},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.244.1.0/24"],"dataDir":"rel"}`, types.ErrInvalidNetworkConfig, `"dataDir" "rel"`},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRFile":"/nonexistent/file"}`, types.ErrIOFailure, "/nonexistent/file"},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.244.1.0/24"],"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}}`, types.ErrInvalidNetworkConfig, `"icmp"`},
		{`{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.244.1.0/24"]} {}`, types.ErrDecodingFailure, "trailing"},
	} {
		_, err := parseConfig([]byte(tc.in))
		var ce *errConfig
		if !errors.As(err, &ce) || ce.code != tc.code || !strings.Contains(ce.msg, tc.want) {
			t.Errorf("parseConfig(%s) = %v, want code %d naming %q", tc.in, err, tc.code, tc.want)
		}
	}
}

// FuzzParseConfig: the parser never panics, and what it accepts is usable.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.244.1.0/24","fd00::/64"],"mode":"bridge","mtu":1400}`,
		`{"cniVersion":"0.3.1","name":"n","podCIDRs":["10.244.1.0/24"],"runtimeConfig":{"ips":["10.244.1.5/24"],"portMappings":[{"hostPort":80,"containerPort":8080}]}}`,
		`{"cniVersion":"1.0.0","name":"n","podCIDRs":["10.244.1.0/24"],"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"lo"}],"ips":[{"address":"127.0.0.1/8","interface":0}]}}`,
		`{"name":1}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := parseConfig(in)
		if err != nil {
			var ce *errConfig
			if !errors.As(err, &ce) || ce.code == 0 || ce.msg == "" {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		if len(c.podCIDRs) == 0 || c.raw.Name == "" || !filepath.IsAbs(c.dataDir) {
			t.Fatalf("accepted an unusable config: %+v", c)
		}
		for _, p := range c.podCIDRs {
			if p != p.Masked() {
				t.Fatalf("unmasked pod CIDR accepted: %s", p)
			}
		}
		for _, pm := range c.portMaps {
			if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
				t.Fatalf("bad port mapping accepted: %+v", pm)
			}
		}
	})
}
