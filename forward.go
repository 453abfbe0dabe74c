package gridkv

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

// forwarder queues the operations this node forwards to the node at addr.
type forwarder struct {
	kv   *GridKV
	addr string

	mu      sync.Mutex
	queue   []*forwardedOp
	sending int  // batches on the wire, each with its own goroutine
	used    bool // an operation was queued since the last prune
	closed  bool // closed by Close, or retired by a prune: nothing more is queued

	maxBytes int // encoded requests per batch; a larger request goes alone
}

// forwardedOp is one operation waiting for its batch's answer. Its request is encoded by its
// caller before it is queued: the request's value belongs to the caller again once the call
// returns, which may be while the batch is still on the wire.
type forwardedOp struct {
	msg       []byte // the encoded opRequest
	partition int
	read      bool
	deadline  time.Time // zero: none
	state     atomic.Int32
	done      chan forwardResult // buffered 1
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

// forward sends req to the node at addr, in a batch with whatever else is waiting for it, and
// returns that node's answer.
func (kv *GridKV) forward(ctx context.Context, addr string, req *opRequest) (store.Result, error) {
	op := &forwardedOp{partition: req.Partition, read: req.Op == opGet, done: make(chan forwardResult, 1)}
	op.deadline, _ = ctx.Deadline()
	req.TimeoutMS = 0
	req.VouchServer, req.VouchTerm = "", 0
	if op.read && !req.Stale {
		if g := kv.groups.Group(req.Partition); g != nil {
			req.VouchServer, req.VouchTerm = g.ServerID(), g.Term()
		}
	}
	if !op.deadline.IsZero() {
		req.TimeoutMS = max(time.Until(op.deadline).Milliseconds(), 1)
	}
	op.msg = encodeOpRequest(req)
	for {
		f := kv.forwarder(addr)
		if f == nil {
			return store.Result{}, ErrClosed
		}
		if f.enqueue(op) {
			break
		}
		// Retired by a prune between the lookup and the enqueue; the map has a fresh one.
	}
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

// forwarder returns the queue for addr, or nil once the node is closing.
func (kv *GridKV) forwarder(addr string) *forwarder {
	kv.fwdMu.Lock()
	defer kv.fwdMu.Unlock()
	if kv.fwdClosed {
		return nil
	}
	f := kv.fwd[addr]
	if f == nil {
		f = &forwarder{kv: kv, addr: addr, maxBytes: min(forwardBatchPayload, kv.cfg.network.WithDefaults().MaxFrameSize/2)}
		kv.fwd[addr] = f
	}
	return f
}

// pruneForwarders retires the forwarders that queued nothing since the last prune, so that
// peers which went away do not stay in the map. The placement loop calls it every tick.
func (kv *GridKV) pruneForwarders() {
	kv.fwdMu.Lock()
	defer kv.fwdMu.Unlock()
	for addr, f := range kv.fwd {
		f.mu.Lock()
		if !f.used && f.sending == 0 && len(f.queue) == 0 {
			f.closed = true
			delete(kv.fwd, addr)
		}
		f.used = false
		f.mu.Unlock()
	}
}

// closeForwarders fails every queued operation, then cancels kv.ctx, which ends the calls on
// the wire, and waits for their senders. Queued operations are failed first so that no sender
// takes them into a call that is cancelled before it leaves.
func (kv *GridKV) closeForwarders() {
	kv.fwdMu.Lock()
	kv.fwdClosed = true
	fs := kv.fwd
	kv.fwd = nil
	kv.fwdMu.Unlock()
	for _, f := range fs {
		f.mu.Lock()
		f.closed = true
		queued := f.queue
		f.queue = nil
		f.mu.Unlock()
		for _, op := range queued {
			op.done <- forwardResult{err: ErrClosed}
		}
	}
	kv.cancel()
	kv.fwdWG.Wait()
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
		f.kv.fwdWG.Add(1)
		go f.sendLoop()
	}
	return true
}

// sendLoop sends batches until the queue is empty.
func (f *forwarder) sendLoop() {
	defer f.kv.fwdWG.Done()
	for {
		batch := f.take()
		if batch == nil {
			return
		}
		f.send(batch)
	}
}

// take removes the next batch from the queue, keeping only operations whose callers still
// wait. It returns nil, and retires the sender, when there is nothing to send.
func (f *forwarder) take() []*forwardedOp {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if f.closed || len(f.queue) == 0 {
			f.sending--
			return nil
		}
		n, size := 0, 0
		for n < len(f.queue) && n < forwardBatchOps && (n == 0 || size+len(f.queue[n].msg) <= f.maxBytes) {
			size += len(f.queue[n].msg)
			n++
		}
		batch := make([]*forwardedOp, 0, n)
		for _, op := range f.queue[:n] {
			if op.state.CompareAndSwap(opQueued, opSent) {
				batch = append(batch, op)
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
	kv := f.kv
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
	ctx := kv.ctx // cancelled by Close
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	resps, err := kv.callOps(ctx, f.addr, batch)
	if len(batch) > 1 && errors.Is(err, transport.ErrUnknownKind) {
		// A peer from before batches, met during a rolling upgrade. The batch did not run
		// there, so each operation goes on its own, side by side.
		var wg sync.WaitGroup
		for _, op := range batch {
			wg.Go(func() {
				resps, err := kv.callOps(ctx, f.addr, []*forwardedOp{op})
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
		r.err = forwardError(op, f.addr, err)
		if errors.Is(err, transport.ErrNotSent) {
			f.kv.hints[op.partition].Store(nil)
		}
	} else {
		resp := &resps[i]
		r.res = store.Result{Value: resp.Value, Version: resp.Version, Applied: resp.Applied}
		r.err = decodeError(op.partition, resp)
	}
	op.done <- r
}

// callOps sends batch to the node at addr and returns its answers, one per operation in
// order. A single operation goes as it is; more go as one msgpack array of requests.
func (kv *GridKV) callOps(ctx context.Context, addr string, batch []*forwardedOp) ([]opResponse, error) {
	kind, body := kindOp, batch[0].msg
	if len(batch) > 1 {
		kind, body = kindOpBatch, encodeArray(batch)
	}
	out, err := kv.trans.Call(ctx, addr, kind, body)
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("gridkv: %s answered %d of %d forwarded operations", addr, len(resps), len(batch))
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

// serveOpBatch runs a batch of forwarded operations, each as serveOp would, side by side so
// that writes to one partition share a log entry, and answers them in order.
func (kv *GridKV) serveOpBatch(ctx context.Context, from string, b []byte) ([]byte, error) {
	// Each request gets a goroutine: a peer may not ask for any number of them.
	reqs, err := decodeArray(b, forwardBatchOps, decodeOpRequest)
	if err != nil {
		return nil, err
	}
	resps := make([]opResponse, len(reqs))
	var wg sync.WaitGroup
	for i := range reqs {
		run := func() {
			defer func() {
				// The transport recovers its handlers' panics, not those of goroutines they start.
				if r := recover(); r != nil {
					kv.cfg.logger.Error("gridkv: forwarded operation panicked", "peer", from, "panic", r)
					resps[i] = opResponse{Code: codeFailed, Msg: fmt.Sprintf("panic: %v", r)}
				}
			}()
			resps[i] = kv.answerOp(ctx, &reqs[i])
		}
		if i == len(reqs)-1 {
			run()
			break
		}
		wg.Go(run)
	}
	wg.Wait()
	size := 5
	for i := range resps {
		size += opResponseSize(&resps[i])
	}
	out := appendArrayLen(make([]byte, 0, size), len(resps))
	for i := range resps {
		out = appendOpResponse(out, &resps[i])
	}
	return out, nil
}
