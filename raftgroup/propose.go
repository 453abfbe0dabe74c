package raftgroup

import (
	"context"
	"fmt"
	"sync"

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

type proposal struct {
	cmd   store.Command
	level WriteLevel
	once  sync.Once
	done  chan proposalResult // buffered 1; receives exactly one result
}

type proposalResult struct {
	res store.Result
	err error
}

func (p *proposal) finish(res store.Result, err error) {
	p.once.Do(func() { p.done <- proposalResult{res: res, err: err} })
}

// submitted is a batch handed to raft, waiting for its future.
type submitted struct {
	future raft.ApplyFuture
	data   []byte
	batch  []*proposal
	watch  bool // registered with the append notifier
}

// Propose replicates cmd through the group's log and returns its result. It fails at once
// with a *NotLeaderError when this replica is not the leader. If ctx ends after the command
// was handed to raft, the error wraps both ctx's error and ErrOutcomeUnknown.
func (g *Group) Propose(ctx context.Context, cmd store.Command, level WriteLevel) (store.Result, error) {
	if g.raft.State() != raft.Leader {
		return store.Result{}, g.notLeader()
	}
	p := &proposal{cmd: cmd, level: level, done: make(chan proposalResult, 1)}
	select {
	case g.proposal <- p:
	case <-ctx.Done():
		return store.Result{}, ctx.Err()
	case <-g.done:
		return store.Result{}, ErrClosed
	}
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-ctx.Done():
		return store.Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	case <-g.done:
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
			g.failQueued()
			return
		}
		batch := []*proposal{first}
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
		g.submit(batch)
	}
}

func (g *Group) submit(batch []*proposal) {
	g.entries.Add(1)
	g.commands.Add(uint64(len(batch)))
	cmds := make([]store.Command, len(batch))
	watch := false
	for i, p := range batch {
		cmds[i] = p.cmd
		if p.level.Ack == AckAppend && p.cmd.Op != store.OpCAS {
			watch = true
		}
	}
	data := store.AppendBatch(nil, cmds) // sized exactly: the log keeps this buffer
	if watch {
		g.logs.watch(data, func(index uint64) {
			for i, p := range batch {
				if p.level.Ack == AckAppend && p.cmd.Op != store.OpCAS {
					p.finish(store.Result{Version: store.Version(index, i)}, nil)
				}
			}
		})
	}
	f := g.raft.Apply(data, g.m.cfg.Tuning.ApplyTimeout)
	g.resolve <- submitted{future: f, data: data, batch: batch, watch: watch}
}

// resolveLoop waits for submitted batches in log order and hands each proposal its result.
func (g *Group) resolveLoop() {
	defer g.wg.Done()
	for {
		select {
		case s := <-g.resolve:
			g.resolveBatch(s)
			<-g.inflight
		case <-g.done:
			for {
				select {
				case s := <-g.resolve:
					for _, p := range s.batch {
						p.finish(store.Result{}, ErrClosed)
					}
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
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				p.finish(res, g.waitReplicasApplied(index, p.level.Replicas))
			}()
			continue
		}
		p.finish(res, nil)
	}
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
		default:
			return
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
