package dns

import (
	"encoding/binary"
	"sync"

	mdns "github.com/miekg/dns"
)

// ZoneAnswerConfig configures the reuse of packed replies to cluster-zone
// questions, over UDP and TCP (on the Server's own sockets; not when it is
// mounted as a Handler in another server). A reply built once for a
// question is kept as the bytes sent, and a later query with the same
// question (same name, byte for byte, type, EDNS parameters and transport)
// gets a copy with its own ID and RD/CD bits: no unpacking, lookup or
// packing. The reply is exactly what the query would have got without
// reuse.
//
// Kept replies belong to one state of Records: any change to it (a watch
// event, MarkSynced) makes all of them stale at once, so a change is
// visible in the next answer. Only replies that do not depend on the
// client are kept: NOERROR and NXDOMAIN answers from Records (NXDOMAIN
// below svc.<zone> only without autopath), not truncated, with no EDNS
// option in the query. Forwarded answers have their own cache
// (CacheConfig). With a QueryLog set, no reply is reused.
type ZoneAnswerConfig struct {
	// Disabled turns reuse off.
	Disabled bool
	// MaxBytes bounds the memory of the kept replies and their keys
	// (default 4 MiB); when full, a random reply is dropped for a new one.
	MaxBytes int
}

// answerCache keeps packed replies per question, for one generation of
// Records at a time.
type answerCache struct {
	max int

	mu    sync.RWMutex
	gen   uint64
	bytes int
	m     map[string][]byte
}

// answerOverhead approximates the memory of a map entry beyond the key and
// reply bytes (string and slice headers, map bucket share).
const answerOverhead = 64

func newAnswerCache(cfg ZoneAnswerConfig) (*answerCache, error) {
	if cfg.Disabled {
		return nil, nil
	}
	switch {
	case cfg.MaxBytes == 0:
		cfg.MaxBytes = 4 << 20
	case cfg.MaxBytes < 0:
		return nil, invalid("config", "ZoneAnswers.MaxBytes", cfg.MaxBytes, "must not be negative")
	}
	return &answerCache{max: cfg.MaxBytes, m: map[string][]byte{}}, nil
}

// get appends the reply kept for key in generation gen to dst.
func (c *answerCache) get(gen uint64, key, dst []byte) ([]byte, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.gen != gen {
		return dst, false
	}
	b, ok := c.m[string(key)]
	if !ok {
		return dst, false
	}
	return append(dst, b...), true
}

// put keeps a copy of reply for key, built from generation gen of Records.
func (c *answerCache) put(gen uint64, key, reply []byte) {
	size := len(key) + len(reply) + answerOverhead
	if size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case gen < c.gen:
		return // built from a state that has changed since
	case gen > c.gen:
		clear(c.m)
		c.gen, c.bytes = gen, 0
	}
	if _, ok := c.m[string(key)]; ok {
		return
	}
	for c.bytes+size > c.max && len(c.m) > 0 {
		for k, v := range c.m { // map iteration starts at a random entry
			delete(c.m, k)
			c.bytes -= len(k) + len(v) + answerOverhead
			break
		}
	}
	c.m[string(key)] = append([]byte(nil), reply...)
	c.bytes += size
}

// Flag bits of the DNS header (RFC 1035 section 4.1.1, RFC 4035 for CD).
const (
	flagQR = 1 << 15
	flagRD = 1 << 8
	flagCD = 1 << 4
)

// questionKey reads a query the answer cache can take: a plain query (QR
// clear, opcode QUERY) with one question of class IN whose name has no
// compression pointer, no answer or authority records, and at most an
// EDNS version 0 OPT record without options. It returns the key of its
// reply (the question as sent, then the EDNS parameters that shape the
// reply: presence, DO bit, and the size the reply must fit: the UDP size,
// or 65535 over TCP), appended to key, and where the question ends.
func questionKey(m []byte, maxUDP int, tcp bool, key []byte) ([]byte, int, bool) {
	if len(m) < 12+1+4 {
		return key, 0, false
	}
	bits := binary.BigEndian.Uint16(m[2:])
	if bits&flagQR != 0 || bits>>11&0xF != mdns.OpcodeQuery ||
		binary.BigEndian.Uint16(m[4:]) != 1 || binary.BigEndian.Uint16(m[6:]) != 0 || binary.BigEndian.Uint16(m[8:]) != 0 {
		return key, 0, false
	}
	ar := binary.BigEndian.Uint16(m[10:])
	if ar > 1 {
		return key, 0, false
	}
	p := 12
	for {
		if p >= len(m) {
			return key, 0, false
		}
		l := int(m[p])
		if l == 0 {
			p++
			break
		}
		if l&0xC0 != 0 || p+1+l > len(m) {
			return key, 0, false
		}
		p += 1 + l
		if p-12 > 254 { // names are at most 255 bytes with the root label
			return key, 0, false
		}
	}
	if p+4 > len(m) || binary.BigEndian.Uint16(m[p+2:]) != mdns.ClassINET {
		return key, 0, false
	}
	qend := p + 4
	key = append(key, m[12:qend]...)
	size := mdns.MinMsgSize
	var ednsFlags byte
	if ar == 1 {
		// OPT: root name, type, UDP size, extended rcode, version, flags,
		// rdlength 0; nothing after it.
		o := m[qend:]
		if len(o) != 11 || o[0] != 0 || binary.BigEndian.Uint16(o[1:]) != mdns.TypeOPT ||
			o[6] != 0 || binary.BigEndian.Uint16(o[9:]) != 0 {
			return key, 0, false
		}
		size = min(max(int(binary.BigEndian.Uint16(o[3:])), mdns.MinMsgSize), maxUDP)
		ednsFlags = 1
		if o[7]&0x80 != 0 {
			ednsFlags |= 2 // DO
		}
	} else if len(m) != qend {
		return key, 0, false
	}
	if tcp {
		size = mdns.MaxMsgSize
	}
	key = append(key, ednsFlags, byte(size>>8), byte(size))
	return key, qend, true
}

// reuse turns a kept reply into the reply to query m, whose question is
// the kept one byte for byte (it is part of the key): it takes the query's
// ID and RD and CD bits, as a reply built for it would.
func reuse(reply, m []byte) {
	copy(reply[0:2], m[0:2])
	q := binary.BigEndian.Uint16(m[2:])
	r := binary.BigEndian.Uint16(reply[2:])
	binary.BigEndian.PutUint16(reply[2:], r&^(flagRD|flagCD)|q&(flagRD|flagCD))
}

// reusable tells whether the reply m to the question for qname (as
// asked), answered from source, is the same for every client and may be
// kept.
func (s *Server) reusable(m *mdns.Msg, source, qname string) bool {
	if source != "zone" || m.Truncated {
		return false
	}
	switch m.Rcode {
	case mdns.RcodeSuccess:
		return true
	case mdns.RcodeNameError:
		// With autopath, a name below svc.<zone> that does not exist
		// may be answered from a later search domain for a client of
		// the right namespace.
		if s.autopath {
			_, below := under(lowerASCII(qname), s.svcZone)
			return !below
		}
		return true
	}
	return false
}
