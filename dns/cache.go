package dns

import (
	"container/list"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// CacheConfig configures the cache of forwarded answers. Cluster names
// are never cached: a watch event is visible in the very next answer.
type CacheConfig struct {
	// Disabled turns the cache off.
	Disabled bool
	// Capacity is the most answers kept (default 10000); the least
	// recently used one goes first.
	Capacity int
	// MaxTTL caps how long a positive answer is kept (default 1 h): the
	// smallest TTL of its records, at most MaxTTL.
	MaxTTL time.Duration
	// MaxNegativeTTL caps how long NXDOMAIN and NODATA answers are kept
	// (default 30 min): the SOA's TTL or minimum, whichever is smaller
	// (RFC 2308), at most MaxNegativeTTL. Negative answers without an SOA
	// are not cached.
	MaxNegativeTTL time.Duration
}

type cacheKey struct {
	name   string // lowercased
	qtype  uint16
	qclass uint16
	do, cd bool
}

type cacheEntry struct {
	key     cacheKey
	msg     *mdns.Msg // Rcode, Answer, Ns, Extra without OPT
	stored  time.Time
	expires time.Time
	denial  bool
}

// cache is an LRU of forwarded answers with TTL expiry.
type cache struct {
	capacity      int
	maxTTL, maxNe time.Duration
	metrics       *metrics
	now           func() time.Time

	mu      sync.Mutex
	lru     *list.List // of *cacheEntry, front = most recent
	entries map[cacheKey]*list.Element
	denials int
}

func newCache(cfg CacheConfig, m *metrics) (*cache, error) {
	if cfg.Disabled {
		return nil, nil
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = 10000
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = time.Hour
	}
	if cfg.MaxNegativeTTL == 0 {
		cfg.MaxNegativeTTL = 30 * time.Minute
	}
	switch {
	case cfg.Capacity < 0:
		return nil, invalid("config", "Cache.Capacity", cfg.Capacity, "must not be negative")
	case cfg.MaxTTL < time.Second:
		return nil, invalid("config", "Cache.MaxTTL", cfg.MaxTTL, "want at least 1s")
	case cfg.MaxNegativeTTL < time.Second:
		return nil, invalid("config", "Cache.MaxNegativeTTL", cfg.MaxNegativeTTL, "want at least 1s")
	}
	return &cache{
		capacity: cfg.Capacity, maxTTL: cfg.MaxTTL, maxNe: cfg.MaxNegativeTTL, metrics: m,
		now: time.Now, lru: list.New(), entries: map[cacheKey]*list.Element{},
	}, nil
}

// ttlOf returns how long an answer may be cached and whether it is a
// denial; 0 means not at all.
func (c *cache) ttlOf(m *mdns.Msg) (time.Duration, bool) {
	if m.Truncated {
		return 0, false
	}
	switch {
	case m.Rcode == mdns.RcodeSuccess && len(m.Answer) > 0:
		ttl := uint32(1<<31 - 1)
		for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range sec {
				if rr.Header().Rrtype == mdns.TypeOPT {
					continue
				}
				ttl = min(ttl, rr.Header().Ttl)
			}
		}
		return min(time.Duration(ttl)*time.Second, c.maxTTL), false
	case m.Rcode == mdns.RcodeNameError || m.Rcode == mdns.RcodeSuccess:
		for _, rr := range m.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				ttl := min(soa.Hdr.Ttl, soa.Minttl)
				return min(time.Duration(ttl)*time.Second, c.maxNe), true
			}
		}
	}
	return 0, false
}

// put stores a copy of an upstream answer, and caps the TTLs of m at the
// time it will be cached, so the first client sees the TTLs the next ones
// will (as CoreDNS does).
func (c *cache) put(k cacheKey, m *mdns.Msg) {
	ttl, denial := c.ttlOf(m)
	if ttl <= 0 {
		return
	}
	capTTL := uint32(ttl / time.Second)
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != mdns.TypeOPT && h.Ttl > capTTL {
				h.Ttl = capTTL
			}
		}
	}
	stored := &mdns.Msg{}
	stored.Rcode = m.Rcode
	stored.Authoritative = m.Authoritative
	stored.AuthenticatedData = m.AuthenticatedData
	stored.Answer = copyRRs(m.Answer, 0, 1<<31-1)
	stored.Ns = copyRRs(m.Ns, 0, 1<<31-1)
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			stored.Extra = append(stored.Extra, mdns.Copy(rr))
		}
	}
	now := c.now()
	e := &cacheEntry{key: k, msg: stored, stored: now, expires: now.Add(ttl), denial: denial}
	c.mu.Lock()
	if old, ok := c.entries[k]; ok {
		c.remove(old)
	}
	c.entries[k] = c.lru.PushFront(e)
	if denial {
		c.denials++
	}
	for c.lru.Len() > c.capacity {
		c.remove(c.lru.Back())
	}
	n, d := c.lru.Len(), c.denials
	c.mu.Unlock()
	c.metrics.cacheSize(n-d, d)
}

func (c *cache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.entries, e.key)
	if e.denial {
		c.denials--
	}
}

// get returns a copy of a live entry with TTLs lowered by its age.
func (c *cache) get(k cacheKey) (*mdns.Msg, bool) {
	now := c.now()
	c.mu.Lock()
	el, ok := c.entries[k]
	if !ok {
		c.mu.Unlock()
		c.metrics.cacheMiss()
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		c.mu.Unlock()
		c.metrics.cacheMiss()
		return nil, false
	}
	c.lru.MoveToFront(el)
	c.mu.Unlock()
	age := uint32(now.Sub(e.stored) / time.Second)
	left := uint32((e.expires.Sub(now) + time.Second - 1) / time.Second)
	m := &mdns.Msg{}
	m.Rcode = e.msg.Rcode
	m.Authoritative = e.msg.Authoritative
	m.AuthenticatedData = e.msg.AuthenticatedData
	m.Answer = copyRRs(e.msg.Answer, age, left)
	m.Ns = copyRRs(e.msg.Ns, age, left)
	m.Extra = copyRRs(e.msg.Extra, age, left)
	c.metrics.cacheHit(e.denial)
	return m, true
}

// len returns the number of entries.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// copyRRs deep-copies records, lowering their TTLs by age and capping
// them at left (the time the cache entry has left).
func copyRRs(in []mdns.RR, age, left uint32) []mdns.RR {
	if len(in) == 0 {
		return nil
	}
	out := make([]mdns.RR, len(in))
	for i, rr := range in {
		cp := mdns.Copy(rr)
		h := cp.Header()
		if h.Ttl > age {
			h.Ttl -= age
		} else {
			h.Ttl = 0
		}
		h.Ttl = min(h.Ttl, left)
		out[i] = cp
	}
	return out
}
