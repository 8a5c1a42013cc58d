package ipam

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestReleasePodOwnerWithoutRanges(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	a, err := NewPodAllocator(PodAllocatorConfig{Ranges: []Range{{Subnet: netip.MustParsePrefix("10.244.1.0/24")}}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{PodOwner("a", "eth0"), PodOwner("b", "eth0")} {
		if _, err := a.Allocate(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := ReleasePodOwner(ctx, store, "", PodOwner("a", "eth0")); err != nil {
		t.Fatal(err)
	}
	if err := ReleasePodOwner(ctx, store, "", PodOwner("nobody", "eth0")); err != nil {
		t.Fatalf("releasing an unknown owner: %v", err)
	}
	owners, _ := a.Owners(ctx)
	if len(owners) != 1 || owners[0] != PodOwner("b", "eth0") {
		t.Fatalf("owners = %v", owners)
	}
	if err := ReleasePodOwner(ctx, store, strings.Repeat("s", MaxSpaceLen+1), "x"); err == nil {
		t.Fatal("bad space accepted")
	}
}
