package raftgroup

import "github.com/hashicorp/raft"

// The decisions behind Reconcile and Retired, apart from the Raft calls that carry them out:
// pure functions of a configuration and what the leader learnt about its learners, so that
// tests can state each situation in a table (plan_test.go) instead of staging it on a cluster.

// reconcileState is what the leader's next membership change is decided from.
type reconcileState struct {
	servers []raft.Server // the group's latest configuration, in its order
	self    raft.ServerID // the leader deciding
	desired []Replica     // in ring order: the first is the preferred leader
	// caughtUp holds the learners that have applied everything the leader committed. Only
	// the learners learnersToAsk names are consulted; one missing counts as not caught up.
	caughtUp map[raft.ServerID]bool
	balance  bool // hand leadership to the preferred replica
}

// plannedChange is one step toward the desired replicas: kind NoChange, or a change with its
// target, or two targets when two learners are promoted (in that order).
type plannedChange struct {
	kind    Change
	targets []raft.Server
}

// nextChange decides the one membership change the leader makes next. In order: add a missing
// desired replica as a learner; promote caught-up learners (see promotion); remove a server
// that is not desired, a voter only once every desired replica votes, and handing leadership
// away first if it is the leader itself; with balance, hand leadership to the preferred
// replica once it votes.
func nextChange(s reconcileState) plannedChange {
	if len(s.desired) == 0 {
		return plannedChange{}
	}
	current := serversByID(s.servers)
	for _, d := range s.desired {
		if _, ok := current[d.serverID()]; !ok {
			add := raft.Server{Suffrage: raft.Nonvoter, ID: d.serverID(), Address: ServerAddress(d.Addr, d.Incarnation)}
			return plannedChange{kind: AddedLearner, targets: []raft.Server{add}}
		}
	}
	if p := promotion(s, current); p.kind != NoChange {
		return p
	}
	// A voter leaves only once every desired replica votes: removing one earlier shrinks the
	// group below its replica count (often to two voters, which stop committing when either
	// stalls) while the replicas meant to replace it are still catching up.
	allVote := true
	want := make(map[raft.ServerID]bool, len(s.desired))
	for _, d := range s.desired {
		want[d.serverID()] = true
		if srv, ok := current[d.serverID()]; !ok || srv.Suffrage != raft.Voter {
			allVote = false
		}
	}
	for _, srv := range s.servers {
		if want[srv.ID] || (srv.Suffrage == raft.Voter && !allVote) {
			continue
		}
		if srv.ID == s.self {
			return transferTo(s.desired, current, s.self)
		}
		return plannedChange{kind: RemovedServer, targets: []raft.Server{srv}}
	}
	if s.balance && s.desired[0].serverID() != s.self {
		// Only to the preferred replica itself: handing leadership to any other voter could
		// bounce it between replicas that are both not preferred.
		return transferTo(s.desired[:1], current, s.self)
	}
	return plannedChange{}
}

// learnersToAsk returns the learners whose catch-up nextChange will consult: the desired
// replicas the configuration holds as non-voters, in desired order. None while a desired
// replica is missing, since adding it comes first. Asking only these keeps the leader from
// questioning replicas whose answer cannot change its decision.
func learnersToAsk(s reconcileState) []raft.Server {
	current := serversByID(s.servers)
	for _, d := range s.desired {
		if _, ok := current[d.serverID()]; !ok {
			return nil
		}
	}
	return desiredLearners(s.desired, current)
}

// promotion makes caught-up learners voters. From an odd number of voters it promotes two at
// once (back to back) when it can, and waits while it cannot: a group left at an even size,
// two voters above all, stops committing if either fails, and cannot even commit its own
// repair.
func promotion(s reconcileState, current map[raft.ServerID]raft.Server) plannedChange {
	voters := 0
	for _, srv := range current {
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	learners := desiredLearners(s.desired, current)
	var ready []raft.Server
	for _, l := range learners {
		if s.caughtUp[l.ID] {
			ready = append(ready, l)
		}
	}
	if len(ready) == 0 || (voters%2 == 1 && len(learners) >= 2 && len(ready) < 2) {
		return plannedChange{}
	}
	if voters%2 == 0 || len(ready) == 1 {
		ready = ready[:1]
	} else {
		ready = ready[:2]
	}
	return plannedChange{kind: PromotedVoter, targets: ready}
}

// transferTo hands leadership to the first of candidates that votes and is not self.
func transferTo(candidates []Replica, current map[raft.ServerID]raft.Server, self raft.ServerID) plannedChange {
	for _, d := range candidates {
		srv, ok := current[d.serverID()]
		if !ok || srv.Suffrage != raft.Voter || srv.ID == self {
			continue
		}
		return plannedChange{kind: TransferredLeadership, targets: []raft.Server{srv}}
	}
	return plannedChange{}
}

// desiredLearners returns the desired replicas that current holds as non-voters, in desired
// order.
func desiredLearners(desired []Replica, current map[raft.ServerID]raft.Server) []raft.Server {
	var learners []raft.Server
	for _, d := range desired {
		if srv, ok := current[d.serverID()]; ok && srv.Suffrage != raft.Voter {
			learners = append(learners, srv)
		}
	}
	return learners
}

func serversByID(servers []raft.Server) map[raft.ServerID]raft.Server {
	m := make(map[raft.ServerID]raft.Server, len(servers))
	for _, srv := range servers {
		m[srv.ID] = srv
	}
	return m
}

// droppable reports whether the replica with server ID id may be dropped for good, given a
// replica's latest configuration (servers, at log index cfgIndex) and its commit index: only
// once a configuration without it is committed. While the configuration lists it, or the one
// that leaves it out may still be lost to a new leader, the group may count on it again.
func droppable(servers []raft.Server, cfgIndex, commitIndex uint64, id raft.ServerID) bool {
	for _, srv := range servers {
		if srv.ID == id {
			return false
		}
	}
	return commitIndex >= cfgIndex
}
