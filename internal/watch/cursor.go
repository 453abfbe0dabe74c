package watch

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidCursor marks text that is not a cursor EncodeCursor wrote.
var ErrInvalidCursor = errors.New("gridkv: invalid cursor")

// cursorPrefix starts every cursor's text; its digit is the format.
const cursorPrefix = "c1."

// maxCursorPartitions bounds the positions a cursor may hold (gridkv.MaxPartitions).
const maxCursorPartitions = 1024

// EncodeCursor returns the text form of positions, one per partition: "c1." and the count and
// positions as varints, in unpadded base64url. Equal positions give equal text.
func EncodeCursor(positions []uint64) string {
	b := binary.AppendUvarint(make([]byte, 0, 2+len(positions)*binary.MaxVarintLen64), uint64(len(positions)))
	for _, p := range positions {
		b = binary.AppendUvarint(b, p)
	}
	return cursorPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor returns the positions s holds, refusing, with an error wrapping
// ErrInvalidCursor, anything EncodeCursor would not have written.
func DecodeCursor(s string) ([]uint64, error) {
	rest, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: %.20q does not start with %q", ErrInvalidCursor, s, cursorPrefix)
	}
	if len(rest) > base64.RawURLEncoding.EncodedLen(binary.MaxVarintLen64*(maxCursorPartitions+1)) {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalidCursor, len(s))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCursor, err)
	}
	n, used := binary.Uvarint(b)
	if used <= 0 || n < 1 || n > maxCursorPartitions {
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
	if EncodeCursor(positions) != s {
		return nil, fmt.Errorf("%w: not in canonical form", ErrInvalidCursor)
	}
	return positions, nil
}
