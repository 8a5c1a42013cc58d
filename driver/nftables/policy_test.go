package nftables

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	nft "github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/policy"
)

// policyWorld builds drivertest's policy world: one node namespace and a
// namespace per pod, routed through the node, every pod serving TCP and
// UDP echo on ports 80 and 81, IPv4 and IPv6.
func policyWorld(t testing.TB) (*sandbox.NS, map[policy.Key]*sandbox.NS) {
	sb := sandbox.New(t)
	node := sb.Namespace("node")
	pods := map[policy.Key]*sandbox.NS{}
	for _, k := range drivertest.PolicyPods() {
		ns := sb.Namespace("pod-" + k.Namespace + k.Name)
		var podSide, nodeSide []netip.Prefix
		for fam := range 2 {
			podSide = append(podSide, netip.PrefixFrom(drivertest.PolicyPodAddr(k, fam), drivertest.PolicyPrefixBits[fam]))
			nodeSide = append(nodeSide, netip.PrefixFrom(drivertest.PolicyGateway(k, fam), drivertest.PolicyPrefixBits[fam]))
		}
		sb.Connect(ns, "eth0", podSide, node, "p"+k.Namespace+k.Name, nodeSide)
		for fam, def := range []string{"0.0.0.0/0", "::/0"} {
			if err := ns.AddRoute(netip.MustParsePrefix(def), drivertest.PolicyGateway(k, fam), "eth0"); err != nil {
				t.Fatal(err)
			}
		}
		for _, port := range drivertest.PolicyPorts {
			for fam := range 2 {
				for _, network := range []string{"tcp", "udp"} {
					ns.ServeEcho(network, netip.AddrPortFrom(drivertest.PolicyPodAddr(k, fam), port))
				}
			}
		}
		pods[k] = ns
	}
	node.MustSysctl("net.ipv4.ip_forward", "1")
	node.MustSysctl("net.ipv6.conf.all.forwarding", "1")
	node.MustSysctl("net.ipv4.icmp_ratelimit", "0")
	node.MustSysctl("net.ipv6.icmp.ratelimit", "0")
	return node, pods
}

// udpSrcPort hands out the UDP source ports of the probes: each is used
// once per test run, so no probe can match a conntrack entry (or a late
// datagram) of an earlier flow that happened to use the same port, which
// the kernel's random choice made happen now and then on a loaded machine.
var udpSrcPort atomic.Int32

func udpEcho(from *sandbox.NS, dst netip.AddrPort) bool {
	port := 20000 + int(udpSrcPort.Add(1))%40000
	var ok bool
	err := from.Do(func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{Port: port}, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		msg := fmt.Sprintf("probe-%d-%d\n", port, time.Now().UnixNano())
		if _, err := c.Write([]byte(msg)); err != nil {
			return nil
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		ok = err == nil && strings.HasSuffix(string(buf[:n]), " "+msg)
		return nil
	})
	return err == nil && ok
}

func newPolicyDataplane(t testing.TB, node *sandbox.NS, o PolicyOptions) *PolicyDataplane {
	t.Helper()
	o.Options = Options{NetNS: node.Path(), Table: "kwtest_policy"}
	d, err := NewPolicy(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestPolicyDataplanePrivileged runs the truth-table suite with real
// packets, the cases fed to an Enforcer as events (so the dataplane applies
// the compiler's incremental Programs). Denied connections are rejected
// (not dropped) so that a denied probe answers at once.
func TestPolicyDataplanePrivileged(t *testing.T) {
	node, pods := policyWorld(t)
	d := newPolicyDataplane(t, node, PolicyOptions{Node: drivertest.PolicyNode, Reject: true})
	drivertest.TestPolicyDataplane(t, drivertest.PolicyEnv{
		Dataplane:   d,
		Incremental: true,
		Reach: func(t *testing.T, p drivertest.Probe) bool {
			dst := netip.AddrPortFrom(drivertest.PolicyPodAddr(p.To, p.Fam), p.Port)
			if p.Protocol == policy.UDP {
				return udpEcho(pods[p.From], dst)
			}
			_, err := pods[p.From].Probe("tcp", dst, 2*time.Second)
			return err == nil
		},
		ForgetFlows: func(t *testing.T) {
			var filters []netlink.CustomConntrackFilter
			for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				f := &netlink.ConntrackFilter{}
				if err := f.AddProtocol(proto); err != nil {
					t.Fatal(err)
				}
				filters = append(filters, f)
			}
			for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
				if _, err := node.Netlink().ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters...); err != nil {
					t.Fatalf("flush conntrack (family %d): %v", fam, err)
				}
			}
		},
	})
	if d.fullSyncs != 1 {
		t.Errorf("%d full syncs over the cases, want 1 (the rest incremental)", d.fullSyncs)
	}
	if err := d.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyDropHoldPrivileged checks the default drop, the pod-start hold
