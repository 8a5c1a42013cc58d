package nftables

import (
	"cmp"
	"slices"

	"github.com/kubewire/kubewire/service"
)

// svcCommitted is what the table holds after the last successful sync (or,
// while a sync is planned, after it; a failed sync discards it and the next
// one rebuilds the table).
type svcCommitted struct {
	ports  map[service.PortName]*committedPort
	claims map[entryKey][]service.PortName // claimants in name order: the first owns the key
	shared map[elemID]int                  // refcounted elements: how many ports want each
	counts map[setRef]int                  // elements of the per-count sets (present iff > 0)
}

type committedPort struct {
	state  *service.PortState
	render portRender
}

// elemID identifies an element of the table.
type elemID struct {
	ref setRef
	key string
}

func newCommitted() *svcCommitted {
	return &svcCommitted{ports: map[service.PortName]*committedPort{}, claims: map[entryKey][]service.PortName{},
		shared: map[elemID]int{}, counts: map[setRef]int{}}
}

// svcPlan is the change that turns the table from one state into another.
// svcQueue.plan queues it in this order: element deletions; flushes of the
// chains that are rewritten or deleted; deletions of maps, chains and sets;
// additions of sets, chains and maps; rules; element additions.
type svcPlan struct {
	delElems, addElems []renderedElem

	// Per-count maps created and deleted (with their rules).
	addCountSets, delCountSets []setRef

	// Session affinity chains and sets.
	flush     []string // chains kept whose rules are rewritten
	delChains []string
	delSets   []svcSetSpec
	addSets   []svcSetSpec
	addChains []string
	rules     []svcChainSpec // rules to write: chains added or flushed
	// Dispatch maps (named after their chain): emptied before chains are
	// deleted, refilled or added with their elements after chains are added.
	flushVmaps map[string]int // emptied: element count before
	delVmaps   []string
	addVmaps   map[string][]string // created with these goto targets
	fillVmaps  map[string][]string // emptied and refilled
	// objDelta is the change in the number of objects (chains and named
	// sets) the kernel counts in the table.
	objDelta int

	// countsBefore holds the element counts of the per-count sets the plan
	// touches, before it.
	countsBefore map[setRef]int
}

func newPlan() *svcPlan {
	return &svcPlan{addVmaps: map[string][]string{}, fillVmaps: map[string][]string{}, flushVmaps: map[string]int{},
		countsBefore: map[setRef]int{}}
}

func (p *svcPlan) empty() bool {
	return len(p.delElems)+len(p.addElems)+len(p.flush)+len(p.delChains)+len(p.delSets)+len(p.addSets)+len(p.addChains)+
		len(p.flushVmaps)+len(p.delVmaps)+len(p.addVmaps)+len(p.fillVmaps)+len(p.addCountSets)+len(p.delCountSets) == 0
}

// planSync computes the change from c to st and applies it to c, finding
// the changed ports by comparing every port of st with c.
func (cfg *svcConfig) planSync(c *svcCommitted, st *service.State) *svcPlan {
	var changed []*service.PortState
	inState := make(map[service.PortName]bool, len(st.Ports))
	for i := range st.Ports {
		ps := &st.Ports[i]
		inState[ps.Name] = true
		if o, ok := c.ports[ps.Name]; !ok || !o.state.Equal(ps) {
			changed = append(changed, ps)
		}
	}
	var removed []service.PortName
	if len(st.Ports)-len(changed) < len(c.ports) {
		for n := range c.ports {
			if !inState[n] {
				removed = append(removed, n)
			}
		}
	}
	return cfg.apply(c, changed, removed)
}

// planChanged is planSync for a State that differs from c only in the
// ports named (service.Hint.Exact): it looks at those ports only. st.Ports
// is sorted by name.
func (cfg *svcConfig) planChanged(c *svcCommitted, st *service.State, names []service.PortName) (*svcPlan, error) {
	var changed []*service.PortState
	var removed []service.PortName
	seen := make(map[service.PortName]bool, len(names))
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		i, found := slices.BinarySearchFunc(st.Ports, n, func(p service.PortState, n service.PortName) int {
			return service.ComparePortNames(p.Name, n)
		})
		switch {
		case found:
			if err := validatePort(i, &st.Ports[i]); err != nil {
				return nil, err
			}
			if o, ok := c.ports[n]; !ok || !o.state.Equal(&st.Ports[i]) {
				changed = append(changed, &st.Ports[i])
			}
		case c.ports[n] != nil:
			removed = append(removed, n)
		}
	}
	return cfg.apply(c, changed, removed), nil
}

