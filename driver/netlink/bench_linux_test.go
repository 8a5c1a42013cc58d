package netlink_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kubewire/kubewire/internal/sandbox"
	"github.com/kubewire/kubewire/network"
)

// BenchmarkAttachDetach measures one Attach followed by one Detach of a pod
// (routed and bridge mode, dual-stack), reporting the median of each.
//
//	go test -run '^$' -bench AttachDetach -benchtime 200x ./driver/netlink/
func BenchmarkAttachDetach(b *testing.B) {
	for _, mode := range []network.Mode{network.ModeRouted, network.ModeBridge} {
		b.Run(mode.String(), func(b *testing.B) {
			sb := sandbox.New(b)
			node := newNode(b, sb, "node", mode, podCIDRs["node1"])
			pod := sb.Namespace("pod")
			ctx := context.Background()
			att := network.Attachment{ContainerID: "bench", NetNS: pod.Path()}
			var attach, detach []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := node.mgr.Attach(ctx, att); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := node.mgr.Detach(ctx, att); err != nil {
					b.Fatal(err)
				}
				attach = append(attach, t1.Sub(t0))
				detach = append(detach, time.Since(t1))
			}
			b.StopTimer()
			b.ReportMetric(ms(median(attach)), "attach-p50-ms")
			b.ReportMetric(ms(median(detach)), "detach-p50-ms")
		})
	}
}

// BenchmarkAttach100 attaches 100 pods one after the other and with 8
// callers at once, then detaches them, reporting pods per second.
//
//	go test -run '^$' -bench Attach100 -benchtime 3x ./driver/netlink/
func BenchmarkAttach100(b *testing.B) {
	for _, par := range []int{1, 8} {
		b.Run(fmt.Sprintf("callers=%d", par), func(b *testing.B) {
			sb := sandbox.New(b)
			node := newNode(b, sb, "node", network.ModeRouted, podCIDRs["node1"])
			var atts []network.Attachment
			for i := 0; i < 100; i++ {
				ns := sb.Namespace(fmt.Sprintf("p%d", i))
				atts = append(atts, network.Attachment{ContainerID: ns.Name, NetNS: ns.Path()})
			}
			ctx := context.Background()
			var attachTotal, detachTotal time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				each(b, par, atts, func(a network.Attachment) error { _, err := node.mgr.Attach(ctx, a); return err })
				t1 := time.Now()
				each(b, par, atts, func(a network.Attachment) error { return node.mgr.Detach(ctx, a) })
				attachTotal += t1.Sub(t0)
				detachTotal += time.Since(t1)
			}
			b.StopTimer()
			b.ReportMetric(float64(100*b.N)/attachTotal.Seconds(), "attach-pods/s")
			b.ReportMetric(float64(100*b.N)/detachTotal.Seconds(), "detach-pods/s")
		})
	}
}

func each(b *testing.B, par int, atts []network.Attachment, fn func(network.Attachment) error) {
	var wg sync.WaitGroup
	ch := make(chan network.Attachment)
	errs := make(chan error, len(atts))
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range ch {
				if err := fn(a); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, a := range atts {
		ch <- a
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
