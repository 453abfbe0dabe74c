package store

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/google/btree"
)

// hashMask narrows every key hash. It is all ones; tests narrow it to make
// distinct keys share a hash.
var hashMask = ^uint64(0)

// keyHash is the hash a partition files key under: it picks the shard and
// is the key of the shard's map.
func keyHash(key string) uint64 { return xxhash.Sum64String(key) & hashMask }

// shard is one map of a partition with the lock that guards it.
//
// Keys are filed by their 64-bit hash rather than by their string, so that a
// map slot is 16 bytes (hash and record pointer) and the key is not kept
// twice: the record holds it, and a lookup compares it. The rare key whose
// hash another key of the shard already holds goes to spill, an ordinary map
// by key. A crafted flood of colliding keys therefore degrades to a plain Go
// map, never to a list.
type shard struct {
	// mu protects byHash and spill. The apply loop takes it exclusively only
	// to modify them; it reads them without it, since it is the only writer.
	// Every other goroutine reads them under mu.RLock.
	mu     sync.RWMutex
	byHash map[uint64]record // hash -> the record of the first key stored with it
	spill  map[string]record // keys whose hash byHash holds for another key; nil when none
	// Pad the struct to a cache line so that locking one shard does not
	// invalidate its neighbours' locks on other cores.
	_ [64 - 24 - 16]byte
}

// get returns key's record, or none. h is keyHash(key).
func (s *shard) get(h uint64, key string) record {
	if r := s.byHash[h]; r.exists() && r.hasKey(key) {
		return r
	}
	if s.spill != nil {
		return s.spill[key]
	}
	return record{}
}

// put stores r, whose key hashes to h, replacing old, what get returned for
// that key. The caller holds mu exclusively.
func (s *shard) put(h uint64, r, old record) {
	switch {
	case old.exists() && s.byHash[h] == old:
		s.byHash[h] = r
	case old.exists():
		// Assigning to an existing string key also replaces the stored key,
		// so the old record, which the old key string points into, is freed.
		s.spill[r.key()] = r
	default:
		if _, taken := s.byHash[h]; !taken {
			s.byHash[h] = r
			return
		}
		if s.spill == nil {
			s.spill = make(map[string]record)
		}
		s.spill[r.key()] = r
	}
}

// remove deletes old, the record get returned for a key hashing to h. The
// caller holds mu exclusively.
func (s *shard) remove(h uint64, old record) {
	if s.byHash[h] == old {
		delete(s.byHash, h)
		return
	}
	delete(s.spill, old.key())
	if len(s.spill) == 0 {
		s.spill = nil
	}
}

// appendRecords appends every record of the shard to dst.
func (s *shard) appendRecords(dst []record) []record {
	for _, r := range s.byHash {
		dst = append(dst, r)
	}
	for _, r := range s.spill {
		dst = append(dst, r)
	}
	return dst
}

// table is the complete key space of a partition. Restore and Close
// replace a partition's table as a whole, which is how Restore swaps state
// atomically and keeps the old state on failure.
type table struct {
	shards []shard
	mask   uint64 // len(shards)-1
}

func newTable(shardCount, sizeHint int) *table {
	t := &table{shards: make([]shard, shardCount), mask: uint64(shardCount - 1)}
	perShard := sizeHint / shardCount
	for i := range t.shards {
		t.shards[i].byHash = make(map[uint64]record, perShard)
	}
	return t
}

func (t *table) shardFor(h uint64) *shard { return &t.shards[h&t.mask] }

// Result is the outcome of one command of a batch.
type Result struct {
	// Version is, for a successful Set or CAS, the version written; for a
	// CAS, OpCompareAndDelete or OpExpire that failed on
	// ErrVersionMismatch, the key's current version (0 if absent); for a
	// Delete, OpCompareAndDelete or OpExpire that removed the key, the
	// version removed; for a Delete of an absent key, 0.
	Version uint64
	// ExpiresAt is, where Value is set, the key's deadline in Unix
	// nanoseconds (0: none); for a successful Set or CAS, the deadline it
	// wrote. Callers reading a key fill it in the same way.
	ExpiresAt int64
	// Value is set only when a CAS or OpCompareAndDelete fails on
	// ErrVersionMismatch and the key exists: a copy of its current value, so
	// the caller can retry without another read.
	Value []byte
	// Applied is, for a read, the applied index of the replica that served it, taken after
	// the read: its state was at least that new. The state machine does not set it.
	Applied uint64
	// Err is nil, ErrVersionMismatch (CAS, OpCompareAndDelete, OpExpire),
	// ErrKeyNotFound (Delete or OpExpire of an absent key), an error
	// wrapping ErrInvalidCommand (a command that DecodeBatch would have
	// rejected), or ErrPartitionClosed.
	Err error
}

