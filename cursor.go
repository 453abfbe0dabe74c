package gridkv

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
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

// cursorPrefix starts every Cursor's text; its digit is the format.
const cursorPrefix = "c1."

// ErrInvalidCursor is returned by ParseCursor for text that is not a Cursor, and by List and
// Watch for a Cursor of a cluster with another partition count.
var ErrInvalidCursor = errors.New("gridkv: invalid cursor")

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
	if _, err := decodeCursor(s); err != nil {
		return Cursor{}, err
	}
	return Cursor{s: s}, nil
}

// newCursor returns the Cursor of positions, one per partition.
func newCursor(positions []uint64) Cursor {
	b := binary.AppendUvarint(make([]byte, 0, 2+len(positions)*binary.MaxVarintLen64), uint64(len(positions)))
	for _, p := range positions {
		b = binary.AppendUvarint(b, p)
	}
	return Cursor{s: cursorPrefix + base64.RawURLEncoding.EncodeToString(b)}
}

// decodeCursor returns the positions s holds, checking that s is exactly what newCursor
// writes for them.
func decodeCursor(s string) ([]uint64, error) {
	rest, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: %.20q does not start with %q", ErrInvalidCursor, s, cursorPrefix)
	}
	if len(rest) > base64.RawURLEncoding.EncodedLen(binary.MaxVarintLen64*(MaxPartitions+1)) {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalidCursor, len(s))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCursor, err)
	}
	n, used := binary.Uvarint(b)
	if used <= 0 || n < 1 || n > MaxPartitions {
		return nil, fmt.Errorf("%w: bad partition count", ErrInvalidCursor)
	}
	b = b[used:]
	positions := make([]uint64, n)
	for i := range positions {
		if positions[i], used = binary.Uvarint(b); used <= 0 {
			return nil, fmt.Errorf("%w: position %d of %d is missing or malformed", ErrInvalidCursor, i, n)
		}
		b = b[used:]
	}
	if len(b) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the positions", ErrInvalidCursor, len(b))
	}
	if newCursor(positions).s != s {
		return nil, fmt.Errorf("%w: not in canonical form", ErrInvalidCursor)
	}
	return positions, nil
}

// positionsFor returns c's positions for a cluster of partitions partitions.
func (c Cursor) positionsFor(partitions int) ([]uint64, error) {
	positions, err := decodeCursor(c.s)
	if err != nil {
		return nil, err
	}
	if len(positions) != partitions {
		return nil, fmt.Errorf("%w: it holds %d partitions, the cluster has %d", ErrInvalidCursor, len(positions), partitions)
	}
	return positions, nil
}
