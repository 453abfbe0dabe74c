package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
	"github.com/hashicorp/raft"
)

// panicOn makes the apply of every command entry on part panic from now until the test ends.
func panicOn(t *testing.T, part *store.Partition) {
	t.Helper()
	hook := func(p *store.Partition, l *raft.Log) {
		if p == part && l.Type == raft.LogCommand {
			panic(fmt.Sprintf("injected panic at index %d", l.Index))
		}
	}
	applyHook.Store(&hook)
	t.Cleanup(func() { applyHook.Store(nil) })
}

// wireFailStop makes sure g's state machine can shut g's Raft instance down. group.go is
// meant to do this when it creates the group; until it does, the test stands in for it.
func wireFailStop(t *testing.T, g *Group) {
	t.Helper()
	g.fsm.mu.Lock()
	wired := g.fsm.stop != nil
	g.fsm.mu.Unlock()
	if !wired {
		t.Logf("partition %d: group.go does not wire the fail-stop hook; the test installs it", g.id)
		g.fsm.setFailStop(g.logger, func() { _ = g.raft.Shutdown().Error() })
	}
}

func set(key, value string) store.Command {
	return store.Command{Op: store.OpSet, Key: key, Value: []byte(value)}
}

func TestApplyPanicStopsOnlyThatFollower(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := g.Propose(ctx, set(fmt.Sprintf("before-%d", i), "v"), WriteLevel{}); err != nil {
			t.Fatal(err)
		}
	}
	victim, healthy := nodes[1].m.Group(0), nodes[2].m.Group(0)
	waitFor(t, 5*time.Second, "followers to catch up", func() bool {
		idx := g.Partition().AppliedIndex()
		return victim.Partition().AppliedIndex() >= idx && healthy.Partition().AppliedIndex() >= idx
	})
	wireFailStop(t, victim)
	frozenLen := victim.Partition().Len()
	frozenIndex := victim.Partition().AppliedIndex()
	panicOn(t, victim.Partition())

	for i := 0; i < 20; i++ {
		if _, err := g.Propose(ctx, set(fmt.Sprintf("after-%d", i), "v"), WriteLevel{}); err != nil {
			t.Fatalf("write %d with one follower failed: %v", i, err)
		}
	}
	waitFor(t, 10*time.Second, "the failed follower's Raft instance to shut down", victim.Stopped)
	if !victim.fsm.failed.Load() {
		t.Fatal("the follower's state machine is not marked failed")
	}
	if !g.IsLeader() {
		t.Fatal("the leader lost leadership when one follower failed")
	}
	if _, err := g.Propose(ctx, set("last", "v"), WriteLevel{}); err != nil {
		t.Fatalf("write after the follower stopped: %v", err)
	}
	waitFor(t, 5*time.Second, "the healthy follower to apply everything", func() bool {
		return healthy.Partition().AppliedIndex() >= g.Partition().AppliedIndex()
	})
	if got, want := healthy.Partition().Len(), g.Partition().Len(); got != want {
		t.Fatalf("healthy follower holds %d keys, leader %d", got, want)
	}
	if got := victim.Partition().Len(); got != frozenLen {
		t.Fatalf("failed follower holds %d keys, had %d when it failed", got, frozenLen)
	}
	if got := victim.Partition().AppliedIndex(); got != frozenIndex {
		t.Fatalf("failed follower's applied index moved from %d to %d", frozenIndex, got)
	}

	// Whatever it is handed later, it refuses without touching its state.
	data := store.AppendBatch(nil, []store.Command{set("late", "v")})
	res := victim.fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: frozenIndex + 1000, Data: data})
	if err, ok := res.(error); !ok || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("apply on a failed state machine = %v, want an ErrOutcomeUnknown error", res)
	}
	if _, _, ok := victim.Partition().Get("late"); ok {
		t.Fatal("a failed state machine applied a later entry")
	}
	if _, err := victim.fsm.Snapshot(); err == nil {
		t.Fatal("a failed state machine took a snapshot")
	}
	if err := victim.waitApplied(ctx, frozenIndex+1); err == nil {
		t.Fatal("waiting on a failed state machine succeeded")
	}
}

