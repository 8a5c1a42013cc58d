// Package cnirun runs CNI plugins through libcni inside a node namespace, as
// a container runtime on that node would. Tests and benchmarks of
// examples/cni use it.
package cnirun

import (
	"context"
	"os"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/kubewire/kubewire/internal/netns"
)

// NodeExec is an invoke.Exec that starts plugins inside a namespace: a
// child process inherits the namespace of the thread that forks it, and Do
// pins that thread.
type NodeExec struct {
	*invoke.DefaultExec
	Node *netns.NetNS
}

// ExecPlugin implements invoke.Exec.
func (e *NodeExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	var out []byte
	err := e.Node.Do(func() error {
		var err error
		out, err = e.DefaultExec.ExecPlugin(ctx, path, stdin, env)
		return err
	})
	return out, err
}

// NewCNIConfig returns a libcni client that finds plugins in pluginDirs,
// caches results in cacheDir and runs plugins inside node.
func NewCNIConfig(node *netns.NetNS, pluginDirs []string, cacheDir string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(pluginDirs, cacheDir, &NodeExec{
		DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}},
		Node:        node,
	})
}
