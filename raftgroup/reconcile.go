package raftgroup

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Member is a node the placement wants in a group.
type Member struct {
	NodeID      string
	Incarnation uint64
	Addr        string // host:port
}

func (m Member) serverID() raft.ServerID { return ServerID(m.NodeID, m.Incarnation) }

// Change is what one Reconcile step did.
type Change int

const (
	NoChange Change = iota
	AddedLearner
	PromotedVoter
	RemovedServer
	TransferredLeadership
)

func (c Change) String() string {
	return [...]string{"none", "added learner", "promoted voter", "removed server", "transferred leadership"}[c]
}

// Reconcile moves the group one step toward desired (ordered; the first is the preferred
// leader). Only the leader acts. The order is: add a missing replica as a non-voter, promote a
// caught-up non-voter, remove a server that is not desired (a voter only once every desired
// replica votes; handing leadership away first if it is this one), and, with balance set,
// hand leadership to the preferred replica. Each call makes at most one change, so callers
// can rate-limit changes across groups.
func (g *Group) Reconcile(desired []Member, balance bool) (Change, error) {
	if g.raft.State() != raft.Leader || len(desired) == 0 {
		return NoChange, nil
	}
	cfg, cfgIndex, err := g.configuration()
	if err != nil {
		return NoChange, err
	}
	current := make(map[raft.ServerID]raft.Server, len(cfg.Servers))
	for _, s := range cfg.Servers {
		current[s.ID] = s
	}
	want := make(map[raft.ServerID]bool, len(desired))
	for _, d := range desired {
		want[d.serverID()] = true
	}
	timeout := g.m.cfg.Timing.ApplyTimeout

	for _, d := range desired {
		if _, ok := current[d.serverID()]; !ok {
			f := g.raft.AddNonvoter(d.serverID(), ServerAddress(d.Addr, d.Incarnation), cfgIndex, timeout)
			return AddedLearner, wrapChange(g.id, "add learner", d.NodeID, g.await(f))
		}
	}
	if ch, err := g.promote(desired, current, cfgIndex); ch != NoChange || err != nil {
		return ch, err
	}
	// A voter leaves only once every desired replica votes: removing one earlier shrinks the
	// group below its replica count (often to two voters, which stop committing when either
	// stalls) while the replicas meant to replace it are still catching up.
	allVote := true
	for _, d := range desired {
		if s, ok := current[d.serverID()]; !ok || s.Suffrage != raft.Voter {
			allVote = false
		}
	}
	for _, s := range cfg.Servers {
		if want[s.ID] || (s.Suffrage == raft.Voter && !allVote) {
			continue
		}
		if s.ID == g.self {
			return g.transferTo(desired, current)
		}
		f := g.raft.RemoveServer(s.ID, cfgIndex, timeout)
		nodeID, _ := NodeOf(s.ID)
		return RemovedServer, wrapChange(g.id, "remove", nodeID, g.await(f))
	}
	if balance && desired[0].serverID() != g.self {
		// Only to the preferred replica itself: handing leadership to any other voter could
		// bounce it between replicas that are both not preferred.
		return g.transferTo(desired[:1], current)
	}
	return NoChange, nil
}

// transferTo hands leadership to the first desired voter.
func (g *Group) transferTo(desired []Member, current map[raft.ServerID]raft.Server) (Change, error) {
	for _, d := range desired {
		s, ok := current[d.serverID()]
		if !ok || s.Suffrage != raft.Voter || s.ID == g.self {
			continue
		}
		f := g.raft.LeadershipTransferToServer(s.ID, s.Address)
		return TransferredLeadership, wrapChange(g.id, "transfer leadership", d.NodeID, g.await(f))
	}
	return NoChange, nil
}

// caughtUp asks a learner whether it has applied everything this leader has committed.
func (g *Group) caughtUp(d Member) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := g.m.cfg.WaitApplied(ctx, d.Addr, g.id, g.visibleIndex(g.raft.CommitIndex()))
	if err != nil {
		g.logger.Debug("learner not caught up", "learner", d.NodeID, "err", err)
	}
	return err == nil
}

