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
	// ExpiresAt is when a key written WithTTL expires, by the clock of the partition leader
	// that applied the write; zero for a key that never does.
	ExpiresAt time.Time
}

// Set stores value under key. The value is copied; the caller may reuse it. WithTTL makes the
// key expire.
func (kv *GridKV) Set(ctx context.Context, key string, value []byte, opts ...Option) (err error) {
	if m := kv.metrics; m != nil {
		defer m.observeOp(opSet, m.now(), &err)
	}
	if err := kv.checkWrite(key, value); err != nil {
		return err
	}
	o, err := gather(opts)
	if err != nil {
		return err
	}
	_, err = kv.write(ctx, store.Command{Op: store.OpSet, Key: key, Value: value}, o.ttl)
	return err
}

// Delete removes key. Deleting a missing key succeeds.
func (kv *GridKV) Delete(ctx context.Context, key string, opts ...Option) (err error) {
	if m := kv.metrics; m != nil {
		defer m.observeOp(opDelete, m.now(), &err)
	}
	if err := kv.checkKey(key); err != nil {
		return err
	}
	_, err = kv.write(ctx, store.Command{Op: store.OpDelete, Key: key}, 0)
	if errors.Is(err, store.ErrKeyNotFound) {
		return nil
	}
	return err
}

// CompareAndDelete removes key only if its current version equals version, which must not be
// 0. On mismatch it returns ErrVersionMismatch and the current entry (Version 0 if absent).
// Watchers see EventDelete.
func (kv *GridKV) CompareAndDelete(ctx context.Context, key string, version uint64, opts ...Option) (_ Entry, err error) {
	if m := kv.metrics; m != nil {
		defer m.observeOp(opCAD, m.now(), &err)
	}
	if err := kv.checkKey(key); err != nil {
		return Entry{}, err
	}
	if version == 0 {
		return Entry{}, fmt.Errorf("gridkv: CompareAndDelete of %q at version 0: a key that does not exist cannot be deleted", key)
	}
	res, err := kv.write(ctx, store.Command{Op: store.OpCompareAndDelete, Key: key, Version: version}, 0)
	if errors.Is(err, store.ErrVersionMismatch) {
		return kv.currentEntry(key, res), err
	}
	return Entry{}, err
}

// CompareAndSwap writes value only if the key's current version equals version (0: only if
// the key does not exist). It returns the new entry; on mismatch it returns
// ErrVersionMismatch and the current entry (Version 0 if absent). CompareAndSwap is always
// acknowledged at commit or later, since its outcome is decided when it applies.
func (kv *GridKV) CompareAndSwap(ctx context.Context, key string, version uint64, value []byte, opts ...Option) (_ Entry, err error) {
	if m := kv.metrics; m != nil {
		defer m.observeOp(opCAS, m.now(), &err)
	}
	if err := kv.checkWrite(key, value); err != nil {
		return Entry{}, err
	}
	o, err := gather(opts)
	if err != nil {
		return Entry{}, err
	}
	res, err := kv.write(ctx, store.Command{Op: store.OpCAS, Key: key, Value: value, Version: version}, o.ttl)
	switch {
	case err == nil:
		return Entry{Key: key, Value: append([]byte(nil), value...), Version: res.Version, ExpiresAt: unixTime(res.ExpiresAt)}, nil
	case errors.Is(err, store.ErrVersionMismatch):
		return kv.currentEntry(key, res), err
	default:
		return Entry{}, err
	}
}

// currentEntry is the entry a failed compare-and-swap or -delete found: absent (Version 0)
// when it had expired by this node's clock, though its expiry had not applied yet.
func (kv *GridKV) currentEntry(key string, res store.Result) Entry {
	if res.ExpiresAt != 0 && res.ExpiresAt <= time.Now().UnixNano() {
		return Entry{Key: key}
	}
	return Entry{Key: key, Value: res.Value, Version: res.Version, ExpiresAt: unixTime(res.ExpiresAt)}
}

// unixTime is t, in Unix nanoseconds, as a time.Time; zero for 0.
func unixTime(t int64) time.Time {
	if t == 0 {
		return time.Time{}
	}
	return time.Unix(0, t)
}

// unixNano is unixTime's inverse: the zero time (no deadline) is 0. time.Time's own
// UnixNano of the zero time is not.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Get returns a copy of key's value, or ErrKeyNotFound.
func (kv *GridKV) Get(ctx context.Context, key string, opts ...Option) ([]byte, error) {
	e, err := kv.GetEntry(ctx, key, opts...)
	return e.Value, err
}

