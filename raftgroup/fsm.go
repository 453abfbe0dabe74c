package raftgroup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv/store"
	"github.com/hashicorp/raft"
)

// errStateMachineFailed is what every apply, snapshot, restore and wait of a failed state
// machine returns. A failed replica applies nothing more; the entry it was asked to apply may
// still commit and apply on the other replicas, so a caller cannot know its outcome.
var errStateMachineFailed = fmt.Errorf("raftgroup: replica stopped after its state machine panicked: %w", ErrOutcomeUnknown)

// applyHook, when set, runs before the state machine applies each log entry. Tests set it to
// make one replica's apply panic; production code leaves it nil.
var applyHook atomic.Pointer[func(part *store.Partition, l *raft.Log)]

// fsm adapts a store.Partition to raft.BatchingFSM and lets readers wait for an index to be
// applied.
//
// A panic while applying or restoring leaves the partition in a state no other replica
// shares. The fsm then fails stop: it records the failure, applies nothing more, answers every
// later call with errStateMachineFailed, and asks its owner (through the function given to
// setFailStop) to shut the replica's Raft instance down, so a diverged replica neither serves
// nor votes. The other replicas of the group carry on without it.
type fsm struct {
	part *store.Partition
	// observer (nil: none) times snapshots; set before raft starts, read-only after.
	observer Observer

	// failed is set once, when an apply or restore panicked, and never cleared. Atomic so the
	// apply path checks it without the lock.
	failed atomic.Bool

	// highWater is the highest index this replica has applied, or the floor its node's
	// stale reads have already seen from another replica (RaiseStaleFloor), if higher. A
	// follower can be sent a snapshot older than what it applied (hashicorp/raft's follower
	// does not compare the two); its state then goes back until the log replays it forward.
	// Meanwhile its node answers stale reads from the leader, which is ahead of it. Reads
	// must see neither step back, so stale reads wait until the applied index is back at
	// highWater.
	highWater atomic.Uint64

	mu       sync.Mutex    // guards applied, awaited, logger, stop, stopping, unlogged, guard
	applied  chan struct{} // closed (and replaced) after an apply when awaited: wakes waiters
	awaited  bool          // applied was handed to a waiter since it was made
	logger   *slog.Logger  // nil until setFailStop
	stop     func()        // shuts the replica's Raft instance down; nil until setFailStop
	stopping bool          // stop has been started, or waitStopped was called: start none
	unlogged []any         // a failure's log attributes, kept when it came before the logger
	guard    restoreGuard  // nil: every snapshot is restored

	// answering counts the batches this replica proposed (Group.submit) whose results
	// their proposers still await. It is raised before raft has the entry and lowered once
	// the result was read, so an entry applied while it is zero has no one waiting for its
	// results (a follower's entry, or a leader's that nobody awaits any more): such entries
	// apply without building them.
	answering atomic.Int32

	// out is ApplyBatch's answer, reused: raft's apply loop, its only caller, copies the
	// answers out before the next call.
	out []interface{}

	// stopped counts the goroutine running stop; waitStopped waits for it. Added to only
	// under mu while stopping is false.
	stopped sync.WaitGroup
}

// restoreGuard is consulted around every snapshot restore: admit, given the snapshot's index
// once its header is read, may refuse it (the restore then fails with the state unchanged);
// done learns how the restore ended.
type restoreGuard interface {
	admit(index uint64) error
	done(err error)
}

func newFSM(part *store.Partition) *fsm {
	return &fsm{part: part, applied: make(chan struct{})}
}

var _ raft.BatchingFSM = (*fsm)(nil)

// setRestoreGuard sets what every later snapshot restore consults.
func (f *fsm) setRestoreGuard(g restoreGuard) {
	f.mu.Lock()
	f.guard = g
	f.mu.Unlock()
}

// setFailStop gives the fsm its logger and the function that shuts its Raft instance down
// after a failure. The owner calls it once, after creating the Raft instance; stop runs on
// its own goroutine (it must not block the apply loop it stops). If the fsm failed before,
// stop starts at once.
func (f *fsm) setFailStop(logger *slog.Logger, stop func()) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f.mu.Lock()
	f.logger, f.stop = logger, stop
	unlogged := f.unlogged
	f.unlogged = nil
	f.mu.Unlock()
	if unlogged != nil {
		logger.Error(failureMessage, unlogged...)
	}
	if f.failed.Load() {
		f.startStop()
	}
}

const failureMessage = "raftgroup: state machine panicked; stopping this replica"

func (f *fsm) Apply(l *raft.Log) interface{} {
	out := make([]interface{}, 1)
	f.apply([]*raft.Log{l}, out)
	return out[0]
}

// ApplyBatch applies committed entries in order. A command entry yields []store.Result, one
// per command; an entry that does not decode yields its error (it changed nothing, on every
// replica alike). Configuration entries only advance the applied index. After a panic the
// entries not yet applied, and every later one, yield errStateMachineFailed.
//
// The slice returned is valid until the next call: raft's apply loop, the only caller, hands
// each answer to its future before it applies more.
func (f *fsm) ApplyBatch(logs []*raft.Log) []interface{} {
	if cap(f.out) < len(logs) {
		f.out = make([]interface{}, len(logs))
	}
	out := f.out[:len(logs)]
	clear(out)
	f.apply(logs, out)
	return out
}

