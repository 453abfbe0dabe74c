package raftgroup

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
)

// recordingObserver keeps what an Observer is told.
type recordingObserver struct {
	mu               sync.Mutex
	taken, installed []error
}

func (o *recordingObserver) SnapshotTaken(_ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.taken = append(o.taken, err)
}

func (o *recordingObserver) SnapshotInstalled(_ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.installed = append(o.installed, err)
}

func TestRaftStatsAndObserver(t *testing.T) {
	obs := &recordingObserver{}
	withObserver := startNode(t, "n0", 100, "127.0.0.1:0", 1, func(c *Config) { c.Observer = obs })
	without := startNode(t, "n1", 101, "127.0.0.1:0", 1)
	for _, n := range []*node{withObserver, without} {
		g, err := n.m.Open(0, true)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "bootstrap leader", g.IsLeader)
		for i := range 10 {
			if _, err := g.Propose(context.Background(), store.Command{Op: store.OpSet, Key: fmt.Sprint(i)}, WriteLevel{Ack: AckCommit}); err != nil {
				t.Fatal(err)
			}
		}
		st := g.RaftStats()
		if st.Role != "leader" || st.Term < 1 || st.CommitIndex < 10 || st.LastLogIndex < st.CommitIndex {
			t.Errorf("%s: stats %+v", n.id, st)
		}
		waitFor(t, 5*time.Second, "applied", func() bool { return g.RaftStats().AppliedIndex >= st.CommitIndex })
		if err := g.await(g.raft.Snapshot()); err != nil {
			t.Fatal(err)
		}
		wantChanges := uint64(0)
		if n == withObserver {
			wantChanges = 1 // the bootstrap election
		}
		if st.LeaderChanges != wantChanges {
			t.Errorf("%s: %d leader changes, want %d", n.id, st.LeaderChanges, wantChanges)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.taken) != 1 || obs.taken[0] != nil || len(obs.installed) != 0 {
		t.Errorf("observer saw snapshots taken %v, installed %v; want one taken", obs.taken, obs.installed)
	}
}
