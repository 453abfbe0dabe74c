package raftgroup

import (
	"time"

	"github.com/hashicorp/raft"
)

// Observer learns of the events of a node's groups that are counted rather than read at
// scrape time: snapshots, whose number and duration raft keeps nowhere a caller can read.
// Its methods run on raft's goroutines (the snapshot and FSM loops), so they must be quick
// and must not block. Config.Observer nil: nothing is timed or counted.
//
// A durable log store reports its fsyncs here too once it exists: add a method beside these
// and call it from the store.
type Observer interface {
	// SnapshotTaken reports a snapshot this replica took of its own state: d runs from the
	// state machine's capture to the snapshot being stored; err is the store's failure.
	SnapshotTaken(d time.Duration, err error)
	// SnapshotInstalled reports a snapshot sent by the leader that this replica restored
	// (err nil) or refused or failed to restore; d is the restore's duration.
	SnapshotInstalled(d time.Duration, err error)
}

// RaftStats is a replica's Raft state as raft holds it at the moment of the call.
type RaftStats struct {
	Role          string // "follower", "candidate", "leader" or "shutdown"
	Term          uint64
	CommitIndex   uint64
	AppliedIndex  uint64 // the last entry raft handed to the state machine
	LastLogIndex  uint64
	LastContact   time.Time // the last time a leader was heard from; zero on a leader and before any contact
	LeaderChanges uint64    // how often this replica learned of a new leader; counted with an Observer only
}

// RaftStats reads the group's Raft state from raft's own counters. Every field is read on
// its own, without a lock across them, so a scrape may see a commit index a moment newer than
// the term beside it. It takes no lock raft's main loop holds for long and waits on no
// future, so a stuck group cannot hang a scrape.
func (g *Group) RaftStats() RaftStats {
	return RaftStats{
		Role:          roleName(g.raft.State()),
		Term:          g.raft.CurrentTerm(),
		CommitIndex:   g.raft.CommitIndex(),
		AppliedIndex:  g.raft.AppliedIndex(),
		LastLogIndex:  g.raft.LastIndex(),
		LastContact:   g.raft.LastContact(),
		LeaderChanges: g.leaderChanges.Load(),
	}
}

// Roles lists every value RaftStats.Role takes, in raft's order.
var Roles = []string{"follower", "candidate", "leader", "shutdown"}

func roleName(s raft.RaftState) string {
	if int(s) < len(Roles) {
		return Roles[s]
	}
	return "unknown"
}

// countLeaderChanges has raft count, on its own goroutine, every leader this replica learns
// of. The observer has no channel: raft calls its filter synchronously and sends nothing, so
// no goroutine drains it. Only with an Observer: without metrics nothing is registered.
func (g *Group) countLeaderChanges() {
	if g.m.cfg.Observer == nil {
		return
	}
	g.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
			g.leaderChanges.Add(1)
		}
		return false
	}))
}
