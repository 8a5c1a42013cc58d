package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	vnl "github.com/vishvananda/netlink"

	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/internal/sandbox"
)

func TestAddCheckDelWithTraffic(t *testing.T) {
	for _, mode := range []string{"routed", "bridge"} {
		t.Run(mode, func(t *testing.T) {
			e := newCNIEnv(t, map[string]any{"mode": mode, "mtu": 1400,
				"dns": map[string]any{"nameservers": []string{"10.96.0.10"}, "search": []string{"svc.cluster.local"}}})
			a := e.add("pod-a", nil)
			b := e.add("pod-b", nil)

			// The result: host veth, pod interface with its sandbox, both
			// families with the pod interface's index, routes, DNS.
			r := a.res
			if len(r.Interfaces) != 2 || r.Interfaces[1].Name != "eth0" || r.Interfaces[1].Sandbox != a.ns.Path() ||
				r.Interfaces[0].Sandbox != "" || !strings.HasPrefix(r.Interfaces[0].Name, "kw") || r.Interfaces[1].Mtu != 1400 {
				t.Fatalf("interfaces = %s", js(r.Interfaces))
			}
			if len(r.IPs) != 2 || *r.IPs[0].Interface != 1 || *r.IPs[1].Interface != 1 {
				t.Fatalf("ips = %s", js(r.IPs))
			}
			if mode == "bridge" && r.IPs[0].Gateway.String() != "10.244.1.1" {
				t.Fatalf("bridge gateway = %v", r.IPs[0].Gateway)
			}
			if mode == "routed" && (r.IPs[0].Gateway.String() != "169.254.1.1" || r.IPs[0].Address.String() != a.ip(true).String()+"/32") {
				t.Fatalf("routed ip = %s", js(r.IPs[0]))
			}
			if len(r.Routes) == 0 || len(r.DNS.Nameservers) != 1 || r.DNS.Search[0] != "svc.cluster.local" {
				t.Fatalf("routes/dns = %s %s", js(r.Routes), js(r.DNS))
			}
			if a.ip(true) == b.ip(true) || a.ip(false) == b.ip(false) {
				t.Fatal("two pods got one address")
			}

			// Real traffic: pod to pod (both families, TCP and UDP), pod to node.
			for _, v4 := range []bool{true, false} {
				for _, proto := range []string{"tcp", "udp"} {
					srv := b.ns.ServeEcho(proto, netip.AddrPortFrom(b.ip(v4), 0))
					if from := a.ns.MustReach(t, proto, srv); from.Addr() != a.ip(v4) {
						t.Errorf("%s: server saw %s, want %s", proto, from.Addr(), a.ip(v4))
					}
				}
			}
			nodeSrv := e.node.ServeEcho("tcp", netip.MustParseAddrPort("198.18.0.1:0"))
			a.ns.MustReach(t, "tcp", nodeSrv)

			// CHECK passes; after drift it fails with the drift code.
			ctx := context.Background()
			if err := e.cni.CheckNetworkList(ctx, e.list, a.rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			eth0, _ := a.ns.Netlink().LinkByName("eth0")
			addrs, _ := a.ns.Netlink().AddrList(eth0, vnl.FAMILY_V4)
			if err := a.ns.Netlink().AddrDel(eth0, &addrs[0]); err != nil {
				t.Fatal(err)
			}
			err := e.cni.CheckNetworkList(ctx, e.list, a.rt)
			var ce *types.Error
			if !errors.As(err, &ce) || ce.Code != errDrift || !strings.Contains(ce.Details, "pod address") {
				t.Fatalf("CHECK after removing the address = %v, want drift (code %d)", err, errDrift)
			}

			// DEL both, DEL again (idempotent), and nothing is left.
			for _, p := range []*cniPod{a, b} {
				for i := 0; i < 2; i++ {
					if err := e.del(p); err != nil {
						t.Fatalf("DEL #%d: %v", i+1, err)
					}
				}
			}
			e.assertClean()
		})
	}
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestDelRobustness(t *testing.T) {
	e := newCNIEnv(t, nil)
	ctx := context.Background()

	// DEL after the pod namespace is gone.
	a := e.add("pod-a", nil)
	a.ns.Netlink().Close()
	a.ns.Close()
	if err := netns.DeleteNamed(a.ns.Name); err != nil {
		t.Fatal(err)
	}
	if err := e.del(a); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}

	// DEL with the result cache missing (libcni then passes no prevResult).
	b := e.add("pod-b", nil)
	if err := os.RemoveAll(e.cache); err != nil {
		t.Fatal(err)
	}
	if err := e.del(b); err != nil {
		t.Fatalf("DEL without a cached result: %v", err)
	}

	// DEL of something never added, and with an empty CNI_NETNS.
	rt := &libcni.RuntimeConf{ContainerID: "never", IfName: "eth0"}
	if err := e.cni.DelNetworkList(ctx, e.list, rt); err != nil {
		t.Fatalf("DEL of an unknown container: %v", err)
	}
	e.assertClean()
}

func TestAddTwiceIsIdempotent(t *testing.T) {
	e := newCNIEnv(t, nil)
	a := e.add("pod-a", nil)
	r, err := e.cni.AddNetworkList(context.Background(), e.list, a.rt)
	if err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	again, _ := current.NewResultFromResult(r)
	if js(again.IPs) != js(a.res.IPs) {
		t.Fatalf("second ADD gave %s, first %s", js(again.IPs), js(a.res.IPs))
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestVersions(t *testing.T) {
	e := newCNIEnv(t, nil)
	info, err := e.cni.GetVersionInfo(context.Background(), "kubewire-cni")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(info.SupportedVersions(), ","); got != "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
		t.Fatalf("VERSION supports %s", got)
	}
	for _, v := range info.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			e.setList(v, e.conf)
			p := e.add("pod", nil)
			if p.ip(true) == (netip.Addr{}) || p.ip(false) == (netip.Addr{}) {
				t.Fatalf("result for %s lacks addresses: %s", v, js(p.res))
			}
			if v >= "0.4.0" {
				if err := e.cni.CheckNetworkList(context.Background(), e.list, p.rt); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			if err := e.del(p); err != nil {
				t.Fatal(err)
			}
		})
	}
	e.assertClean()
}

