package ipam

import (
	"context"
	"slices"
)

// releaseOwner frees every key owner holds in space; field names the owner
// argument in errors. Releasing an owner holding nothing is not an error.
func releaseOwner(ctx context.Context, s Store, space, field, owner string) error {
	if err := validateOwner(field, owner); err != nil {
		return err
	}
	return s.Transact(ctx, space, func(t *Txn) error {
		for _, k := range t.KeysOf(owner) {
			t.Delete(k)
		}
		return nil
	})
}

// ownersOf lists the owners holding keys in space, sorted.
func ownersOf(ctx context.Context, s Store, space string) ([]string, error) {
	var out []string
	err := s.Transact(ctx, space, func(t *Txn) error {
		out = t.Owners()
		return nil
	})
	return out, err
}

// lookupOwned reads the keys owner holds in space and turns them into
// results with conv, which drops keys outside the allocator's pools. No
// result is an error wrapping ErrNotFound: "<field> <owner> holds no <what>".
func lookupOwned[T any](ctx context.Context, s Store, space, field, owner, what string, conv func(keys []string) []T) ([]T, error) {
	if err := validateOwner(field, owner); err != nil {
		return nil, err
	}
	var keys []string
	err := s.Transact(ctx, space, func(t *Txn) error {
		keys = slices.Clone(t.KeysOf(owner))
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := conv(keys)
	if len(out) == 0 {
		return nil, errorf(ErrNotFound, "%s %q holds no %s", field, owner, what)
	}
	return out, nil
}