// apply plans (and applies to c) the change of the changed and removed
// ports, and of the ports that gain or lose a key to them.
func (cfg *svcConfig) apply(c *svcCommitted, changed []*service.PortState, removed []service.PortName) *svcPlan {
	p := newPlan()
	slices.SortFunc(removed, service.ComparePortNames)
	byName := make(map[service.PortName]*service.PortState, len(changed))
	for _, ps := range changed {
		byName[ps.Name] = ps
	}

	// Claims: release those of removed and changed ports, then claim anew;
	// remember each touched key's owner before.
	ownerBefore := map[entryKey]service.PortName{}
	touch := func(e entryKey) {
		if _, ok := ownerBefore[e]; !ok {
			if cl := c.claims[e]; len(cl) > 0 {
				ownerBefore[e] = cl[0]
			} else {
				ownerBefore[e] = service.PortName{}
			}
		}
	}
	release := func(name service.PortName) {
		o := c.ports[name]
		if o == nil {
			return
		}
		for _, e := range portEntries(o.state, cfg) {
			touch(e)
			cl := c.claims[e]
			if i := slices.Index(cl, name); i >= 0 {
				cl = slices.Delete(cl, i, i+1)
			}
			if len(cl) == 0 {
				delete(c.claims, e)
			} else {
				c.claims[e] = cl
			}
		}
	}
	for _, n := range removed {
		release(n)
	}
	for _, ps := range changed {
		release(ps.Name)
	}
	for _, ps := range changed {
		for _, e := range portEntries(ps, cfg) {
			touch(e)
			cl := c.claims[e]
			i, found := slices.BinarySearchFunc(cl, ps.Name, service.ComparePortNames)
			if !found {
				c.claims[e] = slices.Insert(cl, i, ps.Name)
			}
		}
	}

	// Ports to render again: the changed and removed ones, and those that
	// gained or lost a key to another port.
	redo := make(map[service.PortName]bool, len(changed)+len(removed))
	order := make([]service.PortName, 0, len(changed)+len(removed))
	mark := func(n service.PortName) {
		if n != (service.PortName{}) && !redo[n] {
			redo[n] = true
			order = append(order, n)
		}
	}
	for _, ps := range changed {
		mark(ps.Name)
	}
	for _, n := range removed {
		mark(n)
	}
	for e, before := range ownerBefore {
		var after service.PortName
		if cl := c.claims[e]; len(cl) > 0 {
			after = cl[0]
		}
		if after != before {
			mark(before)
			mark(after)
		}
	}
	slices.SortFunc(order, service.ComparePortNames)
	for _, n := range order {
		var oldR, newR portRender
		o := c.ports[n]
		if o != nil {
			oldR = o.render
		}
		ps := byName[n]
		if ps != nil {
			ps = clonePort(ps)
		} else if o != nil && !slices.Contains(removed, n) {
			ps = o.state // unchanged, but its keys changed hands
		}
		if ps != nil {
			newR = cfg.renderPort(ps, func(e entryKey) bool {
				cl := c.claims[e]
				return len(cl) > 0 && cl[0] == n
			})
		}
		p.diff(c, &oldR, &newR)
		if ps == nil {
			delete(c.ports, n)
		} else {
			c.ports[n] = &committedPort{state: ps, render: newR}
		}
	}
	p.countSets(c)
	return p
}

