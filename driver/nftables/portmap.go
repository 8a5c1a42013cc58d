package nftables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	nft "github.com/google/nftables"
	"github.com/google/nftables/userdata"

	"github.com/kubewire/kubewire/network"
)

// PortMap programs host port mappings (CNI portMappings, Kubernetes
// hostPort) into one nftables table it owns. It implements
// network.PortMapper. All methods of one instance are serialised; separate
// instances, in one process or many, may share a table (see the package
// documentation).
type PortMap struct {
	tableConn
	objs *portObjects
}

var _ network.PortMapper = (*PortMap)(nil)

// syncAttempts bounds how often SyncPortMappings restarts its conversation
// when a concurrent writer changed the table between its read and its
// batch; between attempts it backs off for a random time, up to
// attempt*retryBackoff.
const (
	syncAttempts = 20
	retryBackoff = 2 * time.Millisecond
)

// NewPortMap validates opts, probes (once per process, in a throwaway
// namespace) that the kernel has what the ruleset needs, and opens an
// nftables netlink connection bound to the namespace. A missing kernel
// feature is reported as a *driver.UnsupportedError. It changes nothing in
// the namespace: the table is created by the first SyncPortMappings that
// adds a mapping.
func NewPortMap(opts Options) (*PortMap, error) {
	p := &PortMap{}
	if err := p.open(opts, "portmap-v1", portProbe.check); err != nil {
		return nil, err
	}
	p.objs = newPortObjects(p.table)
	return p, nil
}

// SyncPortMappings makes the mappings of owner exactly maps, in one netlink
// transaction that adds and deletes only the elements that change (the
// rules never change). Mappings of other owners are left alone; a host side
// one of them holds (or overlaps: a wildcard host address and a specific
// one of the same family, protocol and port) is refused with an error
// matching network.ErrPortConflict. Invalid input is refused with an error
// matching ErrInvalid. In both cases nothing is applied. Syncing the same
// mappings again sends nothing.
func (p *PortMap) SyncPortMappings(ctx context.Context, owner string, maps []network.PortMapping) error {
	if err := validateOwner(owner); err != nil {
		return err
	}
	want, err := validateMappings(maps)
	if err != nil {
		return err
	}
	var res syncResult
	for attempt := 1; ; attempt++ {
		err = p.withConn(ctx, func(c *nft.Conn) error {
			var err error
			res, err = p.syncOnce(c, owner, want)
			return err
		})
		if err == nil || attempt == syncAttempts || !raced(err) || ctx.Err() != nil {
			break
		}
		p.log.DebugContext(ctx, "port mappings changed concurrently, retrying", "owner", owner, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(rand.N(time.Duration(attempt) * retryBackoff)):
		}
	}
	if errors.Is(err, network.ErrPortConflict) {
		return err
	}
	if err != nil {
		return fmt.Errorf("nftables: sync port mappings of %q in table inet %s: %w", owner, p.table.Name, err)
	}
	p.log.DebugContext(ctx, "port mappings synced", "owner", owner, "mappings", len(want),
		"changed", res.changed, "created", res.created, "rebuilt", res.rebuilt)
	return nil
}

// raced reports whether a batch failed because another writer changed the
// table after we read it: the generation element we delete is gone
// (ENOENT), the table we create exists (EEXIST), or a key we add holds
// another pod (EBUSY).
func raced(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.EBUSY)
}

type syncResult struct{ changed, created, rebuilt bool }

// syncOnce reads the table and sends the batch for owner in one
// conversation.
func (p *PortMap) syncOnce(c *nft.Conn, owner string, want []portEntry) (syncResult, error) {
	rd, err := p.read(c, true)
	if err != nil {
		return syncResult{}, err
	}
	o := p.objs
	switch {
	case !rd.exists:
		if len(want) == 0 {
			return syncResult{}, nil
		}
		ch, err := planPortChange(portState{}, owner, want)
		if err != nil {
			return syncResult{}, err
		}
		c.CreateTable(p.table) // fails with EEXIST if a concurrent writer made it
		if err := o.addSkeleton(c); err != nil {
			return syncResult{}, err
		}
		if err := p.queueGeneration(c, nil, 1); err != nil {
			return syncResult{}, err
		}
		if err := o.queueChange(c, &ch); err != nil {
			return syncResult{}, err
		}
		return syncResult{changed: true, created: true}, c.Flush()

	case !rd.intact:
		// Someone changed our table's layout (or an older version made it):
		// rebuild it in one batch, keeping the mappings that could be read.
		tag := ownerTag(owner)
		kept := portState{hairpin: [2]map[string]bool{{}, {}}}
		for _, e := range rd.st.elems {
			if e.tag != tag {
				kept.elems = append(kept.elems, e)
			}
		}
		ch, err := planPortChange(kept, owner, want)
		if err != nil {
			return syncResult{}, err
		}
		for _, e := range kept.elems {
			k := e.host.kind()
			ch.add[k] = append(ch.add[k], nft.SetElement{Key: []byte(e.host.key()), Val: []byte(encodePod(e.pod)), Comment: e.tag})
		}
		ch.namesDel = nil // the table starts empty
		for _, other := range ownersOf(portState{elems: kept.elems, names: rd.st.names}) {
			ch.namesAdd = append(ch.namesAdd, ownerNameElements(other)...)
		}
		ch.sort()
		if len(rd.gen.Key) == 4 {
			// Rebuild only if no other writer committed since our read:
			// deleting the generation we read fails the batch otherwise.
			if err := c.SetDeleteElements(p.objs.gen, []nft.SetElement{{Key: rd.gen.Key}}); err != nil {
				return syncResult{}, err
			}
		}
		p.removeTable(c)
		c.AddTable(p.table)
		if err := o.addSkeleton(c); err != nil {
			return syncResult{}, err
		}
		next := uint32(1)
		if len(rd.gen.Key) == 4 {
			next = binary.BigEndian.Uint32(rd.gen.Key) + 1
		}
		if err := p.queueGeneration(c, nil, next); err != nil {
			return syncResult{}, err
		}
		if err := o.queueChange(c, &ch); err != nil {
			return syncResult{}, err
		}
		return syncResult{changed: true, rebuilt: true}, c.Flush()

	default:
		ch, err := planPortChange(rd.st, owner, want)
		if err != nil {
			return syncResult{}, err
		}
		if ch.empty() {
			return syncResult{}, nil
		}
		next := binary.BigEndian.Uint32(rd.gen.Key) + 1
		if err := p.queueGeneration(c, &rd.gen, next); err != nil {
			return syncResult{}, err
		}
		if err := o.queueChange(c, &ch); err != nil {
			return syncResult{}, err
		}
		return syncResult{changed: true}, c.Flush()
	}
}