func TestApplyPanicOnLeaderFailsOver(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	if _, err := g.Propose(ctx, set("before", "v"), WriteLevel{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		wireFailStop(t, n.m.Group(0))
	}
	panicOn(t, g.Partition())

	// The entry commits (a leader applies only committed entries) but the leader cannot
	// apply it: the caller learns that the outcome is unknown, not that it failed.
	_, err := g.Propose(ctx, set("doomed", "v"), WriteLevel{})
	if !errors.Is(err, ErrOutcomeUnknown) && !errors.Is(err, ErrClosed) {
		t.Fatalf("write whose apply panicked on the leader: err = %v, want ErrOutcomeUnknown or ErrClosed", err)
	}
	waitFor(t, 10*time.Second, "the failed leader to shut down", g.Stopped)

	var leader *Group
	waitFor(t, 15*time.Second, "a new leader among the other replicas", func() bool {
		for _, n := range nodes[1:] {
			if fg := n.m.Group(0); fg.IsLeader() {
				leader = fg
				return true
			}
		}
		return false
	})
	if _, err := leader.Propose(ctx, set("after", "v"), WriteLevel{}); err != nil {
		t.Fatalf("write through the new leader: %v", err)
	}
	if _, _, ok := leader.Partition().Get("doomed"); !ok {
		t.Fatal("the committed entry whose apply panicked on the old leader is missing on the new one")
	}
	if _, _, ok := g.Partition().Get("doomed"); ok {
		t.Fatal("the failed leader applied the entry that panicked")
	}
}

// panickingReader panics on the first read, like a snapshot decoder hitting a bug.
type panickingReader struct{}

func (panickingReader) Read([]byte) (int, error) { panic("injected restore panic") }
func (panickingReader) Close() error             { return nil }

func TestRestorePanicFailsStop(t *testing.T) {
	part := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	defer part.Close()
	f := newFSM(part)
	f.ApplyBatch([]*raft.Log{{Type: raft.LogCommand, Index: 1, Data: store.AppendBatch(nil, []store.Command{set("k", "v")})}})

	// The failure comes before the owner wired the stop function: wiring it stops at once.
	if err := f.Restore(panickingReader{}); !errors.Is(err, errStateMachineFailed) {
		t.Fatalf("Restore that panicked: err = %v, want errStateMachineFailed", err)
	}
	var stops atomic.Int32
	stopped := make(chan struct{})
	f.setFailStop(nil, func() {
		if stops.Add(1) == 1 {
			close(stopped)
		}
	})
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the stop function did not run")
	}

	out := f.ApplyBatch([]*raft.Log{
		{Type: raft.LogCommand, Index: 2, Data: store.AppendBatch(nil, []store.Command{set("k2", "v")})},
		{Type: raft.LogConfiguration, Index: 3},
	})
	for i, r := range out {
		if r != errStateMachineFailed {
			t.Errorf("result %d after failure = %v, want errStateMachineFailed", i, r)
		}
	}
	if part.AppliedIndex() != 1 || part.Len() != 1 {
		t.Fatalf("after failure: applied %d, %d keys; want 1, 1", part.AppliedIndex(), part.Len())
	}
	if err := f.Restore(io.NopCloser(panickingReader{})); !errors.Is(err, errStateMachineFailed) {
		t.Fatalf("second Restore: %v", err)
	}
	if n := stops.Load(); n != 1 {
		t.Fatalf("stop ran %d times, want once", n)
	}
}

func TestApplyPanicMidBatchKeepsEarlierResults(t *testing.T) {
	part := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	defer part.Close()
	f := newFSM(part)
	f.answering.Add(1) // a proposer awaits the results
	hook := func(p *store.Partition, l *raft.Log) {
		if p == part && l.Index == 3 {
			panic("injected")
		}
	}
	applyHook.Store(&hook)
	defer applyHook.Store(nil)
	logs := make([]*raft.Log, 4)
	for i := range logs {
		logs[i] = &raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: store.AppendBatch(nil, []store.Command{set(fmt.Sprint("k", i), "v")})}
	}
	out := f.ApplyBatch(logs)
	for i, r := range out {
		_, applied := r.([]store.Result)
		if want := i < 2; applied != want {
			t.Errorf("entry %d: result %v, applied %v, want %v", i+1, r, applied, want)
		}
	}
	if part.AppliedIndex() != 2 || part.Len() != 2 {
		t.Fatalf("applied %d, %d keys; want 2, 2", part.AppliedIndex(), part.Len())
	}
}

// A replica builds the results of the entries it applies only while a proposal of its own
// awaits them; otherwise (a follower) the entries apply alike and the answers are empty, but
// for an entry that does not decode, whose error is still answered.
func TestResultsOnlyWhileAwaited(t *testing.T) {
	part := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	defer part.Close()
	f := newFSM(part)
	entries := func(first uint64) []*raft.Log {
		return []*raft.Log{
			{Type: raft.LogCommand, Index: first, Data: store.AppendBatch(nil, []store.Command{set(fmt.Sprint("k", first), "v")})},
			{Type: raft.LogCommand, Index: first + 1, Data: []byte{0x0a, 0x05, 0x08}}, // does not decode
		}
	}
	out := f.ApplyBatch(entries(1))
	if out[0] != nil {
		t.Errorf("unawaited entry answered %v; want nothing", out[0])
	}
	if err, _ := out[1].(error); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("unawaited garbage entry answered %v; want ErrCorrupt", out[1])
	}
	f.answering.Add(1)
	out = f.ApplyBatch(entries(3))
	if res, ok := out[0].([]store.Result); !ok || len(res) != 1 || res[0].Version != store.Version(3, 0) {
		t.Errorf("awaited entry answered %v; want its result", out[0])
	}
	if err, _ := out[1].(error); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("awaited garbage entry answered %v; want ErrCorrupt", out[1])
	}
	f.answering.Add(-1)
	if part.Len() != 2 || part.AppliedIndex() != 4 {
		t.Fatalf("%d keys, applied %d; want 2, 4", part.Len(), part.AppliedIndex())
	}
}

// The owner's shutdown waits for a stop a failure started, and a failure after the owner began
// stopping the instance itself starts none.
func TestWaitStoppedWaitsForTheFailStop(t *testing.T) {
	part := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	defer part.Close()
	f := newFSM(part)
	started, release := make(chan struct{}), make(chan struct{})
	f.setFailStop(nil, func() {
		close(started)
		<-release
	})
	if err := f.Restore(panickingReader{}); !errors.Is(err, errStateMachineFailed) {
		t.Fatalf("Restore that panicked: %v", err)
	}
	<-started
	waited := make(chan struct{})
	go func() {
		f.waitStopped()
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("waitStopped returned while the stop was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("waitStopped still waiting after the stop returned")
	}

	part2 := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	defer part2.Close()
	f2 := newFSM(part2)
	var ran atomic.Bool
	f2.setFailStop(nil, func() { ran.Store(true) })
	f2.waitStopped()
	if err := f2.Restore(panickingReader{}); !errors.Is(err, errStateMachineFailed) {
		t.Fatalf("Restore that panicked: %v", err)
	}
	f2.waitStopped()
	if ran.Load() {
		t.Fatal("a failure after waitStopped started a stop")
	}
}
