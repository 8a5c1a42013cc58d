package dns

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// udpServer answers UDP queries on one socket with a pool of long-lived
// handler goroutines instead of miekg/dns's goroutine per packet: a new
// goroutine starts with a small stack that every query then grows and
// copies, about a fifth of the server's CPU at load. Readers hand each
// query to an idle handler, or start a new one when none is idle, so a
// query waiting on an upstream never holds up the others; handlers idle
// for a while exit. It keeps miekg/dns's acceptance rules.
type udpServer struct {
	s    *Server
	conn *net.UDPConn
	wg   sync.WaitGroup // readers
	hwg  sync.WaitGroup // handlers
	work chan udpJob
}

type udpJob struct {
	msg []byte
	to  netip.AddrPort
}

// handlerIdle is how long an idle handler waits for a query before it
// exits.
const handlerIdle = 10 * time.Second

// fastUDP returns a udpServer for pc when it is a UDP socket bound to a
// specific address (a wildcard socket needs the reply's source address
// chosen per packet, which miekg/dns's session handling does).
func (s *Server) fastUDP(pc net.PacketConn) (*udpServer, bool) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, false
	}
	la, ok := uc.LocalAddr().(*net.UDPAddr)
	if !ok || la.IP.IsUnspecified() {
		return nil, false
	}
	return &udpServer{s: s, conn: uc, work: make(chan udpJob)}, true
}

// start runs one reader per CPU; they return when the socket is closed.
func (u *udpServer) start() {
	for range max(1, runtime.GOMAXPROCS(0)) {
		u.wg.Go(u.read)
	}
}

// wait waits for the readers (after the socket is closed), then stops the
// handlers.
func (u *udpServer) wait() {
	u.wg.Wait()
	close(u.work)
	u.hwg.Wait()
}

func (u *udpServer) read() {
	buf := make([]byte, 65535)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		job := udpJob{msg: slices.Clone(buf[:n]), to: from}
		select {
		case u.work <- job: // an idle handler takes it
		default:
			u.hwg.Go(func() { u.handle(job) })
		}
	}
}

// handle answers job, then further queries, until idle for handlerIdle.
func (u *udpServer) handle(job udpJob) {
	w := &udpWriter{conn: u.conn}
	var sc wireScratch
	idle := time.NewTimer(handlerIdle)
	defer idle.Stop()
	for {
		w.to = job.to
		u.s.serveWire(job.msg, w, &sc, false)
		idle.Reset(handlerIdle)
		var ok bool
		select {
		case job, ok = <-u.work:
			if !ok {
				return
			}
		case <-idle.C:
			return
		}
	}
}

// udpWriter is the mdns.ResponseWriter of one query.
type udpWriter struct {
	conn *net.UDPConn
	to   netip.AddrPort
}

func (w *udpWriter) peer() netip.AddrPort { return w.to }
func (w *udpWriter) slow()                {}
func (w *udpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.to) }
func (w *udpWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *udpWriter) Write(b []byte) (int, error) { return w.conn.WriteToUDPAddrPort(b, w.to) }
func (w *udpWriter) Close() error                { return nil }
func (w *udpWriter) TsigStatus() error           { return nil }
func (w *udpWriter) TsigTimersOnly(bool)         {}
func (w *udpWriter) Hijack()                     {}