// and repair after tampering.
func TestPolicyDropHoldPrivileged(t *testing.T) {
	node, pods := policyWorld(t)
	d := newPolicyDataplane(t, node, PolicyOptions{LogGroup: 5})
	ctx := context.Background()
	xa, xb := policy.Key{Namespace: "x", Name: "a"}, policy.Key{Namespace: "x", Name: "b"}
	target := func(k policy.Key, port uint16) netip.AddrPort {
		return netip.AddrPortFrom(drivertest.PolicyPodAddr(k, 0), port)
	}
	world := drivertest.PolicyWorld()
	world.Policies = []policy.Policy{{Key: policy.Key{Namespace: "x", Name: "web"}, PodSelector: policy.Selector{MatchLabels: map[string]string{"pod": "a"}},
		Ingress: []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, Port: 80}}}}}}
	if err := d.Sync(ctx, policy.Compile(world)); err != nil {
		t.Fatal(err)
	}
	pods[xb].MustReach(t, "tcp", target(xa, 80))
	start := time.Now()
	if _, err := pods[xb].Probe("tcp", target(xa, 81), 700*time.Millisecond); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("denied port: %v, want a timeout (dropped)", err)
	} else if time.Since(start) < 600*time.Millisecond {
		t.Errorf("denied port answered after %v", time.Since(start))
	}
	dump, err := d.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`limit rate 10/second burst 10 packets log prefix "kubewire-deny ingress x/web" group 5`,
		"meta l4proto tcp th dport 80 return", "ct state established,related accept",
		// A pod reaching itself through a service passes (hairpin).
		"ip saddr . ip daddr @self-v4 accept",
		fmt.Sprintf("%s . %s", drivertest.PolicyPodAddr(xa, 0), drivertest.PolicyPodAddr(xa, 0)),
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("dump lacks %q:\n%s", want, dump)
		}
	}

	// A new pod is held (no traffic either way) until a program knows it;
	// the sync that knows it releases it with its policy in place.
	newPod := policy.Key{Namespace: "y", Name: "c"}
	ip := drivertest.PolicyPodAddr(newPod, 0)
	small := drivertest.PolicyWorld()
	small.Pods = nil
	for _, p := range drivertest.PolicyWorld().Pods {
		if p.Key != newPod {
			small.Pods = append(small.Pods, p)
		}
	}
	small.Policies = world.Policies
	if err := d.Hold(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx, policy.Compile(small)); err != nil {
		t.Fatal(err)
	}
	if _, err := pods[xb].Probe("tcp", target(newPod, 80), 500*time.Millisecond); err == nil {
		t.Errorf("held pod reachable before its policy is known")
	}
	if _, err := pods[newPod].Probe("tcp", target(xb, 80), 500*time.Millisecond); err == nil {
		t.Errorf("held pod sends before its policy is known")
	}
	denyY := world.Policies[0]
	denyY.Key, denyY.Namespace, denyY.PodSelector = policy.Key{Namespace: "y", Name: "deny"}, "y", policy.Selector{}
	denyY.Ingress = nil
	denyY.PolicyTypes = []policy.Direction{policy.Ingress}
	full := drivertest.PolicyWorld()
	full.Policies = append(world.Policies, denyY)
	if err := d.Sync(ctx, policy.Compile(full)); err != nil {
		t.Fatal(err)
	}
	if _, err := pods[xb].Probe("tcp", target(newPod, 80), 500*time.Millisecond); err == nil {
		t.Errorf("released pod reachable despite the deny-all of its namespace")
	}
	pods[newPod].MustReach(t, "tcp", target(xb, 80)) // egress not isolated

	// Tampering: flushing the table is repaired by the next sync.
	before := d.fullSyncs
	if err := flushTable(t, node, d.Table()); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx, policy.Compile(full)); err != nil {
		t.Fatal(err)
	}
	if d.fullSyncs != before+1 {
		t.Errorf("flushed table not rebuilt")
	}
	if _, err := pods[xb].Probe("tcp", target(xa, 81), 500*time.Millisecond); err == nil {
		t.Errorf("after repair, the denied port is reachable")
	}
	if err := d.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	pods[xb].MustReach(t, "tcp", target(xa, 81))
	// Cleanup forgot the table: the next sync builds it again.
	if err := d.Sync(ctx, policy.Compile(full)); err != nil {
		t.Fatal(err)
	}
	if _, err := pods[xb].Probe("tcp", target(xa, 81), 500*time.Millisecond); err == nil {
		t.Errorf("after Cleanup and Sync, the denied port is reachable")
	}
	if err := d.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}

