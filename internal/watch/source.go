package watch

import (
	"github.com/feellmoose/gridkv/store"
)

// Source is one partition's history of changes, as a node can read it. *store.Partition is
// the Source of a local replica; a mirror is the Source of a partition hosted elsewhere.
// Methods are safe for concurrent use and do not wait.
type Source interface {
	// Events returns the changes after position after whose key starts with prefix, oldest
	// first, at most max, and the position read up to. An error wrapping store.ErrCompacted
	// says changes after `after` were dropped from the history.
	Events(after uint64, prefix string, max int) ([]store.Event, uint64, error)
	// Changed returns a channel closed when changes are added after this call.
	Changed() <-chan struct{}
	// Position returns the position of everything the source holds.
	Position() uint64
}
