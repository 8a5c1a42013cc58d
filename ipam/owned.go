package ipam

import "context"

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
