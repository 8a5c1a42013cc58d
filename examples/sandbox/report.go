package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Report is everything a run found; -o json prints it as is.
type Report struct {
	Cluster  ClusterReport   `json:"cluster"`
	Nodes    []NodeReport    `json:"nodes"`
	Pods     []PodReport     `json:"pods"`
	Services []ServiceReport `json:"services"`
	Probes   []Probe         `json:"probes"`
	DNS      DNSReport       `json:"dns"`
	Timings  []timing        `json:"timings"`
	Summary  Summary         `json:"summary"`
}

type ClusterReport struct {
	Nodes      int      `json:"nodes"`
	IPFamilies []string `json:"ipFamilies"`
	Overlay    string   `json:"overlay"`
	PodNetwork string   `json:"podNetwork"`
	Driver     string   `json:"driver"`
	Domain     string   `json:"clusterDomain"`
	Policies   int      `json:"networkPolicies"`
	// Sampled is set when the matrix probes a sample of the pods and
	// services (-pods/-services runs).
	Sampled string `json:"sampled,omitempty"`
}

type NodeReport struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	PodCIDRs  []string `json:"podCIDRs"`
	NetNS     string   `json:"netns"`
}

type PodReport struct {
	Name  string   `json:"name"` // namespace/name
	Node  string   `json:"node"`
	IPs   []string `json:"ips"`
	Ports []string `json:"ports"`
	NetNS string   `json:"netns"`
}

type ServiceReport struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	ClusterIPs []string `json:"clusterIPs,omitempty"`
	Ports      []string `json:"ports"`
	Endpoints  int      `json:"readyEndpoints"`
	Note       string   `json:"note,omitempty"`
}

type DNSReport struct {
	From       string      `json:"from"`
	ResolvConf string      `json:"resolvConf"`
	Answers    []DNSAnswer `json:"answers"`
}

type Summary struct {
	Probes     int           `json:"probes"`
	Connected  int           `json:"connected"`
	Refused    int           `json:"refused"`
	Unexpected int           `json:"unexpected"`
	DNSNames   int           `json:"dnsNames"`
	DNSWrong   int           `json:"dnsWrong"`
	Build      time.Duration `json:"build_ns"`
	Probe      time.Duration `json:"probe_ns"`
}

func (r *Report) summarize() {
	s := &r.Summary
	s.Probes = len(r.Probes)
	for _, p := range r.Probes {
		switch {
		case !p.OK:
			s.Unexpected++
		case p.Result == resultConnected:
			s.Connected++
		default:
			s.Refused++
		}
	}
	s.DNSNames = len(r.DNS.Answers)
	for _, a := range r.DNS.Answers {
		if !a.OK {
			s.DNSWrong++
		}
	}
	for _, t := range r.Timings {
		s.Build += t.Took
	}
}

func (c *cluster) describe(r *Report) {
	cl := c.m.Cluster
	r.Cluster = ClusterReport{Nodes: cl.Nodes, IPFamilies: cl.IPFamilies, Overlay: cl.Overlay, PodNetwork: cl.PodNetwork,
		Driver: cl.Driver, Domain: cl.Domain, Policies: len(c.m.NetworkPolicies)}
	for _, n := range c.nodes {
		nr := NodeReport{Name: n.name, NetNS: n.ns.Name}
		for _, a := range n.addrs {
			nr.Addresses = append(nr.Addresses, a.Addr().String())
		}
		for _, p := range n.cidrs {
			nr.PodCIDRs = append(nr.PodCIDRs, p.String())
		}
		r.Nodes = append(r.Nodes, nr)
	}
	for _, p := range c.pods {
		pr := PodReport{Name: p.key, Node: p.node.name, NetNS: p.ns.Name}
		for _, a := range p.ips {
			pr.IPs = append(pr.IPs, a.String())
		}
		for _, cp := range p.ports {
			s := fmt.Sprintf("%d/%s", cp.ContainerPort, cp.Protocol)
			if cp.Name != "" {
				s += " (" + cp.Name + ")"
			}
			pr.Ports = append(pr.Ports, s)
		}
		r.Pods = append(r.Pods, pr)
	}
	for _, s := range c.m.Services {
		sr := ServiceReport{Name: s.Namespace + "/" + s.Name, Type: string(s.Spec.Type)}
		if sr.Type == "" {
			sr.Type = string(corev1.ServiceTypeClusterIP)
		}
		switch {
		case s.Spec.Type == corev1.ServiceTypeExternalName:
			sr.Note = "CNAME " + s.Spec.ExternalName
		case s.Spec.ClusterIP == corev1.ClusterIPNone:
			sr.Note = "headless"
		default:
			sr.ClusterIPs = s.Spec.ClusterIPs
		}
		if s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			sr.Note = "externalTrafficPolicy Local"
		}
		for _, p := range s.Spec.Ports {
			txt := fmt.Sprintf("%d", p.Port)
			if p.NodePort != 0 {
				txt += fmt.Sprintf(":%d", p.NodePort)
			}
			txt += "/" + string(p.Protocol)
			if t := p.TargetPort.String(); t != "" && t != "0" && t != fmt.Sprint(p.Port) {
				txt += "→" + t
			}
			sr.Ports = append(sr.Ports, txt)
		}
		if len(s.Spec.Ports) > 0 {
			for _, v4 := range c.families() {
				sr.Endpoints += len(c.backends(s, s.Spec.Ports[0].Name, v4))
			}
		}
		r.Services = append(r.Services, sr)
	}
}

