package protocol

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
)

// Forwarded operations to one peer leave in batches: while forwardBatches requests to a peer
// are on the wire, every operation for that peer waits and leaves with the others in the next
// one. Under load most operations reach a node that does not lead their partition, so this
// turns one round trip per operation into one per batch, much as the Raft groups share one
// log entry among the proposals waiting for it.
const (
	forwardBatches      = 2
	forwardBatchOps     = 256
	forwardBatchPayload = 1 << 20 // encoded requests per batch, at most half the frame limit
)

// Caller sends one request of a kind to the node at addr and returns its answer.
// *transport.Transport is the Caller of a running node. Safe for concurrent use; Call blocks
// until the answer, a failure, or ctx's end.
type Caller interface {
	Call(ctx context.Context, addr string, kind uint8, req []byte) ([]byte, error)
}

// Client sends this node's requests to other nodes: forwarded operations, batched per peer,
// and the calls raftgroup makes (WaitApplied, term checks, removal queries). Safe for
// concurrent use.
type Client struct {
	caller   Caller
	maxBytes int // encoded requests per batch; a larger request goes alone
	// notSent is told the partition of an operation whose batch never reached its peer, so
	// the caller can forget the leader it guessed. It may be nil.
	notSent func(partition int)

	ctx    context.Context // cancelled by Close once forwarding stops taking operations
	cancel context.CancelFunc

	// mu guards peers and closed. Lock order: Client.mu before forwarder.mu (Prune and
	// Close hold both).
	mu     sync.Mutex
	peers  map[string]*forwarder // by address
	closed bool
	wg     sync.WaitGroup // the forwarders' senders
}

// NewClient returns a Client that calls through caller. maxFrame is the transport's frame
// limit: a batch of encoded requests stays within half of it. notSent may be nil.
func NewClient(caller Caller, maxFrame int, notSent func(partition int)) *Client {
	c := &Client{
		caller:   caller,
		maxBytes: min(forwardBatchPayload, maxFrame/2),
		notSent:  notSent,
		peers:    make(map[string]*forwarder),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// forwarder queues the operations this node forwards to the node at addr.
type forwarder struct {
	c    *Client
	addr string

	// mu guards the fields below it.
	mu      sync.Mutex
	queue   []*forwardedOp
	sending int  // batches on the wire, each with its own goroutine
	used    bool // an operation was queued since the last prune
	closed  bool // closed by Close, or retired by a prune: nothing more is queued
}

// forwardedOp is one operation waiting for its batch's answer. Its request is encoded by its
// caller before it is queued: the request's value belongs to the caller again once the call
// returns, which may be while the batch is still on the wire.
//
// Operations are pooled. Two holders share one: the caller, until Forward returns, and the
// forwarder, until it has answered it or dropped it abandoned from the queue. Each lets go
// with release; the last one returns it to the pool.
type forwardedOp struct {
	msg       []byte // the encoded opRequest
	partition int
	read      bool
	deadline  time.Time // zero: none
	state     atomic.Int32
	refs      atomic.Int32       // holders left; see above
	done      chan forwardResult // buffered 1
	// msgFree is set by the sender once msg is no one else's: copied into a batch, or
	// carried alone by a call the peer answered. A call that failed may leave the
	// transport holding it, so such a buffer is never reused.
	msgFree bool
}

var forwardedOpPool = sync.Pool{New: func() any { return &forwardedOp{done: make(chan forwardResult, 1)} }}

// release lets go of one holder's share of op; see forwardedOp.
func (op *forwardedOp) release() {
	if op.refs.Add(-1) != 0 {
		return
	}
	select {
	case <-op.done: // an answer its caller gave up on
	default:
	}
	if !op.msgFree || cap(op.msg) > 4096 {
		op.msg = nil
	}
	op.msg, op.msgFree = op.msg[:0], false
	op.state.Store(opQueued)
	forwardedOpPool.Put(op)
}

// forwardedOp states: queued ops are either sent or abandoned by their caller, not both.
const (
	opQueued int32 = iota
	opSent
	opAbandoned
)

type forwardResult struct {
	res store.Result
	err error
}

// Forward sends req to the node at addr, in a batch with whatever else is waiting for it, and
// returns that node's answer. It sets req.TimeoutMS from ctx's deadline. An error that
// raftgroup.Retryable accepts means the operation did not run and may be sent again; a write
// that may have run fails with raftgroup.ErrOutcomeUnknown.
func (c *Client) Forward(ctx context.Context, addr string, req *OpRequest) (store.Result, error) {
	op := forwardedOpPool.Get().(*forwardedOp)
	op.partition, op.read = req.Partition, req.Op == OpGet
	op.refs.Store(2)
	op.deadline, _ = ctx.Deadline()
	req.TimeoutMS = 0
	if !op.deadline.IsZero() {
		req.TimeoutMS = max(time.Until(op.deadline).Milliseconds(), 1)
	}
	op.msg = appendOpRequest(op.msg[:0], req)
	for {
		f := c.forwarder(addr)
		if f == nil {
			op.refs.Store(1) // no forwarder ever had it
			op.release()
			return store.Result{}, ErrClosed
		}
		if f.enqueue(op) {
			break
		}
		// Retired by a prune between the lookup and the enqueue; the map has a fresh one.
	}
	defer op.release()
	select {
	case r := <-op.done:
		return r.res, r.err
	case <-ctx.Done():
	}
	if op.state.CompareAndSwap(opQueued, opAbandoned) || op.read {
		// Never sent, or a read: nothing happened that the caller needs to know of.
		return store.Result{}, ctx.Err()
	}
	return store.Result{}, fmt.Errorf("%w: %w", raftgroup.ErrOutcomeUnknown, ctx.Err())
}

// forwarder returns the queue for addr, or nil once the client is closed.
func (c *Client) forwarder(addr string) *forwarder {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	f := c.peers[addr]
	if f == nil {
		f = &forwarder{c: c, addr: addr}
		c.peers[addr] = f
	}
	return f
}

// Prune retires the forwarders that queued nothing since the last prune, so that peers which
// went away do not stay in the map. Call it now and then (the convergence loop does, every tick).
func (c *Client) Prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, f := range c.peers {
		f.mu.Lock()
		if !f.used && f.sending == 0 && len(f.queue) == 0 {
			f.closed = true
			delete(c.peers, addr)
		}
		f.used = false
		f.mu.Unlock()
	}
}

// Close fails every queued operation with ErrClosed, then ends the calls on the wire and waits
// for their senders. Queued operations are failed first so that no sender takes them into a
// call that is cancelled before it leaves. Later calls fail with ErrClosed. Idempotent.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	fs := c.peers
	c.peers = nil
	c.mu.Unlock()
	for _, f := range fs {
		f.mu.Lock()
		f.closed = true
		queued := f.queue
		f.queue = nil
		f.mu.Unlock()
		for _, op := range queued {
			op.done <- forwardResult{err: ErrClosed}
			op.release()
		}
	}
	c.cancel()
	c.wg.Wait()
}

