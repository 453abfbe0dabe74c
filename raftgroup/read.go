package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/raft"
)

// ReadIndex returns nil once this replica's state machine reflects every write that committed
// before the call, with this replica confirmed as leader meanwhile: a read of the local
// partition after it is linearizable.
//
// Leadership is confirmed by term checks (confirm.go), asked by the caller itself: checks of
// many reads leave for a peer together and each is sent once. When they do not show a
// majority, or the term has had no barrier yet, the read joins a round of the read loop,
// where every read waiting at that moment shares one barrier or heartbeat round.
func (g *Group) ReadIndex(ctx context.Context) error {
	if g.raft.State() != raft.Leader {
		return g.notLeader()
	}
	checked := false
	if served, err := g.serveConfirmed(ctx, func(term uint64) bool {
		checked = true
		return g.confirmTerm(ctx, term)
	}); served {
		g.confirmedReads.Add(1)
		return err
	}
	req := readRequest{done: make(chan error, 1), checksFailed: checked}
	done := req.done
	select {
	case g.reads <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.done:
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-g.done:
		return ErrClosed
	}
}

// readRequest is a read that needs a round of the read loop.
type readRequest struct {
	done         chan error
	checksFailed bool // its own term checks showed no majority: go to the heartbeat round
}

// readLoop serves read-index requests in rounds: it takes every request waiting, confirms
// leadership once for all of them, waits for the state machine to catch up, and releases
// them. Requests that arrive during a round wait for the next.
func (g *Group) readLoop() {
	defer g.wg.Done()
	var waiting []chan error
	for {
		var checksFailed bool
		select {
		case r := <-g.reads:
			waiting, checksFailed = append(waiting[:0], r.done), r.checksFailed
		case <-g.done:
			return
		}
	drain:
		for {
			select {
			case r := <-g.reads:
				waiting, checksFailed = append(waiting, r.done), checksFailed || r.checksFailed
			default:
				break drain
			}
		}
		err := g.readRound(checksFailed)
		for _, w := range waiting {
			w <- err
		}
	}
}

// readRound runs the read-index protocol once: term checks unless skipChecks, then raft's
// heartbeat round if they did not show a majority.
func (g *Group) readRound(skipChecks bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), g.m.cfg.Tuning.ApplyTimeout)
	defer cancel()
	if g.raft.State() != raft.Leader {
		return g.notLeader()
	}
	term := g.raft.CurrentTerm()
	if g.readyTerm.Load() != term {
		// A new leader's commit index may lag entries committed in earlier terms until an
		// entry of its own term commits (hashicorp/raft #359). A barrier commits one and waits
		// for the state machine to apply everything before it.
		b := g.raft.Barrier(g.m.cfg.Tuning.ApplyTimeout)
		if err := g.await(b); err != nil {
			return g.mapRaftError(err, false)
		}
		ib, ok := b.(raft.IndexFuture)
		if !ok {
			return fmt.Errorf("raftgroup: partition %d: barrier future has no index", g.id)
		}
		g.barrierIndex.Store(ib.Index())
		g.readyTerm.Store(term)
	}
	index := g.raft.CommitIndex()
	g.readRounds.Add(1)
	if skipChecks || !g.confirmTerm(ctx, term) {
		g.heartbeatRounds.Add(1)
		if err := g.await(g.raft.VerifyLeader()); err != nil {
			return g.mapRaftError(err, false)
		}
	}
	// Leadership confirmed in the same term that produced index: no other leader can have
	// committed anything newer in between.
	if g.raft.CurrentTerm() != term {
		return g.notLeader()
	}
	if err := g.waitCovered(ctx, index); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return g.mapRaftError(err, false)
		}
		return err
	}
	return nil
}

// waitCovered waits until every command at or below index is reflected in the state machine.
// Entries the state machine never sees (no-ops, barriers) only occur at the start of a term,
// at or before this term's barrier, which waited for everything before it to apply; every
// later entry is a command or a configuration change, and those advance the state machine's
// applied index.
func (g *Group) waitCovered(ctx context.Context, index uint64) error {
	return g.waitCoveredBy(ctx, index, g.barrierIndex.Load())
}

func (g *Group) waitCoveredBy(ctx context.Context, index, barrier uint64) error {
	if index <= barrier {
		return nil
	}
	return g.waitApplied(ctx, index)
}

// Term returns this replica's current Raft term: what a linearizable read forwarded from here
// carries as this replica's vouch (see ReadIndexVouched).
func (g *Group) Term() uint64 { return g.raft.CurrentTerm() }

// ReadIndexVouched is ReadIndex for a read forwarded by another replica of the group, server,
// which read its own term as at most term after the read began. That counts as its answer to
// a term check (confirm.go): when this leader and the voucher are a majority of the voters,
// the read needs no round of its own. Otherwise, or when the vouch does not fit this term, it
// is an ordinary ReadIndex.
func (g *Group) ReadIndexVouched(ctx context.Context, server string, term uint64) error {
	if g.raft.State() != raft.Leader {
		return g.notLeader()
	}
	if served, err := g.serveConfirmed(ctx, func(t uint64) bool {
		return term <= t && g.vouchIsMajority(raft.ServerID(server))
	}); served {
		g.vouchedReads.Add(1)
		return err
	}
	return g.ReadIndex(ctx)
}

// serveConfirmed serves a read without the read loop when this term's barrier is done and
// confirm shows, after the read began, that no later leader exists. It reads the commit index
// and the barrier before confirming, and checks that this replica led the same term
// throughout, so both are this term's. served is false when the read still needs the loop.
func (g *Group) serveConfirmed(ctx context.Context, confirm func(term uint64) bool) (served bool, err error) {
	term := g.raft.CurrentTerm()
	if g.readyTerm.Load() != term {
		return false, nil
	}
	index := g.raft.CommitIndex()
	barrier := g.barrierIndex.Load()
	if !confirm(term) || g.raft.State() != raft.Leader || g.raft.CurrentTerm() != term {
		return false, nil
	}
	return true, g.waitCoveredBy(ctx, index, barrier)
}

// vouchIsMajority reports whether this replica and server are both voters in the latest
// configuration and together a majority of its voters.
func (g *Group) vouchIsMajority(server raft.ServerID) bool {
	var buf [8]raft.Server
	voters, isVoter, peers := g.voters(buf[:0])
	return isVoter && 2 >= voters/2+1 && slices.ContainsFunc(peers, func(s raft.Server) bool { return s.ID == server })
}

// voters reads the latest configuration (a copy raft keeps; no trip through its loop): how
// many voters it has, whether this replica is one, and the others, appended to peers.
func (g *Group) voters(peers []raft.Server) (n int, isVoter bool, _ []raft.Server) {
	for _, s := range g.raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		n++
		if s.ID == g.self {
			isVoter = true
		} else {
			peers = append(peers, s)
		}
	}
	return n, isVoter, peers
}

// ReadStats counts what confirmed this replica's linearizable reads as leader since it
// started.
type ReadStats struct {
	Confirmed       uint64 // reads confirmed by their own term checks
	Vouched         uint64 // forwarded reads confirmed by the forwarder's vouch
	Rounds          uint64 // rounds of the read loop (a new term's barrier, or checks that failed)
	HeartbeatRounds uint64 // of those, rounds that needed raft's heartbeat round
}

// ReadStats returns the replica's read counters.
func (g *Group) ReadStats() ReadStats {
	return ReadStats{
		Confirmed:       g.confirmedReads.Load(),
		Vouched:         g.vouchedReads.Load(),
		Rounds:          g.readRounds.Load(),
		HeartbeatRounds: g.heartbeatRounds.Load(),
	}
}
