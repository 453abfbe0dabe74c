package gridkv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/feellmoose/gridkv/internal/protocol"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
	"github.com/feellmoose/gridkv/store"
)

// Entry is a value with its version.
type Entry struct {
	Key     string
	Value   []byte
	Version uint64
}

// Set stores value under key. The value is copied; the caller may reuse it.
func (kv *GridKV) Set(ctx context.Context, key string, value []byte, opts ...Option) error {
	if err := kv.checkWrite(key, value); err != nil {
		return err
	}
	_, err := kv.write(ctx, store.Command{Op: store.OpSet, Key: key, Value: value})
	return err
}

// Delete removes key. Deleting a missing key succeeds.
func (kv *GridKV) Delete(ctx context.Context, key string, opts ...Option) error {
	if err := kv.checkKey(key); err != nil {
		return err
	}
	_, err := kv.write(ctx, store.Command{Op: store.OpDelete, Key: key})
	if errors.Is(err, store.ErrKeyNotFound) {
		return nil
	}
	return err
}

// CompareAndSwap writes value only if the key's current version equals version (0: only if
// the key does not exist). It returns the new entry; on mismatch it returns
// ErrVersionMismatch and the current entry (Version 0 if absent). CompareAndSwap is always
// acknowledged at commit or later, since its outcome is decided when it applies.
func (kv *GridKV) CompareAndSwap(ctx context.Context, key string, version uint64, value []byte, opts ...Option) (Entry, error) {
	if err := kv.checkWrite(key, value); err != nil {
		return Entry{}, err
	}
	res, err := kv.write(ctx, store.Command{Op: store.OpCAS, Key: key, Value: value, Version: version})
	switch {
	case err == nil:
		return Entry{Key: key, Value: append([]byte(nil), value...), Version: res.Version}, nil
	case errors.Is(err, store.ErrVersionMismatch):
		return Entry{Key: key, Value: res.Value, Version: res.Version}, err
	default:
		return Entry{}, err
	}
}

// Get returns a copy of key's value, or ErrKeyNotFound.
func (kv *GridKV) Get(ctx context.Context, key string, opts ...Option) ([]byte, error) {
	e, err := kv.GetEntry(ctx, key, opts...)
	return e.Value, err
}

// GetEntry returns key's value and version, or ErrKeyNotFound. The version comes from the
// Raft log position of the write that produced the value: unique and strictly increasing
// within the key's partition, and the same on every replica.
func (kv *GridKV) GetEntry(ctx context.Context, key string, opts ...Option) (Entry, error) {
	if err := kv.checkKey(key); err != nil {
		return Entry{}, err
	}
	if kv.closed.Load() {
		return Entry{}, ErrClosed
	}
	stale, fellBack := !kv.cfg.readLinearizable(), false
	for _, o := range opts {
		switch o.consistency {
		case Linearizable:
			stale = false
		case Stale:
			stale = true
		}
	}
	p := ring.PartitionOf(key, kv.cfg.partitions)
	if stale {
		if g := kv.groups.Group(p); g != nil {
			e, err := localGet(g, key)
			// Checked after the read: a restore lowers the applied index before it swaps the
			// state in, so a read that could have seen restored state is caught here.
			if g.StaleReadable() {
				return e, err
			}
		}
		// No replica here, or one set back by an old snapshot until it replays its log.
		// Answers from other replicas could go back in time from one call to the next
		// (replicas lag each other), so the read goes to the leader's read index: never
		// older than anything this node returned before.
		fellBack = true
	}
	resp, err := kv.route(ctx, p, func(g *raftgroup.Group) (store.Result, error) {
		return readReplica(ctx, g, key, g.ReadIndex)
	}, &protocol.OpRequest{Partition: p, Op: protocol.OpGet, Key: key})
	if err != nil && !errors.Is(err, store.ErrKeyNotFound) {
		return Entry{}, err
	}
	if fellBack {
		// This node has now answered from the leader's state: its own replica must not
		// answer stale reads again until it has applied as much, or a reader could go back.
		if g := kv.groups.Group(p); g != nil {
			g.RaiseStaleFloor(resp.Applied)
		}
	}
	if err != nil {
		return Entry{}, err
	}
	return Entry{Key: key, Value: resp.Value, Version: resp.Version}, nil
}

