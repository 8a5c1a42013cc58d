package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	netlinkdrv "github.com/kubewire/kubewire/driver/netlink"
	nftdrv "github.com/kubewire/kubewire/driver/nftables"
	"github.com/kubewire/kubewire/internal/netns"
	"github.com/kubewire/kubewire/ipam"
	"github.com/kubewire/kubewire/network"
)

// opTimeout bounds one plugin call.
const opTimeout = 60 * time.Second

// plugin is the composition root of one call: the drivers, the IPAM and the
// Manager, all bound to the namespace the runtime runs the plugin in (the
// node's).
type plugin struct {
	cfg   *config
	store *ipam.FileStore
	alloc *ipam.PodAllocator
	links *netlinkdrv.Driver
	pods  *network.Manager
}

func open(cfg *config) (*plugin, error) {
	p, err := openIPAM(cfg)
	if err != nil {
		return nil, err
	}
	// DEL retires a pod's veth (under a millisecond) and a detached reaper
	// process deletes it (the kernel needs 15-25 ms per veth), so the
	// runtime's pod teardown does not wait for the kernel.
	if p.links, err = netlinkdrv.New(netlinkdrv.Options{LinkPrefix: cfg.raw.LinkPrefix, ProbeCacheDir: cfg.dataDir, DeferDelete: true}); err != nil {
		p.close()
		return nil, err
	}
	p.pods, err = network.NewManager(network.Config{
		Links: p.links, IPAM: p.alloc, Mode: cfg.mode, MTU: cfg.raw.MTU,
		Bridge: cfg.raw.Bridge, LinkPrefix: cfg.raw.LinkPrefix,
	})
	if err != nil {
		p.close()
		return nil, &errConfig{code: types.ErrInvalidNetworkConfig, msg: err.Error()}
	}
	return p, nil
}

// openIPAM opens the network's address journal and allocator.
func openIPAM(cfg *config) (*plugin, error) {
	store, err := ipam.NewFileStore(filepath.Join(cfg.dataDir, "ipam"), ipam.FileStoreOptions{})
	if err != nil {
		return nil, &errConfig{code: types.ErrIOFailure, msg: fmt.Sprintf("dataDir %s: %v", cfg.dataDir, err)}
	}
	p := &plugin{cfg: cfg, store: store}
	var ranges []ipam.Range
	for _, c := range cfg.podCIDRs {
		r := ipam.Range{Subnet: c}
		if cfg.mode == network.ModeBridge {
			r.Gateway = c.Addr().Next() // the bridge holds .1 / ::1
		}
		ranges = append(ranges, r)
	}
	if p.alloc, err = ipam.NewPodAllocator(ipam.PodAllocatorConfig{Ranges: ranges, Store: store}); err != nil {
		p.close()
		return nil, &errConfig{code: types.ErrInvalidNetworkConfig, msg: err.Error()}
	}
	return p, nil
}

func (p *plugin) close() {
	if p.links != nil {
		p.links.Close()
	}
	p.store.Close()
}

// tableName is the nftables table of this network for one purpose: a short
// hash of the network name keeps it valid whatever the name holds.
func tableName(network, purpose string) string {
	sum := sha256.Sum256([]byte(network))
	return "kubewire-cni-" + purpose + "-" + hex.EncodeToString(sum[:])[:8]
}

func (p *plugin) nftOptions(purpose string) nftdrv.Options {
	return nftdrv.Options{Table: tableName(p.cfg.raw.Name, purpose), ProbeCacheDir: p.cfg.dataDir}
}

// syncMasquerade keeps the network's masquerade table as the configuration
// says: one rule set per network (not per pod), so nothing leaks when pods
// go away, whatever happens to their namespaces.
func (p *plugin) syncMasquerade(ctx context.Context) error {
	m, err := nftdrv.NewMasquerade(p.nftOptions("masq"))
	if err != nil {
		return err
	}
	defer m.Close()
	rules := network.MasqueradeRules{}
	if p.cfg.raw.IPMasq {
		rules.Sources = p.cfg.podCIDRs
		rules.Except = p.cfg.clusterCIDRs
	}
	return m.SyncMasquerade(ctx, rules)
}

// syncPorts makes owner's host port mappings match maps.
func (p *plugin) syncPorts(ctx context.Context, owner string, maps []network.PortMapping) error {
	pm, err := nftdrv.NewPortMap(p.nftOptions("hostports"))
	if err != nil {
		return err
	}
	defer pm.Close()
	return pm.SyncPortMappings(ctx, owner, maps)
}