// GetEntry returns key's value and version, or ErrKeyNotFound. The version comes from the
// Raft log position of the write that produced the value: unique and strictly increasing
// within the key's partition, and the same on every replica.
func (kv *GridKV) GetEntry(ctx context.Context, key string, opts ...Option) (_ Entry, err error) {
	if m := kv.metrics; m != nil {
		defer m.observeOp(opGet, m.now(), &err)
	}
	if err := kv.checkKey(key); err != nil {
		return Entry{}, err
	}
	if kv.closed.Load() {
		return Entry{}, ErrClosed
	}
	stale, fellBack := kv.readStale(opts), false
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
	resp, err := route(kv, ctx, p, func(g *raftgroup.Group) (store.Result, error) {
		return readReplica(ctx, g, key, g.ReadIndex)
	}, func(addr string) (store.Result, error) {
		return kv.forward(ctx, addr, &protocol.OpRequest{Partition: p, Op: protocol.OpGet, Key: key})
	})
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
	return Entry{Key: key, Value: resp.Value, Version: resp.Version, ExpiresAt: unixTime(resp.ExpiresAt)}, nil
}

// readStale reports whether a read with opts is served stale: WithConsistency if given, else
// what ReadQuorum and WriteQuorum imply.
func (kv *GridKV) readStale(opts []Option) bool {
	stale := !kv.cfg.readLinearizable()
	for _, o := range opts {
		if o.kind == optConsistency {
			stale = o.consistency == Stale
		}
	}
	return stale
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
	return store.Result{Value: e.Value, Version: e.Version, ExpiresAt: unixNano(e.ExpiresAt), Applied: g.Partition().AppliedIndex()}, err
}

// localGet reads key from this node's replica; a key past its deadline by this node's clock
// reads as absent, whether or not its expiry has applied.
func localGet(g *raftgroup.Group, key string) (Entry, error) {
	e, ok := g.Partition().GetEntry(key, time.Now().UnixNano())
	if !ok {
		return Entry{}, ErrKeyNotFound
	}
	return Entry{Key: key, Value: e.Value, Version: e.Version, ExpiresAt: unixTime(e.ExpiresAt)}, nil
}

func (kv *GridKV) checkKey(key string) error { return store.CheckKey(key) }

func (kv *GridKV) checkWrite(key string, value []byte) error {
	if err := store.CheckKey(key); err != nil {
		return err
	}
	return store.CheckValue(value)
}

// write routes a command to its partition's leader. A positive ttl gives the key a deadline,
// set by the leader as it proposes the write.
func (kv *GridKV) write(ctx context.Context, cmd store.Command, ttl time.Duration) (store.Result, error) {
	if kv.closed.Load() {
		return store.Result{}, ErrClosed
	}
	p := ring.PartitionOf(cmd.Key, kv.cfg.partitions)
	level := kv.cfg.writeLevel()
	ttlMS := (ttl + time.Millisecond - 1).Milliseconds() // WithTTL is kept to the millisecond, rounded up
	return route(kv, ctx, p, func(g *raftgroup.Group) (store.Result, error) {
		if ttlMS > 0 {
			cmd.ExpiresAt = time.Now().Add(time.Duration(ttlMS) * time.Millisecond).UnixNano()
		}
		res, err := kv.proposeLocal(ctx, g, cmd, level)
		if err == nil {
			res.ExpiresAt = cmd.ExpiresAt
		}
		return res, err
	}, func(addr string) (store.Result, error) {
		return kv.forward(ctx, addr, &protocol.OpRequest{Partition: p, Op: protocol.OpFor(cmd.Op), Key: cmd.Key, Value: cmd.Value,
			Version: cmd.Version, Ack: int(level.Ack), Replicas: level.Replicas, TTLMS: ttlMS})
	})
}

func (kv *GridKV) proposeLocal(ctx context.Context, g *raftgroup.Group, cmd store.Command, level raftgroup.WriteLevel) (store.Result, error) {
	res, err := kv.startLocal(ctx, g, cmd, level).Wait(ctx)
	if err == nil {
		err = res.Err
	}
	return res, err
}