// Partition is the state of one partition: its keys, their versions and
// deadlines, an ordered index of them, the history of recent changes, the
// highest log index applied, and its share of the node's memory account.
//
// ApplyBatch, ApplyEntry, MarkApplied, Snapshot and Restore must be called
// from one goroutine at a time (the Raft apply loop). Get, GetEntry, List,
// Events, Expired, Changed, Position, HistoryStart, Len, Bytes, Range,
// AppliedIndex and Close are safe concurrently with them and with each
// other.
//
// Lock order: closeMu before mu. A shard's lock is never held with either.
type Partition struct {
	table   atomic.Pointer[table]
	applied atomic.Uint64 // highest log index applied or marked
	count   atomic.Int64  // keys in table
	bytes   atomic.Int64  // record sizes summed over the keys in table

	// mu protects ix and hist, and orders them with applied: an apply
	// changes them and stores applied in one critical section per batch,
	// so a reader under mu.RLock sees a state together with the position
	// it is the state of. Close and Restore replace both under mu too.
	mu   sync.RWMutex
	ix   indexes
	hist history

	// changed is the channel Changed hands out, made on demand; nil while
	// nobody waits.
	changed atomic.Pointer[chan struct{}]
	// listener is what SetListener set, nil for none.
	listener atomic.Pointer[func(key string)]

	shardCount  int                      // shards of every table this partition builds
	historyMax  int                      // HistoryEvents
	historyMaxB int64                    // HistoryBytes
	free        *btree.FreeListG[record] // emptied index nodes, shared by this partition's trees
	acct        *Accountant              // node-wide account that bytes is part of

	// pending is the apply goroutine's scratch list of the changes of the
	// batch in progress, published under mu at the end of the batch.
	pending []pendingChange
	// decoded is the apply goroutine's scratch list of the commands of the
	// entry in progress (ApplyEntry).
	decoded []Command
	// results is the apply goroutine's scratch space for the results of
	// an entry applied unanswered.
	results []Result

	// closeMu protects closed against concurrent change, and serialises
	// Close with the points where an apply or a restore publishes its
	// changes to bytes, count, the table and the Accountant, so that Close
	// gives back exactly what was added and nothing is added after.
	closeMu sync.Mutex
	closed  atomic.Bool // written only under closeMu; read anywhere
}

// pendingChange is one change of a batch: the history entry, and the
// record it replaced or removed (none for a new key).
type pendingChange struct {
	change
	old record
}

// NewPartition returns an empty partition laid out as opts says, whose
// bytes count against acct (a nil acct means a private account with no
// limit). NewPartition cannot fail: invalid options, which Validate
// reports, are corrected (ShardCount rounded up to a power of two and
// clamped to MaxShardCount, an unknown Backend treated as the default,
// negative history bounds as the defaults). opts.MaxMemoryMB is not used
// here; it belongs to the Accountant.
func NewPartition(opts StorageOptions, acct *Accountant) *Partition {
	if acct == nil {
		acct = NewAccountant(0)
	}
	p := &Partition{shardCount: opts.shardCount(), acct: acct, free: btree.NewFreeListG[record](btreeFreeNodes)}
	p.historyMax, p.historyMaxB = opts.historyBounds()
	p.table.Store(newTable(p.shardCount, 0))
	p.ix = newIndexes(p.free)
	p.hist = newHistory(p.historyMax, p.historyMaxB, 0)
	return p
}

// ApplyBatch applies cmds, in order, as the batch committed at log index
// index: command i writes version Version(index, i). It returns one Result
// per command. Committed commands always apply, even when the node is over
// its memory limit: every replica must reach the same state. Values are
// copied in; cmds is not retained. Afterwards AppliedIndex is index, and
// every change the batch made is in the history (see Events), in command
// order.
//
// A command that fails Command.Validate, or that sits beyond position
// MaxBatch-1, is skipped with an error result; DecodeBatch never produces
// one, so this only guards direct callers.
//
// ApplyBatch and ApplyEntry are called by one goroutine at a time (Raft's
// apply loop): they share scratch space.
func (p *Partition) ApplyBatch(index uint64, cmds []Command) []Result {
	results := make([]Result, len(cmds))
	p.applyBatch(index, cmds, results)
	return results
}