func TestBadInput(t *testing.T) {
	e := newCNIEnv(t, nil)
	pod := e.sb.Namespace("pod")
	env := func(netnsPath string) map[string]string {
		return map[string]string{"CNI_CONTAINERID": "c1", "CNI_NETNS": netnsPath, "CNI_IFNAME": "eth0"}
	}
	cases := []struct {
		name  string
		stdin []byte
		env   map[string]string
		code  uint
		msg   string
	}{
		{"malformed json", []byte(`{"cniVersion": "1.1.0", "name": `), env(pod.Path()), types.ErrDecodingFailure, "network config"},
		{"wrong type", e.pluginConf("1.1.0", map[string]any{"mtu": "big"}), env(pod.Path()), types.ErrDecodingFailure, `"mtu"`},
		{"bad cidr", e.pluginConf("1.1.0", map[string]any{"podCIDRs": []string{"10.244.1.0/33"}}), env(pod.Path()), types.ErrInvalidNetworkConfig, `"10.244.1.0/33"`},
		{"host bits", e.pluginConf("1.1.0", map[string]any{"podCIDRs": []string{"10.244.1.7/24"}}), env(pod.Path()), types.ErrInvalidNetworkConfig, "host bits"},
		{"bad mode", e.pluginConf("1.1.0", map[string]any{"mode": "macvlan"}), env(pod.Path()), types.ErrInvalidNetworkConfig, `"macvlan"`},
		{"missing netns", e.pluginConf("1.1.0", nil), env(""), types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"unsupported version", e.pluginConf("2.0.0", nil), env(pod.Path()), types.ErrIncompatibleCNIVersion, "2.0.0"},
		{"bandwidth", e.pluginConf("1.1.0", map[string]any{"runtimeConfig": map[string]any{"bandwidth": map[string]any{"ingressRate": 1000}}}), env(pod.Path()), types.ErrUnsupportedField, "bandwidth"},
		{"bad requested ip", e.pluginConf("1.1.0", map[string]any{"runtimeConfig": map[string]any{"ips": []string{"nope"}}}), env(pod.Path()), types.ErrInvalidNetworkConfig, `"nope"`},
		{"requested ip outside", e.pluginConf("1.1.0", map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.9.9.9"}}}), env(pod.Path()), types.ErrInvalidNetworkConfig, "10.9.9.9"},
		{"netns not a namespace", e.pluginConf("1.1.0", nil), env("/etc/hostname"), types.ErrInvalidNetNS, "namespace"},
		{"bad hostPort", e.pluginConf("1.1.0", map[string]any{"runtimeConfig": map[string]any{"portMappings": []any{map[string]any{"hostPort": 0, "containerPort": 80}}}}), env(pod.Path()), types.ErrInvalidNetworkConfig, "hostPort 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := e.runPlugin("ADD", tc.stdin, tc.env)
			if err == nil {
				t.Fatalf("ADD succeeded: %s", out)
			}
			var ce types.Error
			if jerr := json.Unmarshal(out, &ce); jerr != nil {
				t.Fatalf("stdout is not a CNI error object: %q (%v)", out, jerr)
			}
			if ce.Code != tc.code || !strings.Contains(ce.Msg+" "+ce.Details, tc.msg) {
				t.Fatalf("error = %+v, want code %d mentioning %q", ce, tc.code, tc.msg)
			}
		})
	}
	// Nothing half-configured.
	e.assertClean()
	if _, err := pod.Netlink().LinkByName("eth0"); err == nil {
		t.Fatal("eth0 left in the pod")
	}
}

func TestGC(t *testing.T) {
	e := newCNIEnv(t, nil)
	ctx := context.Background()
	keep := e.add("keep", nil)
	stale := e.add("stale", nil)
	// An attachment made behind libcni's back (no cache entry), like a
	// killed runtime would leave.
	orphan := e.sb.Namespace("orphan")
	out, err := e.runPlugin("ADD", e.pluginConf("1.1.0", nil), map[string]string{
		"CNI_CONTAINERID": "orphan", "CNI_NETNS": orphan.Path(), "CNI_IFNAME": "eth0"})
	if err != nil {
		t.Fatalf("direct ADD: %v %s", err, out)
	}
	err = e.cni.GCNetworkList(ctx, e.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: keep.rt.ContainerID, IfName: "eth0"}}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if owners := e.ipamOwners(); len(owners) != 1 || owners[0] != keep.rt.ContainerID+"/eth0" {
		t.Fatalf("owners after GC = %v, want only %s", owners, keep.rt.ContainerID)
	}
	for _, ns := range []*sandbox.NS{stale.ns, orphan} {
		if _, err := ns.Netlink().LinkByName("eth0"); err == nil {
			t.Fatalf("GC left the interface of %s", ns.Role)
		}
	}
	if err := e.cni.CheckNetworkList(ctx, e.list, keep.rt); err != nil {
		t.Fatalf("GC broke the live pod: %v", err)
	}
	if err := e.del(keep); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestStatus(t *testing.T) {
	// A /30 in routed mode has two usable addresses.
	e := newCNIEnv(t, map[string]any{"podCIDRs": []string{"10.244.1.0/30"}})
	ctx := context.Background()
	if err := e.cni.GetStatusNetworkList(ctx, e.list); err != nil {
		t.Fatalf("STATUS on an empty pool: %v", err)
	}
	a, b := e.add("a", nil), e.add("b", nil)
	err := e.cni.GetStatusNetworkList(ctx, e.list)
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS on a full pool = %v, want code 50", err)
	}
	// ADD now fails cleanly.
	ns := e.sb.Namespace("c")
	if _, err := e.cni.AddNetworkList(ctx, e.list, e.rt(ns)); err == nil {
		t.Fatal("ADD into a full pool succeeded")
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	if err := e.cni.GetStatusNetworkList(ctx, e.list); err != nil {
		t.Fatalf("STATUS after a DEL: %v", err)
	}
	e.del(b)
	e.assertClean()
}

func TestParallelAdds(t *testing.T) {
	e := newCNIEnv(t, nil)
	ctx := context.Background()
	const n = 50
	pods := make([]*cniPod, n)
	for i := range pods {
		ns := e.sb.Namespace(fmt.Sprintf("p%d", i))
		pods[i] = &cniPod{ns: ns, rt: e.rt(ns)}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.cni.AddNetworkList(ctx, e.list, p.rt)
			if err != nil {
				errs <- err
				return
			}
			p.res, err = current.NewResultFromResult(r)
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range pods {
		for _, v4 := range []bool{true, false} {
			if seen[p.ip(v4)] {
				t.Fatalf("address %s given twice", p.ip(v4))
			}
			seen[p.ip(v4)] = true
		}
	}
	for _, pair := range [][2]int{{0, n - 1}, {n / 2, 1}} {
		srv := pods[pair[1]].ns.ServeEcho("tcp", netip.AddrPortFrom(pods[pair[1]].ip(true), 0))
		pods[pair[0]].ns.MustReach(t, "tcp", srv)
	}
	delErrs := make(chan error, n)
	for _, p := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); delErrs <- e.del(p) }()
	}
	wg.Wait()
	close(delErrs)
	for err := range delErrs {
		if err != nil {
			t.Error(err)
		}
	}
	e.assertClean()
}

