package dns

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestAnswerCacheBounds: the kept bytes never exceed MaxBytes, a newer
// generation replaces every reply, an older one is not kept.
func TestAnswerCacheBounds(t *testing.T) {
	c, err := newAnswerCache(ZoneAnswerConfig{MaxBytes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	reply := bytes.Repeat([]byte{1}, 100)
	for i := range 100 {
		c.put(1, fmt.Appendf(nil, "key-%03d", i), reply)
		if c.bytes > 2000 {
			t.Fatalf("after %d puts: %d bytes kept", i+1, c.bytes)
		}
	}
	if n := len(c.m); n == 0 || n*(7+100+answerOverhead) != c.bytes {
		t.Fatalf("%d replies, %d bytes accounted", n, c.bytes)
	}
	if _, ok := c.get(1, []byte("key-099"), nil); !ok {
		t.Fatal("the newest reply was evicted")
	}
	if _, ok := c.get(2, []byte("key-099"), nil); ok {
		t.Fatal("a reply of generation 1 served for generation 2")
	}
	c.put(2, []byte("new"), reply)
	if len(c.m) != 1 || c.gen != 2 {
		t.Fatalf("after a newer generation: %d replies, generation %d", len(c.m), c.gen)
	}
	c.put(1, []byte("old"), reply)
	if _, ok := c.get(2, []byte("old"), nil); ok {
		t.Fatal("a reply built from an older generation was kept")
	}
	c.put(2, []byte("huge"), make([]byte, 5000))
	if _, ok := c.get(2, []byte("huge"), nil); ok || c.bytes > 2000 {
		t.Fatalf("a reply larger than MaxBytes was kept (%d bytes)", c.bytes)
	}
	if c, err := newAnswerCache(ZoneAnswerConfig{Disabled: true}); c != nil || err != nil {
		t.Fatalf("disabled: %v, %v", c, err)
	}
}

// FuzzQuestionKey: a message questionKey takes is one miekg/dns unpacks
// into a plain query with that one question, and the key holds the
// question as sent and the EDNS parameters the reply depends on.
func FuzzQuestionKey(f *testing.F) {
	for _, edit := range []func(*mdns.Msg){
		func(*mdns.Msg) {},
		func(m *mdns.Msg) { m.SetEdns0(4096, true) },
		func(m *mdns.Msg) { m.SetEdns0(100, false) },
		func(m *mdns.Msg) { m.Opcode = mdns.OpcodeNotify },
		func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS },
	} {
		m := new(mdns.Msg)
		m.SetQuestion("Web.default.svc.cluster.local.", mdns.TypeA)
		edit(m)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tcp := len(data) > 0 && data[len(data)-1]&1 == 1 // either transport, by some bit of the input
		key, qend, ok := questionKey(data, 1232, tcp, nil)
		if !ok {
			return
		}
		m := new(mdns.Msg)
		if err := m.Unpack(data); err != nil {
			t.Fatalf("taken but does not unpack: %v", err)
		}
		if m.Response || m.Opcode != mdns.OpcodeQuery || len(m.Question) != 1 || len(m.Answer) != 0 || len(m.Ns) != 0 ||
			m.Question[0].Qclass != mdns.ClassINET {
			t.Fatalf("taken: %v", m)
		}
		q := make([]byte, 512)
		n, err := mdns.PackDomainName(m.Question[0].Name, q, 0, nil, false)
		if err != nil || !bytes.Equal(q[:n], data[12:qend-4]) {
			t.Fatalf("question name %q packs to %x, message has %x (%v)", m.Question[0].Name, q[:n], data[12:qend-4], err)
		}
		size, flags := 512, byte(0)
		if opt := m.IsEdns0(); opt != nil {
			if opt.Version() != 0 || len(opt.Option) != 0 || len(m.Extra) != 1 {
				t.Fatalf("taken with OPT %v", opt)
			}
			size, flags = min(max(int(opt.UDPSize()), 512), 1232), 1
			if opt.Do() {
				flags |= 2
			}
		} else if len(m.Extra) != 0 {
			t.Fatalf("taken with additional records %v", m.Extra)
		}
		if tcp {
			size = 65535
		}
		want := append(append([]byte(nil), data[12:qend]...), flags, byte(size>>8), byte(size))
		if !bytes.Equal(key, want) {
			t.Fatalf("key %x, want %x", key, want)
		}
	})
}

// TestTCPIdleClose: a connection that sends nothing for the idle time is
// closed, one that keeps asking is not; stop closes the rest.
func TestTCPIdleClose(t *testing.T) {
	rec, err := NewRecords(Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec.MarkSynced()
	s, err := NewServer(ServerConfig{Records: rec})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := s.newTCP(ln)
	ts.idle = 200 * time.Millisecond
	ts.start()
	defer ts.stop()

	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	q := new(mdns.Msg).SetQuestion("dns-version.cluster.local.", mdns.TypeTXT)
	b, _ := q.Pack()
	frame := append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
	start := time.Now()
	for time.Since(start) < 600*time.Millisecond {
		if _, err := busy.Write(frame); err != nil {
			t.Fatalf("a busy connection was closed: %v", err)
		}
		_ = busy.SetReadDeadline(time.Now().Add(time.Second))
		var size [2]byte
		if _, err := io.ReadFull(busy, size[:]); err != nil {
			t.Fatalf("a busy connection got no reply: %v", err)
		}
		if _, err := io.ReadFull(busy, make([]byte, int(size[0])<<8|int(size[1]))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = idle.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("an idle connection after 600 ms: read %d, %v; want EOF", n, err)
	}
}
