package dns

import (
	"encoding/binary"
	"net/netip"
	"time"

	mdns "github.com/miekg/dns"
)

// The serving path shared by the Server's own UDP and TCP loops.

// wireScratch holds a handler's buffers for reused replies.
type wireScratch struct {
	key, out []byte
}

// wireWriter is the mdns.ResponseWriter of one query read off the wire
// by the Server's own UDP and TCP loops.
type wireWriter interface {
	mdns.ResponseWriter
	peer() netip.AddrPort
	// slow is called before a query is answered the slow way (it may
	// wait on an upstream): TCP sends the replies it holds back.
	slow()
}

// serveWire answers m, a query read off the wire (tcp: without its
// length prefix): with a kept reply when the Server has one for its
// question (ZoneAnswerConfig), else it applies miekg/dns's rules
// (mdns.DefaultMsgAcceptFunc) and answers through the Server, keeping the
// reply when it may be reused.
func (s *Server) serveWire(m []byte, w wireWriter, sc *wireScratch, tcp bool) {
	if len(m) < 12 {
		return // no header: no reply (it could be used to amplify)
	}
	var (
		keyed bool
		gen   uint64
	)
	if s.answers != nil && s.qlog == nil {
		var qend int
		if sc.key, qend, keyed = questionKey(m, s.maxUDP, tcp, sc.key[:0]); keyed {
			// The generation is read before any lookup, so that a reply
			// built below is kept for a state it reflects (or a later one).
			gen = s.records.generation()
			var start time.Time
			if s.metrics != nil {
				start = time.Now()
			}
			var hit bool
			if sc.out, hit = s.answers.get(gen, sc.key, sc.out[:0]); hit {
				reuse(sc.out, m)
				if s.metrics != nil {
					qtype := binary.BigEndian.Uint16(m[qend-4:])
					s.metrics.request(tcp, w.peer().Addr().Unmap().Is6(), qtype)
					s.metrics.response(int(sc.out[3]&0xF), qtype, time.Since(start))
				}
				s.send(w, sc.out)
				return
			}
		}
	}
	dh := mdns.Header{Id: binary.BigEndian.Uint16(m), Bits: binary.BigEndian.Uint16(m[2:]),
		Qdcount: binary.BigEndian.Uint16(m[4:]), Ancount: binary.BigEndian.Uint16(m[6:]),
		Nscount: binary.BigEndian.Uint16(m[8:]), Arcount: binary.BigEndian.Uint16(m[10:])}
	action := mdns.DefaultMsgAcceptFunc(dh)
	req := new(mdns.Msg)
	if action == mdns.MsgAccept {
		if err := req.Unpack(m); err == nil {
			w.slow()
			buf, reply, source := s.reply(w, req)
			if keyed && buf != nil && s.reusable(reply, source, req.Question[0].Name) {
				s.answers.put(gen, sc.key, buf)
			}
			return
		}
		action = mdns.MsgReject
	}
	if action == mdns.MsgIgnore {
		return
	}
	reply := &mdns.Msg{MsgHdr: mdns.MsgHdr{Id: dh.Id, Response: true, Opcode: int(dh.Bits>>11) & 0xF,
		RecursionDesired: dh.Bits&(1<<8) != 0, Rcode: mdns.RcodeFormatError}}
	if action == mdns.MsgRejectNotImplemented {
		reply.Rcode = mdns.RcodeNotImplemented
	}
	_ = w.WriteMsg(reply)
}
