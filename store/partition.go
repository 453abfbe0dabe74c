package store

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// entry is what a partition stores per key. Both fields are written once:
// a write stores a new entry with a freshly copied value and never touches
// the bytes of the old one. Snapshot and Get rely on that.
type entry struct {
	value   []byte
	version uint64
}

// shard is one map of a partition with the lock that guards it.
type shard struct {
	// mu protects m. The apply loop takes it exclusively only to modify m;
	// it reads m without it, since it is the only writer. Every other
	// goroutine reads m under mu.RLock.
	mu sync.RWMutex
	m  map[string]entry
	// Pad the struct to a cache line so that locking one shard does not
	// invalidate its neighbours' locks on other cores.
	_ [64 - 24 - 8]byte
}

// table is the complete key space of a partition. Restore and Close
// replace a partition's table as a whole, which is how Restore swaps state
// atomically and keeps the old state on failure.
type table struct {
	shards []shard
	mask   uint64 // len(shards)-1; 0 for a single shard, which skips hashing
}

func newTable(shardCount, sizeHint int) *table {
	t := &table{shards: make([]shard, shardCount), mask: uint64(shardCount - 1)}
	perShard := sizeHint / shardCount
	for i := range t.shards {
		t.shards[i].m = make(map[string]entry, perShard)
	}
	return t
}

func (t *table) shardFor(key string) *shard {
	if t.mask == 0 {
		return &t.shards[0]
	}
	return &t.shards[xxhash.Sum64String(key)&t.mask]
}

// Result is the outcome of one command of a batch.
type Result struct {
	// Version is, for a successful Set or CAS, the version written; for a
	// CAS that failed on ErrVersionMismatch, the key's current version
	// (0 if absent); for a Delete, the version deleted (0 if absent).
	Version uint64
	// Value is set only when a CAS fails on ErrVersionMismatch and the key
	// exists: a copy of its current value, so the caller can retry without
	// another read.
	Value []byte
	// Err is nil, ErrVersionMismatch (CAS), ErrKeyNotFound (Delete of an
	// absent key), an error wrapping ErrInvalidCommand (a command that
	// DecodeBatch would have rejected), or ErrPartitionClosed.
	Err error
}

// Partition is the state of one partition: its keys, their versions, the
// highest log index applied, and its share of the node's memory account.
//
// ApplyBatch, ApplyEntry, MarkApplied, Snapshot and Restore must be called
// from one goroutine at a time (the Raft apply loop). Get, Len, Bytes,
// Range, AppliedIndex and Close are safe concurrently with them and with
// each other.
type Partition struct {
	table   atomic.Pointer[table]
	applied atomic.Uint64 // highest log index applied or marked
	count   atomic.Int64  // keys in table
	bytes   atomic.Int64  // EntrySize summed over the keys in table

	shardCount int         // shards of every table this partition builds
	acct       *Accountant // node-wide account that bytes is part of

	// closeMu protects closed against concurrent change, and serialises
	// Close with the points where an apply or a restore publishes its
	// changes to bytes, count, the table and the Accountant, so that Close
	// gives back exactly what was added and nothing is added after.
	closeMu sync.Mutex
	closed  atomic.Bool // written only under closeMu; read anywhere
}

// NewPartition returns an empty partition laid out as opts says, whose
// bytes count against acct (a nil acct means a private account with no
// limit). NewPartition cannot fail: invalid options, which Validate
// reports, are corrected (ShardCount rounded up to a power of two and
// clamped to MaxShardCount, an unknown Backend treated as the default).
// opts.MaxMemoryMB is not used here; it belongs to the Accountant.
func NewPartition(opts StorageOptions, acct *Accountant) *Partition {
	if acct == nil {
		acct = NewAccountant(0)
	}
	p := &Partition{shardCount: opts.shardCount(), acct: acct}
	p.table.Store(newTable(p.shardCount, 0))
	return p
}

// ApplyBatch applies cmds, in order, as the batch committed at log index
// index: command i writes version Version(index, i). It returns one Result
// per command. Committed commands always apply, even when the node is over
// its memory limit: every replica must reach the same state. Values are
// copied in; cmds is not retained. Afterwards AppliedIndex is index.
//
// A command that fails Command.Validate, or that sits beyond position
// MaxBatch-1, is skipped with an error result; DecodeBatch never produces
// one, so this only guards direct callers.
func (p *Partition) ApplyBatch(index uint64, cmds []Command) []Result {
	results := make([]Result, len(cmds))
	if p.closed.Load() {
		for i := range results {
			results[i].Err = ErrPartitionClosed
		}
		return results
	}
	t := p.table.Load()
	var dBytes, dCount int64
	for i := range cmds {
		c, r := &cmds[i], &results[i]
		if i >= MaxBatch {
			r.Err = fmt.Errorf("%w: position %d is beyond MaxBatch", ErrInvalidCommand, i)
			continue
		}
		if err := c.Validate(); err != nil {
			r.Err = err
			continue
		}
		s := t.shardFor(c.Key)
		old, had := s.m[c.Key] // unlocked: this goroutine is the only writer
		switch c.Op {
		case OpDelete:
			if !had {
				r.Err = ErrKeyNotFound
				continue
			}
			s.mu.Lock()
			delete(s.m, c.Key)
			s.mu.Unlock()
			r.Version = old.version
			dBytes -= EntrySize(len(c.Key), len(old.value))
			dCount--
			continue
		case OpCAS:
			if current := old.version; current != c.Version { // old.version is 0 when absent
				r.Err, r.Version = ErrVersionMismatch, current
				if had {
					r.Value = copyValue(old.value)
				}
				continue
			}
		}
		// OpSet, or OpCAS whose expectation held.
		e := entry{value: storedValue(c.Value), version: Version(index, i)}
		s.mu.Lock()
		s.m[c.Key] = e
		s.mu.Unlock()
		r.Version = e.version
		dBytes += EntrySize(len(c.Key), len(c.Value))
		if had {
			dBytes -= EntrySize(len(c.Key), len(old.value))
		} else {
			dCount++
		}
	}
	p.publish(dBytes, dCount)
	p.applied.Store(index)
	return results
}

