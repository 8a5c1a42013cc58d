package main

import (
	"errors"
	"log/slog"

	"k8s.io/client-go/tools/cache"
)

// bridge feeds informer events of Kubernetes objects K to a component
// through a kubeconv converter to its model M. Objects the converter skips
// (errors wrapping skip) are left out; an update that makes an object
// skipped deletes its previous version, one that makes it valid again adds
// it. Invalid objects are logged and left out: one bad object must not
// stop the node's agent.
type bridge[K any, M any] struct {
	kind   string
	conv   func(K) (M, error)
	skip   error
	add    func(M) error
	update func(old, new M) error
	del    func(M)
	log    *slog.Logger
}

var _ cache.ResourceEventHandler = bridge[int, int]{}

// convert returns the model of obj, or false when it is skipped or
// invalid.
func (b bridge[K, M]) convert(obj any) (M, bool) {
	var zero M
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	k, ok := obj.(K)
	if !ok {
		return zero, false
	}
	m, err := b.conv(k)
	switch {
	case errors.Is(err, b.skip):
		return zero, false
	case err != nil:
		b.log.Warn("ignoring an invalid object", "kind", b.kind, "err", err)
		return zero, false
	}
	return m, true
}

func (b bridge[K, M]) report(err error) {
	if err != nil {
		b.log.Warn("an event was refused", "kind", b.kind, "err", err)
	}
}

func (b bridge[K, M]) OnAdd(obj any, _ bool) {
	if m, ok := b.convert(obj); ok {
		b.report(b.add(m))
	}
}

func (b bridge[K, M]) OnUpdate(oldObj, newObj any) {
	o, oldOK := b.convert(oldObj)
	n, newOK := b.convert(newObj)
	switch {
	case oldOK && newOK:
		b.report(b.update(o, n))
	case newOK:
		b.report(b.add(n))
	case oldOK:
		b.del(o)
	}
}

func (b bridge[K, M]) OnDelete(obj any) {
	if m, ok := b.convert(obj); ok {
		b.del(m)
	}
}

// noErr adapts an event method without an error result.
func noErr[M any](f func(M)) func(M) error {
	return func(m M) error { f(m); return nil }
}

// noErr2 adapts an update method without an error result.
func noErr2[M any](f func(M, M)) func(M, M) error {
	return func(o, n M) error { f(o, n); return nil }
}
