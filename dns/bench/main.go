// Command bench is a load generator for package dns: it starts a Server on
// 127.0.0.1 with N synthetic services, then for each scenario fires
// queries over UDP from a pool of client goroutines (each with its own
// socket, one query in flight) for D seconds, and prints the queries per
// second, the p50 and p99 latency and the process RSS.
//
// Scenarios:
//
//	in-zone-hit       A of existing services, spread over all of them
//	nxdomain          A of names that do not exist in the zone
//	search-path       autopath: "<svc>.<ns>" asked as the client's first
//	                  search candidate, answered from the second one
//	forwarded-cached  names outside the zone, answered by a fake upstream
//	                  on loopback once, then from the cache
//
// Usage:
//
//	go run ./dns/bench -services 100000 -duration 2s -clients 4
//
// Client and server share the process and the machine: the figures
// compare builds and scenarios on one machine, they are not a capacity
// statement.
//
// With -serve, bench only serves, for an external load generator
// (dnsperf), until interrupted: N services svc<i> in namespace default
// with cluster IP 10.96.<1+i/250>.<1+i%250>, port http/80 and a slice of
// two ready endpoints each, on -addr over UDP and TCP. The names and
// addresses are those of ../shared/peers/dns-peer-bench.sh, so the same
// dnsperf query files run against CoreDNS and this server; see README.md
// and side-by-side.sh:
//
//	go build -o /tmp/kwdns ./dns/bench && taskset -c 1 /tmp/kwdns -serve -services 1000
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
)

func main() {
	services := flag.Int("services", 10000, "synthetic services to load")
	duration := flag.Duration("duration", 2*time.Second, "load time per scenario")
	clients := flag.Int("clients", 4, "client goroutines (one socket and one query in flight each)")
	only := flag.String("scenario", "", "run only this scenario")
	serveOnly := flag.Bool("serve", false, "only serve -services peer-style services on -addr until SIGINT/SIGTERM (for dnsperf)")
	addr := flag.String("addr", "127.0.0.1:10053", "UDP and TCP address of -serve")
	cpuProfile := flag.String("cpuprofile", "", "with -serve: write a CPU profile of the serving to this file")
	flag.Parse()
	if *serveOnly && *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *serveOnly {
		if err := serve(*services, *addr); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*services, *duration, *clients, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// clientNS is the namespace of the pod whose address (127.0.0.1) the
// clients use: autopath searches its search path.
const clientNS = "ns-7"

func load(rec *dns.Records, n int) error {
	for i := range n {
		ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("svc-%06d", i)
		if err := rec.OnServiceAdd(&dns.Service{Namespace: ns, Name: name,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})},
			Ports:      []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}, {Name: "metrics", Protocol: dns.TCP, Port: 9090}},
		}); err != nil {
			return err
		}
		es := &dns.EndpointSlice{Namespace: ns, Name: name + "-x1", Service: name,
			Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 8080}, {Name: "metrics", Protocol: dns.TCP, Port: 9090}}}
		for j := range 3 {
			es.Endpoints = append(es.Endpoints, dns.Endpoint{Ready: true,
				Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 128 + byte(i>>14), byte(i >> 6), byte(i<<2 | j)})}})
		}
		if err := rec.OnEndpointSliceAdd(es); err != nil {
			return err
		}
	}
	return rec.OnPodAdd(&dns.Pod{Namespace: clientNS, Name: "bench-client", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
}

// loadPeer loads n services as ../shared/peers/dns-peer-bench.sh names
// them (svc<i>.default, cluster IP 10.96.<1+i/250>.<1+i%250>), each with a
// named port and an EndpointSlice of two ready endpoints, as the peer's
// kubernetes-plugin measurement had.
func loadPeer(rec *dns.Records, n int) error {
	for i := range n {
		name := fmt.Sprintf("svc%d", i)
		if err := rec.OnServiceAdd(&dns.Service{Namespace: "default", Name: name,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(1 + i/250), byte(1 + i%250)})},
			Ports:      []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 80}},
		}); err != nil {
			return err
		}
		es := &dns.EndpointSlice{Namespace: "default", Name: name + "-x1", Service: name,
			Ports: []dns.Port{{Name: "http", Protocol: dns.TCP, Port: 8080}}}
		for j := range 2 {
			es.Endpoints = append(es.Endpoints, dns.Endpoint{Ready: true,
				Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 128 + byte(i>>14), byte(i >> 6), byte(i<<2 | j)})}})
		}
		if err := rec.OnEndpointSliceAdd(es); err != nil {
			return err
		}
	}
	return nil
}

// serve implements -serve.
func serve(n int, addr string) error {
	start := time.Now()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if n < 1 {
		return fmt.Errorf("want -services above 0")
	}
	rec, err := dns.NewRecords(dns.Config{})
	if err != nil {
		return err
	}
	if err := loadPeer(rec, n); err != nil {
		return err
	}
	rec.MarkSynced()
	srv, err := dns.NewServer(dns.ServerConfig{Records: rec, Listen: []netip.AddrPort{ap}})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	fmt.Printf("serving %d services on udp+tcp %s, %v after start, GOMAXPROCS %d, RSS %s\n",
		n, ap, time.Since(start).Round(time.Millisecond), runtime.GOMAXPROCS(0), rss())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = srv.Run(ctx)
	fmt.Printf("stopped; RSS %s\n", rss())
	return err
}

// upstream starts a fake upstream on loopback answering every A query
// with 192.0.2.1 and a one-hour TTL.
func upstream() (netip.AddrPort, func(), error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == mdns.TypeA {
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 3600},
				A: net.IPv4(192, 0, 2, 1)}}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), func() { _ = srv.Shutdown() }, nil
}

