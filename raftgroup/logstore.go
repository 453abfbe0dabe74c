package raftgroup

import (
	"bytes"
	"fmt"
	"sync"
	"unsafe"

	"github.com/hashicorp/raft"
)

// appendNotifier wraps the group's log store so writes acknowledged at W=1 can return as soon
// as the leader has appended their entry, before it commits. Raft hands StoreLogs the very
// Data slice passed to Apply, so the address of its first byte identifies the batch.
//
// It also hands the inner store copies of the entries, never raft's own: on the leader each
// *raft.Log raft stores is a field of the Apply future, and an in-memory store that kept that
// pointer would keep the whole future alive with it (its channel, and its response: the
// batch's []store.Result) until the entry is compacted, several hundred bytes per entry. Data
// whose buffer is much larger than the entry is copied to a buffer of its size.
type appendNotifier struct {
	raft.LogStore

	mu      sync.Mutex                   // guards waiting
	waiting map[*byte]func(index uint64) // batch data -> callback run once appended

	// keptMu guards kept, the list of copies StoreLogs hands the inner store, reused: the
	// stores keep the entries, not the list. Raft stores from one goroutine; the lock is
	// for the rare other caller.
	keptMu sync.Mutex
	kept   []*raft.Log
}

func newAppendNotifier(inner raft.LogStore) *appendNotifier {
	return &appendNotifier{LogStore: inner, waiting: make(map[*byte]func(uint64))}
}

// watch registers fn to run with the entry's index once data has been appended.
func (a *appendNotifier) watch(data []byte, fn func(index uint64)) {
	a.mu.Lock()
	a.waiting[unsafe.SliceData(data)] = fn
	a.mu.Unlock()
}

// forget drops a registration whose entry was never appended.
func (a *appendNotifier) forget(data []byte) {
	a.mu.Lock()
	delete(a.waiting, unsafe.SliceData(data))
	a.mu.Unlock()
}

// IsMonotonic tells raft whether the log below accepts only consecutive indexes
// (raft.MonotonicLogStore); raft then clears it after restoring a snapshot.
func (a *appendNotifier) IsMonotonic() bool { return isMonotonic(a.LogStore) }