// publish adds an apply's deltas to the partition's counters and to the
// node's account, unless the partition was closed meanwhile: Close has
// already given back everything and dropped the table the apply wrote to.
func (p *Partition) publish(dBytes, dCount int64) {
	if dBytes == 0 && dCount == 0 {
		return
	}
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed.Load() {
		return
	}
	p.bytes.Add(dBytes)
	p.count.Add(dCount)
	p.acct.add(dBytes)
}

// ApplyEntry decodes data with DecodeBatch and applies it as the batch
// committed at index. If data does not decode, the state is unchanged,
// the error (wrapping ErrCorrupt) is returned, and index is still marked
// applied: the entry is committed, so skipping it identically on every
// replica is the only consistent choice.
func (p *Partition) ApplyEntry(index uint64, data []byte) ([]Result, error) {
	cmds, err := DecodeBatch(data)
	if err != nil {
		p.MarkApplied(index)
		return nil, err
	}
	return p.ApplyBatch(index, cmds), nil
}

// MarkApplied records index as applied without changing any key, for log
// entries that carry no commands (configuration changes, no-ops, barriers).
func (p *Partition) MarkApplied(index uint64) { p.applied.Store(index) }

// AppliedIndex returns the highest log index applied or marked, or the
// index of the last snapshot restored if that is later.
func (p *Partition) AppliedIndex() uint64 { return p.applied.Load() }

// Get returns a copy of key's value, which the caller owns, and its
// version. ok is false if the key is absent. An empty value is returned
// as a non-nil empty slice.
func (p *Partition) Get(key string) (value []byte, version uint64, ok bool) {
	s := p.table.Load().shardFor(key)
	s.mu.RLock()
	e, ok := s.m[key]
	s.mu.RUnlock()
	if !ok {
		return nil, 0, false
	}
	// Copy outside the lock: stored values are never modified, only
	// replaced, so e.value stays valid and unchanged.
	return copyValue(e.value), e.version, true
}

// Len returns the number of keys. It is updated once per applied batch.
func (p *Partition) Len() int { return int(p.count.Load()) }

// Bytes returns the bytes this partition is accounted for (EntrySize
// summed over its keys), 0 after Close.
func (p *Partition) Bytes() int64 { return p.bytes.Load() }

// Range calls fn for every key until fn returns false, in no particular
// order. value is the stored slice, not a copy: fn must neither modify nor
// retain it. Each shard is listed under its read lock and fn is called
// after the lock is released, so fn may call the partition's methods.
// Range is meant for tests comparing replicas, not for hot paths.
func (p *Partition) Range(fn func(key string, value []byte, version uint64) bool) {
	t := p.table.Load()
	var keys []string
	var entries []entry
	for i := range t.shards {
		s := &t.shards[i]
		keys, entries = keys[:0], entries[:0]
		s.mu.RLock()
		for k, e := range s.m {
			keys = append(keys, k)
			entries = append(entries, e)
		}
		s.mu.RUnlock()
		for j, k := range keys {
			if !fn(k, entries[j].value, entries[j].version) {
				return
			}
		}
	}
}

// Close gives the partition's bytes back to the Accountant and drops its
// keys, for when the replica leaves this node. Afterwards reads find
// nothing and ApplyBatch and Restore fail with ErrPartitionClosed. Close
// is idempotent and safe to call concurrently with anything.
func (p *Partition) Close() {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed.Load() {
		return
	}
	p.closed.Store(true)
	p.table.Store(newTable(1, 0))
	p.count.Store(0)
	p.acct.add(-p.bytes.Swap(0))
}

// copyValue returns a copy of v that is never nil, so callers can tell a
// present empty value from an absent one.
func copyValue(v []byte) []byte {
	c := make([]byte, len(v))
	copy(c, v)
	return c
}

// storedValue returns the copy of v a partition keeps; empty values are
// stored as nil, which costs no allocation.
func storedValue(v []byte) []byte {
	if len(v) == 0 {
		return nil
	}
	return copyValue(v)
}
