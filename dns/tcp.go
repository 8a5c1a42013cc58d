package dns

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// tcpServer answers DNS over TCP (RFC 7766) on one listener: a goroutine
// per connection reads length-prefixed queries and answers them in order
// through Server.serveWire, so TCP reuses kept zone replies as UDP does.
// It keeps the behaviour of the miekg/dns server it replaces with the
// settings CoreDNS uses: no limit of queries per connection, connections
// idle for tcpIdle closed, replies to pipelined queries written together.
type tcpServer struct {
	s    *Server
	ln   net.Listener
	idle time.Duration // tcpIdle; shorter in tests
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// tcpIdle is how long a connection may wait for its next query, and a
// reply for the client to read it.
const tcpIdle = 10 * time.Second

func (s *Server) newTCP(ln net.Listener) *tcpServer {
	return &tcpServer{s: s, ln: ln, idle: tcpIdle, conns: map[net.Conn]struct{}{}}
}

func (t *tcpServer) start() { t.wg.Go(t.accept) }

// stop closes the listener and every connection, and waits for their
// goroutines.
func (t *tcpServer) stop() {
	_ = t.ln.Close()
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

func (t *tcpServer) accept() {
	backoff := 5 * time.Millisecond
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors, an aborted handshake: wait and go on,
			// as net/http does.
			t.s.log.Debug("accepting a TCP connection failed", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = c.Close()
			return
		}
		t.conns[c] = struct{}{}
		t.mu.Unlock()
		t.wg.Go(func() { t.serve(c) })
	}
}

func (t *tcpServer) serve(c net.Conn) {
	defer func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		_ = c.Close()
	}()
	w := &tcpWriter{conn: c, bw: bufio.NewWriterSize(c, 4096), idle: t.idle}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		w.to = a.AddrPort()
	}
	br := bufio.NewReaderSize(c, 4096)
	var (
		sc   wireScratch
		msg  []byte
		size [2]byte
	)
	for {
		if br.Buffered() == 0 && w.flush() != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(t.idle))
		if _, err := io.ReadFull(br, size[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(size[:]))
		msg = slices.Grow(msg[:0], n)[:n]
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		t.s.serveWire(msg, w, &sc, true)
		if w.err != nil {
			return
		}
	}
}

// tcpWriter is the mdns.ResponseWriter of the queries of one connection:
// it frames replies with their length and buffers them until the
// connection has no more queries waiting, or a query may take long.
type tcpWriter struct {
	conn net.Conn
	bw   *bufio.Writer
	to   netip.AddrPort
	idle time.Duration
	err  error
}

func (w *tcpWriter) peer() netip.AddrPort { return w.to }

// slow sends the replies buffered so far before a query that may wait on
// an upstream.
func (w *tcpWriter) slow() { _ = w.flush() }

func (w *tcpWriter) flush() error {
	if w.err != nil || w.bw.Buffered() == 0 {
		return w.err
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.idle))
	w.err = w.bw.Flush()
	return w.err
}

func (w *tcpWriter) Write(b []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(b) > mdns.MaxMsgSize {
		return 0, errors.New("dns: reply larger than a TCP message")
	}
	var size [2]byte
	binary.BigEndian.PutUint16(size[:], uint16(len(b)))
	_, _ = w.bw.Write(size[:])
	if _, err := w.bw.Write(b); err != nil {
		w.err = err
		return 0, err
	}
	return len(b), nil
}

func (w *tcpWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (w *tcpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *tcpWriter) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(w.to) }
func (w *tcpWriter) Close() error         { return w.conn.Close() }
func (w *tcpWriter) TsigStatus() error    { return nil }
func (w *tcpWriter) TsigTimersOnly(bool)  {}
func (w *tcpWriter) Hijack()              {}
