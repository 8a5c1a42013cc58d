package fake

import (
	"context"
	"testing"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/policy"
)

func TestPolicyConformance(t *testing.T) {
	f := NewPolicy()
	drivertest.TestPolicyDataplane(t, drivertest.PolicyEnv{
		Dataplane: f,
		Reach: func(t *testing.T, p drivertest.Probe) bool {
			return f.Allowed(drivertest.PolicyPodAddr(p.From, p.Fam), drivertest.PolicyPodAddr(p.To, p.Fam), p.Protocol, p.Port)
		},
	})
}

func TestPolicyHold(t *testing.T) {
	f := NewPolicy()
	w := drivertest.PolicyWorld()
	newPod := w.Pods[len(w.Pods)-1]
	w.Pods = w.Pods[:len(w.Pods)-1]
	a, b := w.Pods[0].IPs[0], newPod.IPs[0]
	f.Hold(b)
	if err := f.Sync(context.Background(), policy.Compile(w)); err != nil {
		t.Fatal(err)
	}
	if f.Allowed(a, b, policy.TCP, 80) || f.Allowed(b, a, policy.TCP, 80) {
		t.Errorf("held pod reachable before a program knows it")
	}
	w.Pods = append(w.Pods, newPod)
	if err := f.Sync(context.Background(), policy.Compile(w)); err != nil {
		t.Fatal(err)
	}
	if !f.Allowed(a, b, policy.TCP, 80) {
		t.Errorf("known pod still held")
	}
}

func TestPolicyConformanceIncremental(t *testing.T) {
	f := NewPolicy()
	drivertest.TestPolicyDataplane(t, drivertest.PolicyEnv{
		Dataplane:   f,
		Incremental: true,
		Reach: func(t *testing.T, p drivertest.Probe) bool {
			return f.Allowed(drivertest.PolicyPodAddr(p.From, p.Fam), drivertest.PolicyPodAddr(p.To, p.Fam), p.Protocol, p.Port)
		},
	})
}
