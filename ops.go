package gridkv

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	}, &opRequest{Partition: p, Op: opGet, Key: key})
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

func (kv *GridKV) checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeySize)
	}
	return nil
}

func (kv *GridKV) checkWrite(key string, value []byte) error {
	if err := kv.checkKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooLarge, len(value), MaxValueSize)
	}
	return nil
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
	}, &opRequest{Partition: p, Op: opFor(cmd.Op), Key: cmd.Key, Value: cmd.Value, Version: cmd.Version, Ack: int(level.Ack), Replicas: level.Replicas})
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

func opFor(op store.Op) opKind {
	switch op {
	case store.OpSet:
		return opSet
	case store.OpDelete:
		return opDelete
	default:
		return opCAS
	}
}

// route runs an operation on partition p's leader: here when this node leads it, else one
// forwarded hop. A reply that says the request did not run
// (not the leader, leader moved) sends it to the leader named, until ctx ends.
func (kv *GridKV) route(ctx context.Context, p int, local func(*raftgroup.Group) (store.Result, error), req *opRequest) (store.Result, error) {
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
	case errors.Is(err, raftgroup.ErrClosed):
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

// serveOp runs a forwarded operation against this node's own replica.
func (kv *GridKV) serveOp(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req opRequest
	if err := decodeOne(b, &req, decodeOpRequest); err != nil {
		return nil, err
	}
	resp := kv.answerOp(ctx, &req)
	return encodeOpResponse(&resp), nil
}

// answerOp runs req within the time its caller gave it and returns its answer.
func (kv *GridKV) answerOp(ctx context.Context, req *opRequest) opResponse {
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	res, err := kv.runOp(ctx, req)
	resp := opResponse{Value: res.Value, Version: res.Version, Applied: res.Applied}
	encodeError(err, &resp)
	return resp
}

func (kv *GridKV) runOp(ctx context.Context, req *opRequest) (store.Result, error) {
	if kv.closed.Load() {
		return store.Result{}, ErrClosed
	}
	if req.Partition < 0 || req.Partition >= kv.cfg.partitions {
		return store.Result{}, fmt.Errorf("%w: partition %d out of range", ErrInvalidKey, req.Partition)
	}
	if err := kv.checkKey(req.Key); err != nil {
		return store.Result{}, err
	}
	if ring.PartitionOf(req.Key, kv.cfg.partitions) != req.Partition {
		return store.Result{}, fmt.Errorf("%w: key is not in partition %d", ErrInvalidKey, req.Partition)
	}
	g := kv.groups.Group(req.Partition)
	if g == nil {
		id, addr := kv.leaderOf(req.Partition)
		if id == kv.cfg.nodeID {
			id, addr = "", ""
		}
		return store.Result{}, &raftgroup.NotLeaderError{Group: req.Partition, LeaderID: id, LeaderAddr: addr}
	}
	if req.Op == opGet {
		switch {
		case req.Stale:
			return readReplica(ctx, g, req.Key, nil)
		case req.VouchServer != "":
			return readReplica(ctx, g, req.Key, func(ctx context.Context) error {
				return g.ReadIndexVouched(ctx, req.VouchServer, req.VouchTerm)
			})
		default:
			return readReplica(ctx, g, req.Key, g.ReadIndex)
		}
	}
	cmd := store.Command{Key: req.Key, Value: req.Value, Version: req.Version}
	switch req.Op {
	case opSet:
		cmd.Op = store.OpSet
	case opDelete:
		cmd.Op = store.OpDelete
	case opCAS:
		cmd.Op = store.OpCAS
	default:
		return store.Result{}, fmt.Errorf("%w: unknown operation %d", ErrInvalidKey, req.Op)
	}
	if len(cmd.Value) > MaxValueSize {
		return store.Result{}, fmt.Errorf("%w: %d bytes", ErrValueTooLarge, len(cmd.Value))
	}
	level := raftgroup.WriteLevel{Ack: raftgroup.Ack(req.Ack), Replicas: req.Replicas}
	return kv.proposeLocal(ctx, g, cmd, level)
}

// callWaitApplied asks the node at addr to wait until its replica of group applied index.
func (kv *GridKV) callWaitApplied(ctx context.Context, addr string, group int, index uint64) error {
	req := waitAppliedRequest{Partition: group, Index: index}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	}
	b, err := marshal(&req)
	if err != nil {
		return err
	}
	_, err = kv.trans.Call(ctx, addr, kindWaitApplied, b)
	return err
}

func (kv *GridKV) serveWaitApplied(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req waitAppliedRequest
	if err := unmarshal(b, &req); err != nil {
		return nil, err
	}
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	return nil, kv.groups.WaitApplied(ctx, req.Partition, req.Index)
}

// callTermChecks asks the node at addr to answer a leader's term checks (raftgroup/confirm.go).
func (kv *GridKV) callTermChecks(ctx context.Context, addr string, checks []raftgroup.TermCheck) ([]bool, error) {
	b, err := marshal(checks)
	if err != nil {
		return nil, err
	}
	out, err := kv.trans.Call(ctx, addr, kindTermChecks, b)
	if err != nil {
		return nil, err
	}
	var oks []bool
	if err := unmarshal(out, &oks); err != nil {
		return nil, err
	}
	return oks, nil
}

func (kv *GridKV) serveTermChecks(ctx context.Context, from string, b []byte) ([]byte, error) {
	var checks []raftgroup.TermCheck
	if err := unmarshal(b, &checks); err != nil {
		return nil, err
	}
	if len(checks) > raftgroup.MaxTermChecks {
		return nil, fmt.Errorf("gridkv: %d term checks in one request, at most %d", len(checks), raftgroup.MaxTermChecks)
	}
	return marshal(kv.groups.CheckTerms(checks))
}

// callRemoved asks the node at addr, the leader of partition p as far as this node knows,
// whether the server ID id is out of the group for good.
func (kv *GridKV) callRemoved(ctx context.Context, addr string, p int, id string) (bool, error) {
	b, err := marshal(&removedRequest{Partition: p, ServerID: id})
	if err != nil {
		return false, err
	}
	out, err := kv.trans.Call(ctx, addr, kindRemoved, b)
	if err != nil {
		return false, err
	}
	var resp removedResponse
	if err := unmarshal(out, &resp); err != nil {
		return false, err
	}
	return resp.Removed, nil
}

func (kv *GridKV) serveRemoved(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req removedRequest
	if err := unmarshal(b, &req); err != nil {
		return nil, err
	}
	g := kv.groups.Group(req.Partition)
	if g == nil {
		return nil, fmt.Errorf("gridkv: partition %d is not hosted here", req.Partition)
	}
	removed, err := g.RemovedFromGroup(req.ServerID)
	if err != nil {
		return nil, err
	}
	return marshal(&removedResponse{Removed: removed})
}
