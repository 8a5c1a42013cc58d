package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	nftdrv "github.com/kubewire/kubewire/driver/nftables"
	"github.com/kubewire/kubewire/internal/cnirun"
	"github.com/kubewire/kubewire/internal/sandbox"
)

// pluginDir holds the kubewire-cni binary built once for the package's tests.
var pluginDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kubewire-cni-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = dir
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "kubewire-cni"), ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build kubewire-cni: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cniEnv is one simulated node driven through libcni.
type cniEnv struct {
	t       *testing.T
	sb      *sandbox.Sandbox
	node    *sandbox.NS
	cni     *libcni.CNIConfig
	dataDir string
	cache   string
	list    *libcni.NetworkConfigList
	conf    map[string]any // the kubewire-cni plugin entry
	seq     int
}

// newCNIEnv makes a node namespace (with 198.18.0.1 on lo as its address)
// and a libcni client whose plugins run in it.
func newCNIEnv(t *testing.T, conf map[string]any) *cniEnv {
	t.Helper()
	sb := sandbox.New(t)
	node := sb.Namespace("node")
	if err := node.SetupLink("lo", netip.MustParsePrefix("198.18.0.1/32"), netip.MustParsePrefix("2001:db8::1/128")); err != nil {
		t.Fatal(err)
	}
	e := &cniEnv{t: t, sb: sb, node: node, dataDir: t.TempDir(), cache: t.TempDir()}
	e.cni = cnirun.NewCNIConfig(node.NetNS, []string{pluginDir}, e.cache)
	e.conf = map[string]any{
		"type":     "kubewire-cni",
		"podCIDRs": []string{"10.244.1.0/24", "fd00:10:244:1::/64"},
		"dataDir":  e.dataDir,
	}
	for k, v := range conf {
		e.conf[k] = v
	}
	e.setList("1.1.0", e.conf)
	return e
}

// setList makes the network configuration list the env uses.
func (e *cniEnv) setList(cniVersion string, plugins ...map[string]any) {
	e.t.Helper()
	var ps []any
	for _, p := range plugins {
		ps = append(ps, p)
	}
	raw, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": "kw-test", "plugins": ps})
	if err != nil {
		e.t.Fatal(err)
	}
	if e.list, err = libcni.ConfListFromBytes(raw); err != nil {
		e.t.Fatalf("conflist: %v", err)
	}
}

type cniPod struct {
	ns  *sandbox.NS
	rt  *libcni.RuntimeConf
	res *current.Result
}

func (e *cniEnv) rt(ns *sandbox.NS) *libcni.RuntimeConf {
	e.seq++
	return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("ctr-%d-%s", e.seq, ns.Role), NetNS: ns.Path(), IfName: "eth0"}
}

// add creates a pod namespace and ADDs it through libcni.
func (e *cniEnv) add(name string, capArgs map[string]any) *cniPod {
	e.t.Helper()
	ns := e.sb.Namespace(name)
	rt := e.rt(ns)
	rt.CapabilityArgs = capArgs
	r, err := e.cni.AddNetworkList(context.Background(), e.list, rt)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", name, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		e.t.Fatalf("ADD %s: result: %v", name, err)
	}
	return &cniPod{ns: ns, rt: rt, res: res}
}

func (e *cniEnv) del(p *cniPod) error {
	return e.cni.DelNetworkList(context.Background(), e.list, p.rt)
}

func (p *cniPod) ip(v4 bool) netip.Addr {
	for _, c := range p.res.IPs {
		a, _ := netip.AddrFromSlice(c.Address.IP)
		a = a.Unmap()
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// runPlugin execs the plugin directly (no libcni) in the node namespace and
// returns its stdout and exit error.
func (e *cniEnv) runPlugin(cmd string, stdin []byte, env map[string]string) ([]byte, error) {
	var out []byte
	var runErr error
	err := e.node.Do(func() error {
		c := exec.Command(filepath.Join(pluginDir, "kubewire-cni"))
		c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_PATH=" + pluginDir}
		for k, v := range env {
			c.Env = append(c.Env, k+"="+v)
		}
		c.Stdin = strings.NewReader(string(stdin))
		out, runErr = c.Output()
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out, runErr
}

// pluginConf renders one plugin configuration (as libcni would pass it).
func (e *cniEnv) pluginConf(cniVersion string, extra map[string]any) []byte {
	m := map[string]any{"cniVersion": cniVersion, "name": "kw-test"}
	for k, v := range e.conf {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// assertClean checks that no attachment, address, pod route or port
// mapping of the network is left on the node.
func (e *cniEnv) assertClean() {
	e.t.Helper()
	// DEL retires veths at once; the reaper it starts deletes them shortly
	// after.
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		links, err := e.node.Netlink().LinkList()
		if err != nil {
			e.t.Fatal(err)
		}
		left = left[:0]
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "kw") && l.Type() == "veth" {
				left = append(left, l.Attrs().Name)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(left) > 0 {
		e.t.Errorf("veths left on the node: %v", left)
	}
	owners := e.ipamOwners()
	if len(owners) != 0 {
		e.t.Errorf("IPAM still holds addresses for %v", owners)
	}
	if mapped := e.portOwners(); len(mapped) != 0 {
		e.t.Errorf("port mappings left for %v", mapped)
	}
}

// ipamOwners lists the owners holding addresses in the network's journal.
func (e *cniEnv) ipamOwners() []string {
	e.t.Helper()
	cfg, err := parseConfig(e.pluginConf("1.1.0", nil))
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := openIPAM(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	defer p.store.Close()
	owners, err := p.alloc.Owners(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return owners
}

// portOwners lists the owners holding host port mappings on the node.
func (e *cniEnv) portOwners() []string {
	e.t.Helper()
	pm, err := nftdrv.NewPortMap(nftdrv.Options{NetNS: e.node.Path(), Table: tableName("kw-test", "hostports")})
	if err != nil {
		e.t.Fatal(err)
	}
	defer pm.Close()
	owners, err := pm.PortMappingOwners(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return owners
}