func attachment(args *skel.CmdArgs, cfg *config) network.Attachment {
	return network.Attachment{ContainerID: args.ContainerID, NetNS: args.Netns, IfName: args.IfName, RequestedIPs: cfg.requested}
}

func cmdAdd(args *skel.CmdArgs) error {
	needNetNS := func(*config) error {
		if args.Netns == "" {
			return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD", "")
		}
		return nil
	}
	return run(args, needNetNS, func(ctx context.Context, p *plugin) error {
		att := attachment(args, p.cfg)
		res, err := p.pods.Attach(ctx, att)
		if err != nil {
			return err
		}
		maps, err := portMappings(p.cfg, res)
		if err == nil {
			err = p.syncPorts(ctx, att.Key().Owner(), maps)
		}
		if err == nil {
			err = p.syncMasquerade(ctx)
		}
		if err != nil {
			// Nothing half-applied: undo the attachment and its ports.
			if rerr := errors.Join(p.syncPorts(ctx, att.Key().Owner(), nil), p.pods.Detach(ctx, att)); rerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
			return err
		}
		result, err := buildResult(p.cfg, res)
		if err != nil {
			return err
		}
		return types.PrintResult(result, p.cfg.raw.CNIVersion)
	})
}

// portMappings turns the runtime's portMappings into mappings to the pod's
// addresses: one per family the pod has, unless hostIP pins a family.
func portMappings(cfg *config, res *network.Result) ([]network.PortMapping, error) {
	var out []network.PortMapping
	for i, pm := range cfg.portMaps {
		var hostIP netip.Addr
		if pm.HostIP != "" {
			hostIP = netip.MustParseAddr(pm.HostIP)
			if hostIP.IsUnspecified() {
				hostIP = netip.Addr{} // 0.0.0.0 / :: mean any address of that family
			}
		}
		matched := false
		for _, ip := range res.IPs {
			pod := ip.Address.Addr()
			if pm.HostIP != "" && netip.MustParseAddr(pm.HostIP).Is4() != pod.Is4() {
				continue
			}
			matched = true
			out = append(out, network.PortMapping{
				Protocol: pm.Protocol, HostIP: hostIP, HostPort: uint16(pm.HostPort),
				PodIP: pod, PodPort: uint16(pm.ContainerPort),
			})
		}
		if !matched {
			return nil, configErr(`runtimeConfig "portMappings"[%d] hostIP %s: the pod has no address of that family`, i, pm.HostIP)
		}
	}
	return out, nil
}

// buildResult renders the attachment as a CNI result; chained after another
// plugin, it extends that plugin's result.
func buildResult(cfg *config, res *network.Result) (*current.Result, error) {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if cfg.raw.PrevResult != nil {
		prev, err := current.NewResultFromResult(cfg.raw.PrevResult)
		if err != nil {
			return nil, &errConfig{code: types.ErrDecodingFailure, msg: "prevResult: " + err.Error()}
		}
		r = prev
	}
	r.Interfaces = append(r.Interfaces, &current.Interface{Name: res.HostIfName, Mac: res.HostMAC.String()})
	podIdx := len(r.Interfaces)
	r.Interfaces = append(r.Interfaces, &current.Interface{
		Name: res.Key.IfName, Mac: res.PodMAC.String(), Sandbox: res.NetNS, Mtu: res.MTU,
	})
	for _, ip := range res.IPs {
		c := &current.IPConfig{Interface: current.Int(podIdx), Address: *ipNet(ip.Address)}
		if ip.Gateway.IsValid() {
			c.Gateway = ip.Gateway.AsSlice()
		}
		r.IPs = append(r.IPs, c)
	}
	for _, rt := range res.Routes {
		cr := &types.Route{Dst: *ipNet(rt.Dst)}
		if rt.Via.IsValid() {
			cr.GW = rt.Via.AsSlice()
		}
		r.Routes = append(r.Routes, cr)
	}
	if dns := cfg.raw.DNS; len(dns.Nameservers)+len(dns.Search)+len(dns.Options) > 0 || dns.Domain != "" {
		r.DNS = dns
	}
	return r, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func cmdDel(args *skel.CmdArgs) error {
	if cfg, err := parseConfigForDel(args.StdinData); err == nil && cfg.rangesUnknown {
		return toCNI(delWithoutRanges(args, cfg))
	}
	return run(args, nil, func(ctx context.Context, p *plugin) error {
		att := attachment(args, p.cfg)
		// Ports first: they point at the pod's address, which Detach frees.
		if err := p.syncPorts(ctx, att.Key().Owner(), nil); err != nil {
			return err
		}
		if err := p.pods.Detach(ctx, att); err != nil {
			return err
		}
		startReaper(p.cfg.dataDir)
		return nil
	})
}

// delWithoutRanges tears an attachment down when the node's pod ranges are
// no longer known (the range file is gone): the links go as usual and the
// addresses are released by owner, which needs no ranges.
func delWithoutRanges(args *skel.CmdArgs, cfg *config) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	store, err := ipam.NewFileStore(filepath.Join(cfg.dataDir, "ipam"), ipam.FileStoreOptions{})
	if err != nil {
		return &errConfig{code: types.ErrIOFailure, msg: fmt.Sprintf("dataDir %s: %v", cfg.dataDir, err)}
	}
	defer store.Close()
	links, err := netlinkdrv.New(netlinkdrv.Options{LinkPrefix: cfg.raw.LinkPrefix, ProbeCacheDir: cfg.dataDir, DeferDelete: true})
	if err != nil {
		return err
	}
	defer links.Close()
	p := &plugin{cfg: cfg}
	key := attachment(args, cfg).Key()
	if err := p.syncPorts(ctx, key.Owner(), nil); err != nil {
		return err
	}
	prefix := cfg.raw.LinkPrefix
	if prefix == "" {
		prefix = network.DefaultLinkPrefix
	}
	if err := links.TeardownPod(ctx, key, key.HostIfName(prefix), args.Netns); err != nil {
		return err
	}
	if err := ipam.ReleasePodOwner(ctx, store, "", key.Owner()); err != nil {
		return err
	}
	startReaper(cfg.dataDir)
	return nil
}

