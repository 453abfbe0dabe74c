package protocol

import (
	"errors"
	"fmt"
)

// Guarding msgpack decoding of untrusted bytes: vmihailenco/msgpack allocates whatever length
// a string, binary or collection declares before reading it, so a message of a few bytes can
// declare gigabytes. Check walks a message without allocating and rejects any declared length
// that the bytes which follow cannot hold; the hand codec skips unknown fields the same way.

// maxMsgpackItems bounds how many values one message may hold, so a message of nested empty
// arrays cannot make the walk (or the decoder) do unbounded work.
const maxMsgpackItems = 1 << 20

// Check verifies that b holds one complete msgpack value whose every declared length
// and element count fits in the bytes that follow it. It allocates nothing and never
// recurses.
func Check(b []byte) error {
	_, err := skipValue(b)
	return err
}

// skipValue walks the msgpack value at the front of b as Check does and returns the bytes
// after it.
func skipValue(b []byte) (rest []byte, err error) {
	pending := 1 // values still to read
	items := 0
	for pending > 0 {
		if len(b) == 0 {
			return nil, errShortMessage
		}
		if items++; items > maxMsgpackItems {
			return nil, errors.New("too many values")
		}
		pending--
		c := b[0]
		b = b[1:]
		var skip, count uint64 // bytes to skip; values that follow (arrays, maps)
		size := func(n int) (x uint64, err error) {
			x, b, err = readBE(b, n)
			return x, err
		}
		var err error
		switch {
		case c <= 0x7f || c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			count = 2 * uint64(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			count = uint64(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = uint64(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			skip, err = size(1)
		case c == 0xc5 || c == 0xda:
			skip, err = size(2)
		case c == 0xc6 || c == 0xdb:
			skip, err = size(4)
		case c == 0xc7, c == 0xc8, c == 0xc9:
			skip, err = size(1 << (c - 0xc7)) // ext8/16/32: length, then a type byte
			skip++
		case c == 0xca || c == 0xce || c == 0xd2:
			skip = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			skip = 8
		case c == 0xcc || c == 0xd0:
			skip = 1
		case c == 0xcd || c == 0xd1:
			skip = 2
		case c >= 0xd4 && c <= 0xd8:
			skip = 1 + 1<<(c-0xd4) // fixext: a type byte, then 1..16 bytes
		case c == 0xdc:
			count, err = size(2)
		case c == 0xdd:
			count, err = size(4)
		case c == 0xde:
			count, err = size(2)
			count *= 2
		case c == 0xdf:
			count, err = size(4)
			count *= 2
		default:
			return nil, fmt.Errorf("invalid byte 0x%02x", c)
		}
		if err != nil {
			return nil, err
		}
		if skip > uint64(len(b)) {
			return nil, fmt.Errorf("declares %d bytes, %d remain", skip, len(b))
		}
		// Every element takes at least one byte.
		if count > uint64(len(b)) {
			return nil, fmt.Errorf("declares %d values, %d bytes remain", count, len(b))
		}
		b = b[skip:]
		pending += int(count)
	}
	return b, nil
}