// diff adds to p what turns old into new, and counts it in c.
func (p *svcPlan) diff(c *svcCommitted, old, new *portRender) {
	count := func(r setRef, d int) {
		if !r.perCount() {
			return
		}
		if _, ok := p.countsBefore[r]; !ok {
			p.countsBefore[r] = c.counts[r]
		}
		c.counts[r] += d
	}
	if len(old.elems)+len(old.shared)+len(old.chains)+len(old.sets) == 0 { // a new port: everything is added
		p.addElems = append(p.addElems, new.elems...)
		for _, e := range new.elems {
			count(e.ref, 1)
		}
		for _, e := range new.shared {
			id := elemID{e.ref, e.key}
			if c.shared[id]++; c.shared[id] == 1 {
				p.addElems = append(p.addElems, e)
			}
		}
		p.diffChains(old, new)
		return
	}
	oldVals := make(map[elemID]string, len(old.elems))
	for _, e := range old.elems {
		oldVals[elemID{e.ref, e.key}] = e.val
	}
	for _, e := range new.elems {
		id := elemID{e.ref, e.key}
		if v, ok := oldVals[id]; ok && v == e.val {
			delete(oldVals, id)
			continue
		}
		p.addElems = append(p.addElems, e)
		count(e.ref, 1)
	}
	for _, e := range old.elems { // in render order, for stable batches
		id := elemID{e.ref, e.key}
		if _, ok := oldVals[id]; ok {
			p.delElems = append(p.delElems, e)
			count(e.ref, -1)
		}
	}
	newShared := make(map[elemID]bool, len(new.shared))
	for _, e := range new.shared {
		newShared[elemID{e.ref, e.key}] = true
	}
	oldShared := make(map[elemID]bool, len(old.shared))
	for _, e := range old.shared {
		id := elemID{e.ref, e.key}
		oldShared[id] = true
		if newShared[id] {
			continue
		}
		if c.shared[id]--; c.shared[id] <= 0 {
			delete(c.shared, id)
			p.delElems = append(p.delElems, e)
		}
	}
	for _, e := range new.shared {
		id := elemID{e.ref, e.key}
		if oldShared[id] {
			continue
		}
		if c.shared[id]++; c.shared[id] == 1 {
			p.addElems = append(p.addElems, e)
		}
	}
	p.diffChains(old, new)
}

// countSets turns the count changes into per-count map additions and
// deletions.
func (p *svcPlan) countSets(c *svcCommitted) {
	for r, before := range p.countsBefore {
		after := c.counts[r]
		if after == 0 {
			delete(c.counts, r)
		}
		switch {
		case before == 0 && after > 0:
			p.addCountSets = append(p.addCountSets, r)
		case before > 0 && after == 0:
			p.delCountSets = append(p.delCountSets, r)
		}
	}
	p.objDelta += len(p.addCountSets) - len(p.delCountSets)
	slices.SortFunc(p.addCountSets, compareSetRefs)
	slices.SortFunc(p.delCountSets, compareSetRefs)
}

func compareSetRefs(a, b setRef) int {
	return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.fam, b.fam), cmp.Compare(a.n, b.n))
}

// diffChains adds the changes of the affinity chains and sets.
func (p *svcPlan) diffChains(old, new *portRender) {
	oldChains := make(map[string]*svcChainSpec, len(old.chains))
	for i := range old.chains {
		oldChains[old.chains[i].name] = &old.chains[i]
	}
	newNames := make(map[string]bool, len(new.chains))
	for i := range new.chains {
		c := &new.chains[i]
		newNames[c.name] = true
		oc, ok := oldChains[c.name]
		switch {
		case !ok:
			p.addChains = append(p.addChains, c.name)
			p.rules = append(p.rules, *c)
			p.objDelta++
			if v := c.vmap(); v != nil {
				p.addVmaps[c.name] = v
				p.objDelta++
			}
		case oc.fingerprint() != c.fingerprint():
			p.flush = append(p.flush, c.name)
			p.rules = append(p.rules, *c)
			ov, nv := oc.vmap(), c.vmap()
			switch {
			case ov == nil && nv != nil:
				p.addVmaps[c.name] = nv
				p.objDelta++
			case ov != nil && nv == nil:
				p.delVmaps = append(p.delVmaps, c.name)
				p.objDelta--
			case ov != nil && !slices.Equal(ov, nv):
				p.flushVmaps[c.name] = len(ov)
				p.fillVmaps[c.name] = nv
			}
		}
	}
	for _, c := range old.chains {
		if !newNames[c.name] {
			p.delChains = append(p.delChains, c.name)
			p.objDelta--
			if c.vmap() != nil {
				p.delVmaps = append(p.delVmaps, c.name)
				p.objDelta--
			}
		}
	}
	newSets := map[string]bool{}
	for _, s := range new.sets {
		newSets[s.name] = true
	}
	oldSets := map[string]bool{}
	for _, s := range old.sets {
		oldSets[s.name] = true
		if !newSets[s.name] {
			p.delSets = append(p.delSets, s)
			p.objDelta--
		}
	}
	for _, s := range new.sets {
		if !oldSets[s.name] {
			p.addSets = append(p.addSets, s)
			p.objDelta++
		}
	}
}
