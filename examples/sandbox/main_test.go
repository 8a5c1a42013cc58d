package main

import (
	"strings"
	"testing"

	"github.com/kubewire/kubewire/internal/sandbox"
)

// TestMainJob runs the README's main job in its main configurations and
// checks its verdict and report.
func TestMainJob(t *testing.T) {
	sandbox.RequirePrivileged(t)
	for _, cfg := range []config{
		{fabric: "host-gw", mode: "routed", nodes: 2, pods: 1},
		{fabric: "vxlan", mode: "bridge", nodes: 3, pods: 2},
	} {
		t.Run(cfg.fabric+"/"+cfg.mode, func(t *testing.T) {
			e := sandbox.NewProgram()
			var out strings.Builder
			err := e.Run(func() error { return run(e, cfg, &out) })
			e.Close()
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			report := out.String()
			if !strings.Contains(report, "all paths ok") || strings.Contains(report, "FAIL") {
				t.Fatalf("report:\n%s", report)
			}
			wantRows := cfg.nodes*cfg.pods*(cfg.nodes*cfg.pods-1) + cfg.nodes*cfg.pods
			if got := strings.Count(report, "ok     ok     ok     ok"); got != wantRows {
				t.Fatalf("%d all-ok rows, want %d:\n%s", got, wantRows, report)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	e := sandbox.NewProgram()
	defer e.Close()
	for _, cfg := range []config{
		{fabric: "geneve", mode: "routed", nodes: 2, pods: 1},
		{fabric: "vxlan", mode: "macvlan", nodes: 2, pods: 1},
		{fabric: "vxlan", mode: "routed", nodes: 0, pods: 1},
	} {
		if err := e.Run(func() error { return run(e, cfg, &strings.Builder{}) }); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