// visibleIndex returns the last index at or below index that a replica's state machine sees:
// Raft keeps no-op and barrier entries from the state machine, so a replica whose last
// entries are of those kinds (a new leader's first entry, for one) reports an applied index
// below the commit index until the next command, which on an idle partition may never come.
func (g *Group) visibleIndex(index uint64) uint64 {
	for i := index; i > 0; i-- {
		var l raft.Log
		if err := g.logs.GetLog(i, &l); err != nil {
			return i // compacted: a snapshot covers it, and a restore marks its index applied
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return 0
}

func wrapChange(group int, what, node string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("raftgroup: partition %d: %s %s: %w", group, what, node, err)
}

// promote makes caught-up learners voters. From an odd number of voters it promotes two at
// once (back to back) when it can: a group left at an even size, two voters above all, stops
// committing if either fails, and cannot even commit its own repair.
func (g *Group) promote(desired []Member, current map[raft.ServerID]raft.Server, cfgIndex uint64) (Change, error) {
	voters := 0
	for _, s := range current {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	var learners []raft.Server
	for _, d := range desired {
		if s, ok := current[d.serverID()]; ok && s.Suffrage != raft.Voter {
			learners = append(learners, s)
		}
	}
	if len(learners) == 0 {
		return NoChange, nil
	}
	var ready []raft.Server
	for _, s := range learners {
		nodeID, inc := NodeOf(s.ID)
		hostPort, _, err := SplitAddress(s.Address)
		if err == nil && g.caughtUp(Member{NodeID: nodeID, Incarnation: inc, Addr: hostPort}) {
			ready = append(ready, s)
		}
	}
	if len(ready) == 0 || (voters%2 == 1 && len(learners) >= 2 && len(ready) < 2) {
		return NoChange, nil
	}
	if voters%2 == 0 || len(ready) == 1 {
		ready = ready[:1]
	} else {
		ready = ready[:2]
	}
	timeout := g.m.cfg.Timing.ApplyTimeout
	index := cfgIndex
	for _, s := range ready {
		f := g.raft.AddVoter(s.ID, s.Address, index, timeout)
		nodeID, _ := NodeOf(s.ID)
		if err := g.await(f); err != nil {
			return PromotedVoter, wrapChange(g.id, "promote", nodeID, err)
		}
		index = f.Index()
	}
	return PromotedVoter, nil
}

// VoterCount returns how many voters the group's configuration has and whether this replica
// is one of them.
func (g *Group) VoterCount() (voters int, self bool, err error) {
	cfg, err := g.Configuration()
	if err != nil {
		return 0, false, err
	}
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			voters++
			if s.ID == g.self {
				self = true
			}
		}
	}
	return voters, self, nil
}

// Retired reports whether this replica may be dropped without ever voting again under its
// server ID: its own configuration no longer lists it, and that configuration is committed.
// A removed follower often never learns its removal was committed (the leader stops
// replicating to it); ask the leader with RemovedFromGroup then.
func (g *Group) Retired() bool {
	if g.raft.State() == raft.Shutdown {
		return true
	}
	out, err := g.committedWithout(g.self)
	return err == nil && out
}

// RemovedFromGroup answers, on the leader, whether the replica with server ID id is out of the
// group for good: absent from a committed configuration. A replica dropped while the group
// still counts it would come back empty under the same ID and could vote without the entries
// it acknowledged, so only this answer, or Retired, lets a node drop a replica.
func (g *Group) RemovedFromGroup(id string) (bool, error) {
	if g.raft.State() != raft.Leader {
		return false, g.notLeader()
	}
	return g.committedWithout(raft.ServerID(id))
}

// committedWithout reports whether this replica's latest configuration leaves id out and is
// committed.
func (g *Group) committedWithout(id raft.ServerID) (bool, error) {
	cfg, index, err := g.configuration()
	if err != nil {
		return false, err
	}
	for _, s := range cfg.Servers {
		if s.ID == id {
			return false, nil
		}
	}
	return g.raft.CommitIndex() >= index, nil
}

// ServerID returns this replica's Raft server ID.
func (g *Group) ServerID() string { return string(g.self) }