// run parses the configuration, checks it with check (when set), opens
// the plugin and calls fn with a bounded context. Every error leaves as a
// CNI error object.
func run(args *skel.CmdArgs, check func(*config) error, fn func(ctx context.Context, p *plugin) error) error {
	cfg, err := parseConfig(args.StdinData)
	if err != nil {
		return toCNI(err)
	}
	if check != nil {
		if err := check(cfg); err != nil {
			return toCNI(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	p, err := open(cfg)
	if err != nil {
		return toCNI(err)
	}
	defer p.close()
	return toCNI(fn(ctx, p))
}

// envReap makes the binary run as the reaper instead of a CNI plugin.
const envReap = "KUBEWIRE_CNI_REAP"

// startReaper starts a detached copy of this binary that deletes the veths
// DEL retired, in the namespace DEL ran in. It does not wait: the runtime
// gets its answer now. If the reaper cannot start or dies, retired links
// stay down and out of the way until the pod namespace goes, the next
// reaper, or GC.
func startReaper(dataDir string) {
	self, err := os.Executable()
	if err != nil {
		return
	}
	// DEL creates the lock file, so the detached reaper never creates
	// files: it must not race whoever removes the data directory.
	f, err := os.OpenFile(filepath.Join(dataDir, reapLock), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return
	}
	f.Close()
	cmd := exec.Command(self)
	cmd.Env = []string{envReap + "=" + dataDir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cmd.Start() == nil {
		_ = cmd.Process.Release()
	}
}

// reapLock is the reapers' lock file in the data directory.
const reapLock = "reap.lock"

// reapWindow is how long a reaper waits for more DELs to retire links, so
// one kernel unregister (one RCU barrier) serves many pods.
const reapWindow = 50 * time.Millisecond

// reapMain deletes every retired link of the current namespace. One reaper
// per data directory works at a time (a lock file); others exit at once,
// since the working one keeps going until nothing retired is left, and
// looks again after giving the lock up.
func reapMain(dataDir string) int {
	d, err := netlinkdrv.New(netlinkdrv.Options{ProbeCacheDir: dataDir})
	if err != nil {
		return 1
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	lockPath := filepath.Join(dataDir, reapLock)
	for {
		f, err := os.OpenFile(lockPath, os.O_RDWR, 0)
		if err != nil {
			return 1
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			return 0 // another reaper works; it will see our links
		}
		for {
			time.Sleep(reapWindow)
			n, err := d.Retired(ctx)
			if err != nil || n == 0 {
				break
			}
			if err := d.Reap(ctx); err != nil {
				break
			}
		}
		f.Close() // releases the lock
		// A DEL may have retired a link after our last look and seen the
		// lock taken: look once more, outside the lock.
		if n, err := d.Retired(ctx); err != nil || n == 0 {
			return 0
		}
	}
}

func cmdCheck(args *skel.CmdArgs) error {
	check := func(cfg *config) error {
		if cfg.raw.PrevResult == nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult (the result of ADD)", "")
		}
		if args.Netns == "" {
			return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for CHECK", "")
		}
		return nil
	}
	return run(args, check, func(ctx context.Context, p *plugin) error {
		att := attachment(args, p.cfg)
		if err := p.pods.Check(ctx, att); err != nil {
			return err
		}
		// The result the runtime holds must name the addresses the pod has.
		prev, err := current.NewResultFromResult(p.cfg.raw.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
		}
		allocs, err := p.alloc.Lookup(ctx, att.Key().Owner())
		if err != nil {
			return err
		}
		var have []netip.Addr
		for _, ip := range prev.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
				have = append(have, a.Unmap())
			}
		}
		for _, al := range allocs {
			if !slices.Contains(have, al.Address.Addr()) {
				return types.NewError(errDrift, "attachment drifted",
					fmt.Sprintf("the pod holds %s but prevResult lists %v", al.Address.Addr(), have))
			}
		}
		return nil
	})
}

func cmdGC(args *skel.CmdArgs) error {
	return run(args, nil, func(ctx context.Context, p *plugin) error {
		valid := map[network.PodKey]bool{}
		for _, a := range p.cfg.raw.ValidAttachments {
			valid[network.PodKey{ContainerID: a.ContainerID, IfName: a.IfName}] = true
		}
		keep := func(k network.PodKey) bool { return valid[k] }
		_, gcErr := p.pods.GC(ctx, keep)
		// Port mappings of attachments that are not valid any more.
		pm, err := nftdrv.NewPortMap(p.nftOptions("hostports"))
		if err != nil {
			return errors.Join(gcErr, err)
		}
		defer pm.Close()
		owners, err := pm.PortMappingOwners(ctx)
		if err != nil {
			return errors.Join(gcErr, err)
		}
		errs := []error{gcErr}
		for _, o := range owners {
			if k, ok := network.ParseOwner(o); ok && keep(k) {
				continue
			}
			errs = append(errs, pm.SyncPortMappings(ctx, o, nil))
		}
		return errors.Join(errs...)
	})
}

func cmdStatus(args *skel.CmdArgs) error {
	cfg, err := parseConfig(args.StdinData)
	if err != nil {
		return toCNI(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	p, err := open(cfg)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "plugin not ready", err.Error())
	}
	defer p.close()
	ok, err := p.alloc.Available(ctx)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "cannot read the address pool", err.Error())
	}
	if !ok {
		usage, _ := p.alloc.Usage(ctx)
		return types.NewError(types.ErrPluginNotAvailable, "pod address pool exhausted", fmt.Sprintf("%+v", usage))
	}
	if _, err := os.Stat(cfg.dataDir); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "data directory unusable", err.Error())
	}
	return nil
}

