package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/kubewire/kubewire/driver/fake"
	"github.com/kubewire/kubewire/internal/runner"
	"github.com/kubewire/kubewire/service"
)

func get(t *testing.T, h http.Handler, path string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s: body %q: %v", path, rec.Body.String(), err)
	}
	return rec.Code, body
}

func TestProxyHealth(t *testing.T) {
	clock := runner.NewFakeClock(time.Unix(1000, 0))
	h := service.NewProxyHealth(time.Minute, clock)
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("fresh /healthz = %d", code)
	}
	h.QueuedUpdate()
	clock.Step(59 * time.Second)
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("/healthz with a young queued change = %d", code)
	}
	clock.Step(2 * time.Second)
	if code, _ := get(t, h, "/healthz"); code != 503 {
		t.Fatalf("/healthz with a change queued past the timeout = %d", code)
	}
	if code, _ := get(t, h, "/livez"); code != 503 {
		t.Fatalf("/livez with no progress = %d", code)
	}
	h.Updated()
	code, body := get(t, h, "/healthz")
	if code != 200 || body["nodeEligible"] != true || body["lastUpdated"] == "" {
		t.Fatalf("/healthz after a sync = %d %v", code, body)
	}
	h.SetNodeDeleting(true)
	if code, body := get(t, h, "/healthz"); code != 503 || body["nodeEligible"] != false {
		t.Fatalf("/healthz while the node is deleted = %d %v", code, body)
	}
	if code, _ := get(t, h, "/livez"); code != 200 {
		t.Fatalf("/livez while the node is deleted = %d", code)
	}
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func TestServiceHealthThroughProxier(t *testing.T) {
	sh := service.NewServiceHealth(service.ServiceHealthConfig{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	defer sh.Close()
	dp := fake.NewServices()
	p, err := service.NewProxier(service.Config{Dataplane: dp, Node: service.NodeInfo{Name: "n1"}, ServiceHealth: sh})
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s := svc(func(s *service.Service) {
		s.Ports[0].NodePort = 30080
		s.ExternalTrafficPolicy = service.PolicyLocal
		s.HealthCheckNodePort = port
	})
	ctx := context.Background()
	p.OnServiceAdd(s)
	p.OnEndpointSliceAdd(slice("s1", 8080, ready("10.244.2.2", "n2")))
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	check := func(wantCode, wantLocal int) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Service        struct{ Namespace, Name string }
			LocalEndpoints int
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != wantCode || body.LocalEndpoints != wantLocal || body.Service.Name != "web" {
			t.Fatalf("health check = %d %+v, want %d with %d local endpoints", resp.StatusCode, body, wantCode, wantLocal)
		}
	}
	check(503, 0)
	p.OnEndpointSliceUpdate(nil, slice("s1", 8080, ready("10.244.2.2", "n2"), ready("10.244.1.2", "n1"), ready("10.244.1.3", "n1")))
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check(200, 2)
	// eTP back to Cluster: the port closes.
	s.ExternalTrafficPolicy = service.PolicyCluster
	p.OnServiceUpdate(nil, s)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(sh.Ports()) != 0 {
		t.Fatalf("health ports still served: %v", sh.Ports())
	}
	if _, err := http.Get(url); err == nil {
		t.Fatal("health port still answers")
	}
}