// apply applies logs, writing the answer to logs[i] into out[i].
func (f *fsm) apply(logs []*raft.Log, out []interface{}) {
	if f.failed.Load() {
		fillFailed(out)
		return
	}
	i := 0
	defer func() {
		if r := recover(); r != nil {
			f.fail("apply", r, logs[i].Index)
			fillFailed(out[i:])
		}
		f.raiseHighWater()
		f.wake()
	}()
	hook := applyHook.Load()
	answer := f.answering.Load() > 0
	for ; i < len(logs); i++ {
		l := logs[i]
		if hook != nil {
			(*hook)(f.part, l)
		}
		if l.Type != raft.LogCommand {
			f.part.MarkApplied(l.Index)
			continue
		}
		if !answer {
			if err := f.part.ApplyEntryUnanswered(l.Index, l.Data); err != nil {
				out[i] = err
			}
			continue
		}
		res, err := f.part.ApplyEntry(l.Index, l.Data)
		if err != nil {
			out[i] = err
		} else {
			out[i] = res
		}
	}
}

func fillFailed(out []interface{}) {
	for i := range out {
		out[i] = errStateMachineFailed
	}
}

// fail records a panic, logs it with its stack, and starts stopping the replica.
func (f *fsm) fail(during string, panicked any, index uint64) {
	if !f.failed.CompareAndSwap(false, true) {
		return
	}
	attrs := []any{"during", during, "index", index, "panic", panicked, "stack", string(debug.Stack())}
	f.mu.Lock()
	logger := f.logger
	if logger == nil {
		f.unlogged = attrs
	}
	f.mu.Unlock()
	if logger != nil {
		logger.Error(failureMessage, attrs...)
	}
	f.startStop()
}

// startStop runs the stop function once, on its own goroutine: Raft's shutdown waits for the
// apply loop, which is the caller.
func (f *fsm) startStop() {
	f.mu.Lock()
	stop := f.stop
	start := stop != nil && !f.stopping
	if start {
		f.stopping = true
		f.stopped.Add(1)
	}
	f.mu.Unlock()
	if start {
		go func() {
			defer f.stopped.Done()
			stop()
		}()
	}
}

// waitStopped waits for a stop that a failure started, and keeps any later failure from
// starting one: the owner is stopping the Raft instance itself. Raft's shutdown waits for
// its goroutines only in the first caller, so an owner whose own shutdown came second learns
// here that the instance has stopped.
func (f *fsm) waitStopped() {
	f.mu.Lock()
	f.stopping = true
	f.mu.Unlock()
	f.stopped.Wait()
}

// rewound reports whether the state is behind highWater: set back by a snapshot restore, or
// behind what its node already answered from another replica.
func (f *fsm) rewound() bool { return f.part.AppliedIndex() < f.highWater.Load() }

// raiseHighWater records the applied index after an apply.
func (f *fsm) raiseHighWater() { f.raiseFloor(f.part.AppliedIndex()) }

// raiseFloor raises highWater to at least applied.
func (f *fsm) raiseFloor(applied uint64) { raise(&f.highWater, applied) }

// wake wakes the waiters of waitApplied, if any took the channel: with none, the apply
// costs no new channel.
func (f *fsm) wake() {
	f.mu.Lock()
	if f.awaited {
		close(f.applied)
		f.applied = make(chan struct{})
		f.awaited = false
	}
	f.mu.Unlock()
}

// waitApplied returns once the state machine has applied index, or when ctx or done end, or
// when the state machine failed (it will apply nothing more).
func (f *fsm) waitApplied(ctx context.Context, done <-chan struct{}, index uint64) error {
	for {
		f.mu.Lock()
		ch := f.applied
		f.awaited = true
		f.mu.Unlock()
		// Read after taking ch: an apply that raises the index later closes ch.
		if f.part.AppliedIndex() >= index {
			return nil
		}
		if f.failed.Load() {
			return errStateMachineFailed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return ErrClosed
		}
	}
}

// Snapshot captures the partition. A failed state machine refuses: its state may be half an
// entry ahead of the log and must not reach another replica.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.failed.Load() {
		return nil, errStateMachineFailed
	}
	s := &fsmSnapshot{observer: f.observer}
	if s.observer != nil {
		s.start = time.Now()
	}
	s.snap = f.part.Snapshot()
	return s, nil
}

// Restore replaces the partition with a snapshot. A panic while restoring fails the state
// machine like one while applying.
func (f *fsm) Restore(rc io.ReadCloser) (err error) {
	defer rc.Close()
	if f.failed.Load() {
		return errStateMachineFailed
	}
	if f.observer != nil {
		start := time.Now()
		defer func() { f.observer.SnapshotInstalled(time.Since(start), err) }()
	}
	f.mu.Lock()
	guard := f.guard
	f.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			f.fail("restore", r, 0)
			err = errStateMachineFailed
		}
		if guard != nil {
			guard.done(err)
		}
		f.wake()
	}()
	if guard == nil {
		return f.part.Restore(rc)
	}
	return f.part.RestoreIf(rc, guard.admit)
}

type fsmSnapshot struct {
	snap     *store.Snapshot
	observer Observer  // nil: none
	start    time.Time // when the state machine captured the snapshot, with an observer
}

// Persist hands the view itself to this package's snapshot store, which serializes it only
// when a follower needs it; any other sink gets the bytes.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) (err error) {
	if s.observer != nil {
		defer func() { s.observer.SnapshotTaken(time.Since(s.start), err) }()
	}
	if vs, ok := sink.(*viewSink); ok {
		vs.attach(s.snap)
		s.snap = nil // the store owns it now; Release must not drop its entries
		return sink.Close()
	}
	if fs, ok := sink.(*fileSink); ok {
		fs.local = true
	}
	if _, err := s.snap.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {
	if s.snap != nil {
		s.snap.Release()
	}
}
