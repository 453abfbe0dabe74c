package raftgroup

import (
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// stallingLog is a log store whose StoreLogs blocks while stalled: the raft leader loop that
// calls it stops taking anything else, as it would on a slow disk.
type stallingLog struct {
	raft.LogStore
	mu      sync.Mutex    // guards stalled
	stalled chan struct{} // nil: not stalled
}

func (s *stallingLog) stall() {
	s.mu.Lock()
	s.stalled = make(chan struct{})
	s.mu.Unlock()
}

func (s *stallingLog) release() {
	s.mu.Lock()
	if s.stalled != nil {
		close(s.stalled)
		s.stalled = nil
	}
	s.mu.Unlock()
}

func (s *stallingLog) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	ch := s.stalled
	s.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return s.LogStore.StoreLogs(logs)
}

// singleNode starts a one-voter Raft instance on the in-memory transport and waits until it
// leads.
func singleNode(t *testing.T, logs raft.LogStore) *raft.Raft {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo")
	rc := raft.DefaultConfig()
	rc.LocalID = "solo"
	rc.HeartbeatTimeout = 50 * time.Millisecond
	rc.ElectionTimeout = 50 * time.Millisecond
	rc.LeaderLeaseTimeout = 50 * time.Millisecond
	rc.BatchApplyCh = true
	rc.Logger = raftLogger(slog.New(slog.DiscardHandler), 0)
	stable := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "solo", Address: "solo"}}}
	if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, boot); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(rc, &raft.MockFSM{}, logs, stable, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Shutdown().Error()
		trans.Close()
	})
	waitFor(t, 5*time.Second, "the single node to lead", func() bool { return r.State() == raft.Leader })
	// Until its first entry commits, the bootstrap configuration is not known committed and
	// raft takes no configuration change, which tests here make.
	if err := r.Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	return r
}

// Every kind of future the package waits on can be bound to the group's stop, so none of them
// can hang a shutdown. A raft upgrade that renamed the field would fail here.
func TestAwaitCoversEveryFuture(t *testing.T) {
	r := singleNode(t, raft.NewInmemStore())
	timeout := time.Second
	futures := map[string]raft.Future{
		"Apply":              r.Apply([]byte("x"), timeout),
		"Barrier":            r.Barrier(timeout),
		"VerifyLeader":       r.VerifyLeader(),
		"GetConfiguration":   r.GetConfiguration(),
		"Snapshot":           r.Snapshot(),
		"AddNonvoter":        r.AddNonvoter("other", "other", 0, timeout),
		"AddVoter":           r.AddVoter("other", "other", 0, timeout),
		"RemoveServer":       r.RemoveServer("other", 0, timeout),
		"LeadershipTransfer": r.LeadershipTransferToServer("other", "other"),
	}
	stopped := make(chan struct{})
	for name, f := range futures {
		if !bindShutdown(f, stopped) {
			t.Errorf("%s's future (%T) has no ShutdownCh to bind", name, f)
		}
	}
	// Some never end on their own: with an unreachable second voter nothing commits.
	close(stopped)
	for _, f := range futures {
		_ = f.Error()
	}
}

// A future raft never answers (here: an Apply still queued behind a stalled leader loop when
// the group stops) returns once the group's done channel closes.
func TestAwaitEndsWhenTheGroupStops(t *testing.T) {
	logs := &stallingLog{LogStore: raft.NewInmemStore()}
	r := singleNode(t, logs)
	logs.stall()
	defer logs.release()
	first := r.Apply([]byte("a"), time.Second) // the leader loop takes it and stalls storing it
	queued := r.Apply([]byte("b"), time.Second)
	g := &Group{done: make(chan struct{})}
	got := make(chan error, 1)
	go func() { got <- g.await(queued) }()
	select {
	case err := <-got:
		t.Fatalf("await returned %v while the leader loop was stalled", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.done)
	select {
	case err := <-got:
		if !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("await after the group stopped: %v, want ErrRaftShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("await still blocked after the group stopped")
	}
	logs.release()
	_ = first.Error()
}

// A configuration change raft does not answer (here: the leader loop took it and is stalled
// storing its entry) gives the convergence loop back after the apply timeout, and the
// goroutine left waiting on it ends with the group.
func TestAwaitChangeIsBounded(t *testing.T) {
	logs := &stallingLog{LogStore: raft.NewInmemStore()}
	r := singleNode(t, logs)
	logs.stall()
	defer logs.release()
	change := r.AddNonvoter("other", "other", 0, time.Second)
	tuning := Tuning{ApplyTimeout: 200 * time.Millisecond, CommitTimeout: 50 * time.Millisecond}
	g := &Group{done: make(chan struct{}), raft: r, m: &Manager{cfg: Config{Tuning: tuning}}}
	got := make(chan error, 1)
	go func() { got <- g.awaitChange(change, true) }() // its empty entries cannot enter the stalled loop either
	select {
	case err := <-got:
		if !errors.Is(err, errChangePending) {
			t.Fatalf("awaitChange on an unanswered change: %v, want errChangePending", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("awaitChange still blocked well past the apply timeout")
	}
	close(g.done) // the waiting goroutine ends here; TestMain's leak check would see it otherwise
}