// readReplica reads key from g once readIndex (nil for a stale read) returns, and reports the
// replica's applied index after the read.
func readReplica(ctx context.Context, g *raftgroup.Group, key string, readIndex func(context.Context) error) (store.Result, error) {
	if readIndex != nil {
		if err := readIndex(ctx); err != nil {
			return store.Result{}, err
		}
	}
	e, err := localGet(g, key)
	return store.Result{Value: e.Value, Version: e.Version, Applied: g.Partition().AppliedIndex()}, err
}

func localGet(g *raftgroup.Group, key string) (Entry, error) {
	v, ver, ok := g.Partition().Get(key)
	if !ok {
		return Entry{}, ErrKeyNotFound
	}
	return Entry{Key: key, Value: v, Version: ver}, nil
}

func (kv *GridKV) checkKey(key string) error { return store.CheckKey(key) }

func (kv *GridKV) checkWrite(key string, value []byte) error {
	if err := store.CheckKey(key); err != nil {
		return err
	}
	return store.CheckValue(value)
}

// write routes a command to its partition's leader.
func (kv *GridKV) write(ctx context.Context, cmd store.Command) (store.Result, error) {
	if kv.closed.Load() {
		return store.Result{}, ErrClosed
	}
	p := ring.PartitionOf(cmd.Key, kv.cfg.partitions)
	level := kv.cfg.writeLevel()
	return kv.route(ctx, p, func(g *raftgroup.Group) (store.Result, error) {
		return kv.proposeLocal(ctx, g, cmd, level)
	}, &protocol.OpRequest{Partition: p, Op: protocol.OpFor(cmd.Op), Key: cmd.Key, Value: cmd.Value, Version: cmd.Version, Ack: int(level.Ack), Replicas: level.Replicas})
}

func (kv *GridKV) proposeLocal(ctx context.Context, g *raftgroup.Group, cmd store.Command, level raftgroup.WriteLevel) (store.Result, error) {
	if cmd.Op != store.OpDelete {
		if err := kv.acct.Admit(len(cmd.Key), len(cmd.Value)); err != nil {
			return store.Result{}, err
		}
	}
	res, err := g.Propose(ctx, cmd, level)
	if err == nil {
		err = res.Err
	}
	return res, err
}

