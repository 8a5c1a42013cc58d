// Command kubewire-cni is a CNI plugin (specification 1.1.0) built from
// kubewire's network, ipam and driver packages: ADD, DEL, CHECK, STATUS, GC
// and VERSION, with cniVersion 0.3.0 to 1.1.0.
//
// It gives each pod a veth in routed mode (/32 and /128 addresses, no
// bridge) or bridge mode, allocates addresses from the node's pod CIDRs with
// a crash-safe IPAM journal shared by concurrent invocations, masquerades
// egress per network (ipMasq), and maps host ports (portMappings). It can be
// the first plugin of a chain (portmap, bandwidth, tuning may follow) or
// follow one that does not create CNI_IFNAME (loopback).
//
// Install on a node:
//
//	go build -o /opt/cni/bin/kubewire-cni ./examples/cni
//	cp examples/cni/10-kubewire.conflist /etc/cni/net.d/
//
// See examples/cni/README.md for the configuration keys.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	if dir := os.Getenv(envReap); dir != "" {
		os.Exit(reapMain(dir))
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "kubewire-cni: kubewire pod networking")
}
