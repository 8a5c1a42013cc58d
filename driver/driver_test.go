package driver

import (
	"errors"
	"strings"
	"testing"
)

func TestUnsupportedError(t *testing.T) {
	inner := errors.New("operation not supported")
	err := error(&UnsupportedError{Feature: "vxlan link", MinKernel: "3.7", Err: inner})
	if !errors.Is(err, ErrNotSupported) {
		t.Fatal("errors.Is(err, ErrNotSupported) = false")
	}
	if !errors.Is(err, inner) {
		t.Fatal("probe error not unwrapped")
	}
	want := "vxlan link not supported (requires Linux 3.7 or later): operation not supported"
	if err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err, want)
	}
	var ue *UnsupportedError
	if !errors.As(err, &ue) || ue.Feature != "vxlan link" {
		t.Fatalf("errors.As failed: %v", err)
	}
}

func TestFirst(t *testing.T) {
	unsupported := func() (string, error) { return "", &UnsupportedError{Feature: "ebpf tcx"} }
	ok := func(v string) func() (string, error) { return func() (string, error) { return v, nil } }
	broken := func() (string, error) { return "", errors.New("permission denied") }

	if v, err := First(unsupported, ok("nft"), ok("later")); err != nil || v != "nft" {
		t.Fatalf("First = %q, %v; want nft", v, err)
	}
	if _, err := First(unsupported, broken, ok("nft")); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("First with a broken constructor = %v, want its error", err)
	}
	_, err := First(unsupported, unsupported)
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "ebpf tcx") {
		t.Fatalf("First with none supported = %v", err)
	}
	if _, err := First[string](); err == nil {
		t.Fatal("First() with no constructor returned nil error")
	}
}