// route runs an operation on partition p's leader: here when this node leads it, else one
// forwarded hop. A reply that says the request did not run
// (not the leader, leader moved) sends it to the leader named, until ctx ends.
func (kv *GridKV) route(ctx context.Context, p int, local func(*raftgroup.Group) (store.Result, error), req *protocol.OpRequest) (store.Result, error) {
	backoff := 5 * time.Millisecond
	var lastErr error
	for {
		var res store.Result
		var err error
		g := kv.groups.Group(p)
		id, addr := kv.leaderOf(p)
		switch {
		case g != nil && g.IsLeader():
			res, err = local(g)
		case id != "" && id != kv.cfg.nodeID && addr != "":
			res, err = kv.forward(ctx, addr, req)
		default:
			err = &raftgroup.NotLeaderError{Group: p}
		}
		if err == nil || !raftgroup.Retryable(err) {
			return res, kv.finishError(p, err, res)
		}
		lastErr = err
		var nl *raftgroup.NotLeaderError
		if errors.As(err, &nl) && nl.LeaderID != "" && nl.LeaderID != id {
			kv.hints[p].Store(&leaderHint{id: nl.LeaderID, addr: nl.LeaderAddr})
			continue // a named leader: go there at once
		}
		kv.hints[p].Store(nil)
		select {
		case <-ctx.Done():
			return store.Result{}, fmt.Errorf("%w: partition %d: %w (last: %v)", ErrUnavailable, p, ctx.Err(), lastErr)
		case <-kv.done:
			return store.Result{}, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// forward sends req to the node at addr. A linearizable read carries this node's replica of
// the partition, if any, and its term: with three voters, leader and forwarder then make the
// majority that confirms the read (raftgroup.Group.ReadIndexVouched).
func (kv *GridKV) forward(ctx context.Context, addr string, req *protocol.OpRequest) (store.Result, error) {
	req.VouchServer, req.VouchTerm = "", 0
	if req.Op == protocol.OpGet && !req.Stale {
		if g := kv.groups.Group(req.Partition); g != nil {
			req.VouchServer, req.VouchTerm = g.ServerID(), g.Term()
		}
	}
	return kv.peers.Forward(ctx, addr, req)
}

// finishError gives errors their public form: sentinels kept, transport and Raft trouble
// reported as ErrUnavailable.
func (kv *GridKV) finishError(p int, err error, res store.Result) error {
	switch {
	case err == nil,
		errors.Is(err, store.ErrKeyNotFound),
		errors.Is(err, store.ErrVersionMismatch),
		errors.Is(err, store.ErrMemoryLimit),
		errors.Is(err, ErrInvalidKey),
		errors.Is(err, ErrValueTooLarge),
		errors.Is(err, ErrClosed):
		return err
	case errors.Is(err, raftgroup.ErrClosed), errors.Is(err, protocol.ErrClosed):
		if kv.closed.Load() {
			return ErrClosed
		}
	}
	return fmt.Errorf("%w: partition %d: %w", ErrUnavailable, p, err)
}

// leaderOf returns the leader of p as this node knows it: its own replica's view first, then
// the last hint, then gossip.
func (kv *GridKV) leaderOf(p int) (id, addr string) {
	if g := kv.groups.Group(p); g != nil {
		if id, addr = g.Leader(); id != "" {
			return id, addr
		}
	}
	if h := kv.hints[p].Load(); h != nil {
		return h.id, h.addr
	}
	if v := kv.view.Load(); v != nil {
		if l, ok := v.gossipLeaders[p]; ok {
			return l.id, l.addr
		}
	}
	return "", ""
}

// forgetLeader drops the leader hint of partition p: a request sent to it never arrived.
func (kv *GridKV) forgetLeader(p int) { kv.hints[p].Store(nil) }

// replicas serves other nodes' requests (protocol.Backend) from this node's replicas.
type replicas struct{ kv *GridKV }

// group returns this node's replica of p, or the error that sends the caller to p's leader.
func (r replicas) group(p int) (*raftgroup.Group, error) {
	kv := r.kv
	if kv.closed.Load() {
		return nil, protocol.ErrClosed
	}
	if g := kv.groups.Group(p); g != nil {
		return g, nil
	}
	id, addr := kv.leaderOf(p)
	if id == kv.cfg.nodeID {
		id, addr = "", ""
	}
	return nil, &raftgroup.NotLeaderError{Group: p, LeaderID: id, LeaderAddr: addr}
}

func (r replicas) Read(ctx context.Context, p int, key string, read protocol.ReadMode) (store.Result, error) {
	g, err := r.group(p)
	if err != nil {
		return store.Result{}, err
	}
	switch {
	case read.Stale:
		return readReplica(ctx, g, key, nil)
	case read.VouchServer != "":
		return readReplica(ctx, g, key, func(ctx context.Context) error {
			return g.ReadIndexVouched(ctx, read.VouchServer, read.VouchTerm)
		})
	default:
		return readReplica(ctx, g, key, g.ReadIndex)
	}
}

func (r replicas) Write(ctx context.Context, p int, cmd store.Command, level raftgroup.WriteLevel) (store.Result, error) {
	g, err := r.group(p)
	if err != nil {
		return store.Result{}, err
	}
	return r.kv.proposeLocal(ctx, g, cmd, level)
}

func (r replicas) WaitApplied(ctx context.Context, p int, index uint64) error {
	return r.kv.groups.WaitApplied(ctx, p, index)
}

func (r replicas) CheckTerms(checks []raftgroup.TermCheck) []bool {
	return r.kv.groups.CheckTerms(checks)
}

func (r replicas) RemovedFromGroup(p int, id string) (bool, error) {
	g := r.kv.groups.Group(p)
	if g == nil {
		return false, fmt.Errorf("gridkv: partition %d is not hosted here", p)
	}
	return g.RemovedFromGroup(id)
}