// enqueue adds op to the next batch, starting a sender when fewer than forwardBatches are on
// the wire. It reports false once the forwarder is closed.
func (f *forwarder) enqueue(op *forwardedOp) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.queue = append(f.queue, op)
	f.used = true
	if f.sending < forwardBatches {
		f.sending++
		f.c.wg.Add(1)
		go f.sendLoop()
	}
	return true
}

// sendLoop sends batches until the queue is empty.
func (f *forwarder) sendLoop() {
	defer f.c.wg.Done()
	var batch []*forwardedOp // reused: send keeps none of it
	for {
		if batch = f.take(batch[:0]); batch == nil {
			return
		}
		f.send(batch)
		clear(batch)
	}
}

// take removes the next batch from the queue, appended to batch, keeping only operations
// whose callers still wait. It returns nil, and retires the sender, when there is nothing to
// send.
func (f *forwarder) take(batch []*forwardedOp) []*forwardedOp {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if f.closed || len(f.queue) == 0 {
			f.sending--
			return nil
		}
		n, size := 0, 0
		for n < len(f.queue) && n < forwardBatchOps && (n == 0 || size+len(f.queue[n].msg) <= f.c.maxBytes) {
			size += len(f.queue[n].msg)
			n++
		}
		for _, op := range f.queue[:n] {
			if op.state.CompareAndSwap(opQueued, opSent) {
				batch = append(batch, op)
			} else {
				op.release() // abandoned: its caller has gone
			}
		}
		rest := copy(f.queue, f.queue[n:])
		clear(f.queue[rest:])
		f.queue = f.queue[:rest]
		if len(batch) > 0 {
			return batch
		}
	}
}

// send makes one call carrying batch and hands every operation its answer.
func (f *forwarder) send(batch []*forwardedOp) {
	c := f.c
	var latest time.Time
	for _, op := range batch {
		if op.deadline.IsZero() {
			latest = time.Time{}
			break
		}
		if op.deadline.After(latest) {
			latest = op.deadline
		}
	}
	ctx := c.ctx // cancelled by Close
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	resps, err := c.callOps(ctx, f.addr, batch)
	if len(batch) > 1 && errors.Is(err, transport.ErrUnknownKind) {
		// A peer from before batches, met during a rolling upgrade. The batch did not run
		// there, so each operation goes on its own, side by side.
		var wg sync.WaitGroup
		for _, op := range batch {
			wg.Go(func() {
				resps, err := c.callOps(ctx, f.addr, []*forwardedOp{op})
				f.answer(op, resps, 0, err)
			})
		}
		wg.Wait()
		return
	}
	for i, op := range batch {
		f.answer(op, resps, i, err)
	}
}

