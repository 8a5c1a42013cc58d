package policy_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/policy"
)

// TestCasesTracer checks the evaluator against every truth-table case.
func TestCasesTracer(t *testing.T) {
	cases := drivertest.PolicyCases()
	if len(cases) < 40 {
		t.Errorf("%d cases, want at least 40", len(cases))
	}
	for _, c := range cases {
		prog := policy.Compile(c.Cluster())
		bad := 0
		for _, p := range drivertest.Probes() {
			d := prog.Trace(drivertest.PolicyPodAddr(p.From, p.Fam), drivertest.PolicyPodAddr(p.To, p.Fam), p.Protocol, p.Port)
			if d.Allowed != c.Expect(p) {
				if bad++; bad <= 5 {
					t.Errorf("%s: %s: %s, want allowed=%v", c.Name, p, d, c.Expect(p))
				}
			}
		}
		wantErr := strings.Contains(c.Name, "invalid")
		if (len(prog.Errors) > 0) != wantErr {
			t.Errorf("%s: compile errors %v", c.Name, prog.Errors)
		}
	}
}

func TestTraceExplains(t *testing.T) {
	c := drivertest.PolicyWorld()
	xa := policy.Key{Namespace: "x", Name: "a"}
	c.Policies = []policy.Policy{{Key: policy.Key{Namespace: "x", Name: "web"}, PodSelector: policy.Selector{MatchLabels: map[string]string{"pod": "a"}},
		Ingress: []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, Port: 80}}}}}}
	prog := policy.Compile(c)
	src := drivertest.PolicyPodAddr(policy.Key{Namespace: "y", Name: "b"}, 0)
	dst := drivertest.PolicyPodAddr(xa, 0)
	d := prog.Trace(src, dst, policy.TCP, 80)
	if !d.Allowed || len(d.Ingress.AllowedBy) != 1 || d.Ingress.AllowedBy[0].String() != "x/web ingress[0]" {
		t.Errorf("allowed: %s %+v", d, d.Ingress)
	}
	d = prog.Trace(src, dst, policy.TCP, 81)
	if d.Allowed || !strings.Contains(d.String(), "x/a isolated by x/web, no rule allows it") {
		t.Errorf("denied: %s", d)
	}
	// The pod's own node always passes.
	node := drivertest.PolicyGateway(xa, 0)
	if d := prog.Trace(node, dst, policy.TCP, 81); !d.Allowed || !d.Ingress.Node {
		t.Errorf("from the node: %s", d)
	}
	// Addresses outside the cluster: not a pod, not isolated on that side.
	if d := prog.Trace(netip.MustParseAddr("192.0.2.1"), dst, policy.TCP, 80); !d.Allowed || d.Egress.Pod != (policy.Key{}) {
		t.Errorf("from outside: %s", d)
	}
}

func TestValidate(t *testing.T) {
	ok := policy.Policy{Key: policy.Key{Namespace: "x", Name: "p"}}
	for _, c := range []struct {
		name, field string
		edit        func(p *policy.Policy)
	}{
		{"protocol", "spec.ingress[0].ports[0].protocol", func(p *policy.Policy) {
			p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: "ICMP"}}}}
		}},
		{"endPort without port", "spec.ingress[0].ports[0].endPort", func(p *policy.Policy) {
			p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, EndPort: 90}}}}
		}},
		{"endPort below port", "spec.egress[0].ports[0].endPort", func(p *policy.Policy) {
			p.Egress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, Port: 90, EndPort: 80}}}}
		}},
		{"bad port name", "spec.ingress[0].ports[0].port", func(p *policy.Policy) {
			p.Ingress = []policy.Rule{{Ports: []policy.PortSpec{{Protocol: policy.TCP, Name: "Not_A_Name"}}}}
		}},
		{"except outside", "spec.ingress[0].from[0].ipBlock.except[0]", func(p *policy.Policy) {
			p.Ingress = []policy.Rule{{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8"),
				Except: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}}}}}}
		}},
		{"empty peer", "spec.egress[0].to[0]", func(p *policy.Policy) { p.Egress = []policy.Rule{{Peers: []policy.Peer{{}}}} }},
		{"operator", "spec.podSelector.matchExpressions[0].operator", func(p *policy.Policy) {
			p.PodSelector.MatchExpressions = []policy.Requirement{{Key: "a", Operator: "Gt"}}
		}},
		{"values for Exists", "spec.podSelector.matchExpressions[0].values", func(p *policy.Policy) {
			p.PodSelector.MatchExpressions = []policy.Requirement{{Key: "a", Operator: policy.OpExists, Values: []string{"x"}}}
		}},
	} {
		p := ok
		c.edit(&p)
		err := p.Validate()
		if !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", c.name, err, c.field)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid policy: %v", err)
	}
}