// applyBatch is ApplyBatch writing the results into results, of len(cmds).
func (p *Partition) applyBatch(index uint64, cmds []Command, results []Result) {
	if p.closed.Load() {
		for i := range results {
			results[i].Err = ErrPartitionClosed
		}
		return
	}
	t := p.table.Load()
	var dBytes, dCount int64
	pending := p.pending[:0]
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
		h := keyHash(c.Key)
		s := t.shardFor(h)
		old := s.get(h, c.Key)   // unlocked: this goroutine is the only writer
		current := old.version() // 0 when absent
		removal := EventType(0)  // set by the ops that remove the key
		switch c.Op {
		case OpDelete:
			if !old.exists() {
				r.Err = ErrKeyNotFound
				continue
			}
			removal = EventDelete
		case OpCompareAndDelete:
			if current != c.Version { // Version is never 0: fails when absent
				r.Err, r.Version = ErrVersionMismatch, current
				if old.exists() {
					r.Value, r.ExpiresAt = copyValue(old.value()), old.expiresAt()
				}
				continue
			}
			removal = EventDelete
		case OpExpire:
			switch {
			case !old.exists():
				r.Err = ErrKeyNotFound
				continue
			case current != c.Version || !old.hasDeadline():
				// Rewritten since the leader saw the deadline pass.
				r.Err, r.Version = ErrVersionMismatch, current
				continue
			}
			removal = EventExpire
		case OpCAS:
			if current != c.Version {
				r.Err, r.Version = ErrVersionMismatch, current
				if old.exists() {
					r.Value, r.ExpiresAt = copyValue(old.value()), old.expiresAt()
				}
				continue
			}
		}
		if removal != 0 {
			s.mu.Lock()
			s.remove(h, old)
			s.mu.Unlock()
			r.Version = current
			dBytes -= old.size()
			dCount--
			tombstone := newRecord(c.Key, nil, Version(index, i), 0)
			pending = append(pending, pendingChange{change{tombstone, removal}, old})
			continue
		}
		// OpSet, or OpCAS whose expectation held.
		version := Version(index, i)
		rec := newRecord(c.Key, c.Value, version, c.ExpiresAt)
		s.mu.Lock()
		s.put(h, rec, old)
		s.mu.Unlock()
		r.Version, r.ExpiresAt = version, c.ExpiresAt
		dBytes += rec.size()
		if old.exists() {
			dBytes -= old.size()
		} else {
			dCount++
		}
		pending = append(pending, pendingChange{change{rec, EventPut}, old})
	}
	p.commit(index, pending)
	p.publish(dBytes, dCount)
	// Keep the scratch list's array, but not the records it points to.
	clear(pending)
	if cap(pending) <= 4096 {
		p.pending = pending[:0]
	} else {
		p.pending = nil
	}
}

