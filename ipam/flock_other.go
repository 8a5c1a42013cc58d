//go:build !unix

package ipam

import (
	"context"
	"errors"
	"os"
)

var errNoFlock = errors.New("ipam: FileStore needs flock(2), available on Unix systems only")

func flockSupported() error                           { return errNoFlock }
func flockFile(ctx context.Context, f *os.File) error { return errNoFlock }
func funlockFile(f *os.File)                          {}
