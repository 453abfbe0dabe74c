package raftgroup

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/feellmoose/gridkv/internal/timerpool"
	"github.com/hashicorp/raft"
)

// A linearizable read needs proof that no leader of a later term can have committed anything
// before the read began. raft's VerifyLeader gets it with a heartbeat round: every follower
// that accepts a heartbeat of term T was, at that moment, in no term after T. Term checks get
// the same proof without going through either side's Raft loop, and carry the checks of every
// group this node leads to a peer in one call:
//
//   - A replica raises its term before it votes in an election (a candidate before voting for
//     itself, a voter before granting), and raft keeps the term in an atomic. So a replica that
//     reads its term as at most T has voted in no election after T.
//   - A leader of a later term needs votes from a majority of the voters; any such majority
//     shares a voter with a majority of the leader's latest configuration.
//   - So when a majority, this leader included, answers "at most T" after a read began, no
//     later leader existed when the read began, and the leader's commit index, read after the
//     read began, covers every write completed before it.
//
// A check that cannot be answered (a peer down, slow, or too old to know the request) counts
// as no; when no majority says yes the read falls back to VerifyLeader, which also makes a
// deposed leader step down.

// MaxTermChecks bounds the checks one call carries.
const MaxTermChecks = 1024

// TermCheck asks a node whether its replica of Partition is Server and has not moved past
// Term.
type TermCheck struct {
	Partition int    `msgpack:"p"`
	Server    string `msgpack:"s"`
	Term      uint64 `msgpack:"t"`
}

// CheckTerms answers term checks for this node's replicas, in order. A partition not hosted
// here, or hosted under another server ID, answers no.
func (m *Manager) CheckTerms(checks []TermCheck) []bool {
	out := make([]bool, len(checks))
	for i, c := range checks {
		g := m.Group(c.Partition)
		out[i] = g != nil && string(g.self) == c.Server && g.raft.CurrentTerm() <= c.Term
	}
	return out
}

// termCheckHedge is how long a read waits on the peers it asked first before it asks
// the rest too.
const termCheckHedge = 10 * time.Millisecond

// confirmTerm reports whether a majority of the voters in this replica's latest configuration,
// itself included, stand in term, asked now. False means not shown, not disproved.
//
// Only as many peers as a majority needs are asked at first, the one that last said yes
// leading; the others are asked when one says no or termCheckHedge passes without a majority.
// While answers are late it gives up as soon as this replica is no longer leader in term.
func (g *Group) confirmTerm(ctx context.Context, term uint64) bool {
	var buf [8]raft.Server
	voters, isVoter, peers := g.voters(buf[:0])
	if !isVoter {
		return false
	}
	need := voters / 2 // a majority is voters/2+1, this replica being one
	if need == 0 {
		return true
	}
	c := g.m.confirm
	if c == nil {
		return false
	}
	if pref, ok := g.preferredPeer.Load().(raft.ServerID); ok {
		for i, s := range peers {
			if s.ID == pref {
				peers[0], peers[i] = peers[i], peers[0]
				break
			}
		}
	}

	answers := make(chan checkAnswer, len(peers)) // never blocks a sender
	asked := 0
	askNext := func() {
		s := peers[asked]
		hostPort, _, err := SplitAddress(s.Address)
		if err != nil {
			answers <- checkAnswer{peer: asked}
		} else {
			c.ask(hostPort, TermCheck{Partition: g.id, Server: string(s.ID), Term: term}, asked, answers)
		}
		asked++
	}
	hedge := timerpool.Get(termCheckHedge) // a read costs no timer of its own
	defer timerpool.Put(hedge)
	yes, no := 0, 0
	for yes < need {
		for asked-no < need && asked < len(peers) { // asked-no: yes plus answers still due
			askNext()
		}
		if asked-no < need {
			return false // every peer asked, too many said no
		}
		select {
		case a := <-answers:
			if !a.ok {
				no++
				continue
			}
			yes++
			if id := peers[a.peer].ID; g.preferredPeer.Load() != id {
				g.preferredPeer.Store(id)
			}
		case <-hedge.C:
			for asked < len(peers) {
				askNext()
			}
			// Answers are slow: stop waiting once this replica is deposed.
			if g.raft.State() != raft.Leader || g.raft.CurrentTerm() != term {
				return false
			}
			hedge.Reset(termCheckHedge)
		case <-ctx.Done():
			return false
		case <-g.done:
			return false
		}
	}
	return true
}

