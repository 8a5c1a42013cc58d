package dns_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/kubewire/kubewire/dns"
)

// A client that pipelines many queries on one TCP connection (dnsperf, a
// node-local cache, a stub resolver) gets every answer on that connection:
// the server does not close it after miekg/dns's default of 128 queries.
func TestTCPPipelinedQueries(t *testing.T) {
	records, err := dns.NewRecords(dns.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := records.OnServiceAdd(&dns.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{ip("10.96.0.20")}}); err != nil {
		t.Fatal(err)
	}
	records.MarkSynced()
	_, addr := startServer(t, dns.ServerConfig{Records: records})

	nc, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn := &mdns.Conn{Conn: nc}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	const n = 300
	done := make(chan error, 1)
	go func() {
		for i := range n {
			q := new(mdns.Msg)
			q.SetQuestion("web.default.svc.cluster.local.", mdns.TypeA)
			q.Id = uint16(i + 1)
			if err := conn.WriteMsg(q); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	seen := map[uint16]bool{}
	for len(seen) < n {
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatalf("after %d answers: %v", len(seen), err)
		}
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("answer %d: %v", r.Id, r)
		}
		seen[r.Id] = true
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