// errDrift is the plugin-specific CNI error code CHECK returns for an
// attachment that no longer matches what ADD made (codes 100+ are
// plugin-specific).
const errDrift uint = 100

// toCNI maps an error to a CNI error object with a code a runtime can act
// on; nil stays nil.
func toCNI(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	var ce *errConfig
	if errors.As(err, &ce) {
		return types.NewError(ce.code, ce.msg, "")
	}
	switch {
	case errors.Is(err, network.ErrInvalidAttachment):
		return types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI arguments", err.Error())
	case errors.Is(err, network.ErrDrift):
		return types.NewError(errDrift, "attachment drifted", err.Error())
	case errors.Is(err, ipam.ErrExhausted):
		return types.NewError(types.ErrTryAgainLater, "no free pod address", err.Error())
	case errors.Is(err, ipam.ErrConflict), errors.Is(err, ipam.ErrOutOfRange):
		return types.NewError(types.ErrInvalidNetworkConfig, "requested address unavailable", err.Error())
	case errors.Is(err, network.ErrPortConflict):
		return types.NewError(types.ErrInvalidNetworkConfig, "host port already in use", err.Error())
	case errors.Is(err, os.ErrNotExist), errors.Is(err, netns.ErrNotNetNS):
		return types.NewError(types.ErrInvalidNetNS, "network namespace unusable", err.Error())
	case errors.Is(err, ipam.ErrInvalid):
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration", err.Error())
	}
	return types.NewError(types.ErrInternal, "kubewire-cni failed", err.Error())
}
