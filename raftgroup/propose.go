package raftgroup

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/feellmoose/gridkv/store"
	"github.com/hashicorp/raft"
)

// Ack says when a write is acknowledged; see DESIGN.md's quorum table.
type Ack int

const (
	// AckCommit acknowledges once a majority holds the entry and the leader applied it.
	AckCommit Ack = iota
	// AckAppend acknowledges once the leader has appended the entry to its log, before commit.
	// The write can be lost if the leader dies. Commands whose result is decided at apply
	// (compare-and-swap) are still acknowledged at commit.
	AckAppend
	// AckApplied acknowledges once Replicas voters (the leader included) have applied it.
	AckApplied
)

// WriteLevel is a write's acknowledgement level.
type WriteLevel struct {
	Ack      Ack
	Replicas int // AckApplied only
}

// proposal is one command on its way through the log. Proposals are pooled: a write costs
// no allocation of its own. Two holders share one: the proposer, until Propose returns, and
// the pipeline (batcher, resolver, the goroutine of an AckApplied wait), until it has
// answered. Each lets go with release; the last one returns it to the pool. A proposal
// whose batch is watched by the append notifier is never let go by the pipeline (the
// notifier's callback may run at any time), so it is left to the garbage collector.
type proposal struct {
	cmd      store.Command
	level    WriteLevel
	finished atomic.Bool         // set by the first finish: exactly one result is sent
	refs     atomic.Int32        // holders left; see above
	done     chan proposalResult // buffered 1; receives exactly one result
}

type proposalResult struct {
	res store.Result
	err error
}

var proposalPool = sync.Pool{New: func() any { return &proposal{done: make(chan proposalResult, 1)} }}

// newProposal returns a proposal held by the proposer and the pipeline.
func newProposal(cmd store.Command, level WriteLevel) *proposal {
	p := proposalPool.Get().(*proposal)
	p.cmd, p.level = cmd, level
	p.refs.Store(2)
	return p
}

func (p *proposal) finish(res store.Result, err error) {
	if p.finished.CompareAndSwap(false, true) {
		p.done <- proposalResult{res: res, err: err}
	}
}

// release lets go of one holder's share. The last holder takes out a result nobody
// received (its proposer gave up) and returns the proposal to the pool: no finish can
// follow, since only the pipeline finishes and it has let go.
func (p *proposal) release() {
	if p.refs.Add(-1) != 0 {
		return
	}
	select {
	case <-p.done:
	default:
	}
	p.cmd = store.Command{} // the caller's key and value must not stay reachable
	p.finished.Store(false)
	proposalPool.Put(p)
}

// batchPool holds the slices batches of proposals are gathered in (*[]*proposal).
var batchPool = sync.Pool{New: func() any { return new([]*proposal) }}

// submitted is a batch handed to raft, waiting for its future.
type submitted struct {
	future raft.ApplyFuture
	data   []byte
	batch  []*proposal
	buf    *[]*proposal // batch's slice, from batchPool
	watch  bool         // registered with the append notifier
}

// Propose replicates cmd through the group's log and returns its result. It fails at once
// with a *NotLeaderError when this replica is not the leader. If ctx ends after the command
// was handed to raft, the error wraps both ctx's error and ErrOutcomeUnknown.
func (g *Group) Propose(ctx context.Context, cmd store.Command, level WriteLevel) (store.Result, error) {
	return g.Start(ctx, cmd, level).Wait(ctx)
}

// Pending is a command on its way through a group's log, as Start returns it, or a result
// known at once (Done). Its Wait must be called exactly once: it gives the result and lets
// go of the command's place in the pipeline.
type Pending struct {
	g   *Group
	p   *proposal // nil: res and err are the result
	res store.Result
	err error
}

// Done returns a Pending whose Wait gives res and err at once.
func Done(res store.Result, err error) Pending { return Pending{res: res, err: err} }

// Start hands cmd to the group's log as Propose does, without waiting for its result: a
// caller with many commands starts them all, so that they can share a log entry, and then
// waits for each. Start blocks only while the group's queue is full. Its errors (not the
// leader, ctx ended before the command was queued, the group closed) come from Wait.
func (g *Group) Start(ctx context.Context, cmd store.Command, level WriteLevel) Pending {
	if g.raft.State() != raft.Leader {
		return Done(store.Result{}, g.notLeader())
	}
	p := newProposal(cmd, level)
	select {
	case g.proposal <- p:
		return Pending{g: g, p: p}
	case <-ctx.Done():
		p.refs.Store(1) // the pipeline never had it
		p.release()
		return Done(store.Result{}, ctx.Err())
	case <-g.done:
		p.refs.Store(1)
		p.release()
		return Done(store.Result{}, ErrClosed)
	}
}

