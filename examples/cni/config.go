package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/kubewire/kubewire/network"
)

// NetConf is the plugin's network configuration (the JSON on stdin).
// Unknown keys are ignored, as the CNI specification asks; known keys with
// the wrong type or a bad value are errors naming the key and value.
type NetConf struct {
	types.PluginConf

	// Mode is "routed" (default) or "bridge".
	Mode string `json:"mode,omitempty"`
	// Bridge names the node bridge in bridge mode (default "kw-br0").
	Bridge string `json:"bridge,omitempty"`
	// MTU of pod interfaces (default 1500).
	MTU int `json:"mtu,omitempty"`
	// PodCIDRs are the node's pod ranges, at most one per family...
	PodCIDRs []string `json:"podCIDRs,omitempty"`
	// ...or PodCIDRFile names a file holding them, written by a node agent:
	// JSON {"podCIDRs": [...]} or one CIDR per line.
	PodCIDRFile string `json:"podCIDRFile,omitempty"`
	// IPMasq masquerades pod traffic leaving ClusterCIDRs to the node address.
	IPMasq bool `json:"ipMasq,omitempty"`
	// ClusterCIDRs are destinations pods reach without NAT (default: PodCIDRs).
	ClusterCIDRs []string `json:"clusterCIDRs,omitempty"`
	// DataDir keeps the IPAM journal (default /var/lib/cni/kubewire/<name>).
	DataDir string `json:"dataDir,omitempty"`
	// LinkPrefix starts host-side interface names (default "kw").
	LinkPrefix string `json:"linkPrefix,omitempty"`

	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`
	// Args are the conventional "args" of a network configuration
	// ({"cni": {"ips": [...]}}).
	Args *struct {
		CNI struct {
			IPs []string `json:"ips,omitempty"`
		} `json:"cni"`
	} `json:"args,omitempty"`
}

// RuntimeConfig holds the capability arguments the runtime passes.
type RuntimeConfig struct {
	PortMappings []PortMapEntry  `json:"portMappings,omitempty"`
	IPs          []string        `json:"ips,omitempty"`
	Bandwidth    json.RawMessage `json:"bandwidth,omitempty"`
}

// PortMapEntry is one CNI portMappings capability entry.
type PortMapEntry struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// config is a validated NetConf, ready to use.
type config struct {
	raw          *NetConf
	mode         network.Mode
	podCIDRs     []netip.Prefix
	clusterCIDRs []netip.Prefix
	requested    []netip.Addr
	portMaps     []PortMapEntry
	dataDir      string
	// rangesUnknown: the node range file is gone (DEL only; see
	// parseConfigForDel).
	rangesUnknown bool
}

// errConfig is a configuration error that becomes CNI error code 7 (or 6
// for undecodable JSON, 2 for unsupported fields).
type errConfig struct {
	code uint
	msg  string
}

func (e *errConfig) Error() string { return e.msg }

func configErr(format string, args ...any) error {
	return &errConfig{code: types.ErrInvalidNetworkConfig, msg: fmt.Sprintf(format, args...)}
}

// parseConfig decodes and validates stdin. It reads the node range file if
// the configuration names one.
func parseConfig(stdin []byte) (*config, error) { return parseConfigOpts(stdin, false) }

// parseConfigForDel is parseConfig for DEL: a node range file that cannot
// be read is tolerated (rangesUnknown), so pods can still be torn down
// after a node lost its ranges.
func parseConfigForDel(stdin []byte) (*config, error) { return parseConfigOpts(stdin, true) }

func parseConfigOpts(stdin []byte, tolerateMissingRanges bool) (*config, error) {
	var nc NetConf
	dec := json.NewDecoder(bytes.NewReader(stdin))
	if err := dec.Decode(&nc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, &errConfig{code: types.ErrDecodingFailure, msg: fmt.Sprintf("network configuration: key %q: %s is not a valid %s", te.Field, te.Value, te.Type)}
		}
		return nil, &errConfig{code: types.ErrDecodingFailure, msg: "network configuration: " + err.Error()}
	}
	if dec.More() {
		return nil, &errConfig{code: types.ErrDecodingFailure, msg: "network configuration: trailing data after the JSON object"}
	}
	c := &config{raw: &nc}
	if nc.Name == "" {
		return nil, configErr(`network configuration: "name" is required`)
	}
	if strings.ContainsAny(nc.Name, "/\\\x00") || nc.Name == "." || nc.Name == ".." || len(nc.Name) > 128 {
		return nil, configErr("network configuration: name %q: not usable as a directory name", nc.Name)
	}
	if nc.CNIVersion == "" {
		return nil, configErr(`network configuration: "cniVersion" is required`)
	}
	if nc.Mode == "" {
		nc.Mode = "routed"
	}
	if err := c.mode.UnmarshalText([]byte(nc.Mode)); err != nil {
		return nil, configErr(`network configuration: "mode" %q: want "routed" or "bridge"`, nc.Mode)
	}
	if nc.MTU != 0 && (nc.MTU < 576 || nc.MTU > 65535) {
		return nil, configErr(`network configuration: "mtu" %d: must be between 576 and 65535`, nc.MTU)
	}
	cidrs := nc.PodCIDRs
	if len(cidrs) > 0 && nc.PodCIDRFile != "" {
		return nil, configErr(`network configuration: give "podCIDRs" or "podCIDRFile", not both`)
	}
	if nc.PodCIDRFile != "" {
		var err error
		if cidrs, err = readCIDRFile(nc.PodCIDRFile); err != nil {
			var ce *errConfig
			if !tolerateMissingRanges || !errors.As(err, &ce) || ce.code != types.ErrIOFailure {
				return nil, err
			}
			c.rangesUnknown = true
		}
	}
	if len(cidrs) == 0 && !c.rangesUnknown {
		return nil, configErr(`network configuration: "podCIDRs" or "podCIDRFile" is required`)
	}
	var err error
	if c.podCIDRs, err = parsePrefixes("podCIDRs", cidrs); err != nil {
		return nil, err
	}
	fams := map[bool]bool{}
	for _, p := range c.podCIDRs {
		if fams[p.Addr().Is4()] {
			return nil, configErr(`network configuration: "podCIDRs": at most one range per family (%s)`, p)
		}
		fams[p.Addr().Is4()] = true
	}
	if c.clusterCIDRs, err = parsePrefixes("clusterCIDRs", nc.ClusterCIDRs); err != nil {
		return nil, err
	}
	if len(c.clusterCIDRs) == 0 {
		c.clusterCIDRs = c.podCIDRs
	}
	ips := nc.RuntimeConfig.IPs
	if nc.Args != nil {
		ips = append(ips, nc.Args.CNI.IPs...)
	}
	for i, s := range ips {
		// Runtimes pass either an address or an address with a prefix.
		a, err := netip.ParseAddr(s)
		if err != nil {
			p, perr := netip.ParsePrefix(s)
			if perr != nil {
				return nil, configErr(`runtimeConfig "ips"[%d] %q: not an IP address`, i, s)
			}
			a = p.Addr()
		}
		c.requested = append(c.requested, a)
	}
	if len(nc.RuntimeConfig.Bandwidth) > 0 && string(nc.RuntimeConfig.Bandwidth) != "null" && string(nc.RuntimeConfig.Bandwidth) != "{}" {
		return nil, &errConfig{code: types.ErrUnsupportedField,
			msg: `runtimeConfig "bandwidth" is not supported by kubewire-cni: chain the "bandwidth" plugin after it`}
	}
	for i, pm := range nc.RuntimeConfig.PortMappings {
		if pm.HostPort < 1 || pm.HostPort > 65535 {
			return nil, configErr(`runtimeConfig "portMappings"[%d] hostPort %d: must be 1-65535`, i, pm.HostPort)
		}
		if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
			return nil, configErr(`runtimeConfig "portMappings"[%d] containerPort %d: must be 1-65535`, i, pm.ContainerPort)
		}
		p := strings.ToLower(pm.Protocol)
		if p == "" {
			p = "tcp"
		}
		if p != "tcp" && p != "udp" && p != "sctp" {
			return nil, configErr(`runtimeConfig "portMappings"[%d] protocol %q: want tcp, udp or sctp`, i, pm.Protocol)
		}
		if pm.HostIP != "" {
			if _, err := netip.ParseAddr(pm.HostIP); err != nil {
				return nil, configErr(`runtimeConfig "portMappings"[%d] hostIP %q: not an IP address`, i, pm.HostIP)
			}
		}
		pm.Protocol = p
		c.portMaps = append(c.portMaps, pm)
	}
	if nc.LinkPrefix != "" && (len(nc.LinkPrefix) > 5 || strings.ContainsAny(nc.LinkPrefix, "/ :\t\n.")) {
		return nil, configErr(`network configuration: "linkPrefix" %q: want 1-5 characters valid in an interface name`, nc.LinkPrefix)
	}
	c.dataDir = nc.DataDir
	if c.dataDir == "" {
		c.dataDir = filepath.Join("/var/lib/cni/kubewire", nc.Name)
	}
	if !filepath.IsAbs(c.dataDir) {
		return nil, configErr(`network configuration: "dataDir" %q: must be an absolute path`, nc.DataDir)
	}
	if nc.RawPrevResult != nil {
		if err := version.ParsePrevResult(&nc.PluginConf); err != nil {
			return nil, &errConfig{code: types.ErrDecodingFailure, msg: "prevResult: " + err.Error()}
		}
	}
	return c, nil
}

func parsePrefixes(key string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, configErr(`network configuration: %q[%d] %q: not a CIDR`, key, i, s)
		}
		if p != p.Masked() {
			return nil, configErr(`network configuration: %q[%d] %q: host bits set (did you mean %s?)`, key, i, s, p.Masked())
		}
		if (p.Addr().Is4() && p.Bits() > 30) || (p.Addr().Is6() && p.Bits() > 126) {
			return nil, configErr(`network configuration: %q[%d] %q: too small for pods`, key, i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// readCIDRFile reads a node range file: {"podCIDRs": [...]} or one CIDR per
// line ('#' comments allowed).
func readCIDRFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &errConfig{code: types.ErrIOFailure, msg: fmt.Sprintf("podCIDRFile %s: %v", path, err)}
	}
	t := bytes.TrimSpace(b)
	if len(t) > 0 && t[0] == '{' {
		var f struct {
			PodCIDRs []string `json:"podCIDRs"`
		}
		if err := json.Unmarshal(t, &f); err != nil {
			return nil, configErr("podCIDRFile %s: %v", path, err)
		}
		return f.PodCIDRs, nil
	}
	var out []string
	for _, line := range strings.Split(string(t), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}