// answer hands op its outcome: resps[i], or what err, the failure of its call, means for it.
func (f *forwarder) answer(op *forwardedOp, resps []opResponse, i int, err error) {
	var r forwardResult
	if err != nil {
		op.msgFree = false
		r.err = forwardError(op, f.addr, err)
		if errors.Is(err, transport.ErrNotSent) && f.c.notSent != nil {
			f.c.notSent(op.partition)
		}
	} else {
		resp := &resps[i]
		r.res = store.Result{Value: resp.Value, Version: resp.Version, Applied: resp.Applied, ExpiresAt: resp.ExpiresAt}
		r.err = decodeError(op.partition, resp)
	}
	op.done <- r
	op.release()
}

// callOps sends batch to the node at addr and returns its answers, one per operation in
// order. A single operation goes as it is; more go as one msgpack array of requests.
func (c *Client) callOps(ctx context.Context, addr string, batch []*forwardedOp) ([]opResponse, error) {
	kind, body := kindOp, batch[0].msg
	if len(batch) > 1 {
		kind, body = kindOpBatch, encodeArray(batch)
	}
	out, err := c.caller.Call(ctx, addr, kind, body)
	if err != nil {
		return nil, err
	}
	for _, op := range batch {
		op.msgFree = true // copied into body, or carried by a call that was answered
	}
	var resps []opResponse
	if len(batch) == 1 {
		resps = make([]opResponse, 1)
		err = decodeOne(out, &resps[0], decodeOpResponse)
	} else {
		resps, err = decodeArray(out, len(batch), decodeOpResponse)
	}
	if err != nil {
		return nil, err
	}
	if len(resps) != len(batch) {
		return nil, fmt.Errorf("%w: %s answered %d of %d forwarded operations", ErrBadMessage, addr, len(resps), len(batch))
	}
	return resps, nil
}

// encodeArray joins the batch's encoded requests into one msgpack array.
func encodeArray(batch []*forwardedOp) []byte {
	size := 5
	for _, op := range batch {
		size += len(op.msg)
	}
	b := appendArrayLen(make([]byte, 0, size), len(batch))
	for _, op := range batch {
		b = append(b, op.msg...)
	}
	return b
}

// forwardError is the error of one operation whose batch failed with err.
func forwardError(op *forwardedOp, addr string, err error) error {
	switch {
	case errors.Is(err, transport.ErrNotSent), op.read:
		// Never reached the peer (gone, restarting), or a read, which is safe to run again
		// anywhere: ask the leader again.
		return &raftgroup.NotLeaderError{Group: op.partition}
	default:
		return fmt.Errorf("%w: forwarding to %s: %w", raftgroup.ErrOutcomeUnknown, addr, err)
	}
}

// WaitApplied asks the node at addr to wait until its replica of group has applied index
// (raftgroup.Config.WaitApplied).
func (c *Client) WaitApplied(ctx context.Context, addr string, group int, index uint64) error {
	req := waitAppliedRequest{Partition: group, Index: index}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	}
	b, err := marshal(&req)
	if err != nil {
		return err
	}
	_, err = c.caller.Call(ctx, addr, kindWaitApplied, b)
	return err
}

// TermChecks asks the node at addr to answer a leader's term checks
// (raftgroup.Config.ConfirmTerms).
func (c *Client) TermChecks(ctx context.Context, addr string, checks []raftgroup.TermCheck) ([]bool, error) {
	b, err := marshal(checks)
	if err != nil {
		return nil, err
	}
	out, err := c.caller.Call(ctx, addr, kindTermChecks, b)
	if err != nil {
		return nil, err
	}
	var oks []bool
	if err := Unmarshal(out, &oks); err != nil {
		return nil, err
	}
	return oks, nil
}

// Removed asks the node at addr, the leader of partition p as far as this node knows, whether
// the server ID id is out of the group for good.
func (c *Client) Removed(ctx context.Context, addr string, p int, id string) (bool, error) {
	b, err := marshal(&removedRequest{Partition: p, ServerID: id})
	if err != nil {
		return false, err
	}
	out, err := c.caller.Call(ctx, addr, kindRemoved, b)
	if err != nil {
		return false, err
	}
	var resp removedResponse
	if err := Unmarshal(out, &resp); err != nil {
		return false, err
	}
	return resp.Removed, nil
}