// Wait returns the command's result once it has one, or when ctx ends (the error then wraps
// ctx's error and ErrOutcomeUnknown) or the group closes.
func (pd Pending) Wait(ctx context.Context) (store.Result, error) {
	p := pd.p
	if p == nil {
		return pd.res, pd.err
	}
	defer p.release()
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-ctx.Done():
		return store.Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	case <-pd.g.done:
		return store.Result{}, ErrClosed
	}
}

// batchLoop gathers waiting proposals into batches, one Raft log entry each. It holds at most
// MaxInflightBatches batches in raft at once: while they replicate, new proposals pile up and
// leave together in the next entry, so the per-entry cost is shared under load.
func (g *Group) batchLoop() {
	defer g.wg.Done()
	maxBatch := g.m.cfg.Tuning.MaxBatch
	maxBytes := g.m.cfg.Tuning.MaxBatchBytes
	var cmds []store.Command
	for {
		var first *proposal
		select {
		case first = <-g.proposal:
		case <-g.done:
			g.failQueued()
			return
		}
		select {
		case g.inflight <- struct{}{}:
		case <-g.done:
			first.finish(store.Result{}, ErrClosed)
			first.release()
			g.failQueued()
			return
		}
		buf := batchPool.Get().(*[]*proposal)
		batch := append((*buf)[:0], first)
		size := len(first.cmd.Key) + len(first.cmd.Value)
	gather:
		for len(batch) < maxBatch && size < maxBytes {
			select {
			case p := <-g.proposal:
				batch = append(batch, p)
				size += len(p.cmd.Key) + len(p.cmd.Value)
			default:
				break gather
			}
		}
		*buf = batch
		cmds = g.submit(buf, cmds)
	}
}

// submit hands batch to raft as one log entry. cmds is scratch space for the commands,
// returned for the next call: they are encoded into the entry before submit returns.
func (g *Group) submit(buf *[]*proposal, cmds []store.Command) []store.Command {
	batch := *buf
	g.entries.Add(1)
	g.commands.Add(uint64(len(batch)))
	cmds = cmds[:0]
	watch := false
	for _, p := range batch {
		cmds = append(cmds, p.cmd)
		if p.level.Ack == AckAppend && p.cmd.Op != store.OpCAS {
			watch = true
		}
	}
	data := store.AppendBatch(nil, cmds) // sized exactly: the log keeps this buffer
	clear(cmds)                          // keys and values belong to the proposers
	if watch {
		g.logs.watch(data, func(index uint64) {
			for i, p := range batch {
				if p.level.Ack == AckAppend && p.cmd.Op != store.OpCAS {
					p.finish(store.Result{Version: store.Version(index, i)}, nil)
				}
			}
		})
	}
	g.fsm.answering.Add(1) // until resolveLoop has read the result
	f := g.raft.Apply(data, g.m.cfg.Tuning.ApplyTimeout)
	g.resolve <- submitted{future: f, data: data, batch: batch, buf: buf, watch: watch}
	return cmds
}

// resolveLoop waits for submitted batches in log order and hands each proposal its result.
func (g *Group) resolveLoop() {
	defer g.wg.Done()
	for {
		select {
		case s := <-g.resolve:
			g.resolveBatch(s)
			g.fsm.answering.Add(-1)
			g.letGo(s)
			<-g.inflight
		case <-g.done:
			for {
				select {
				case s := <-g.resolve:
					for _, p := range s.batch {
						p.finish(store.Result{}, ErrClosed)
					}
					g.fsm.answering.Add(-1)
					g.letGo(s)
				default:
					return
				}
			}
		}
	}
}

func (g *Group) resolveBatch(s submitted) {
	err := g.await(s.future)
	if err != nil {
		if s.watch {
			g.logs.forget(s.data)
		}
		// Errors saying the entry never reached the log map to retryable ones first.
		mapped := g.mapRaftError(err, true)
		for _, p := range s.batch {
			p.finish(store.Result{}, mapped)
		}
		return
	}
	var results []store.Result
	switch resp := s.future.Response().(type) {
	case []store.Result:
		results = resp
	case error:
		err = resp
	default:
		err = fmt.Errorf("raftgroup: partition %d: unexpected apply response %T", g.id, resp)
	}
	if err == nil && len(results) != len(s.batch) {
		err = fmt.Errorf("raftgroup: partition %d: %d results for %d commands", g.id, len(results), len(s.batch))
	}
	if err != nil {
		for _, p := range s.batch {
			p.finish(store.Result{}, err)
		}
		return
	}
	index := s.future.Index()
	for i, p := range s.batch {
		res := results[i]
		if p.level.Ack == AckApplied && p.level.Replicas > 1 {
			p.refs.Add(1) // the goroutine's share: letGo drops the batch's
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				p.finish(res, g.waitReplicasApplied(index, p.level.Replicas))
				p.release()
			}()
			continue
		}
		p.finish(res, nil)
	}
}