type scenario struct {
	name  string
	rcode int
	names func(i int) string // the i-th name to ask
}

func run(n int, d time.Duration, clients int, only string) error {
	if n < 1 || clients < 1 || d <= 0 {
		return fmt.Errorf("want -services, -clients and -duration above 0")
	}
	up, stopUp, err := upstream()
	if err != nil {
		return err
	}
	defer stopUp()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	rec, err := dns.NewRecords(dns.Config{})
	if err != nil {
		return err
	}
	if err := load(rec, n); err != nil {
		return err
	}
	rec.MarkSynced()
	took := time.Since(start)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	fmt.Printf("services=%d loaded in %v, heap %.1f MB (%.0f bytes/service), RSS %s\n",
		n, took.Round(time.Millisecond), float64(after.HeapAlloc-before.HeapAlloc)/1e6,
		float64(after.HeapAlloc-before.HeapAlloc)/float64(n), rss())

	srv, err := dns.NewServer(dns.ServerConfig{
		Records:  rec,
		Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Forward:  dns.ForwardConfig{Upstreams: []netip.AddrPort{up}},
		Autopath: dns.AutopathConfig{Enabled: true},
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	addr := srv.UDPAddrs()[0]

	scenarios := []scenario{
		{"in-zone-hit", mdns.RcodeSuccess, func(i int) string {
			k := (i * 7919) % n
			return fmt.Sprintf("svc-%06d.ns-%d.svc.cluster.local.", k, k%100)
		}},
		{"nxdomain", mdns.RcodeNameError, func(i int) string {
			// Not in the client's namespace: autopath would search on.
			ns := fmt.Sprintf("ns-%d", i%100)
			if ns == clientNS {
				ns = "ns-0"
			}
			return fmt.Sprintf("nope-%d.%s.svc.cluster.local.", i, ns)
		}},
		{"search-path", mdns.RcodeSuccess, func(i int) string {
			k := (i * 7919) % n
			return fmt.Sprintf("svc-%06d.ns-%d.%s.svc.cluster.local.", k, k%100, clientNS)
		}},
		{"forwarded-cached", mdns.RcodeSuccess, func(i int) string {
			return fmt.Sprintf("www-%d.example.com.", i%100)
		}},
	}
	fmt.Printf("%-17s %10s %10s %10s %8s %10s\n", "scenario", "qps", "p50", "p99", "errors", "rss")
	for _, sc := range scenarios {
		if only != "" && sc.name != only {
			continue
		}
		runtime.GC()
		res, err := fire(addr, sc, d, clients)
		if err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		fmt.Printf("%-17s %10.0f %10v %10v %8d %10s\n", sc.name, res.qps, res.p50, res.p99, res.errors, rss())
	}
	return nil
}

type result struct {
	qps      float64
	p50, p99 time.Duration
	errors   int64
}

// queries pre-packs up to 1024 distinct queries of a scenario.
func queries(sc scenario) ([][]byte, error) {
	var out [][]byte
	for i := range 1024 {
		m := new(mdns.Msg)
		m.SetQuestion(sc.names(i), mdns.TypeA)
		m.SetEdns0(1232, false)
		b, err := m.Pack()
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func fire(addr netip.AddrPort, sc scenario, d time.Duration, clients int) (result, error) {
	qs, err := queries(sc)
	if err != nil {
		return result{}, err
	}
	// Warm up: the forwarded names get into the cache, the first replies
	// of each socket out of the way.
	if err := client(addr, qs, sc.rcode, time.Now().Add(200*time.Millisecond), nil, new(atomic.Int64)); err != nil {
		return result{}, err
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		lat    []time.Duration
		errs   atomic.Int64
		first  error
		finish = time.Now().Add(d)
	)
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			var mine []time.Duration
			// Each client starts at another place in the list.
			rot := append(slices.Clone(qs[c*len(qs)/clients:]), qs[:c*len(qs)/clients]...)
			err := client(addr, rot, sc.rcode, finish, &mine, &errs)
			mu.Lock()
			lat = append(lat, mine...)
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return result{}, first
	}
	if len(lat) == 0 {
		return result{}, fmt.Errorf("no answer at all")
	}
	slices.Sort(lat)
	return result{
		qps: float64(len(lat)) / elapsed.Seconds(),
		p50: lat[len(lat)/2], p99: lat[len(lat)*99/100],
		errors: errs.Load(),
	}, nil
}

// client sends the queries in turn until the deadline, one in flight,
// and records the latency of every good answer.
func client(addr netip.AddrPort, qs [][]byte, rcode int, until time.Time, lat *[]time.Duration, errs *atomic.Int64) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 65535)
	q := make([]byte, 0, 512)
	for i := 0; time.Now().Before(until); i++ {
		q = append(q[:0], qs[i%len(qs)]...)
		id := uint16(i)
		q[0], q[1] = byte(id>>8), byte(id)
		start := time.Now()
		if _, err := c.Write(q); err != nil {
			return err
		}
		_ = c.SetReadDeadline(start.Add(2 * time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				errs.Add(1) // timeout: count and move on
				break
			}
			if n < 12 || uint16(buf[0])<<8|uint16(buf[1]) != id {
				continue // a late reply to an earlier query
			}
			if int(buf[3]&0xF) != rcode {
				errs.Add(1)
				break
			}
			if lat != nil {
				*lat = append(*lat, time.Since(start))
			}
			break
		}
	}
	return nil
}

// rss returns the resident set size of this process (client and server).
func rss() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