// flushTable flushes table (rules only) from outside, as an operator would.
func flushTable(t *testing.T, ns *sandbox.NS, table string) error {
	c := nsConn(t, ns)
	c.FlushTable(&nft.Table{Family: nft.TableFamilyINet, Name: table})
	return c.Flush()
}

// TestPolicyRenderAdmin checks the chains of a pod under admin policies:
// the admin chain in front (Allow return, Deny logged with the rule's ID
// then goto admin-deny, Pass goto the NetworkPolicy chain), then the
// NetworkPolicy chain.
func TestPolicyRenderAdmin(t *testing.T) {
	w := drivertest.PolicyWorld()
	sel := func(k, v string) policy.Selector { return policy.Selector{MatchLabels: map[string]string{k: v}} }
	w.AdminPolicies = []policy.AdminPolicy{{Name: "guard", Priority: 1, Subject: policy.AdminSelector{Namespaces: sel("ns", "x")},
		Ingress: []policy.AdminRule{
			{Action: policy.ActionDeny, Peers: []policy.AdminSelector{{Namespaces: sel("ns", "z")}}},
			{Action: policy.ActionPass, Peers: []policy.AdminSelector{{Namespaces: sel("ns", "y")}}},
		}}}
	w.Policies = []policy.Policy{{Key: policy.Key{Namespace: "x", Name: "deny"}, PolicyTypes: []policy.Direction{policy.Ingress}}}
	prog := policy.Compile(w)
	d := &PolicyDataplane{opts: PolicyOptions{LogGroup: 7, LogRate: 10}}
	r := d.render(prog, nil, nil)
	pr := r.pods[policy.Key{Namespace: "x", Name: "a"}]
	if pr == nil || pr.extra[policy.Ingress] == "" {
		t.Fatalf("x/a rendered %+v, want an admin chain in front", pr)
	}
	var admin []string
	for _, rule := range r.chains[pr.chains[policy.Ingress]].rules {
		admin = append(admin, ruleString(&nft.Rule{Exprs: rule.exprs}))
	}
	text := strings.Join(admin, "\n")
	for _, want := range []string{
		`log prefix "kubewire-deny AdminNetworkPolicy/guard ingress[0]" group 7`,
		"goto " + polChainAdminDeny,
		"goto " + pr.extra[policy.Ingress],
	} {
		if !strings.Contains(text, want) {
			t.Errorf("admin chain lacks %q:\n%s", want, text)
		}
	}
	if !strings.HasPrefix(pr.chains[policy.Ingress], "admin-ingress-") || !strings.HasPrefix(pr.extra[policy.Ingress], "ingress-") {
		t.Errorf("chain names %q %q", pr.chains[policy.Ingress], pr.extra[policy.Ingress])
	}
}