// letGo ends the pipeline's hold on a resolved batch: every proposal in it has its result
// (or a goroutine that will send it holds its own share). A watched batch is kept from the
// pools: the append notifier's callback may still run with it.
func (g *Group) letGo(s submitted) {
	if s.watch {
		return
	}
	for i, p := range s.batch {
		p.release()
		s.batch[i] = nil
	}
	batchPool.Put(s.buf)
}

// Batching returns how many log entries this replica proposed as leader and how many commands
// they carried.
func (g *Group) Batching() (entries, commands uint64) {
	return g.entries.Load(), g.commands.Load()
}

// failQueued answers every proposal still queued when the group stops.
func (g *Group) failQueued() {
	for {
		select {
		case p := <-g.proposal:
			p.finish(store.Result{}, ErrClosed)
			p.release()
		default:
			return
		}
	}
}

// nudgeCommit makes sure followers hear soon that index, which this leader has applied, is
// committed. They learn a commit index from the AppendEntries that carries the next entry; with
// no next entry, only from the empty append raft sends after CommitTimeout (200-400 ms by
// default), which a write waiting for its replicas to apply it would wait out. appendEmpty
// makes such a next entry: it costs one small log entry, only when nothing newer is in the log.
func (g *Group) nudgeCommit(index uint64) {
	if !raise(&g.commitSent, index) {
		return // an earlier nudge, for this batch or a later one, carries it
	}
	if g.raft.LastIndex() > index {
		return // a newer entry is already on its way, and with it the commit index
	}
	// Not awaited: should it fail (leadership lost, shutdown), the replicas are asked anyway
	// and the write's own wait reports what they answer.
	g.appendEmpty()
}

// appendEmpty appends, without waiting for it, a command entry that holds no command, to
// follow entries that need a successor (nudgeCommit, awaitChange). Every replica's state
// machine marks it applied. A raft barrier would not do: state machines never see barriers, so
// a linearizable read whose commit index ended at one would wait (waitCovered) for the
// applied index to reach it, that is for the next write. Raft taking longer than
// CommitTimeout to accept it would have sent its own empty append by then.
func (g *Group) appendEmpty() {
	g.raft.Apply(nil, g.m.cfg.Tuning.CommitTimeout)
}

// raise sets a to v if v is greater and reports whether it did.
func raise(a *atomic.Uint64, v uint64) bool {
	for {
		old := a.Load()
		if v <= old {
			return false
		}
		if a.CompareAndSwap(old, v) {
			return true
		}
	}
}

// waitReplicasApplied waits until n voters (this leader included, which has applied index
// already) have applied index, asking the others over the network.
func (g *Group) waitReplicasApplied(index uint64, n int) error {
	cfg, err := g.Configuration()
	if err != nil {
		return g.mapRaftError(err, true)
	}
	var others []raft.Server
	voters := 0
	for _, s := range cfg.Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID != g.self {
			others = append(others, s)
		}
	}
	need := min(n, voters) - 1
	if need <= 0 {
		return nil
	}
	g.nudgeCommit(index)
	ctx, cancel := context.WithTimeout(g.ctx, g.m.cfg.Tuning.ApplyTimeout)
	defer cancel() // ends the questions still out once enough answered
	results := make(chan error, len(others))
	g.wg.Add(len(others)) // this runs on a goroutine of g.wg: never at zero here
	for _, s := range others {
		go func() {
			defer g.wg.Done()
			hostPort, _, err := SplitAddress(s.Address)
			if err == nil {
				err = g.m.cfg.WaitApplied(ctx, hostPort, g.id, index)
			}
			results <- err
		}()
	}
	var lastErr error
	for range others {
		select {
		case err := <-results:
			if err == nil {
				need--
				if need == 0 {
					return nil
				}
			} else {
				lastErr = err
			}
		case <-g.done:
			return ErrClosed
		}
	}
	return fmt.Errorf("raftgroup: partition %d: %w: too few replicas applied index %d: %v", g.id, ErrOutcomeUnknown, index, lastErr)
}