// startLocal hands cmd to g's log, which this node leads, without waiting for its result.
func (kv *GridKV) startLocal(ctx context.Context, g *raftgroup.Group, cmd store.Command, level raftgroup.WriteLevel) raftgroup.Pending {
	if cmd.Op == store.OpSet || cmd.Op == store.OpCAS {
		if err := kv.acct.Admit(len(cmd.Key), len(cmd.Value)); err != nil {
			return raftgroup.Done(store.Result{}, err)
		}
	}
	if v := g.Partition().ExpiredVersion(cmd.Key, time.Now().UnixNano()); v != 0 {
		// The key's deadline has passed but its expiry has not applied: it goes first, so
		// the write finds the key absent and watchers see the expiry before the write.
		expire := store.Command{Op: store.OpExpire, Key: cmd.Key, Version: v}
		res, err := g.Propose(ctx, expire, raftgroup.WriteLevel{Ack: raftgroup.AckCommit})
		if err != nil {
			return raftgroup.Done(store.Result{}, err)
		}
		if res.Err == nil {
			kv.metrics.expired()
		}
	}
	return g.Start(ctx, cmd, level)
}

// route runs an operation on partition p's leader: here when this node leads it, else one
// forwarded hop. A reply that says the request did not run
// (not the leader, leader moved) sends it to the leader named, until ctx ends.
func route[T any](kv *GridKV, ctx context.Context, p int, local func(*raftgroup.Group) (T, error), remote func(addr string) (T, error)) (T, error) {
	backoff := 5 * time.Millisecond
	var lastErr error
	var zero T
	for {
		var res T
		var err error
		g := kv.groups.Group(p)
		id, addr := kv.leaderOf(p)
		switch {
		case g != nil && g.IsLeader():
			res, err = local(g)
		case id != "" && id != kv.cfg.nodeID && addr != "":
			res, err = remote(addr)
		default:
			err = &raftgroup.NotLeaderError{Group: p}
		}
		if err == nil || !raftgroup.Retryable(err) {
			return res, kv.finishError(p, err)
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
			return zero, fmt.Errorf("%w: partition %d: %w (last: %v)", ErrUnavailable, p, ctx.Err(), lastErr)
		case <-kv.done:
			return zero, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// forward sends req to the node at addr. A linearizable read carries this node's replica of
// the partition, if any, and its term: with three voters, leader and forwarder then make the
// majority that confirms the read (raftgroup.Group.ReadIndexVouched).
func (kv *GridKV) forward(ctx context.Context, addr string, req *protocol.OpRequest) (store.Result, error) {
	kv.metrics.forward(opOf(req.Op))
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
func (kv *GridKV) finishError(p int, err error) error {
	switch {
	case err == nil,
		errors.Is(err, store.ErrKeyNotFound),
		errors.Is(err, store.ErrVersionMismatch),
		errors.Is(err, store.ErrMemoryLimit),
		errors.Is(err, ErrInvalidKey),
		errors.Is(err, ErrValueTooLarge),
		errors.Is(err, ErrCompacted),
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

func (r replicas) StartWrite(ctx context.Context, p int, cmd store.Command, level raftgroup.WriteLevel) raftgroup.Pending {
	g, err := r.group(p)
	if err != nil {
		return raftgroup.Done(store.Result{}, err)
	}
	return r.kv.startLocal(ctx, g, cmd, level)
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

func (r replicas) List(ctx context.Context, p int, page protocol.ListPage, read protocol.ReadMode) (protocol.ListResult, error) {
	g, err := r.group(p)
	if err != nil {
		return protocol.ListResult{}, err
	}
	switch {
	case read.Stale:
	case read.VouchServer != "":
		err = g.ReadIndexVouched(ctx, read.VouchServer, read.VouchTerm)
	default:
		err = g.ReadIndex(ctx)
	}
	if err != nil {
		return protocol.ListResult{}, err
	}
	return localList(g, page), nil
}

// Events answers another node's watch: this replica's changes after position after, waiting
// until ctx ends for one that matches.
func (r replicas) Events(ctx context.Context, p int, after uint64, prefix string, limit int) ([]store.Event, uint64, error) {
	g, err := r.group(p)
	if err != nil {
		return nil, after, err
	}
	part := g.Partition()
	for {
		changed := part.Changed()
		events, next, err := part.Events(after, prefix, limit)
		if err != nil || len(events) > 0 {
			return events, next, err
		}
		after = max(after, next)
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, after, nil // nothing yet: the caller asks again
		case <-r.kv.done:
			return nil, after, protocol.ErrClosed
		}
	}
}
