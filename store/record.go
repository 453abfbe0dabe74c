package store

import (
	"encoding/binary"
	"unsafe"
)

// record is one key's stored state: its version, key and value in a single
// allocation that holds no pointers, laid out as
//
//	version      8 bytes, little endian
//	value length 4 bytes, little endian
//	key length   2 bytes, little endian
//	key bytes, then value bytes
//
// One allocation per key instead of three (key, value, map slot of headers)
// and a map slot of 8 bytes instead of 48 are most of what keeps a
// partition's heap close to the raw bytes it stores. The GC sees no pointer
// inside, so it never scans the records either.
//
// A record is immutable once made: a write makes a new one and never touches
// the bytes of the old. That is what lets readers copy a value outside the
// shard lock, Snapshot keep records instead of copies, and key() return a
// string that aliases the record.
type record struct {
	p *byte // first byte of the allocation; nil for "no record"
}

const recordHeader = 8 + 4 + 2

// newRecord returns a record holding key, value and version. The caller has
// checked the lengths (MaxKeySize fits in 16 bits, MaxValueSize in 32).
func newRecord[K string | []byte](key K, value []byte, version uint64) record {
	b := make([]byte, recordHeader+len(key)+len(value))
	binary.LittleEndian.PutUint64(b, version)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(value)))
	binary.LittleEndian.PutUint16(b[12:], uint16(len(key)))
	copy(b[recordHeader+copy(b[recordHeader:], key):], value)
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

// size returns what the record is accounted for: EntrySize of its key and value.
func (r record) size() int64 {
	kl, vl := r.lengths()
	return EntrySize(kl, vl)
}

func (r record) lengths() (keyLen, valueLen int) {
	h := r.header()
	return int(binary.LittleEndian.Uint16(h[12:])), int(binary.LittleEndian.Uint32(h[8:]))
}

// key returns the record's key. The string shares the record's memory, which
// never changes, and keeps the record alive while it is referenced.
func (r record) key() string {
	kl, _ := r.lengths()
	return unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(r.p), recordHeader)), kl)
}

// value returns the stored value bytes, not a copy: callers must not modify
// them. Its capacity is its length, so an append copies. An empty value is
// nil.
func (r record) value() []byte {
	kl, vl := r.lengths()
	if vl == 0 {
		return nil
	}
	b := unsafe.Slice(r.p, recordHeader+kl+vl)
	return b[recordHeader+kl:][:vl:vl]
}

// hasKey reports whether the record's key is key.
func (r record) hasKey(key string) bool {
	kl, _ := r.lengths()
	return kl == len(key) && r.key() == key
}
