// Command sandbox simulates a Kubernetes cluster inside throwaway network
// namespaces, from ordinary Kubernetes YAML, and shows with real packets
// that kubewire wires it as Kubernetes says it must.
//
// Every node is a namespace programmed by the library exactly as a node
// agent would: pod networking (network.Manager with the netlink driver, a
// host-gw or VXLAN fabric), the service proxy (service.Proxier with the
// nftables driver), NetworkPolicy (policy.Enforcer with the nftables
// driver) and cluster DNS (package dns, in a pod behind the kube-dns
// Service). Every pod is a namespace running a small TCP/UDP echo server
// on its container ports; an "outside" namespace plays an external client.
//
// It prints the nodes, pods and services, a connectivity matrix measured
// with real probes (pod to pod, pod to service, outside to node ports),
// each refused cell explained by the policy tracer, the DNS answers a pod
// gets for every service name, and a summary. It exits non-zero when any
// probe or answer differs from what the Kubernetes objects say. Everything
// it creates is removed when it exits, also on error or Ctrl-C. It needs
// root.
//
//	go run ./examples/sandbox                                # the embedded default cluster
//	go run ./examples/sandbox -f cluster.yaml -f apps.yaml   # your own objects ('-' is stdin)
//	go run ./examples/sandbox -o json                        # the same, for scripts
//	go run ./examples/sandbox -probe 'src=shop/web-1 dst=shop/db port=5432/TCP'
//	go run ./examples/sandbox -keep                          # stay up; enter pods with ip netns exec
//	go run ./examples/sandbox -pods 200 -services 100        # a bigger cluster, a sample probed
//
// This binary is a composition root, as DESIGN.md describes: it builds the
// drivers, the allocators and the managers, and feeds them the objects.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kubewire/kubewire/internal/sandbox"
)

type options struct {
	files    []string
	output   string
	probe    string
	keep     bool
	down     bool
	pods     int
	services int
}

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var o options
	flag.Var((*fileList)(&o.files), "f", "Kubernetes YAML to build the cluster from (repeatable; - is stdin); default: the embedded example")
	flag.StringVar(&o.output, "o", "text", "output: text or json")
	flag.StringVar(&o.probe, "probe", "", "run one probe and trace it: 'src=NS/POD dst=NS/POD|NS/SERVICE [port=PORT/PROTO]'")
	flag.BoolVar(&o.keep, "keep", false, "keep the cluster up after the report, until Ctrl-C or -down")
	flag.BoolVar(&o.down, "down", false, "stop a cluster left up by -keep and remove what it left")
	flag.IntVar(&o.pods, "pods", 0, "add this many pods (namespace scale) to the cluster")
	flag.IntVar(&o.services, "services", 0, "add this many services over the -pods pods")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q (flags go before them; quote the -probe value)", flag.Args()))
	}
	if o.down {
		if err := down(os.Stdout); err != nil {
			fail(err)
		}
		return
	}
	prog := sandbox.NewProgram()
	err := prog.Run(func() error { return run(context.Background(), prog, o, os.Stdin, os.Stdout, os.Stderr) })
	prog.Close()
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sandbox:", err)
	os.Exit(1)
}

// errUnexpected is returned when probes or DNS answers differ from what
// the objects say.
var errUnexpected = errors.New("not as expected")

func run(ctx context.Context, env *sandbox.Program, o options, stdin io.Reader, out, progress io.Writer) error {
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("-o %q: want text or json", o.output)
	}
	if o.pods < 0 || o.services < 0 || (o.services > 0 && o.pods == 0) {
		return errors.New("-pods and -services must not be negative, and -services needs -pods")
	}
	var req *probeRequest
	if o.probe != "" {
		r, err := parseProbe(o.probe)
		if err != nil {
			return err
		}
		req = &r
	}
	m, err := loadManifest(o.files, stdin)
	if err != nil {
		return err
	}
	if err := addScale(m, o.pods, o.services); err != nil {
		return err
	}
	if err := sandbox.Privileged(); err != nil {
		return fmt.Errorf("needs root to create network namespaces: %w", err)
	}
	fmt.Fprintln(progress, "building the cluster:")
	c, err := build(ctx, env, m, progress)
	if err != nil {
		return err
	}
	if req != nil {
		return c.runProbe(out, *req)
	}
	r, err := c.check(ctx, progress, o.pods > 0)
	if err != nil {
		return err
	}
	if o.output == "json" {
		err = writeJSON(out, r)
	} else {
		writeText(out, r)
	}
	if err != nil {
		return err
	}
	if o.keep {
		return c.keep(out)
	}
	if r.Summary.Unexpected > 0 || r.Summary.DNSWrong > 0 {
		return fmt.Errorf("%d probes and %d DNS names %w", r.Summary.Unexpected, r.Summary.DNSWrong, errUnexpected)
	}
	return nil
}

// loadManifest reads the -f files, or the embedded default without any.
func loadManifest(files []string, stdin io.Reader) (*Manifest, error) {
	if len(files) == 0 {
		return DefaultManifest()
	}
	var srcs []Source
	for _, f := range files {
		if f == "-" {
			srcs = append(srcs, Source{Name: "-", R: stdin})
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		srcs = append(srcs, Source{Name: f, R: fh})
	}
	return Load(srcs)
}