func isMonotonic(s raft.LogStore) bool {
	m, ok := s.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (a *appendNotifier) StoreLog(l *raft.Log) error {
	return a.StoreLogs([]*raft.Log{l})
}

func (a *appendNotifier) StoreLogs(logs []*raft.Log) error {
	// One allocation for the copies: entries are stored and compacted in index order, so a
	// block is freed soon after its last entry.
	copies := make([]raft.Log, len(logs))
	a.keptMu.Lock()
	kept := a.kept[:0]
	for i, l := range logs {
		copies[i] = *l
		if spare := cap(l.Data) - len(l.Data); spare > len(l.Data)/8 {
			// The proposer's buffer was sized before encoding; keep only what the entry uses.
			copies[i].Data = bytes.Clone(l.Data)
		}
		kept = append(kept, &copies[i])
	}
	err := a.LogStore.StoreLogs(kept)
	clear(kept)
	if cap(kept) <= 1024 {
		a.kept = kept[:0]
	}
	a.keptMu.Unlock()
	if err != nil {
		return err
	}
	a.mu.Lock()
	if len(a.waiting) == 0 {
		a.mu.Unlock()
		return nil
	}
	var fire []func()
	for _, l := range logs {
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		key := unsafe.SliceData(l.Data)
		if fn, ok := a.waiting[key]; ok {
			delete(a.waiting, key)
			index := l.Index
			fire = append(fire, func() { fn(index) })
		}
	}
	a.mu.Unlock()
	for _, f := range fire {
		f()
	}
	return nil
}

// replayLog is a group's log store below the append notifier. It keeps the entries that a
// snapshot install needs replayed.
//
// hashicorp/raft (v1.8) installs whatever snapshot its leader sends, even one older than what
// this replica has applied: a leader whose answers from this replica were lost still counts
// it behind. After the restore raft sets its applied index back to the snapshot's and
// replays the log from the next entry. If that entry is gone (this replica's own compaction
// removed it), raft panics in its apply loop and takes the host process down. Its issue
// #85 describes the same gap after a restart.
//
// So the state machine asks admitRestore before it restores. A snapshot whose replay would
// hit a gap is refused: the install fails, the state stays as it was, and the leader retries
// (see viewSnapshotStore.onResend for how the retry gets a newer snapshot). A snapshot whose
// replay can run pins the entries it replays until the state machine has applied them again,
// so a compaction racing with the install (raft compacts on another goroutine) cannot open
// the gap after the check.
type replayLog struct {
	raft.LogStore
	applied func() uint64 // the state machine's applied index

	// mu guards pinFrom, pinTo and restoring, and is held across the inner DeleteRange, so a
	// compaction never runs between admitRestore's check of the log and its pin.
	mu sync.Mutex
	// pinFrom..pinTo escape compaction while pinTo != 0: from the entry after an admitted
	// snapshot to what the replica had applied before it.
	pinFrom, pinTo uint64
	// restoring is set from admitRestore to restoreDone. Until the restore swaps the state,
	// the applied index still reads pinTo, which must not release the pin.
	restoring bool
	// noReplay refuses every snapshot older than what the replica applied. A monotonic log
	// (a durable replica's) is cleared by raft after a restore, so nothing could be replayed;
	// the leader sends a newer snapshot instead.
	noReplay bool
	// keepAfter, if set, returns an index whose successors compaction keeps: a durable
	// replica keeps its log back to its oldest retained snapshot, so that snapshot can
	// replace a newer one found bad at start. A deletion that reaches the last entry (raft
	// clearing a monotonic log after a restore) is not a compaction and is not held back.
	keepAfter func() uint64
}

// IsMonotonic passes the inner store's answer on (see appendNotifier.IsMonotonic).
func (l *replayLog) IsMonotonic() bool { return isMonotonic(l.LogStore) }

func newReplayLog(inner raft.LogStore, applied func() uint64) *replayLog {
	return &replayLog{LogStore: inner, applied: applied}
}

// admitRestore decides whether a snapshot at index may be restored, and pins the entries its
// replay will read.
func (l *replayLog) admitRestore(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.restoring = true
	applied := l.applied()
	if index >= applied {
		return nil // nothing to replay that this replica applied before
	}
	if l.noReplay {
		return fmt.Errorf("raftgroup: refusing a snapshot at index %d: this replica applied %d already", index, applied)
	}
	var e raft.Log
	if err := l.LogStore.GetLog(index+1, &e); err != nil {
		return fmt.Errorf("raftgroup: refusing a snapshot at index %d: this replica applied %d and its log no longer holds entry %d to replay from", index, applied, index+1)
	}
	if l.pinTo == 0 {
		l.pinFrom, l.pinTo = index+1, applied
	} else {
		l.pinFrom, l.pinTo = min(l.pinFrom, index+1), max(l.pinTo, applied)
	}
	return nil
}

// restoreDone ends what admitRestore began, however the restore went. A restore that failed
// left the applied index where it was, which releases its pin at the next compaction.
func (l *replayLog) restoreDone() {
	l.mu.Lock()
	l.restoring = false
	l.mu.Unlock()
}

// DeleteRange deletes entries, except pinned ones. Raft deletes in two ways: a compaction
// removes a prefix of the log, and a conflict removes a suffix of entries that never
// committed. Pinned entries were applied, so committed: a range that starts at or below
// pinTo is a compaction, and it stops short of the pin; what it leaves is compacted later.
func (l *replayLog) DeleteRange(lo, hi uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pinTo != 0 && !l.restoring && l.applied() >= l.pinTo {
		l.pinTo = 0
	}
	if l.pinTo != 0 && lo <= l.pinTo {
		hi = min(hi, l.pinFrom-1)
		if hi < lo {
			return nil
		}
	}
	if l.keepAfter != nil {
		if last, err := l.LogStore.LastIndex(); err == nil && hi < last {
			hi = min(hi, l.keepAfter())
			if hi < lo {
				return nil
			}
		}
	}
	return l.LogStore.DeleteRange(lo, hi)
}
