package raftgroup

import (
	"context"
	"io"
	"sync"

	"github.com/feellmoose/gridkv/store"
	"github.com/hashicorp/raft"
)

// fsm adapts a store.Partition to raft.BatchingFSM and lets readers wait for an index to be
// applied.
type fsm struct {
	part *store.Partition

	mu      sync.Mutex    // guards applied
	applied chan struct{} // closed (and replaced) after every apply: wakes waiters
}

func newFSM(part *store.Partition) *fsm {
	return &fsm{part: part, applied: make(chan struct{})}
}

var _ raft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in order. A command entry yields []store.Result, one
// per command; an entry that does not decode yields its error (it changed nothing, on every
// replica alike). Configuration entries only advance the applied index.
func (f *fsm) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			f.part.MarkApplied(l.Index)
			continue
		}
		res, err := f.part.ApplyEntry(l.Index, l.Data)
		if err != nil {
			out[i] = err
		} else {
			out[i] = res
		}
	}
	f.wake()
	return out
}

func (f *fsm) wake() {
	f.mu.Lock()
	close(f.applied)
	f.applied = make(chan struct{})
	f.mu.Unlock()
}

// waitApplied returns once the state machine has applied index, or when ctx or done end.
func (f *fsm) waitApplied(ctx context.Context, done <-chan struct{}, index uint64) error {
	for {
		f.mu.Lock()
		ch := f.applied
		f.mu.Unlock()
		if f.part.AppliedIndex() >= index {
			return nil
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

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.part.Snapshot()}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	err := f.part.Restore(rc)
	f.wake()
	return err
}

type fsmSnapshot struct{ snap *store.Snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.snap.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.snap.Release() }
