package protocol

import (
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// Every forwarded operation encodes and decodes an OpRequest and an opResponse once each.
// Through msgpack's reflection that cost about 3.9 µs and 29 allocations per operation, a
// large share of a forwarded read; these hand-written forms do the same in a fraction of it.
//
// The bytes are what msgpack's reflection reads and writes for the same structs: a map keyed
// by the msgpack tags, empty omitempty fields left out. Decoding accepts every encoding of a
// value that reflection accepts (any integer width, nil for an empty field, str or bin for
// strings and bytes) and skips keys it does not know, so nodes of either kind understand each
// other. Every declared length is checked against the bytes that remain before it is used.

var errShortMessage = errors.New("truncated")

// encodeOpRequest returns r as a msgpack map, in one allocation.
func encodeOpRequest(r *OpRequest) []byte {
	return appendOpRequest(make([]byte, 0, 64+len(r.Key)+len(r.Value)+len(r.VouchServer)), r)
}

// encodeOpResponse returns r as a msgpack map, in one allocation.
func encodeOpResponse(r *opResponse) []byte {
	return appendOpResponse(make([]byte, 0, opResponseSize(r)), r)
}

// opResponseSize bounds the encoded size of r.
func opResponseSize(r *opResponse) int {
	return 64 + len(r.Msg) + len(r.LeaderID) + len(r.LeaderAddr) + len(r.Value)
}

// appendOpRequest appends r as a msgpack map.
func appendOpRequest(b []byte, r *OpRequest) []byte {
	n := 4 // p, o, k, t
	for _, present := range [...]bool{len(r.Value) > 0, r.Version != 0, r.Stale, r.Ack != 0, r.Replicas != 0, r.VouchServer != "", r.VouchTerm != 0, r.TTLMS != 0} {
		if present {
			n++
		}
	}
	b = appendMapLen(b, n)
	b = appendInt(appendStr(b, "p"), int64(r.Partition))
	b = appendUint(appendStr(b, "o"), uint64(r.Op))
	b = appendStr(appendStr(b, "k"), r.Key)
	if len(r.Value) > 0 {
		b = appendBin(appendStr(b, "v"), r.Value)
	}
	if r.Version != 0 {
		b = appendUint(appendStr(b, "ver"), r.Version)
	}
	if r.Stale {
		b = append(appendStr(b, "s"), 0xc3)
	}
	if r.Ack != 0 {
		b = appendInt(appendStr(b, "a"), int64(r.Ack))
	}
	if r.Replicas != 0 {
		b = appendInt(appendStr(b, "r"), int64(r.Replicas))
	}
	if r.VouchServer != "" {
		b = appendStr(appendStr(b, "vs"), r.VouchServer)
	}
	if r.VouchTerm != 0 {
		b = appendUint(appendStr(b, "vt"), r.VouchTerm)
	}
	if r.TTLMS != 0 {
		b = appendInt(appendStr(b, "ttl"), r.TTLMS)
	}
	return appendInt(appendStr(b, "t"), r.TimeoutMS)
}

// decodeOpRequest reads one OpRequest from the front of b and returns the bytes after it.
// Its Key, Value and VouchServer share b's bytes: a handler owns the request it is given
// (transport.Handler) and never changes it, and an operation keeps none of them past its
// own end (a write's command is copied into its log entry).
func decodeOpRequest(b []byte, r *OpRequest) ([]byte, error) {
	*r = OpRequest{}
	return readMap(b, func(key, b []byte) (rest []byte, known bool, err error) {
		switch string(key) {
		case "p":
			r.Partition, rest, err = readIntAs[int](b)
		case "o":
			r.Op, rest, err = readIntAs[OpKind](b)
		case "k":
			r.Key, rest, err = readStringShared(b)
		case "v":
			r.Value, rest, err = readBytesShared(b)
		case "ver":
			r.Version, rest, err = readIntAs[uint64](b)
		case "s":
			r.Stale, rest, err = readBool(b)
		case "a":
			r.Ack, rest, err = readIntAs[int](b)
		case "r":
			r.Replicas, rest, err = readIntAs[int](b)
		case "vs":
			r.VouchServer, rest, err = readStringShared(b)
		case "vt":
			r.VouchTerm, rest, err = readIntAs[uint64](b)
		case "ttl":
			r.TTLMS, rest, err = readIntAs[int64](b)
		case "t":
			r.TimeoutMS, rest, err = readIntAs[int64](b)
		default:
			return b, false, nil
		}
		return rest, true, err
	})
}

// appendOpResponse appends r as a msgpack map.
func appendOpResponse(b []byte, r *opResponse) []byte {
	n := 1 // c
	for _, present := range [...]bool{r.Msg != "", r.LeaderID != "", r.LeaderAddr != "", len(r.Value) > 0, r.Version != 0, r.Applied != 0, r.ExpiresAt != 0} {
		if present {
			n++
		}
	}
	b = appendMapLen(b, n)
	b = appendUint(appendStr(b, "c"), uint64(r.Code))
	if r.Msg != "" {
		b = appendStr(appendStr(b, "m"), r.Msg)
	}
	if r.LeaderID != "" {
		b = appendStr(appendStr(b, "li"), r.LeaderID)
	}
	if r.LeaderAddr != "" {
		b = appendStr(appendStr(b, "la"), r.LeaderAddr)
	}
	if len(r.Value) > 0 {
		b = appendBin(appendStr(b, "v"), r.Value)
	}
	if r.Version != 0 {
		b = appendUint(appendStr(b, "ver"), r.Version)
	}
	if r.Applied != 0 {
		b = appendUint(appendStr(b, "ai"), r.Applied)
	}
	if r.ExpiresAt != 0 {
		b = appendInt(appendStr(b, "x"), r.ExpiresAt)
	}
	return b
}

// decodeOpResponse reads one opResponse from the front of b and returns the bytes after it.
func decodeOpResponse(b []byte, r *opResponse) ([]byte, error) {
	*r = opResponse{}
	return readMap(b, func(key, b []byte) (rest []byte, known bool, err error) {
		switch string(key) {
		case "c":
			r.Code, rest, err = readIntAs[uint8](b)
		case "m":
			r.Msg, rest, err = readString(b)
		case "li":
			r.LeaderID, rest, err = readString(b)
		case "la":
			r.LeaderAddr, rest, err = readString(b)
		case "v":
			r.Value, rest, err = readBytes(b)
		case "ver":
			r.Version, rest, err = readIntAs[uint64](b)
		case "ai":
			r.Applied, rest, err = readIntAs[uint64](b)
		case "x":
			r.ExpiresAt, rest, err = readIntAs[int64](b)
		default:
			return b, false, nil
		}
		return rest, true, err
	})
}

// readMap reads the map at the front of b, handing each key and the bytes that start with its
// value to field, which reads a value it knows and returns the bytes after it. The values of
// keys field does not know are skipped.
func readMap(b []byte, field func(key, b []byte) (rest []byte, known bool, err error)) ([]byte, error) {
	n, b, err := readMapLen(b)
	for i := 0; i < n && err == nil; i++ {
		var key []byte
		var known bool
		if key, b, err = readStr(b); err != nil {
			break
		}
		if b, known, err = field(key, b); err == nil && !known {
			b, err = skipValue(b)
		}
	}
	return b, err
}

// decodeOne decodes b, which must hold exactly one message, with decode.
func decodeOne[T any](b []byte, v *T, decode func([]byte, *T) ([]byte, error)) error {
	rest, err := decode(b, v)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("%d bytes after the message", len(rest))
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return nil
}

// decodeArray decodes b, a msgpack array of at most limit messages, with decode.
func decodeArray[T any](b []byte, limit int, decode func([]byte, *T) ([]byte, error)) ([]T, error) {
	n, b, err := readArrayLen(b)
	if err == nil && n > limit {
		err = fmt.Errorf("%d elements, the limit is %d", n, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	out := make([]T, n)
	for i := range out {
		if b, err = decode(b, &out[i]); err != nil {
			return nil, fmt.Errorf("%w: element %d: %w", ErrBadMessage, i, err)
		}
	}
	if len(b) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the array", ErrBadMessage, len(b))
	}
	return out, nil
}

func appendMapLen(b []byte, n int) []byte {
	if n < 16 {
		return append(b, 0x80|byte(n))
	}
	return append(b, 0xde, byte(n>>8), byte(n)) // never more than 65535 fields here
}

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xdc, byte(n>>8), byte(n))
	default:
		return append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

func appendBin(b []byte, v []byte) []byte {
	switch n := len(v); {
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xc5, byte(n>>8), byte(n))
	default:
		b = append(b, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, v...)
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return append(b, 0xcd, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return append(b, 0xce, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return append(b, 0xcf, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v)) // negative fixint
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return append(b, 0xd1, byte(v>>8), byte(v))
	case v >= math.MinInt32:
		return append(b, 0xd2, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return append(b, 0xd3, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

// readBE reads an n-byte big-endian number from the front of b.
func readBE(b []byte, n int) (uint64, []byte, error) {
	if len(b) < n {
		return 0, b, errShortMessage
	}
	var x uint64
	for _, d := range b[:n] {
		x = x<<8 | uint64(d)
	}
	return x, b[n:], nil
}

// readLen reads a length or count stored in the size bytes after a code byte.
func readLen(b []byte, size int) (int, []byte, error) {
	n, b, err := readBE(b, size)
	return int(n), b, err
}

// readMapLen reads a map header; nil reads as an empty map. Every entry takes at least two
// bytes, so a count the remaining bytes cannot hold is refused.
func readMapLen(b []byte) (n int, rest []byte, err error) {
	if len(b) == 0 {
		return 0, b, errShortMessage
	}
	c, b := b[0], b[1:]
	switch {
	case c >= 0x80 && c <= 0x8f:
		n = int(c & 0x0f)
	case c == 0xde:
		n, b, err = readLen(b, 2)
	case c == 0xdf:
		n, b, err = readLen(b, 4)
	case c == 0xc0:
	default:
		return 0, b, fmt.Errorf("want a map, found 0x%02x", c)
	}
	if err == nil && n > len(b)/2 {
		err = fmt.Errorf("a map of %d entries in %d bytes", n, len(b))
	}
	return n, b, err
}

// readArrayLen reads an array header; nil reads as an empty array.
func readArrayLen(b []byte) (n int, rest []byte, err error) {
	if len(b) == 0 {
		return 0, b, errShortMessage
	}
	c, b := b[0], b[1:]
	switch {
	case c >= 0x90 && c <= 0x9f:
		n = int(c & 0x0f)
	case c == 0xdc:
		n, b, err = readLen(b, 2)
	case c == 0xdd:
		n, b, err = readLen(b, 4)
	case c == 0xc0:
	default:
		return 0, b, fmt.Errorf("want an array, found 0x%02x", c)
	}
	if err == nil && n > len(b) {
		err = fmt.Errorf("an array of %d elements in %d bytes", n, len(b))
	}
	return n, b, err
}

// readStr reads a string or binary value without copying it; nil reads as empty.
func readStr(b []byte) (s, rest []byte, err error) {
	if len(b) == 0 {
		return nil, b, errShortMessage
	}
	c, b := b[0], b[1:]
	var n int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, b, err = readLen(b, 1)
	case c == 0xda || c == 0xc5:
		n, b, err = readLen(b, 2)
	case c == 0xdb || c == 0xc6:
		n, b, err = readLen(b, 4)
	case c == 0xc0:
		return nil, b, nil
	default:
		return nil, b, fmt.Errorf("want a string, found 0x%02x", c)
	}
	if err == nil && n > len(b) {
		err = fmt.Errorf("declares %d bytes, %d remain", n, len(b))
	}
	if err != nil {
		return nil, b, err
	}
	return b[:n:n], b[n:], nil
}

func readString(b []byte) (string, []byte, error) {
	s, b, err := readStr(b)
	return string(s), b, err
}

// readStringShared is readString without the copy: the string shares b's bytes, which must
// not change while it is in use.
func readStringShared(b []byte) (string, []byte, error) {
	s, b, err := readStr(b)
	return unsafe.String(unsafe.SliceData(s), len(s)), b, err
}

// readBytesShared is readBytes without the copy: the value shares b's bytes (capacity
// trimmed, so an append cannot overwrite what follows).
func readBytesShared(b []byte) ([]byte, []byte, error) {
	s, b, err := readStr(b)
	if len(s) == 0 || err != nil {
		return nil, b, err
	}
	return s, b, nil
}

// readBytes reads a binary or string value into a new slice: the message's buffer may hold a
// whole batch, which a kept value must not pin.
func readBytes(b []byte) ([]byte, []byte, error) {
	s, b, err := readStr(b)
	if s == nil || err != nil {
		return nil, b, err
	}
	return append([]byte(nil), s...), b, nil
}

func readBool(b []byte) (bool, []byte, error) {
	if len(b) == 0 {
		return false, b, errShortMessage
	}
	switch b[0] {
	case 0xc2, 0xc0:
		return false, b[1:], nil
	case 0xc3:
		return true, b[1:], nil
	}
	return false, b, fmt.Errorf("want a bool, found 0x%02x", b[0])
}

// readIntAs reads an integer of any msgpack width (nil reads as 0) and refuses one that T
// cannot hold.
func readIntAs[T int | int64 | uint8 | OpKind | uint64](b []byte) (T, []byte, error) {
	if len(b) == 0 {
		return 0, b, errShortMessage
	}
	c, b := b[0], b[1:]
	var u uint64
	neg := false
	var err error
	switch {
	case c <= 0x7f:
		u = uint64(c)
	case c >= 0xe0:
		u, neg = uint64(int64(int8(c))), true
	case c == 0xc0:
	case c >= 0xcc && c <= 0xcf:
		u, b, err = readBE(b, 1<<(c-0xcc))
	case c >= 0xd0 && c <= 0xd3:
		size := 1 << (c - 0xd0)
		if u, b, err = readBE(b, size); err == nil {
			shift := 64 - 8*size
			v := int64(u<<shift) >> shift // sign-extend
			u, neg = uint64(v), v < 0
		}
	default:
		return 0, b, fmt.Errorf("want an integer, found 0x%02x", c)
	}
	if err != nil {
		return 0, b, err
	}
	v := T(u)
	// The value fits when converting back gives the same number and sign.
	if (neg && (v >= 0 || int64(v) != int64(u))) || (!neg && (v < 0 || uint64(v) != u)) {
		return 0, b, fmt.Errorf("integer %d out of range", int64(u))
	}
	return v, b, nil
}
