package store

import (
	"encoding/binary"
	"unsafe"
)

// record is one key's stored state: its version, key, value and deadline in
// a single allocation that holds no pointers, laid out as
//
//	version      8 bytes, little endian
//	value length 4 bytes, little endian
//	key length   2 bytes, little endian; the top bit flags a deadline
//	deadline     8 bytes, little endian, only when flagged
//	key bytes, then value bytes
//
// One allocation per key instead of three (key, value, map slot of headers)
// and a map slot of 8 bytes instead of 48 are most of what keeps a
// partition's heap close to the raw bytes it stores. The GC sees no pointer
// inside, so it never scans the records either. A key without a deadline
// (most keys) spends nothing on the feature: the flag sits in a bit the key
// length never uses, since MaxKeySize needs 11.
//
// A record is immutable once made: a write makes a new one and never touches
// the bytes of the old. That is what lets readers copy a value outside the
// shard lock, Snapshot, the ordered index and the history share records
// instead of copies, and key() return a string that aliases the record.
type record struct {
	p *byte // first byte of the allocation; nil for "no record"
}

const (
	recordHeader = 8 + 4 + 2
	// deadlineFlag marks, in the key length field, a record carrying a
	// deadline after the header.
	deadlineFlag = 1 << 15
)

// newRecord returns a record holding key, value, version and the deadline
// expiresAt (unix nanoseconds, 0 for none). The caller has checked the
// lengths (MaxKeySize fits in 15 bits, MaxValueSize in 32) and that
// expiresAt is not negative.
func newRecord[K string | []byte](key K, value []byte, version uint64, expiresAt int64) record {
	start, keyField := recordHeader, uint16(len(key))
	if expiresAt != 0 {
		start += ExpiryOverhead
		keyField |= deadlineFlag
	}
	b := make([]byte, start+len(key)+len(value))
	binary.LittleEndian.PutUint64(b, version)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(value)))
	binary.LittleEndian.PutUint16(b[12:], keyField)
	if expiresAt != 0 {
		binary.LittleEndian.PutUint64(b[recordHeader:], uint64(expiresAt))
	}
	copy(b[start+copy(b[start:], key):], value)
	return record{p: unsafe.SliceData(b)}
}

func (r record) exists() bool { return r.p != nil }

// header returns the fixed part of the record.
func (r record) header() []byte { return unsafe.Slice(r.p, recordHeader) }

// version returns the record's version, 0 for no record.
func (r record) version() uint64 {
	if r.p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(r.header())
}

// hasDeadline reports whether the record carries a deadline.
func (r record) hasDeadline() bool {
	return r.p != nil && binary.LittleEndian.Uint16(r.header()[12:])&deadlineFlag != 0
}

// expiresAt returns the record's deadline in unix nanoseconds, 0 for none
// (and for no record).
func (r record) expiresAt() int64 {
	if !r.hasDeadline() {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(unsafe.Slice(r.p, recordHeader+ExpiryOverhead)[recordHeader:]))
}

// expired reports whether the record has a deadline no later than now.
func (r record) expired(now int64) bool {
	d := r.expiresAt()
	return d != 0 && d <= now
}

// size returns what the record is accounted for: EntrySize of its key and
// value, plus ExpiryOverhead if it carries a deadline.
func (r record) size() int64 {
	kl, vl := r.lengths()
	if r.hasDeadline() {
		return EntrySize(kl, vl) + ExpiryOverhead
	}
	return EntrySize(kl, vl)
}

func (r record) lengths() (keyLen, valueLen int) {
	h := r.header()
	return int(binary.LittleEndian.Uint16(h[12:]) &^ deadlineFlag), int(binary.LittleEndian.Uint32(h[8:]))
}

// keyStart returns the offset of the key's first byte.
func (r record) keyStart() int {
	if r.hasDeadline() {
		return recordHeader + ExpiryOverhead
	}
	return recordHeader
}

// key returns the record's key. The string shares the record's memory, which
// never changes, and keeps the record alive while it is referenced.
func (r record) key() string {
	kl, _ := r.lengths()
	if kl == 0 { // only List's pivot: a pointer to its end would be invalid
		return ""
	}
	return unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(r.p), r.keyStart())), kl)
}

// value returns the stored value bytes, not a copy: callers must not modify
// them. Its capacity is its length, so an append copies. An empty value is
// nil.
func (r record) value() []byte {
	kl, vl := r.lengths()
	if vl == 0 {
		return nil
	}
	start := r.keyStart() + kl
	b := unsafe.Slice(r.p, start+vl)
	return b[start:][:vl:vl]
}

// hasKey reports whether the record's key is key.
func (r record) hasKey(key string) bool {
	kl, _ := r.lengths()
	return kl == len(key) && r.key() == key
}