// TestKilledAdd kills ADDs at random moments; DEL (and GC) must then clean
// up whatever each left.
func TestKilledAdd(t *testing.T) {
	e := newCNIEnv(t, nil)
	ctx := context.Background()
	bin := filepath.Join(pluginDir, "kubewire-cni")
	for i := 0; i < 20; i++ {
		ns := e.sb.Namespace(fmt.Sprintf("k%d", i))
		cid := fmt.Sprintf("killed-%d", i)
		conf := e.pluginConf("1.1.0", nil)
		err := e.node.Do(func() error {
			c := exec.Command(bin)
			c.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + ns.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + pluginDir}
			c.Stdin = strings.NewReader(string(conf))
			if err := c.Start(); err != nil {
				return err
			}
			time.Sleep(time.Duration(rand.IntN(12000)) * time.Microsecond)
			_ = c.Process.Signal(syscall.SIGKILL)
			_ = c.Wait()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := e.runPlugin("DEL", conf, map[string]string{"CNI_CONTAINERID": cid, "CNI_NETNS": ns.Path(), "CNI_IFNAME": "eth0"})
		if err != nil {
			t.Fatalf("DEL after a killed ADD: %v %s", err, out)
		}
	}
	// GC with no valid attachment catches anything else.
	if err := e.cni.GCNetworkList(ctx, e.list, &libcni.GCArgs{}); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestPortMappingsAndMasquerade(t *testing.T) {
	e := newCNIEnv(t, map[string]any{"ipMasq": true, "clusterCIDRs": []string{"10.244.0.0/16", "fd00:10:244::/48"},
		"capabilities": map[string]bool{"portMappings": true}})
	// A client and a remote host outside the cluster, both only knowing
	// the node.
	outside := e.sb.Namespace("outside")
	e.sb.Connect(e.node, "eth0", []netip.Prefix{netip.MustParsePrefix("198.18.5.1/24"), netip.MustParsePrefix("2001:db8:5::1/64")},
		outside, "eth0", []netip.Prefix{netip.MustParsePrefix("198.18.5.2/24"), netip.MustParsePrefix("2001:db8:5::2/64")})
	pod := e.add("web", map[string]any{"portMappings": []map[string]any{
		{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
		{"hostPort": 8053, "containerPort": 53, "protocol": "udp"},
	}})
	for _, v4 := range []bool{true, false} {
		pod.ns.ServeEcho("tcp", netip.AddrPortFrom(pod.ip(v4), 80))
		pod.ns.ServeEcho("udp", netip.AddrPortFrom(pod.ip(v4), 53))
	}
	nodeV4, nodeV6 := netip.MustParseAddr("198.18.5.1"), netip.MustParseAddr("2001:db8:5::1")
	for _, target := range []netip.AddrPort{netip.AddrPortFrom(nodeV4, 8080), netip.AddrPortFrom(nodeV6, 8080)} {
		if from := outside.MustReach(t, "tcp", target); !from.Addr().IsValid() {
			t.Fatal("no peer address")
		}
	}
	outside.MustReach(t, "udp", netip.AddrPortFrom(nodeV4, 8053))

	// Egress is masqueraded to the node's address.
	srv := outside.ServeEcho("tcp", netip.MustParseAddrPort("198.18.5.2:0"))
	if from := pod.ns.MustReach(t, "tcp", srv); from.Addr() != nodeV4 {
		t.Fatalf("remote saw the pod as %s, want the node %s", from.Addr(), nodeV4)
	}
	srv6 := outside.ServeEcho("tcp", netip.MustParseAddrPort("[2001:db8:5::2]:0"))
	if from := pod.ns.MustReach(t, "tcp", srv6); from.Addr() != nodeV6 {
		t.Fatalf("remote saw the pod as %s, want the node %s", from.Addr(), nodeV6)
	}
	// A second pod asking for the same host port is refused, cleanly.
	other := e.sb.Namespace("other")
	rt := e.rt(other)
	rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}
	_, err := e.cni.AddNetworkList(context.Background(), e.list, rt)
	var ce *types.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg+ce.Details, "host port") {
		t.Fatalf("conflicting hostPort ADD = %v", err)
	}
	if _, err := other.Netlink().LinkByName("eth0"); err == nil {
		t.Fatal("refused ADD left eth0 in the pod")
	}
	// DEL removes the mapping.
	if err := e.del(pod); err != nil {
		t.Fatal(err)
	}
	outside.MustNotReach(t, "tcp", netip.AddrPortFrom(nodeV4, 8080))
	e.assertClean()
}

// TestChainWithReferencePlugins runs kubewire-cni between two reference
// plugins built from the Go module proxy: loopback before it (kubewire-cni
// extends its prevResult) and tuning after it (which consumes ours).
func TestChainWithReferencePlugins(t *testing.T) {
	e := newCNIEnv(t, nil)
	refDir := t.TempDir()
	build := exec.Command("go", "install",
		"github.com/containernetworking/plugins/plugins/main/loopback@v1.9.1",
		"github.com/containernetworking/plugins/plugins/meta/tuning@v1.9.1")
	build.Env = append(os.Environ(), "GOBIN="+refDir, "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build the reference plugins from the module proxy: %v\n%s", err, out)
	}
	e.cni.Path = append(e.cni.Path, refDir)
	e.setList("1.1.0",
		map[string]any{"type": "loopback"},
		e.conf,
		map[string]any{"type": "tuning", "sysctl": map[string]string{"net.core.somaxconn": "1234"}},
	)
	p := e.add("chained", nil)
	// loopback's lo, then our host and pod interfaces.
	if len(p.res.Interfaces) != 3 || p.res.Interfaces[0].Name != "lo" || p.res.Interfaces[2].Name != "eth0" {
		t.Fatalf("chained interfaces = %s", js(p.res.Interfaces))
	}
	var ours int
	for _, ip := range p.res.IPs {
		if *ip.Interface == 2 {
			ours++
		}
	}
	if ours != 2 {
		t.Fatalf("chained IPs = %s, want two on interface 2", js(p.res.IPs))
	}
	if v, err := p.ns.Sysctl("net.core.somaxconn"); err != nil || v != "1234" {
		t.Fatalf("tuning after kubewire-cni: somaxconn = %q, %v", v, err)
	}
	if err := e.cni.CheckNetworkList(context.Background(), e.list, p.rt); err != nil {
		t.Fatalf("CHECK of the chain: %v", err)
	}
	if err := e.del(p); err != nil {
		t.Fatalf("DEL of the chain: %v", err)
	}
	e.assertClean()
}

// TestDelAfterRangeFileLost: the node range file disappears (node reset)
// before the runtime deletes its pods; DEL still removes the link and
// releases the address.
func TestDelAfterRangeFileLost(t *testing.T) {
	rangeFile := filepath.Join(t.TempDir(), "podcidr.json")
	if err := os.WriteFile(rangeFile, []byte(`{"podCIDRs": ["10.244.1.0/24"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newCNIEnv(t, map[string]any{"podCIDRs": nil, "podCIDRFile": rangeFile})
	p := e.add("pod", nil)
	if err := os.Remove(rangeFile); err != nil {
		t.Fatal(err)
	}
	// ADD without the ranges fails clearly ...
	other := e.sb.Namespace("other")
	_, err := e.cni.AddNetworkList(context.Background(), e.list, e.rt(other))
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrIOFailure || !strings.Contains(ce.Msg, rangeFile) {
		t.Fatalf("ADD without the range file = %v, want code 5 naming it", err)
	}
	// ... but DEL works.
	if err := e.del(p); err != nil {
		t.Fatalf("DEL without the range file: %v", err)
	}
	if err := os.WriteFile(rangeFile, []byte(`{"podCIDRs": ["10.244.1.0/24"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}
