// Package deptest guards kubewire's architecture: which packages may import
// what. It shells out to `go list`, which every machine that runs the tests
// has.
package deptest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/kubewire/kubewire"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// core reports whether p is a domain package: not a converter subpackage,
// and not a measuring command under bench/ (a composition root, like the
// examples: dns/bench/kubeapi serves Kubernetes objects to CoreDNS).
func core(p string) bool {
	for _, c := range []string{"network", "ipam", "service", "policy", "dns"} {
		base := module + "/" + c
		if p == base || (strings.HasPrefix(p, base+"/") && !strings.Contains(p, "/kubeconv") && !strings.Contains(p, "/bench")) {
			return true
		}
	}
	return false
}

func TestCorePackagesDoNotImportClientGo(t *testing.T) {
	for _, p := range listPackages(t) {
		if !core(p.ImportPath) {
			continue
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, "k8s.io/client-go") {
				t.Errorf("%s depends on %s: core packages must not use client-go", p.ImportPath, d)
			}
			if strings.HasPrefix(d, "k8s.io/api/") || strings.HasPrefix(d, "k8s.io/apimachinery") {
				t.Errorf("%s depends on %s: Kubernetes API types belong in kubeconv subpackages", p.ImportPath, d)
			}
			if strings.HasPrefix(d, module+"/driver/") || strings.HasPrefix(d, module+"/examples") {
				t.Errorf("%s depends on %s: domain packages must not import drivers", p.ImportPath, d)
			}
		}
	}
}

func TestIPAMIsPureGo(t *testing.T) {
	forbidden := []string{
		"github.com/vishvananda/", "github.com/google/nftables", "github.com/cilium/ebpf",
		"github.com/mdlayher/", "golang.org/x/sys", module + "/internal/netns", module + "/driver",
	}
	found := false
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"/ipam" {
			continue
		}
		found = true
		for _, d := range p.Deps {
			for _, f := range forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("ipam depends on %s: it must not touch the kernel", d)
				}
			}
		}
	}
	if !found {
		t.Fatal("ipam package not found")
	}
}

// TestXSysUnixStaysLow keeps golang.org/x/sys/unix out of domain packages
// and examples: system calls live in internal/ helpers, and drivers may use
// its constants for kernel wire formats (nftables expressions need them).
func TestXSysUnixStaysLow(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.HasPrefix(p.ImportPath, module+"/internal/") || strings.HasPrefix(p.ImportPath, module+"/driver/") {
			continue
		}
		for _, imp := range p.Imports {
			if imp == "golang.org/x/sys/unix" {
				t.Errorf("%s imports golang.org/x/sys/unix; put the system call behind a helper in internal/", p.ImportPath)
			}
		}
	}
}