// commit files a batch's changes in the ordered indexes and the history
// and marks index applied, in one critical section, then wakes watchers.
func (p *Partition) commit(index uint64, pending []pendingChange) {
	if len(pending) == 0 {
		p.applied.Store(index)
		return
	}
	p.mu.Lock()
	if !p.closed.Load() { // else Close dropped the indexes and history
		for i := range pending {
			pc := &pending[i]
			if pc.typ == EventPut {
				p.ix.put(pc.rec, pc.old)
			} else {
				p.ix.remove(pc.old)
			}
			p.hist.push(pc.change)
		}
	}
	p.applied.Store(index)
	p.mu.Unlock()
	p.notifyChanged()
	if l := p.listener.Load(); l != nil {
		for i := range pending {
			(*l)(pending[i].change.rec.key())
		}
	}
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
// replica is the only consistent choice. data must not change during the
// call; it is not retained.
func (p *Partition) ApplyEntry(index uint64, data []byte) ([]Result, error) {
	return p.applyEntry(index, data, true)
}

// ApplyEntryUnanswered is ApplyEntry for a replica on which no one waits
// for the commands' results (a follower's): the entry applies alike, and
// only its decoding error is returned.
func (p *Partition) ApplyEntryUnanswered(index uint64, data []byte) error {
	_, err := p.applyEntry(index, data, false)
	return err
}

func (p *Partition) applyEntry(index uint64, data []byte, answer bool) ([]Result, error) {
	// Keys may alias data: applyBatch copies each key into its record and
	// keeps none of the commands.
	cmds, err := decodeBatch(p.decoded, data, true)
	if err != nil {
		clear(p.decoded[:cap(p.decoded)])
		p.MarkApplied(index)
		return nil, err
	}
	var results []Result
	if answer {
		results = make([]Result, len(cmds))
	} else {
		results = slices.Grow(p.results[:0], len(cmds))[:len(cmds)]
	}
	p.applyBatch(index, cmds, results)
	if !answer {
		clear(results) // values copied for mismatches must not stay reachable
		if cap(results) <= 4096 {
			p.results = results[:0]
		}
		results = nil
	}
	clear(cmds) // they alias data, which must not stay reachable from here
	if cap(cmds) <= 4096 {
		p.decoded = cmds[:0]
	}
	return results, nil
}

// MarkApplied records index as applied without changing any key, for log
// entries that carry no commands (configuration changes, no-ops, barriers).
func (p *Partition) MarkApplied(index uint64) { p.applied.Store(index) }

// AppliedIndex returns the highest log index applied or marked, or the
// index of the last snapshot restored if that is later.
func (p *Partition) AppliedIndex() uint64 { return p.applied.Load() }

// Get returns a copy of key's value, which the caller owns, and its
// version. ok is false if the key is absent. An empty value is returned
// as a non-nil empty slice. Get ignores deadlines: a key past its deadline
// is returned until its OpExpire applies. Readers that honour deadlines
// use GetEntry.
func (p *Partition) Get(key string) (value []byte, version uint64, ok bool) {
	h := keyHash(key)
	s := p.table.Load().shardFor(h)
	s.mu.RLock()
	r := s.get(h, key)
	s.mu.RUnlock()
	if !r.exists() {
		return nil, 0, false
	}
	// Copy outside the lock: records are never modified, only replaced,
	// so r stays valid and unchanged.
	return copyValue(r.value()), r.version(), true
}

// Len returns the number of keys. It is updated once per applied batch.
func (p *Partition) Len() int { return int(p.count.Load()) }

// Bytes returns the bytes this partition is accounted for (EntrySize
// summed over its keys, plus ExpiryOverhead for each key with a deadline),
// 0 after Close. The history is not part of it (see
// StorageOptions.HistoryBytes).
func (p *Partition) Bytes() int64 { return p.bytes.Load() }

// Range calls fn for every key until fn returns false, in no particular
// order. value is the stored slice, not a copy: fn must neither modify nor
// retain it. Each shard is listed under its read lock and fn is called
// after the lock is released, so fn may call the partition's methods.
// Range is meant for tests comparing replicas, not for hot paths.
func (p *Partition) Range(fn func(key string, value []byte, version uint64) bool) {
	t := p.table.Load()
	var recs []record
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		recs = s.appendRecords(recs[:0])
		s.mu.RUnlock()
		for _, r := range recs {
			if !fn(r.key(), r.value(), r.version()) {
				return
			}
		}
	}
}

// Close gives the partition's bytes back to the Accountant and drops its
// keys and history, for when the replica leaves this node. Afterwards
// reads find nothing, ApplyBatch and Restore fail with ErrPartitionClosed,
// Events returns ErrPartitionClosed, and Changed returns a closed channel,
// which wakes every waiter. Close is idempotent and safe to call
// concurrently with anything.
func (p *Partition) Close() {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed.Load() {
		return
	}
	p.closed.Store(true)
	p.table.Store(newTable(1, 0))
	p.mu.Lock()
	p.ix = newIndexes(p.free)
	p.hist = newHistory(p.historyMax, p.historyMaxB, p.hist.floor)
	p.mu.Unlock()
	p.count.Store(0)
	p.acct.add(-p.bytes.Swap(0))
	if ch := p.changed.Swap(nil); ch != nil {
		close(*ch)
	}
}

// copyValue returns a copy of v that is never nil, so callers can tell a
// present empty value from an absent one.
func copyValue(v []byte) []byte {
	c := make([]byte, len(v))
	copy(c, v)
	return c
}
