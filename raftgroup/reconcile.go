package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Replica is a node the placement wants in a group: one replica of it.
type Replica struct {
	NodeID      string
	Incarnation uint64
	Addr        string // host:port
}

func (m Replica) serverID() raft.ServerID { return ServerID(m.NodeID, m.Incarnation) }

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
//
// nextChange decides the change; Reconcile gathers what it needs (the configuration, and
// from the learners it names whether they caught up) and makes the change.
func (g *Group) Reconcile(desired []Replica, balance bool) (Change, error) {
	if g.raft.State() != raft.Leader || len(desired) == 0 {
		return NoChange, nil
	}
	cfg, cfgIndex, err := g.configuration()
	if err != nil {
		return NoChange, err
	}
	s := reconcileState{servers: cfg.Servers, self: g.self, desired: desired, balance: balance}
	if ask := learnersToAsk(s); len(ask) > 0 {
		s.caughtUp = make(map[raft.ServerID]bool, len(ask))
		for _, l := range ask {
			if _, asked := s.caughtUp[l.ID]; !asked {
				s.caughtUp[l.ID] = g.caughtUp(l)
			}
		}
	}
	return g.makeChange(nextChange(s), cfgIndex)
}

// makeChange carries out a planned change against the configuration at cfgIndex, so that it
// fails rather than races with another change made meanwhile.
func (g *Group) makeChange(p plannedChange, cfgIndex uint64) (Change, error) {
	if p.kind == NoChange {
		return NoChange, nil
	}
	timeout := g.m.cfg.Tuning.ApplyTimeout
	target := p.targets[0]
	nodeID, _ := NodeOf(target.ID)
	switch p.kind {
	case AddedLearner:
		f := g.raft.AddNonvoter(target.ID, target.Address, cfgIndex, timeout)
		return AddedLearner, wrapChange(g.id, "add learner", nodeID, g.awaitChange(f, true))
	case PromotedVoter:
		// Back to back: each promotion names the configuration the previous one made.
		index := cfgIndex
		for _, t := range p.targets {
			f := g.raft.AddVoter(t.ID, t.Address, index, timeout)
			if err := g.awaitChange(f, true); err != nil {
				nodeID, _ := NodeOf(t.ID)
				return PromotedVoter, wrapChange(g.id, "promote", nodeID, err)
			}
			index = f.Index()
		}
		return PromotedVoter, nil
	case RemovedServer:
		f := g.raft.RemoveServer(target.ID, cfgIndex, timeout)
		return RemovedServer, wrapChange(g.id, "remove", nodeID, g.awaitChange(f, true))
	case TransferredLeadership:
		f := g.raft.LeadershipTransferToServer(target.ID, target.Address)
		return TransferredLeadership, wrapChange(g.id, "transfer leadership", nodeID, g.awaitChange(f, false))
	}
	return NoChange, fmt.Errorf("raftgroup: partition %d: unknown planned change %v", g.id, p.kind)
}

// errChangePending says a configuration change was not answered within the apply timeout.
// It may still take effect; the next Reconcile reads the configuration afresh.
var errChangePending = errors.New("not answered within the apply timeout; it may still take effect")

// awaitChange is await bounded by the apply timeout. A leader whose change cannot commit keeps
// its office for as long as a quorum answers its heartbeats, and raft does not answer the
// change's future meanwhile; the caller, one convergence loop stepping every group this node
// leads, must not wait on one group for ever. The goroutine left waiting ends with the
// answer or with the group.
//
// With entry set, f is a configuration entry, and every CommitTimeout it stays unanswered
// the leader appends an empty entry behind it (appendEmpty). hashicorp/raft counts a
// follower's acknowledgements toward commitment only while the follower votes, and it starts
// counting a promoted voter only after appending the entry that promotes it: an
// acknowledgement of that entry arriving in between is dropped, and the new voter counts as
// having nothing until it acknowledges a later entry. When every live voter's acknowledgement
// is needed (one voter of three is dead and a fourth is being promoted to replace it), an idle
// group then never commits the promotion, and accepts no other change meanwhile. The empty
// entry is that later entry.
func (g *Group) awaitChange(f raft.Future, entry bool) error {
	bindShutdown(f, g.done)
	answer := make(chan error, 1)
	go func() { answer <- f.Error() }()
	timer := time.NewTimer(g.m.cfg.Tuning.ApplyTimeout)
	defer timer.Stop()
	var nudge <-chan time.Time
	if entry {
		ticker := time.NewTicker(g.m.cfg.Tuning.CommitTimeout)
		defer ticker.Stop()
		nudge = ticker.C
	}
	for {
		select {
		case err := <-answer:
			return err
		case <-nudge:
			// Not awaited: the change's own answer is what counts. An entry raft takes
			// before the change itself (the leader loop picks from both queues) is harmless,
			// and the next tick sends another.
			g.appendEmpty()
		case <-timer.C:
			return errChangePending
		}
	}
}

// caughtUp asks a learner whether it has applied everything this leader has committed.
func (g *Group) caughtUp(learner raft.Server) bool {
	hostPort, _, err := SplitAddress(learner.Address)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(g.ctx, time.Second)
	defer cancel()
	err = g.m.cfg.WaitApplied(ctx, hostPort, g.id, g.visibleIndex(g.raft.CommitIndex()))
	if err != nil {
		nodeID, _ := NodeOf(learner.ID)
		g.logger.Debug("learner not caught up", "learner", nodeID, "err", err)
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

// Voters returns the node IDs of the voters in the group's latest configuration as this
// replica knows it, in configuration order.
func (g *Group) Voters() ([]string, error) {
	cfg, err := g.Configuration()
	if err != nil {
		return nil, err
	}
	var voters []string
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			nodeID, _ := NodeOf(s.ID)
			voters = append(voters, nodeID)
		}
	}
	return voters, nil
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
	return droppable(cfg.Servers, index, g.raft.CommitIndex(), id), nil
}

// ServerID returns this replica's Raft server ID.
func (g *Group) ServerID() string { return string(g.self) }
