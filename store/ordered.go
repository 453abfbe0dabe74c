package store

import (
	"strings"

	"github.com/google/btree"
)

// btreeDegree is the degree of a partition's ordered indexes: nodes of 31
// to 63 record pointers, so the index adds about 10 bytes per key (node
// fill and headers included) and a lookup among a million keys visits four
// nodes.
const btreeDegree = 32

// btreeFreeNodes is how many emptied nodes a partition keeps for reuse.
// Small: a freed node holds its item and child arrays (about 1 KiB).
const btreeFreeNodes = 8

// byKey orders records by key, in byte order.
func byKey(a, b record) bool { return a.key() < b.key() }

// byDeadline orders records by deadline, then key.
func byDeadline(a, b record) bool {
	da, db := a.expiresAt(), b.expiresAt()
	return da < db || da == db && a.key() < b.key()
}

// indexes are a partition's ordered views of its keys, beside the hash
// shards that Get uses: every key by key, for List, and the keys with a
// deadline by deadline, for Expired. They hold the same records as the
// shards.
type indexes struct {
	keys      *btree.BTreeG[record]
	deadlines *btree.BTreeG[record]
}

func newIndexes(free *btree.FreeListG[record]) indexes {
	return indexes{
		keys:      btree.NewWithFreeListG(btreeDegree, byKey, free),
		deadlines: btree.NewWithFreeListG(btreeDegree, byDeadline, free),
	}
}

// put files rec, replacing old (the key's previous record, or none).
func (ix *indexes) put(rec, old record) {
	if old.hasDeadline() {
		ix.deadlines.Delete(old)
	}
	ix.keys.ReplaceOrInsert(rec)
	if rec.hasDeadline() {
		ix.deadlines.ReplaceOrInsert(rec)
	}
}

// remove drops old, a key's current record.
func (ix *indexes) remove(old record) {
	if old.hasDeadline() {
		ix.deadlines.Delete(old)
	}
	ix.keys.Delete(old)
}

// Entry is one key as GetEntry and List return it.
type Entry struct {
	Key string
	// Value is a copy the caller owns; never nil for a present key.
	Value   []byte
	Version uint64
	// ExpiresAt is the key's deadline in unix nanoseconds, 0 for none.
	ExpiresAt int64
}

// GetEntry is Get with the key's deadline: it returns a copy of key's
// value, its version and deadline. A key whose deadline is no later than
// now (unix nanoseconds) reads as absent, as it will be once the leader's
// OpExpire applies; Get, which has no clock, still returns it.
func (p *Partition) GetEntry(key string, now int64) (Entry, bool) {
	h := keyHash(key)
	s := p.table.Load().shardFor(h)
	s.mu.RLock()
	r := s.get(h, key)
	s.mu.RUnlock()
	if !r.exists() || r.expired(now) {
		return Entry{}, false
	}
	// Copy outside the lock: records are never modified, only replaced.
	return Entry{Key: key, Value: copyValue(r.value()), Version: r.version(), ExpiresAt: r.expiresAt()}, true
}

// ExpiredVersion returns key's version if the key exists with a deadline no
// later than now (unix nanoseconds), else 0. A leader about to write a key
// that has expired but not yet been expired proposes its expiry first, so
// watchers see the expiry before the new value. It copies nothing.
func (p *Partition) ExpiredVersion(key string, now int64) uint64 {
	h := keyHash(key)
	s := p.table.Load().shardFor(h)
	s.mu.RLock()
	r := s.get(h, key)
	s.mu.RUnlock()
	if !r.exists() || !r.expired(now) {
		return 0
	}
	return r.version()
}

// List returns up to limit entries whose key starts with prefix and is
// greater than startAfter, in byte order of key, leaving out keys whose
// deadline is no later than now (unix nanoseconds). Values are copies the
// caller owns. more reports whether another such key follows the last
// one returned (ask again with it as startAfter); position is the Position
// the listing is consistent with: every change up to it is reflected, none
// after it, so watching from it (Events) misses nothing and repeats
// nothing. A limit <= 0 returns no entries, only more.
//
// List is safe concurrently with the apply loop, which it holds off only
// while it walks the index: O(log n) to find the start, then one step per
// key returned or skipped as expired. The values are copied after.
func (p *Partition) List(prefix, startAfter string, limit int, now int64) (entries []Entry, more bool, position uint64) {
	start := prefix
	if startAfter >= prefix {
		start = startAfter
	}
	// A pivot no longer than any key can be: the walk skips the keys up to
	// startAfter itself.
	pivot := newRecord(start[:min(len(start), MaxKeySize)], nil, 0, 0)
	var recs []record
	if limit > 0 {
		recs = make([]record, 0, min(limit, 1024))
	}

	p.mu.RLock()
	position = p.Position()
	p.ix.keys.AscendGreaterOrEqual(pivot, func(r record) bool {
		key := r.key()
		switch {
		case !strings.HasPrefix(key, prefix):
			return false // keys sort by prefix first: no match follows
		case key <= startAfter, r.expired(now):
			return true
		case len(recs) == max(limit, 0):
			more = true
			return false
		}
		recs = append(recs, r)
		return true
	})
	p.mu.RUnlock()

	// One allocation for every value of the page; each entry's value is
	// capped so an append to it copies instead of running into the next.
	total := 0
	for _, r := range recs {
		_, vl := r.lengths()
		total += vl
	}
	buf := make([]byte, 0, total)
	entries = make([]Entry, len(recs))
	for i, r := range recs {
		at := len(buf)
		buf = append(buf, r.value()...)
		entries[i] = Entry{Key: r.key(), Value: buf[at:len(buf):len(buf)], Version: r.version(), ExpiresAt: r.expiresAt()}
	}
	return entries, more, position
}

// Expired returns OpExpire commands for up to max keys whose deadline is
// no later than now (unix nanoseconds), earliest deadline first, each
// naming the key and the version that carries the deadline: proposed by
// the leader, each removes its key unless a write replaced it meanwhile.
// Keys share the partition's memory (strings never change). It costs
// O(log n + max) and is safe concurrently with the apply loop.
func (p *Partition) Expired(now int64, max int) []Command {
	if max <= 0 {
		return nil
	}
	var cmds []Command
	p.mu.RLock()
	defer p.mu.RUnlock()
	p.ix.deadlines.Ascend(func(r record) bool {
		if r.expiresAt() > now {
			return false
		}
		cmds = append(cmds, Command{Op: OpExpire, Key: r.key(), Version: r.version()})
		return len(cmds) < max
	})
	return cmds
}