// queueGeneration replaces the generation element old (nil: none) by next.
// Deleting old fails the whole batch when a concurrent writer already
// replaced it: optimistic concurrency between processes.
func (p *PortMap) queueGeneration(c *nft.Conn, old *nft.SetElement, next uint32) error {
	if old != nil {
		if err := c.SetDeleteElements(p.objs.gen, []nft.SetElement{{Key: old.Key}}); err != nil {
			return err
		}
	}
	return c.SetAddElements(p.objs.gen, []nft.SetElement{{Key: binary.BigEndian.AppendUint32(nil, next)}})
}

// PortMappingOwners lists, sorted, the owners that hold mappings in the
// table. A missing table has none.
func (p *PortMap) PortMappingOwners(ctx context.Context) ([]string, error) {
	var owners []string
	err := p.withConn(ctx, func(c *nft.Conn) error {
		rd, err := p.read(c, false)
		owners = ownersOf(rd.st)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nftables: list port mapping owners in table inet %s: %w", p.table.Name, err)
	}
	return owners, nil
}

// portRead is the table as read at the start of a conversation.
type portRead struct {
	exists bool
	intact bool // every set, chain and rule as this version writes them
	gen    nft.SetElement
	st     portState
}

// read lists the table's elements and, with checkRules, its chains and
// rules.
func (p *PortMap) read(c *nft.Conn, checkRules bool) (portRead, error) {
	rd := portRead{st: portState{hairpin: [2]map[string]bool{{}, {}}}}
	tables, err := c.ListTablesOfFamily(p.table.Family)
	if err != nil {
		return rd, fmt.Errorf("list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nft.Table) bool { return t.Name == p.table.Name }) {
		return rd, nil
	}
	rd.exists, rd.intact = true, true
	sets, err := c.GetSets(p.table)
	if err != nil {
		return rd, fmt.Errorf("list sets: %w", err)
	}
	o := p.objs
	byName := map[string]*nft.Set{}
	for _, s := range sets {
		byName[s.Name] = s
	}
	elements := func(want *nft.Set) ([]nft.SetElement, bool, error) {
		got := byName[want.Name]
		if got == nil || got.KeyType.Name != want.KeyType.Name || got.IsMap != want.IsMap ||
			got.KeyType.Bytes != want.KeyType.Bytes || want.IsMap && got.DataType.Name != want.DataType.Name {
			rd.intact = false
			return nil, false, nil
		}
		els, err := c.GetSetElements(got)
		if err != nil {
			return nil, false, fmt.Errorf("list elements of %s: %w", want.Name, err)
		}
		return els, true, nil
	}
	for k := range numKinds {
		els, _, err := elements(o.maps[k])
		if err != nil {
			return rd, err
		}
		for _, e := range els {
			h, ok1 := decodeHostSide(k, e.Key)
			pod, ok2 := decodePod(k.is6(), e.Val)
			if !ok1 || !ok2 || e.Comment == "" {
				continue // not ours to attribute
			}
			rd.st.elems = append(rd.st.elems, portElem{host: h, pod: pod, tag: e.Comment})
		}
	}
	for f := range 2 {
		els, _, err := elements(o.hairpin[f])
		if err != nil {
			return rd, err
		}
		for _, e := range els {
			rd.st.hairpin[f][string(e.Key)] = true
		}
	}
	if rd.st.names, _, err = elements(o.names); err != nil {
		return rd, err
	}
	gen, ok, err := elements(o.gen)
	if err != nil {
		return rd, err
	}
	if ok && len(gen) == 1 && len(gen[0].Key) == 4 {
		rd.gen = gen[0]
	} else {
		rd.intact = false
	}
	if checkRules && rd.intact {
		rd.intact, err = p.rulesIntact(c)
	}
	return rd, err
}

// rulesIntact reports whether the table's chains and rules are those this
// version writes, comparing each chain's rule comments.
func (p *PortMap) rulesIntact(c *nft.Conn) (bool, error) {
	want := map[string][]string{}
	for _, r := range p.objs.rules() {
		want[r.chain] = append(want[r.chain], r.comment)
	}
	chains, err := c.ListChainsOfTableFamily(p.table.Family)
	if err != nil {
		return false, fmt.Errorf("list chains: %w", err)
	}
	n := 0
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != p.table.Name {
			continue
		}
		n++
		rules, err := c.GetRules(p.table, ch)
		if err != nil {
			return false, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		var got []string
		for _, r := range rules {
			s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			got = append(got, s)
		}
		if !slices.Equal(got, want[ch.Name]) {
			return false, nil
		}
	}
	return n == len(p.objs.chains), nil
}
