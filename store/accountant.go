package store

import (
	"fmt"
	"math"
	"sync/atomic"
)

// EntryOverhead is the bytes EntrySize charges for each entry on top of its
// key and value: what the Go runtime spends per entry beyond the raw bytes.
//
// An entry is one record (a 14-byte header, then key and value, rounded up
// to an allocation size class), a 16-byte map slot (the key's hash and a
// pointer to the record) and a pointer in the ordered index. Swiss tables
// keep between 7/16 and 7/8 of their slots full depending on how long ago
// they last grew, so a slot costs 18 to 37 bytes with its control byte; the
// index's B-tree nodes are half full when keys arrive in order and about
// 70% full when they arrive at random, so its pointer costs 11 to 19 bytes.
// Measured with TestEntryOverheadMatchesHeap (16-byte keys and values, 100K
// entries in one default partition) the heap grew by 61 bytes per entry
// beyond key and value, and with BenchmarkHeapPerKey1M (1M keys of 16
// bytes, 64-byte values) by 65 to 71; 64 sits in that range. The test keeps
// the constant within a factor of two of the real cost.
const EntryOverhead = 64

// ExpiryOverhead is the bytes a key with a deadline (Command.ExpiresAt) is
// accounted for on top of its EntrySize: the deadline, stored only for the
// keys that have one.
const ExpiryOverhead = 8

// EntrySize returns the bytes a key of keyLen bytes holding a value of
// valueLen bytes is accounted for, without a deadline (add ExpiryOverhead
// for one). Negative lengths count as zero.
func EntrySize(keyLen, valueLen int) int64 {
	return int64(max(keyLen, 0)) + int64(max(valueLen, 0)) + EntryOverhead
}

// Accountant tracks the bytes held by every partition of one node against
// the node's limit. It is safe for concurrent use; its counters are atomics,
// so the apply loops of many partitions update it without a lock.
type Accountant struct {
	used  atomic.Int64 // sum of Bytes over the node's open partitions
	limit int64        // bytes; 0 means no limit; immutable after creation
}

// NewAccountant returns an accountant with a limit of maxMemoryMB MiB.
// 0 means no limit; so do negative values, which StorageOptions.Validate
// rejects before they get here.
func NewAccountant(maxMemoryMB int) *Accountant {
	a := &Accountant{}
	if maxMemoryMB > 0 {
		a.limit = int64(min(maxMemoryMB, math.MaxInt64>>20)) << 20
	}
	return a
}

// Admit reports whether a write of a keyLen-byte key with a valueLen-byte
// value fits under the limit, counting it as a new entry even if it
// replaces one. It reserves nothing: two concurrent writes may both be
// admitted, which is why the limit is a soft bound (see the package doc).
// The error wraps ErrMemoryLimit.
func (a *Accountant) Admit(keyLen, valueLen int) error {
	if a.limit == 0 {
		return nil
	}
	used, size := a.used.Load(), EntrySize(keyLen, valueLen)
	if used+size > a.limit {
		return fmt.Errorf("%w: %d bytes used + %d for the entry > limit %d",
			ErrMemoryLimit, used, size, a.limit)
	}
	return nil
}

// Used returns the bytes currently accounted across the node's partitions.
func (a *Accountant) Used() int64 { return a.used.Load() }

// Limit returns the limit in bytes, 0 meaning none.
func (a *Accountant) Limit() int64 { return a.limit }

// add moves the node's total by delta bytes (negative to give bytes back).
func (a *Accountant) add(delta int64) {
	if delta != 0 {
		a.used.Add(delta)
	}
}
