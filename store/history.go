package store

import (
	"fmt"
	"sort"
	"strings"
)

// EventType is the kind of an Event.
type EventType uint8

// The kinds of change a partition's history records.
const (
	// EventPut is a Set or a successful CAS.
	EventPut EventType = iota + 1
	// EventDelete is a Delete of a present key or a successful
	// OpCompareAndDelete.
	EventDelete
	// EventExpire is a successful OpExpire: the key's deadline passed.
	EventExpire
)

// String returns the type's name, or "EventType(n)" for an unknown value.
func (t EventType) String() string {
	switch t {
	case EventPut:
		return "Put"
	case EventDelete:
		return "Delete"
	case EventExpire:
		return "Expire"
	default:
		return fmt.Sprintf("EventType(%d)", uint8(t))
	}
}

// Event is one applied change of a partition, as Partition.Events returns it.
type Event struct {
	Type EventType
	Key  string
	// Value is the value written, for EventPut only. It shares the
	// partition's memory, which never changes: callers must not modify it,
	// and copy it before handing it to code that might.
	Value []byte
	// Version is the version of the change: for EventPut, the version
	// written; for EventDelete and EventExpire, Version(index, pos) of the
	// command that removed the key. Versions of a partition's events are
	// unique and increase in apply order.
	Version uint64
	// ExpiresAt is the deadline written with an EventPut, 0 for none.
	ExpiresAt int64
}

// change is one entry of a partition's history. For a put, rec is the
// record written, shared with the table while it is the key's current
// one; for a delete or an expiry, rec holds only the key and, as its
// version, the version of the removing command, so the history never
// keeps a removed value alive.
type change struct {
	rec record
	typ EventType
}

func (c *change) event() Event {
	return Event{Type: c.typ, Key: c.rec.key(), Value: c.rec.value(), Version: c.rec.version(), ExpiresAt: c.rec.expiresAt()}
}

// bytes is what the change counts against HistoryBytes.
func (c *change) bytes() int64 {
	kl, vl := c.rec.lengths()
	return int64(kl + vl)
}

// history is a partition's recent changes, oldest first, in a ring that
// grows up to maxEvents. It is part of the replicated state: every replica
// applies the same commands, so it keeps the same changes, and snapshots
// carry it.
type history struct {
	ring      []change
	head, n   int    // ring[head] is the oldest of the n changes kept
	floor     uint64 // every change with a version above floor is kept
	bytes     int64  // bytes() summed over the changes kept
	maxEvents int
	maxBytes  int64
}

func newHistory(maxEvents int, maxBytes int64, floor uint64) history {
	return history{maxEvents: maxEvents, maxBytes: maxBytes, floor: floor}
}

// at returns the i-th oldest change kept.
func (h *history) at(i int) *change {
	j := h.head + i
	if j >= len(h.ring) {
		j -= len(h.ring)
	}
	return &h.ring[j]
}

// push appends c, the newest change, and evicts the oldest changes while
// the history is over either bound, keeping at least c.
func (h *history) push(c change) {
	if h.n == len(h.ring) {
		if len(h.ring) < h.maxEvents {
			h.grow()
		} else {
			h.evictOldest()
		}
	}
	*h.at(h.n) = c
	h.n++
	h.bytes += c.bytes()
	for h.n > 1 && (h.n > h.maxEvents || h.bytes > h.maxBytes) {
		h.evictOldest()
	}
}

// grow doubles the ring, up to maxEvents, keeping the order.
func (h *history) grow() {
	ring := make([]change, min(max(2*len(h.ring), 64), h.maxEvents))
	for i := range h.n {
		ring[i] = *h.at(i)
	}
	h.ring, h.head = ring, 0
}

func (h *history) evictOldest() {
	c := h.at(0)
	h.floor = c.rec.version()
	h.bytes -= c.bytes()
	*c = change{} // let the record go
	h.head++
	if h.head == len(h.ring) {
		h.head = 0
	}
	h.n--
}

// after returns the index of the oldest change with a version above v
// (h.n if none): a binary search, since versions increase.
func (h *history) after(v uint64) int {
	return sort.Search(h.n, func(i int) bool { return h.at(i).rec.version() > v })
}

// changes returns a copy of the changes kept, oldest first.
func (h *history) changes() []change {
	out := make([]change, h.n)
	for i := range out {
		out[i] = *h.at(i)
	}
	return out
}

