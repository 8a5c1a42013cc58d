package ipam

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkAllocateRelease measures one Allocate plus one Release of a pod
// address with live allocations already present in a /16.
func BenchmarkAllocateRelease(b *testing.B) {
	ctx := context.Background()
	subnet := pfx("10.0.0.0/16")
	for _, kind := range []string{"memory", "file", "file-nosync"} {
		for _, live := range []int{1, 1000, 60000} {
			b.Run(fmt.Sprintf("%s/live=%d", kind, live), func(b *testing.B) {
				var s Store
				dir := b.TempDir()
				switch kind {
				case "memory":
					s = NewMemoryStore()
				default:
					fs, err := NewFileStore(dir, FileStoreOptions{NoSync: kind == "file-nosync"})
					if err != nil {
						b.Fatal(err)
					}
					s = fs
				}
				defer s.Close()
				a, err := NewPodAllocator(PodAllocatorConfig{Ranges: []Range{{Subnet: subnet}}, Store: s})
				if err != nil {
					b.Fatal(err)
				}
				// Preload in one transaction.
				base, _ := prefixBounds(subnet)
				err = s.Transact(ctx, "pods", func(x *Txn) error {
					var last string
					for i := 0; i < live; i++ {
						last = u128ToAddr(base.add(u64(uint64(i+1))), true).String()
						x.Put(last, fmt.Sprintf("preload-%d/eth0", i))
					}
					x.SetCursor(last)
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				const owner = "bench/eth0"
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := a.Allocate(ctx, owner); err != nil {
						b.Fatal(err)
					}
					if err := a.Release(ctx, owner); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/txn")
				if kind != "memory" {
					if fi, err := os.Stat(filepath.Join(dir, "pods.journal")); err == nil {
						b.ReportMetric(float64(fi.Size()), "journal-bytes")
					}
				}
			})
		}
	}
}
