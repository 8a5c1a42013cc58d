// Command bench times kubewire-cni through libcni, the way a container
// runtime calls it: N pods ADDed one after the other, then DELeted, then the
// same with several callers at once. Each call is one plugin process, run in
// a throwaway node namespace; pods are throwaway namespaces too. It prints
// per-call min / median / mean / p95 / max in milliseconds (nearest-rank
// p95, as ../shared/peers/cni-peer-bench.sh prints for the reference
// plugins) and checks that DEL left nothing behind.
//
//	go run ./examples/cni/bench [-n 50] [-par 8] [-mode routed|bridge] [-ipmasq]
//
// Needs root.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/kubewire/kubewire/internal/cnirun"
	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/ipam"
)

func main() {
	n := flag.Int("n", 50, "pods per scenario")
	par := flag.Int("par", 8, "callers at once in the parallel scenario")
	mode := flag.String("mode", "routed", "routed or bridge")
	masq := flag.Bool("ipmasq", false, "enable ipMasq in the configuration")
	flag.Parse()
	prog := sandbox.NewProgram()
	err := prog.Run(func() error { return run(prog, *n, *par, *mode, *masq) })
	prog.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(prog *sandbox.Program, n, par int, mode string, masq bool) error {
	if err := sandbox.Privileged(); err != nil {
		return fmt.Errorf("needs root: %w", err)
	}
	work, err := os.MkdirTemp("", "kubewire-cni-bench-")
	if err != nil {
		return err
	}
	prog.Cleanup(func() { os.RemoveAll(work) })
	bin := filepath.Join(work, "bin")
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "kubewire-cni"), "github.com/kubewire/kubewire/examples/cni").CombinedOutput(); err != nil {
		return fmt.Errorf("build kubewire-cni: %v\n%s", err, out)
	}
	sb := sandbox.New(prog)
	node := sb.Namespace("node")
	dataDir := filepath.Join(work, "data")
	conf := map[string]any{
		"type": "kubewire-cni", "mode": mode, "ipMasq": masq, "dataDir": dataDir,
		"podCIDRs": []string{"10.244.1.0/24", "fd00:10:244:1::/64"},
	}
	raw, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "kw-bench", "plugins": []any{conf}})
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		return err
	}
	cni := cnirun.NewCNIConfig(node.NetNS, []string{bin}, filepath.Join(work, "cache"))
	var pods []*libcni.RuntimeConf
	for i := 0; i < n; i++ {
		ns := sb.Namespace(fmt.Sprintf("p%d", i))
		pods = append(pods, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%d", i), NetNS: ns.Path(), IfName: "eth0"})
	}
	ctx := context.Background()
	// One warm-up ADD/DEL: the first call of a boot probes the kernel
	// (cached afterwards in dataDir), as the first pod on a node would.
	if _, err := cni.AddNetworkList(ctx, list, pods[0]); err != nil {
		return fmt.Errorf("warm-up ADD: %w", err)
	}
	if err := cni.DelNetworkList(ctx, list, pods[0]); err != nil {
		return fmt.Errorf("warm-up DEL: %w", err)
	}

	fmt.Printf("kubewire-cni through libcni, %d pods, mode %s, ipMasq %t, dual-stack\n", n, mode, masq)
	// The floor: starting the plugin and answering VERSION.
	floor, _, err := timed(pods[:min(20, n)], 1, func(*libcni.RuntimeConf) error {
		_, err := cni.GetVersionInfo(ctx, "kubewire-cni")
		return err
	})
	if err != nil {
		return fmt.Errorf("VERSION: %w", err)
	}
	fmt.Printf("  exec floor VERSION %s\n", stats(floor))
	for _, callers := range []int{1, par} {
		add, addWall, err := timed(pods, callers, func(rt *libcni.RuntimeConf) error {
			_, err := cni.AddNetworkList(ctx, list, rt)
			return err
		})
		if err != nil {
			return fmt.Errorf("ADD: %w", err)
		}
		del, delWall, err := timed(pods, callers, func(rt *libcni.RuntimeConf) error {
			return cni.DelNetworkList(ctx, list, rt)
		})
		if err != nil {
			return fmt.Errorf("DEL: %w", err)
		}
		label := "sequential"
		if callers > 1 {
			label = fmt.Sprintf("%d callers", callers)
		}
		fmt.Printf("  %-10s ADD %s  (%.1f ops/s)\n", label, stats(add), float64(n)/addWall.Seconds())
		fmt.Printf("  %-10s DEL %s  (%.1f ops/s)\n", label, stats(del), float64(n)/delWall.Seconds())
		// DEL retires veths and a reaper deletes them moments later; wait
		// for it, and say how long it took after the last DEL.
		t0 := time.Now()
		leaks := leaked(node, dataDir)
		for leaks != "" && time.Since(t0) < 10*time.Second {
			time.Sleep(10 * time.Millisecond)
			leaks = leaked(node, dataDir)
		}
		if leaks != "" {
			return fmt.Errorf("state left after DEL: %s", leaks)
		}
		fmt.Printf("  %-10s every retired veth deleted %.0f ms after the last DEL\n", label, float64(time.Since(t0))/1e6)
	}
	fmt.Println("  no state left after DEL (veths, addresses)")
	return nil
}

// timed runs fn for every pod with the given number of callers and returns
// each call's duration and the wall time of the whole run.
func timed(pods []*libcni.RuntimeConf, callers int, fn func(*libcni.RuntimeConf) error) ([]time.Duration, time.Duration, error) {
	durs := make([]time.Duration, len(pods))
	errs := make(chan error, len(pods))
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < callers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				if err := fn(pods[i]); err != nil {
					errs <- err
				}
				durs[i] = time.Since(t0)
			}
		}()
	}
	for i := range pods {
		next <- i
	}
	close(next)
	wg.Wait()
	wall := time.Since(start)
	close(errs)
	for err := range errs {
		return nil, 0, err
	}
	return durs, wall, nil
}

func stats(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(x time.Duration) float64 { return float64(x) / 1e6 }
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	r := (95*n + 99) / 100 // nearest rank
	return fmt.Sprintf("min=%.2f median=%.2f mean=%.2f p95=%.2f max=%.2f ms", ms(s[0]), ms(med), ms(sum)/float64(n), ms(s[r-1]), ms(s[n-1]))
}

// leaked reports pod veths left on the node and addresses left allocated.
func leaked(node *sandbox.NS, dataDir string) string {
	var out []string
	links, err := node.Netlink().LinkList()
	if err != nil {
		return err.Error()
	}
	for _, l := range links {
		if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, "kw") {
			out = append(out, "veth "+l.Attrs().Name)
		}
	}
	store, err := ipam.NewFileStore(filepath.Join(dataDir, "ipam"), ipam.FileStoreOptions{})
	if err != nil {
		return err.Error()
	}
	defer store.Close()
	n := 0
	err = store.Transact(context.Background(), "pods", func(t *ipam.Txn) error { n = t.Len(); return nil })
	if err != nil {
		return err.Error()
	}
	if n > 0 {
		out = append(out, fmt.Sprintf("%d address reservations", n))
	}
	return strings.Join(out, ", ")
}