// position returns the position of everything applied up to log index
// applied: above the version of every command of that entry and below
// every version of the next.
func position(applied uint64) uint64 { return applied<<16 | 0xFFFF }

// Position returns the position of everything applied: AppliedIndex()<<16 |
// 0xFFFF. An event with version v is after position x iff v > x, so a
// watcher that has seen everything up to Position() waits for events after
// it.
func (p *Partition) Position() uint64 { return position(p.applied.Load()) }

// HistoryStart returns the oldest position Events still accepts: the
// history holds every change after it. It rises as the history evicts its
// oldest changes, and a Restore sets it to what the snapshot held.
func (p *Partition) HistoryStart() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.hist.floor
}

// Events returns the changes with a version above after whose key starts
// with prefix, oldest first, at most max of them (max <= 0: no limit).
// next is the position the caller has seen everything up to: the last
// returned event's version if max cut the list short, else the partition's
// Position at the time of the read (or after, if that is later, as for a
// replica behind the caller), so that a watcher moves past changes that do
// not match its prefix. Calling Events again with next continues where
// this call stopped, with nothing missed or repeated.
//
// The error wraps ErrCompacted if the history no longer holds every change
// after after (after < HistoryStart()): list the keys again and watch from
// the listing's position. It is ErrPartitionClosed after Close.
//
// Event values share the partition's memory: do not modify them. Events is
// safe concurrently with the apply loop; finding the first change costs
// O(log h) in the history's length h, and then each change after it is
// looked at until max match.
func (p *Partition) Events(after uint64, prefix string, max int) (events []Event, next uint64, err error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed.Load() {
		return nil, after, ErrPartitionClosed
	}
	h := &p.hist
	if after < h.floor {
		return nil, after, fmt.Errorf("%w: position %#x is older than the history, which starts after %#x",
			ErrCompacted, after, h.floor)
	}
	i := h.after(after)
	if max > 0 {
		events = make([]Event, 0, min(max, h.n-i))
	}
	for ; i < h.n; i++ {
		c := h.at(i)
		if !strings.HasPrefix(c.rec.key(), prefix) {
			continue
		}
		events = append(events, c.event())
		if max > 0 && len(events) == max {
			return events, c.rec.version(), nil
		}
	}
	return events, maxUint64(after, p.Position()), nil
}

func maxUint64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// closedChan is what Changed returns once the partition is closed.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Changed returns a channel that the next apply adding events closes, as
// do Restore and Close; each call after that returns a fresh one. It lets
// a watcher wait without polling:
//
//	for {
//		changed := p.Changed() // before Events, so no change falls between
//		events, next, err := p.Events(pos, prefix, 0)
//		... deliver events, pos = next ...
//		if len(events) == 0 {
//			select { case <-changed: case <-ctx.Done(): return }
//		}
//	}
//
// The channel is made only when someone asks for it, so the apply loop
// pays one atomic load per batch while nobody waits.
func (p *Partition) Changed() <-chan struct{} {
	ch := p.changed.Load()
	for ch == nil {
		fresh := make(chan struct{})
		if p.changed.CompareAndSwap(nil, &fresh) {
			ch = &fresh
		} else {
			ch = p.changed.Load() // nil again if an apply just took it
		}
	}
	// Close stores closed before it takes and closes the channel: if it
	// took it before the swap above, closed is already visible here.
	if p.closed.Load() {
		return closedChan
	}
	return *ch
}

// SetListener has fn called on the apply goroutine with the key of every
// change, once Events returns it, and with "" after a Restore replaced the
// history (keys are never empty); nil removes it. fn must be quick and must
// not block: the apply loop waits for it. A watch hub uses it to wake only
// the watchers a change concerns, with no goroutine woken per apply.
func (p *Partition) SetListener(fn func(key string)) {
	if fn == nil {
		p.listener.Store(nil)
		return
	}
	p.listener.Store(&fn)
}

// notifyChanged wakes the waiters on the current Changed channel, if any.
// Called after the changes are visible to Events.
func (p *Partition) notifyChanged() {
	if p.changed.Load() == nil {
		return
	}
	if ch := p.changed.Swap(nil); ch != nil {
		close(*ch)
	}
}