func writeJSON(w io.Writer, r *Report) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// writeText prints the report for people.
func writeText(w io.Writer, r *Report) {
	cl := r.Cluster
	fmt.Fprintf(w, "kubewire sandbox: %d nodes (%s, %s pods, %s, driver %s), %d pods, %d services, network policies: %d\n",
		cl.Nodes, cl.Overlay, cl.PodNetwork, strings.Join(cl.IPFamilies, "+"), cl.Driver, len(r.Pods), len(r.Services), cl.Policies)
	if cl.Sampled != "" {
		fmt.Fprintf(w, "(%s)\n", cl.Sampled)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESSES\tPOD CIDRS")
	for _, n := range r.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, strings.Join(n.Addresses, " "), strings.Join(n.PodCIDRs, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIPS\tPORTS")
	for _, p := range r.Pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Node, strings.Join(p.IPs, " "), strings.Join(p.Ports, ", "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tTYPE\tCLUSTER-IPS\tPORTS\tENDPOINTS\t")
	for _, s := range r.Services {
		ips := strings.Join(s.ClusterIPs, " ")
		if ips == "" {
			ips = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", s.Name, s.Type, ips, strings.Join(s.Ports, ", "), s.Endpoints, s.Note)
	}
	tw.Flush()
	fmt.Fprintln(w)

	writeMatrix(w, r)
	writeDNS(w, r.DNS)

	s := r.Summary
	var parts []string
	for _, t := range r.Timings {
		parts = append(parts, fmt.Sprintf("%s %s", t.Component, ms(t.Took)))
	}
	verdict := "all as expected"
	if s.Unexpected > 0 || s.DNSWrong > 0 {
		verdict = fmt.Sprintf("%d probes and %d DNS names NOT as expected", s.Unexpected, s.DNSWrong)
	}
	fmt.Fprintf(w, "summary: %s: %d probes (%d connected, %d refused as the policies and endpoints say), %d DNS names; built in %s (%s), probed in %s\n",
		verdict, s.Probes, s.Connected, s.Refused, s.DNSNames, ms(s.Build), strings.Join(parts, ", "), ms(s.Probe))
}

// symbol is a probe's mark in the matrix.
func symbol(p Probe) string {
	switch {
	case !p.OK:
		return "!"
	case p.Result == resultConnected:
		return "✓"
	}
	return "✗"
}

// cellKey groups the probes of one matrix cell (the families of one pair).
type cellKey struct{ from, to, kind, via string }

// writeMatrix prints pod and service probes as a matrix, node port probes
// as a list, and a note for every refused or unexpected cell.
func writeMatrix(w io.Writer, r *Report) {
	var rows, cols []string
	colKind := map[string]string{}
	cells := map[cellKey][]Probe{}
	seen := map[string]bool{}
	for _, p := range r.Probes {
		if p.Kind == "nodeport" {
			continue
		}
		if !seen["r"+p.From] {
			seen["r"+p.From] = true
			rows = append(rows, p.From)
		}
		col := p.To
		if p.Kind == "service" {
			col = "svc " + p.To
		}
		if !seen["c"+col] {
			seen["c"+col] = true
			cols = append(cols, col)
			colKind[col] = p.Kind
		}
		k := cellKey{p.From, col, p.Kind, ""}
		cells[k] = append(cells[k], p)
	}
	// Pods, then services, in the order of the lists above.
	var ordered []string
	for _, p := range r.Pods {
		if seen["c"+p.Name] {
			ordered = append(ordered, p.Name)
		}
	}
	for _, s := range r.Services {
		if seen["csvc "+s.Name] {
			ordered = append(ordered, "svc "+s.Name)
		}
	}
	cols = ordered
	fams := strings.Join(r.Cluster.IPFamilies, " ")
	fmt.Fprintf(w, "CONNECTIVITY (real TCP/UDP probes; one mark per family, %s: ✓ connected, ✗ refused as expected, ! not as expected)\n", fams)
	for i, c := range cols {
		fmt.Fprintf(w, "  [%d] %s\n", i+1, c)
	}
	var notes []string
	note := func(ps []Probe) string {
		for _, p := range ps {
			if p.Result == resultConnected && p.OK {
				continue
			}
			why := p.Why
			if !p.OK {
				why = fmt.Sprintf("NOT AS EXPECTED: expected %s, got %s; %s", p.Expect, p.Result, p.Why)
			}
			to := p.To
			if p.Kind == "nodeport" {
				to += " via " + p.Via
			}
			notes = append(notes, fmt.Sprintf("%s → %s %s/%s: %s", p.From, to, strings.ToLower(p.Protocol), p.Target, why))
			return fmt.Sprintf("%d", len(notes))
		}
		return ""
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	hdr := []string{"FROM \\ TO"}
	for i := range cols {
		hdr = append(hdr, fmt.Sprintf("[%d]", i+1))
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")
	for _, row := range rows {
		line := []string{row}
		for _, col := range cols {
			ps := cells[cellKey{row, col, colKind[col], ""}]
			if len(ps) == 0 {
				line = append(line, "-")
				continue
			}
			var marks string
			for _, p := range ps {
				marks += symbol(p)
			}
			if n := note(ps); n != "" {
				marks += "(" + n + ")"
			}
			line = append(line, marks)
		}
		fmt.Fprintln(tw, strings.Join(line, "\t")+"\t")
	}
	tw.Flush()

	var np []Probe
	for _, p := range r.Probes {
		if p.Kind == "nodeport" {
			np = append(np, p)
		}
	}
	if len(np) > 0 {
		fmt.Fprintln(w, "\nNODE PORTS from outside the cluster (client "+outsideV4.String()+" / "+outsideV6.String()+")")
		groups := map[cellKey][]Probe{}
		var order []cellKey
		for _, p := range np {
			k := cellKey{p.From, p.To, p.Kind, p.Via}
			if _, ok := groups[k]; !ok {
				order = append(order, k)
			}
			groups[k] = append(groups[k], p)
		}
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range order {
			ps := groups[k]
			var marks, seenAs []string
			for _, p := range ps {
				marks = append(marks, symbol(p))
				if p.SeenAs != "" {
					seenAs = append(seenAs, p.SeenAs)
				}
			}
			extra := ""
			if len(seenAs) > 0 {
				extra = "server saw " + strings.Join(seenAs, " ")
				if a, err := netip.ParseAddr(seenAs[0]); err == nil && (a == outsideV4 || a == outsideV6) {
					extra += " (the client's own address)"
				} else {
					extra += " (the node's address: masqueraded)"
				}
			}
			if n := note(ps); n != "" {
				extra = strings.TrimSpace(extra + " (" + n + ")")
			}
			fmt.Fprintf(tw, "  %s via %s\t%s\t%s\n", k.to, k.via, strings.Join(marks, ""), extra)
		}
		tw.Flush()
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nwhy refused:")
		for i, n := range notes {
			fmt.Fprintf(w, "  (%d) %s\n", i+1, n)
		}
	}
	fmt.Fprintln(w)
}

func writeDNS(w io.Writer, d DNSReport) {
	if d.From == "" {
		return
	}
	fmt.Fprintf(w, "DNS from %s, whose resolv.conf is:\n", d.From)
	for _, l := range strings.Split(strings.TrimSpace(d.ResolvConf), "\n") {
		fmt.Fprintf(w, "    %s\n", l)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range d.Answers {
		mark := "✓"
		if !a.OK {
			mark = "! want " + strings.Join(a.Want, " ")
			if a.Error != "" {
				mark += ": " + a.Error
			}
		}
		ans := strings.Join(a.Answer, " ")
		if ans == "" {
			ans = "(no records)"
		}
		fmt.Fprintf(tw, "  %s\t→ %s\t%s\t%s\n", a.Name, ans, strings.TrimSuffix(a.FQDN, "."), mark)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// ms prints a duration in milliseconds, with a decimal below 10 ms.
func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}
