package nftables

import (
	"errors"
	"net/netip"
	"sync"
	"syscall"

	nft "github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/kubewire/kubewire/driver"
	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/network"
)

// featureProbe caches, once per process, the result of a kernel feature
// check. The result is cached when it is definite (supported or
// *driver.UnsupportedError); other failures (no privilege) are retried by
// the next call.
type featureProbe struct {
	run func() error

	mu   sync.Mutex
	done bool
	err  error // nil or *driver.UnsupportedError once done
}

func (p *featureProbe) check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return p.err
	}
	err := p.run()
	var unsupported *driver.UnsupportedError
	if err == nil || errors.As(err, &unsupported) {
		p.done, p.err = true, err
	}
	return err
}

var masqProbe = &featureProbe{run: runProbeFresh}

// probeFeatures checks, once per process, that the kernel can hold the
// masquerade ruleset.
func probeFeatures() error { return masqProbe.check() }

// runProbeFresh runs the probe in a new namespace that dies with it.
func runProbeFresh() error { return netns.DoFresh(runProbe) }

// probeStep queues one part of a ruleset; each step is flushed as its own
// batch so a failure names the missing feature.
type probeStep struct {
	feature, minKernel string
	queue              func() error
}

// runProbeSteps opens a connection in the current (throwaway) namespace
// and runs steps in order.
func runProbeSteps(steps func(c *nft.Conn) []probeStep) error {
	c, err := nft.New(nft.AsLasting())
	if err != nil {
		return unsupported("nftables netlink interface", "3.13", err)
	}
	defer c.CloseLasting()
	for _, s := range steps(c) {
		err := s.queue()
		if err == nil {
			err = c.Flush()
		}
		if err != nil {
			if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				return err
			}
			return unsupported(s.feature, s.minKernel, err)
		}
	}
	return nil // the namespace, and the table, go away with the thread
}

// runProbe builds, step by step, a copy of the ruleset in the current
// (throwaway) namespace: each step is its own batch so a failure names the
// missing feature.
func runProbe() error { return runProbeSteps(masqProbeSteps) }

func masqProbeSteps(c *nft.Conn) []probeStep {
	t := &nft.Table{Family: nft.TableFamilyINet, Name: "kubewire-probe"}
	return []probeStep{
		{"nftables inet family", "3.14", func() error {
			c.AddTable(t)
			return nil
		}},
		{"nftables nat chain in the inet family", "5.2", func() error {
			c.AddChain(&nft.Chain{Name: ChainPostrouting, Table: t, Type: nft.ChainTypeNAT,
				Hooknum: nft.ChainHookPostrouting, Priority: nft.ChainPriorityNATSource})
			return nil
		}},
		{"nftables interval sets", "3.13", func() error {
			ranges := mergePrefixes([]netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("128.0.0.0/1"),
			})
			return c.AddSet(&nft.Set{Table: t, Name: SetMasqSrcV4, ID: idMasqSrcV4, KeyType: nft.TypeIPAddr,
				Interval: true, Comment: commentPrefix + ": probe"}, intervalElements(ranges))
		}},
		{"nftables interval sets of IPv6 addresses", "3.13", func() error {
			ranges := mergePrefixes([]netip.Prefix{netip.MustParsePrefix("::/0")})
			return c.AddSet(&nft.Set{Table: t, Name: SetMasqSrcV6, ID: idMasqSrcV6, KeyType: nft.TypeIP6Addr,
				Interval: true}, intervalElements(ranges))
		}},
		{"nftables masquerade (fully-random) in the inet family", "5.2", func() error {
			src := &nft.Set{Table: t, Name: SetMasqSrcV4, ID: idMasqSrcV4}
			f := family{name: "ip", nfproto: unix.NFPROTO_IPV4, saddrOff: 12, daddrOff: 16, addrLn: 4, src: src, dst: src}
			c.AddRule(&nft.Rule{Table: t, Chain: &nft.Chain{Name: ChainPostrouting, Table: t},
				Exprs: masqExprs(f, true), UserData: userdata.AppendString(nil, userdata.TypeComment, ruleComment("ip"))})
			return nil
		}},
	}
}

func unsupported(feature, minKernel string, err error) error {
	return &driver.UnsupportedError{Feature: feature, MinKernel: minKernel, Err: err}
}

var portProbe = &featureProbe{run: func() error { return netns.DoFresh(runPortProbe) }}

// runPortProbe builds, step by step, the port mapping ruleset with one
// mapping in the current (throwaway) namespace.
func runPortProbe() error { return runProbeSteps(portProbeSteps) }

func portProbeSteps(c *nft.Conn) []probeStep {
	o := newPortObjects(&nft.Table{Family: nft.TableFamilyINet, Name: "kubewire-probe"})
	return []probeStep{
		{"nftables inet family", "3.14", func() error {
			c.AddTable(o.table)
			return nil
		}},
		{"nftables maps with concatenated keys", "4.1", func() error { return o.addSets(c) }},
		{"nftables nat chains in the inet family", "5.2", func() error {
			o.addChains(c)
			return nil
		}},
		{"nftables dnat to a concatenated map, fib and masquerade in the inet family", "5.2", func() error {
			o.addRules(c)
			return nil
		}},
		{"nftables set element comments", "4.1", func() error {
			want, err := validateMappings([]network.PortMapping{{Protocol: "tcp", HostPort: 1,
				PodIP: netip.MustParseAddr("192.0.2.1"), PodPort: 1}})
			if err != nil {
				return err
			}
			ch, err := planPortChange(portState{}, "probe", want)
			if err != nil {
				return err
			}
			return o.queueChange(c, &ch)
		}},
	}
}
