package kubeconv

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	anp "sigs.k8s.io/network-policy-api/apis/v1alpha1"

	"github.com/kubewire/kubewire/policy"
)

func labels(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func TestAdminPolicy(t *testing.T) {
	named := "http"
	a := &anp.AdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "guard"}, Spec: anp.AdminNetworkPolicySpec{
		Priority: 10,
		Subject:  anp.AdminNetworkPolicySubject{Namespaces: labels("env", "prod")},
		Ingress: []anp.AdminNetworkPolicyIngressRule{{Name: "from-mon", Action: anp.AdminNetworkPolicyRuleActionAllow,
			From:  []anp.AdminNetworkPolicyIngressPeer{{Pods: &anp.NamespacedPod{NamespaceSelector: *labels("team", "mon"), PodSelector: *labels("app", "prom")}}},
			Ports: &[]anp.AdminNetworkPolicyPort{{PortNumber: &anp.Port{Protocol: "TCP", Port: 9090}}, {NamedPort: &named}}}},
		Egress: []anp.AdminNetworkPolicyEgressRule{{Action: anp.AdminNetworkPolicyRuleActionDeny,
			To:    []anp.AdminNetworkPolicyEgressPeer{{Networks: []anp.CIDR{"198.51.100.0/24"}}, {Namespaces: labels("env", "dev")}},
			Ports: &[]anp.AdminNetworkPolicyPort{{PortRange: &anp.PortRange{Protocol: "UDP", Start: 5000, End: 5010}}}}},
	}}
	got, err := AdminPolicy(a)
	if err != nil {
		t.Fatal(err)
	}
	want := &policy.AdminPolicy{Name: "guard", Priority: 10,
		Subject: policy.AdminSelector{Namespaces: policy.Selector{MatchLabels: map[string]string{"env": "prod"}}},
		Ingress: []policy.AdminRule{{Name: "from-mon", Action: policy.ActionAllow,
			Peers: []policy.AdminSelector{{Namespaces: policy.Selector{MatchLabels: map[string]string{"team": "mon"}},
				Pods: &policy.Selector{MatchLabels: map[string]string{"app": "prom"}}}},
			Ports: []policy.PortSpec{{Protocol: policy.TCP, Port: 9090}, {Protocol: policy.TCP, Name: "http"}, {Protocol: policy.UDP, Name: "http"},
				{Protocol: policy.SCTP, Name: "http"}}}},
		Egress: []policy.AdminRule{{Action: policy.ActionDeny,
			Peers:    []policy.AdminSelector{{Namespaces: policy.Selector{MatchLabels: map[string]string{"env": "dev"}}}},
			Networks: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			Ports:    []policy.PortSpec{{Protocol: policy.UDP, Port: 5000, EndPort: 5010}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	b := &anp.BaselineAdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: anp.BaselineAdminNetworkPolicySpec{
		Subject: anp.AdminNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
		Ingress: []anp.BaselineAdminNetworkPolicyIngressRule{{Action: anp.BaselineAdminNetworkPolicyRuleActionDeny,
			From: []anp.AdminNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}}},
	}}
	if bp, err := BaselineAdminPolicy(b); err != nil || len(bp.Ingress) != 1 || bp.Ingress[0].Action != policy.ActionDeny {
		t.Errorf("baseline: %+v, %v", bp, err)
	}
}

func TestAdminPolicyErrors(t *testing.T) {
	base := func() *anp.AdminNetworkPolicy {
		return &anp.AdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: anp.AdminNetworkPolicySpec{
			Priority: 1, Subject: anp.AdminNetworkPolicySubject{Namespaces: labels("a", "b")},
			Egress: []anp.AdminNetworkPolicyEgressRule{{Action: anp.AdminNetworkPolicyRuleActionDeny,
				To: []anp.AdminNetworkPolicyEgressPeer{{Namespaces: labels("c", "d")}}}},
		}}
	}
	for _, c := range []struct {
		name, field string
		edit        func(a *anp.AdminNetworkPolicy)
	}{
		{"node peer", "spec.egress[0].to[0].nodes", func(a *anp.AdminNetworkPolicy) {
			a.Spec.Egress[0].To = []anp.AdminNetworkPolicyEgressPeer{{Nodes: labels("role", "infra")}}
		}},
		{"domain peer", "spec.egress[0].to[0].domainNames", func(a *anp.AdminNetworkPolicy) {
			a.Spec.Egress[0].To = []anp.AdminNetworkPolicyEgressPeer{{DomainNames: []anp.DomainName{"example.com"}}}
		}},
		{"both selectors", "spec.subject", func(a *anp.AdminNetworkPolicy) {
			a.Spec.Subject.Pods = &anp.NamespacedPod{}
		}},
		{"bad network", "spec.egress[0].to[0].networks[0]", func(a *anp.AdminNetworkPolicy) {
			a.Spec.Egress[0].To = []anp.AdminNetworkPolicyEgressPeer{{Networks: []anp.CIDR{"10.0.0.0/33"}}}
		}},
		{"priority", "spec.priority", func(a *anp.AdminNetworkPolicy) { a.Spec.Priority = 1001 }},
		{"action", "spec.egress[0].action", func(a *anp.AdminNetworkPolicy) { a.Spec.Egress[0].Action = "Log" }},
		{"port range", "spec.egress[0].ports[0].portRange", func(a *anp.AdminNetworkPolicy) {
			a.Spec.Egress[0].Ports = &[]anp.AdminNetworkPolicyPort{{PortRange: &anp.PortRange{Start: 10, End: 5}}}
		}},
	} {
		a := base()
		c.edit(a)
		_, err := AdminPolicy(a)
		if !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", c.name, err, c.field)
		}
	}
	if _, err := AdminPolicy(nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("nil: %v", err)
	}
	if _, err := BaselineAdminPolicy(nil); !errors.Is(err, policy.ErrInvalid) {
		t.Errorf("nil baseline: %v", err)
	}
}

func TestAdminPolicyPeerExclusive(t *testing.T) {
	a := &anp.AdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: anp.AdminNetworkPolicySpec{
		Priority: 1, Subject: anp.AdminNetworkPolicySubject{Namespaces: labels("a", "b")},
		Egress: []anp.AdminNetworkPolicyEgressRule{{Action: anp.AdminNetworkPolicyRuleActionDeny,
			To: []anp.AdminNetworkPolicyEgressPeer{{Namespaces: labels("c", "d"), Networks: []anp.CIDR{"10.0.0.0/8"}}}}},
	}}
	if _, err := AdminPolicy(a); !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), "spec.egress[0].to[0]") {
		t.Errorf("a peer with namespaces and networks: %v, want an error naming it (neither may be dropped)", err)
	}
}
