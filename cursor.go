package gridkv

import (
	"fmt"

	"github.com/feellmoose/gridkv/internal/watch"
)

// Cursor is a point in the history of every partition: one position per partition, the
// version of the last change seen there. List returns the Cursor its page was read at;
// every Event carries the Cursor just after it; FromCursor starts a Watch there. A Cursor is a
// comparable value, and its text form (String, ParseCursor) survives a restart of the program
// that holds it. The zero Cursor names no position: a Watch from it starts at the moment it
// is called.
type Cursor struct {
	s string // the canonical text form; "" for the zero Cursor
}

// ErrInvalidCursor is returned by ParseCursor for text that is not a Cursor, and by Watch for
// a Cursor of a cluster with another partition count.
var ErrInvalidCursor = watch.ErrInvalidCursor

// String returns the Cursor's text form: "c1." and the positions, varint-encoded, in
// unpadded base64url. The zero Cursor's is "".
func (c Cursor) String() string { return c.s }

// IsZero reports whether c names no position.
func (c Cursor) IsZero() bool { return c.s == "" }

// ParseCursor reads a Cursor from its text form, refusing anything String would not have
// written, with an error wrapping ErrInvalidCursor. ParseCursor("") is the zero Cursor.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	if _, err := watch.DecodeCursor(s); err != nil {
		return Cursor{}, err
	}
	return Cursor{s: s}, nil
}

func newCursor(positions []uint64) Cursor { return Cursor{s: watch.EncodeCursor(positions)} }

// positionsFor returns c's positions for a cluster of partitions partitions.
func (c Cursor) positionsFor(partitions int) ([]uint64, error) {
	positions, err := watch.DecodeCursor(c.s)
	if err != nil {
		return nil, err
	}
	if len(positions) != partitions {
		return nil, fmt.Errorf("%w: it holds %d partitions, the cluster has %d", ErrInvalidCursor, len(positions), partitions)
	}
	return positions, nil
}