// termConfirmer carries term checks to peers with one call in flight per peer: checks that
// come up meanwhile, from any group, leave together in the next call.
type termConfirmer struct {
	call    func(ctx context.Context, addr string, checks []TermCheck) ([]bool, error)
	timeout time.Duration
	logger  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex             // guards peers, closed, and the waiting list of every queue in peers
	peers  map[string]*checkQueue // only peers with a call in flight: ask starts a sender for the others
	closed bool                   // set by close: ask answers no without queueing
}

// checkQueue holds the checks for one peer that wait for its sender's next call. Its
// waiting list is guarded by termConfirmer.mu.
type checkQueue struct{ waiting []pendingCheck }

type pendingCheck struct {
	check  TermCheck
	peer   int // echoed in the answer
	answer chan<- checkAnswer
}

type checkAnswer struct {
	peer int
	ok   bool
}

func newTermConfirmer(call func(context.Context, string, []TermCheck) ([]bool, error), timeout time.Duration, logger *slog.Logger) *termConfirmer {
	ctx, cancel := context.WithCancel(context.Background())
	return &termConfirmer{call: call, timeout: timeout, logger: logger, ctx: ctx, cancel: cancel, peers: make(map[string]*checkQueue)}
}

// ask queues check for the node at addr; its answer, tagged with peer, arrives on answer,
// which must have room.
func (c *termConfirmer) ask(addr string, check TermCheck, peer int, answer chan<- checkAnswer) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		answer <- checkAnswer{peer: peer}
		return
	}
	q, busy := c.peers[addr]
	if !busy {
		q = &checkQueue{}
		c.peers[addr] = q
		c.wg.Add(1)
	}
	q.waiting = append(q.waiting, pendingCheck{check: check, peer: peer, answer: answer})
	c.mu.Unlock()
	if !busy {
		go c.send(addr, q)
	}
}

// send calls addr with whatever is queued for it until nothing is.
func (c *termConfirmer) send(addr string, q *checkQueue) {
	defer c.wg.Done()
	var (
		batch  []pendingCheck
		checks []TermCheck // what goes on the wire: many reads of a group ask the same
		at     []int       // batch[i] is answered by checks[at[i]]
		slot   = make(map[TermCheck]int)
	)
	for {
		batch, checks, at = batch[:0], checks[:0], at[:0]
		clear(slot)
		c.mu.Lock()
		n := 0
		for _, p := range q.waiting {
			j, ok := slot[p.check]
			if !ok {
				if len(checks) == MaxTermChecks {
					break
				}
				j = len(checks)
				slot[p.check] = j
				checks = append(checks, p.check)
			}
			batch = append(batch, p)
			at = append(at, j)
			n++
		}
		q.waiting = append(q.waiting[:0], q.waiting[n:]...)
		if n == 0 {
			delete(c.peers, addr)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
		oks, err := c.call(ctx, addr, checks)
		cancel()
		if err == nil && len(oks) != len(checks) {
			err = fmt.Errorf("raftgroup: %d answers to %d term checks", len(oks), len(checks))
		}
		if err != nil {
			c.logger.Debug("term checks failed; reads fall back to a heartbeat round", "peer", addr, "checks", len(checks), "error", err)
		}
		for i, p := range batch {
			p.answer <- checkAnswer{peer: p.peer, ok: err == nil && oks[at[i]]}
		}
	}
}

// close fails queued checks from now on, ends calls in flight and waits for the senders.
func (c *termConfirmer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}
