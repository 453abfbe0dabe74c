package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv/internal/timerpool"
	"github.com/hashicorp/raft"
)

// Raft RPCs, the kind byte of a Raft request frame.
const (
	raftAppendEntries   uint8 = 1
	raftRequestVote     uint8 = 2
	raftRequestPreVote  uint8 = 3
	raftTimeoutNow      uint8 = 4
	raftInstallSnapshot uint8 = 5
)

const (
	// pipelineWindow is how many pipelined AppendEntries a group may have in flight to one
	// follower before the next waits.
	pipelineWindow = 64
	// inboundQueue is how many RPCs a group may have waiting for its Raft instance. A leader
	// has at most pipelineWindow AppendEntries in flight to it, plus a heartbeat and a vote;
	// past the bound the RPC is refused with an error, which raft retries.
	inboundQueue = 2*pipelineWindow + 16
	// snapshotTimeoutScale stretches an InstallSnapshot's deadline by one RPC timeout per
	// this many bytes of snapshot.
	snapshotTimeoutScale = 256 << 10
)

// RaftConfig describes one Raft group's use of the Transport.
type RaftConfig struct {
	Group uint32
	// Local is the server address raft reports as its own and peers use to reach it.
	Local raft.ServerAddress
	// Incarnation is this node's: requests naming another incarnation of this node (sent to
	// an earlier life of it) are refused.
	Incarnation uint64
	// Resolve splits a peer's server address into the host:port to dial and the
	// incarnation the peer must be in.
	Resolve func(raft.ServerAddress) (addr string, incarnation uint64, err error)
	// Timeout bounds one RPC; InstallSnapshot gets one Timeout per 256 KiB as well.
	Timeout time.Duration
}

// RaftTransport is one group's raft.Transport over the Transport's links. Every group on a
// node shares the same few connections to each peer: a group costs no connection and no
// goroutine per peer, only the goroutine that returns its answers to the links.
type RaftTransport struct {
	t   *Transport
	cfg RaftConfig

	consumer  chan raft.RPC
	responses chan raft.RPCResponse // raft answers every consumed RPC here, in order
	heartbeat atomic.Pointer[func(raft.RPC)]

	// localPeer is cfg.Local encoded, shared by every request and answer raft makes: raft
	// and the codec only read it. lastPeer is the address DecodePeer last made, returned
	// again while the same leader keeps sending.
	localPeer []byte
	lastPeer  atomic.Pointer[raft.ServerAddress]

	// mu guards queue and closed.
	mu     sync.Mutex
	queue  []inboundRPC // RPCs handed to raft and not answered yet, in order
	closed bool
	done   chan struct{}
	once   sync.Once
}

// inboundRPC is who is waiting for the answer to an RPC handed to raft: a request ID on a
// link, or an InstallSnapshot connection.
type inboundRPC struct {
	l    *link
	id   uint64
	snap chan raft.RPCResponse
}

var (
	_ raft.Transport   = (*RaftTransport)(nil)
	_ raft.WithClose   = (*RaftTransport)(nil)
	_ raft.WithPreVote = (*RaftTransport)(nil)
)

// RaftTransport registers a group and returns its raft.Transport. Closing it (raft does on
// shutdown) unregisters the group. Registering a group again replaces, and closes, the
// earlier registration.
func (t *Transport) RaftTransport(cfg RaftConfig) (*RaftTransport, error) {
	if cfg.Resolve == nil || cfg.Timeout <= 0 {
		return nil, errors.New("transport: RaftConfig needs Resolve and a positive Timeout")
	}
	rt := &RaftTransport{
		t:         t,
		cfg:       cfg,
		localPeer: []byte(cfg.Local),
		consumer:  make(chan raft.RPC, inboundQueue),
		responses: make(chan raft.RPCResponse, inboundQueue),
		done:      make(chan struct{}),
	}
	if !t.goTracked("raft group answers", nil, rt.answerLoop) {
		return nil, ErrClosed
	}
	t.groupsMu.Lock()
	old := t.groups[cfg.Group]
	t.groups[cfg.Group] = rt
	t.groupsMu.Unlock()
	if old != nil {
		t.logger.Warn("transport: raft group registered twice; closing the old registration", "group", cfg.Group)
		_ = old.Close()
	}
	return rt, nil
}

// SetUnknownGroupHandler sets fn to be called when a peer sends a Raft RPC for a group with
// no registration, typically because this node was just added to the group and has no Raft
// instance for it yet. fn should create the group (registering it with RaftTransport) and
// return true, or return false to refuse. fn runs on a goroutine of its own, at most one at a
// time per group, and may block; the RPCs that arrive meanwhile wait for it (up to 256) and
// then go to the new group in order, or are refused. nil removes it.
func (t *Transport) SetUnknownGroupHandler(fn func(group uint32) bool) {
	t.groupsMu.Lock()
	t.unknownGroup = fn
	t.groupsMu.Unlock()
}

func (t *Transport) raftGroup(group uint32) *RaftTransport {
	t.groupsMu.RLock()
	defer t.groupsMu.RUnlock()
	return t.groups[group]
}

// heldFrame is a Raft request that arrived while its group was being created.
type heldFrame struct {
	l    *link
	h    frameHeader
	body []byte
}

// maxHeldFrames bounds the requests held for a group being created; past it they are refused.
const maxHeldFrames = 256

// holdForGroup serves a request for a group this node does not host: it runs the
// unknown-group handler in the background, once at a time, and hands the group the requests
// that arrived meanwhile, in order, once it exists; so the first AppendEntries to a new
// replica is served rather than refused and retried a commit interval later. It reports false
// when the request was not taken (no handler, or too many held): the caller refuses it.
// from is nil for a request that cannot wait (a snapshot on a connection of its own), which
// only starts the creation.
func (t *Transport) holdForGroup(group uint32, f *heldFrame, from string) bool {
	t.groupsMu.Lock()
	fn := t.unknownGroup
	if fn == nil {
		t.groupsMu.Unlock()
		return false
	}
	held, running := t.creating[group]
	taken := f != nil && len(held) < maxHeldFrames
	if taken {
		held = append(held, *f)
	}
	t.creating[group] = held
	t.groupsMu.Unlock()
	if running {
		return taken
	}
	started := t.goTracked("raft group creation", nil, func() {
		created := fn(group)
		if !created {
			t.logger.Debug("transport: RPC for unknown raft group refused", "group", group, "peer", from)
		}
		for {
			t.groupsMu.Lock()
			held := t.creating[group]
			if len(held) == 0 {
				delete(t.creating, group)
				t.groupsMu.Unlock()
				return
			}
			t.creating[group] = held[:0:0]
			t.groupsMu.Unlock()
			rt := t.raftGroup(group)
			for _, f := range held {
				if rt == nil {
					f.l.refuseRaft(f.h.id, "transport: no replica of raft group %d here", group)
				} else if err := rt.serve(f.l, f.h, f.body, false); err != nil {
					f.l.close(err)
				}
			}
		}
	})
	if !started {
		t.groupsMu.Lock()
		delete(t.creating, group)
		t.groupsMu.Unlock()
		return false
	}
	return taken
}

// Consumer implements raft.Transport.
func (rt *RaftTransport) Consumer() <-chan raft.RPC { return rt.consumer }

// LocalAddr implements raft.Transport.
func (rt *RaftTransport) LocalAddr() raft.ServerAddress { return rt.cfg.Local }

// EncodePeer implements raft.Transport. raft encodes its own address twice into every
// request and once into every answer; those share one slice.
func (rt *RaftTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	if addr == rt.cfg.Local {
		return rt.localPeer
	}
	return []byte(addr)
}

// DecodePeer implements raft.Transport. A follower decodes its leader's address from every
// request; while the leader stays the same, so does the string.
func (rt *RaftTransport) DecodePeer(b []byte) raft.ServerAddress {
	if last := rt.lastPeer.Load(); last != nil && string(*last) == string(b) {
		return *last
	}
	addr := raft.ServerAddress(b)
	rt.lastPeer.Store(&addr)
	return addr
}

// SetHeartbeatHandler implements raft.Transport: heartbeats are answered on the link's
// reader, without waiting behind the group's other RPCs.
func (rt *RaftTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		rt.heartbeat.Store(nil)
		return
	}
	rt.heartbeat.Store(&cb)
}

// AppendEntries implements raft.Transport.
func (rt *RaftTransport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return rt.call(target, raftAppendEntries, args, resp)
}

// RequestVote implements raft.Transport.
func (rt *RaftTransport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return rt.call(target, raftRequestVote, args, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (rt *RaftTransport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return rt.call(target, raftRequestPreVote, args, resp)
}

// TimeoutNow implements raft.Transport.
func (rt *RaftTransport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return rt.call(target, raftTimeoutNow, args, resp)
}

// Close implements raft.WithClose: it unregisters the group, refuses what raft has not
// answered, and stops the group's goroutine. Idempotent.
func (rt *RaftTransport) Close() error {
	rt.once.Do(func() {
		rt.t.groupsMu.Lock()
		if rt.t.groups[rt.cfg.Group] == rt {
			delete(rt.t.groups, rt.cfg.Group)
		}
		rt.t.groupsMu.Unlock()
		rt.mu.Lock()
		rt.closed = true
		rt.mu.Unlock()
		close(rt.done)
	})
	return nil
}

// frame encodes a request of kind for target into a pooled buffer.
func (rt *RaftTransport) frame(kind uint8, id, incarnation uint64, args any) *[]byte {
	buf := getLinkBuf()
	b := appendFrameHeader(*buf, frameHeader{typ: frameRaftReq, kind: kind, group: rt.cfg.Group, id: id, aux: incarnation})
	b = appendRaftRequest(b, kind, args)
	if ae, ok := args.(*raft.AppendEntriesRequest); ok && len(b) > raftFrameBudget && len(ae.Entries) > 1 {
		// Send a prefix of the entries that fits: raft advances the follower by the
		// entries of the request it gets back, which is this one.
		ae.Entries = ae.Entries[:entriesWithin(ae.Entries, raftFrameBudget)]
		b = appendFrameHeader(b[:0], frameHeader{typ: frameRaftReq, kind: kind, group: rt.cfg.Group, id: id, aux: incarnation})
		b = appendRaftRequest(b, kind, args)
	}
	*buf = finishFrame(b)
	return buf
}

// entriesWithin is how many of entries (at least one) fit in budget bytes.
func entriesWithin(entries []*raft.Log, budget int) int {
	size := 0
	for i, e := range entries {
		size += len(e.Data) + len(e.Extensions) + 64
		if size > budget && i > 0 {
			return i
		}
	}
	return len(entries)
}

// call sends one RPC and waits for its answer, at most the RPC timeout.
func (rt *RaftTransport) call(target raft.ServerAddress, kind uint8, args, resp any) error {
	addr, inc, err := rt.cfg.Resolve(target)
	if err != nil {
		return err
	}
	ae, isAE := args.(*raft.AppendEntriesRequest)
	bulk := isAE && !isHeartbeat(ae)
	slot := rt.cfg.Group
	if bulk {
		slot = bulkSlot
	}
	l, err := rt.t.link(rt.t.linkSet(addr), slot, rt.cfg.Timeout)
	if err != nil {
		return err
	}
	w := getWaiter(resp)
	id, err := l.register(w)
	if err != nil {
		putWaiter(w)
		return err
	}
	buf := rt.frame(kind, id, inc, args)
	err = l.send(*buf, !bulk)
	putLinkBuf(buf)
	if err == nil {
		timer := timerpool.Get(rt.cfg.Timeout)
		defer timerpool.Put(timer)
		select {
		case err = <-w.done:
			putWaiter(w)
			return err
		case <-timer.C:
			err = fmt.Errorf("transport: raft RPC to %s timed out after %v", addr, rt.cfg.Timeout)
		case <-rt.done:
			err = ErrClosed
		}
	}
	if answered, answer := l.forget(id, w); answered {
		err = answer
	}
	return err
}

// answerLoop returns raft's answers to whoever asked, in the order the RPCs were handed to
// raft, which answers them one by one in that order.
func (rt *RaftTransport) answerLoop() {
	for {
		select {
		case r := <-rt.responses:
			rt.mu.Lock()
			if len(rt.queue) == 0 {
				rt.mu.Unlock()
				rt.t.logger.Error("transport: raft answered an RPC it was not given", "group", rt.cfg.Group)
				continue
			}
			in := rt.queue[0]
			// Shift rather than reslice, so the array is reused: the queue is short.
			n := copy(rt.queue, rt.queue[1:])
			rt.queue[n] = inboundRPC{}
			rt.queue = rt.queue[:n]
			rt.mu.Unlock()
			rt.answer(in, r)
		case <-rt.done:
			rt.mu.Lock()
			queue := rt.queue
			rt.queue = nil
			rt.mu.Unlock()
			for _, in := range queue {
				rt.answer(in, raft.RPCResponse{Error: ErrClosed})
			}
			return
		}
	}
}

// answer sends r to the one waiting for it.
func (rt *RaftTransport) answer(in inboundRPC, r raft.RPCResponse) {
	if in.snap != nil {
		in.snap <- r
		return
	}
	in.l.answerRaft(in.id, r)
}

// answerRaft sends raft's answer r to request id.
func (l *link) answerRaft(id uint64, r raft.RPCResponse) {
	buf := getLinkBuf()
	*buf = finishFrame(appendRaftAnswer(*buf, id, r))
	_ = l.send(*buf, true)
	putLinkBuf(buf)
}

// appendRaftAnswer appends the response frame of request id.
func appendRaftAnswer(b []byte, id uint64, r raft.RPCResponse) []byte {
	if r.Error == nil {
		h := frameHeader{typ: frameRaftResp, kind: statusOK, id: id}
		start := len(b)
		b = appendFrameHeader(b, h)
		var ok bool
		if b, ok = appendRaftResponse(b, r.Response); ok {
			return b
		}
		b = b[:start]
		r.Error = fmt.Errorf("transport: raft answered with %T", r.Response)
	}
	b = appendFrameHeader(b, frameHeader{typ: frameRaftResp, kind: statusError, id: id})
	return append(b, r.Error.Error()...)
}

// refuseRaft answers request id with an error without bothering raft.
func (l *link) refuseRaft(id uint64, format string, args ...any) {
	l.answerRaft(id, raft.RPCResponse{Error: fmt.Errorf(format, args...)})
}

// serveRaftFrame hands a Raft request that arrived on l to its group. It returns an error
// only for a malformed frame, which ends the link.
func (t *Transport) serveRaftFrame(l *link, h frameHeader, body []byte) error {
	t.groupsMu.RLock()
	rt := t.groups[h.group]
	_, creating := t.creating[h.group]
	t.groupsMu.RUnlock()
	if rt == nil || creating {
		if !t.holdForGroup(h.group, &heldFrame{l: l, h: h, body: body}, l.peer) {
			l.refuseRaft(h.id, "transport: no replica of raft group %d here", h.group)
		}
		return nil
	}
	return rt.serve(l, h, body, true)
}

// serve hands a Raft request that arrived on l to raft. It returns an error only for a
// malformed frame, which ends the link. onReader says it runs on l's reader, which alone
// may answer heartbeats at once (through l.hbResp); elsewhere they queue like the rest.
func (rt *RaftTransport) serve(l *link, h frameHeader, body []byte, onReader bool) error {
	if h.aux != rt.cfg.Incarnation {
		l.refuseRaft(h.id, "transport: raft RPC addressed to incarnation %x, this node is %x", h.aux, rt.cfg.Incarnation)
		return nil
	}
	cmd, err := decodeRaftRequest(h.kind, body)
	if err != nil {
		return err
	}
	if ae, ok := cmd.(*raft.AppendEntriesRequest); ok && onReader && isHeartbeat(ae) {
		if hb := rt.heartbeat.Load(); hb != nil {
			// raft answers a heartbeat at once, or not at all when it is shutting down.
			select {
			case <-l.hbResp:
			default:
			}
			(*hb)(raft.RPC{Command: ae, RespChan: l.hbResp})
			select {
			case r := <-l.hbResp:
				l.answerRaft(h.id, r)
			default:
				l.refuseRaft(h.id, "transport: raft group %d is shutting down", h.group)
			}
			return nil
		}
	}
	if !rt.enqueue(raft.RPC{Command: cmd, RespChan: rt.responses}, inboundRPC{l: l, id: h.id}) {
		l.refuseRaft(h.id, "transport: raft group %d is busy or closed", h.group)
	}
	return nil
}

// enqueue hands rpc to raft without waiting, noting who waits for its answer. It reports
// false when the group is closed or has inboundQueue RPCs waiting.
func (rt *RaftTransport) enqueue(rpc raft.RPC, in inboundRPC) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return false
	}
	select {
	case rt.consumer <- rpc:
		rt.queue = append(rt.queue, in)
		return true
	default:
		return false
	}
}

// isHeartbeat reports whether a is a bare heartbeat, which raft answers from any state
// without touching its log.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && a.Addr != nil && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 &&
		len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

// AppendEntriesPipeline implements raft.Transport: AppendEntries to one follower sent
// without waiting for the answers of the ones before, at most pipelineWindow at once.
func (rt *RaftTransport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	addr, inc, err := rt.cfg.Resolve(target)
	if err != nil {
		return nil, err
	}
	l, err := rt.t.link(rt.t.linkSet(addr), bulkSlot, rt.cfg.Timeout)
	if err != nil {
		return nil, err
	}
	return &pipeline{
		rt:          rt,
		l:           l,
		incarnation: inc,
		window:      make(chan struct{}, pipelineWindow),
		ready:       make(chan raft.AppendFuture, pipelineWindow),
		closeCh:     make(chan struct{}),
		ended:       make(chan struct{}),
	}, nil
}

// pipeline is one group's AppendEntries pipeline to one follower, over one link. Answers
// are handed to raft in the order the requests were sent, whatever order they come in.
type pipeline struct {
	rt          *RaftTransport
	l           *link
	incarnation uint64
	// window holds a token per request sent and not yet consumed by raft (taken back in
	// Response), so ready never fills.
	window chan struct{}
	ready  chan raft.AppendFuture

	mu      sync.Mutex // guards sent, closed and ending
	sent    []*appendFuture
	closed  bool
	closeCh chan struct{}
	// ended is closed once an answer that stops raft's reader of ready is in ready: raft
	// reads no further, so the window tokens of the requests after it never come back, and
	// a send waiting for one would wait for ever while raft waits for the send.
	ended  chan struct{}
	ending bool
}

// appendFuture is a pipelined AppendEntries.
type appendFuture struct {
	p     *pipeline
	id    uint64
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	done  bool // guarded by p.mu
	taken atomic.Bool
}

func (f *appendFuture) Error() error                          { return f.err }
func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.args }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { f.release(); return f.resp }

// release gives f's window token back, once.
func (f *appendFuture) release() {
	if f.taken.CompareAndSwap(false, true) {
		<-f.p.window
	}
}

// complete records f's outcome and hands raft every answer now ready in sending order.
func (f *appendFuture) complete(err error) {
	p := f.p
	p.mu.Lock()
	defer p.mu.Unlock()
	f.err, f.done = err, true
	for len(p.sent) > 0 && p.sent[0].done {
		head := p.sent[0]
		n := copy(p.sent, p.sent[1:]) // at most pipelineWindow: shift, keeping the array
		p.sent[n] = nil
		p.sent = p.sent[:n]
		select {
		case p.ready <- head:
		default: // cannot happen: every future in ready holds a window token
			p.rt.t.logger.Error("transport: pipeline answers overflowed", "group", p.rt.cfg.Group)
		}
		if !p.ending && endsPipeline(head) {
			p.ending = true
			close(p.ended)
		}
	}
}

// endsPipeline reports whether raft stops reading a pipeline's answers at f: a failed
// request, a refusal, or a newer term (raft's pipelineDecode).
func endsPipeline(f *appendFuture) bool {
	return f.err != nil || !f.resp.Success || f.resp.Term > f.args.Term
}

// errPipelineEnded fails a pipelined send after raft stopped reading the pipeline's answers.
var errPipelineEnded = errors.New("transport: pipeline ended by a failed or refused AppendEntries")

// AppendEntries implements raft.AppendPipeline.
//
// A send waits for room in the window at most the RPC timeout, and not at all once raft has
// stopped reading answers: raft's sender and reader of a pipeline are separate goroutines,
// and the sender leaves only between sends.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if err := p.reserve(); err != nil {
		return nil, err
	}
	f := &appendFuture{p: p, start: time.Now(), args: args, resp: resp}
	w := getWaiter(resp)
	w.fut = f
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		putWaiter(w)
		<-p.window
		return nil, raft.ErrPipelineShutdown
	}
	id, err := p.l.register(w)
	if err != nil {
		p.mu.Unlock()
		putWaiter(w)
		<-p.window
		return nil, err
	}
	f.id = id
	p.sent = append(p.sent, f)
	p.mu.Unlock()
	buf := p.rt.frame(raftAppendEntries, id, p.incarnation, args)
	err = p.l.send(*buf, false) // on failure the link's close completes f
	putLinkBuf(buf)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// reserve takes a window token for one request.
func (p *pipeline) reserve() error {
	select {
	case <-p.ended:
		return errPipelineEnded
	default:
	}
	select {
	case p.window <- struct{}{}:
		return nil
	default:
	}
	timer := time.NewTimer(p.rt.cfg.Timeout)
	defer timer.Stop()
	select {
	case p.window <- struct{}{}:
		return nil
	case <-p.ended:
		return errPipelineEnded
	case <-p.closeCh:
		return raft.ErrPipelineShutdown
	case <-p.l.closed:
		return fmt.Errorf("%w: %w", errLinkClosed, p.l.err)
	case <-timer.C:
		return fmt.Errorf("transport: %d pipelined AppendEntries unanswered for %v", pipelineWindow, p.rt.cfg.Timeout)
	}
}

// Consumer implements raft.AppendPipeline.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.ready }

// Close implements raft.AppendPipeline: the requests in flight are forgotten.
func (p *pipeline) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.closeCh)
	for _, f := range p.sent {
		if !f.done {
			if w := p.l.take(f.id); w != nil {
				putWaiter(w)
			}
		}
	}
	p.sent = nil
	return nil
}

// InstallSnapshot implements raft.Transport. A snapshot travels on a connection of its own,
// so that TCP's flow control paces it and the links' other traffic does not wait behind it.
func (rt *RaftTransport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	addr, inc, err := rt.cfg.Resolve(target)
	if err != nil {
		return err
	}
	timeout := rt.cfg.Timeout * time.Duration(max(1, args.Size/snapshotTimeoutScale))
	ctx, cancel := contextWithTimeout(rt.t.baseCtx, timeout)
	defer cancel()
	c, err := rt.t.dialConn(ctx, addr, connTypeSnap, rt.cfg.Timeout)
	if err != nil {
		return err
	}
	cc := newCoalescingConn(c, rt.t.opts.WriteTimeout, muxFaults{faults: rt.t.opts.Faults, local: rt.t.advertise, remote: addr})
	defer cc.Close()
	stop := context.AfterFunc(ctx, func() { _ = cc.Close() })
	defer stop()

	buf := rt.frame(raftInstallSnapshot, 1, inc, args)
	_, err = cc.Write(*buf)
	putLinkBuf(buf)
	if err != nil {
		return fmt.Errorf("transport: sending snapshot to %s: %w", addr, err)
	}
	if n, err := io.CopyN(cc, data, args.Size); err != nil {
		return fmt.Errorf("transport: sending snapshot to %s after %d of %d bytes: %w", addr, n, args.Size, err)
	}
	var hdr [linkHeaderSize]byte
	h, body, err := readLinkFrame(bufio.NewReaderSize(cc.Conn, 4096), &hdr, rt.t.opts.MaxFrameSize, nil, 0)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v: %w", timeout, err)
		}
		return fmt.Errorf("transport: snapshot answer from %s: %w", addr, err)
	}
	if h.typ != frameRaftResp {
		return fmt.Errorf("%w: frame type %d answering a snapshot", errMalformedFrame, h.typ)
	}
	if h.kind != statusOK {
		return &RemoteError{Msg: string(body)}
	}
	return decodeRaftResponse(body, resp)
}

// serveSnapshot receives one InstallSnapshot on a connection of its own and answers it.
func (t *Transport) serveSnapshot(c net.Conn, from string) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(t.opts.ReadTimeout))
	br := bufio.NewReaderSize(c, linkReadBuffer)
	var hdr [linkHeaderSize]byte
	h, body, err := readLinkFrame(br, &hdr, t.opts.MaxFrameSize, nil, 0)
	if err == nil && (h.typ != frameRaftReq || h.kind != raftInstallSnapshot) {
		err = fmt.Errorf("%w: frame type %d kind %d on a snapshot connection", errMalformedFrame, h.typ, h.kind)
	}
	if err != nil {
		t.logger.Warn("transport: bad snapshot connection", "peer", from, "error", err)
		return
	}
	answer := func(r raft.RPCResponse) {
		b := finishFrame(appendRaftAnswer(nil, h.id, r))
		_ = c.SetWriteDeadline(time.Now().Add(t.opts.WriteTimeout))
		_, _ = c.Write(b)
	}
	rt := t.raftGroup(h.group)
	switch {
	case rt == nil:
		t.holdForGroup(h.group, nil, from)
		answer(raft.RPCResponse{Error: fmt.Errorf("transport: no replica of raft group %d here yet", h.group)})
		return
	case h.aux != rt.cfg.Incarnation:
		answer(raft.RPCResponse{Error: fmt.Errorf("transport: snapshot addressed to incarnation %x, this node is %x", h.aux, rt.cfg.Incarnation)})
		return
	}
	cmd, err := decodeRaftRequest(h.kind, body)
	if err != nil {
		t.logger.Warn("transport: bad snapshot request", "peer", from, "error", err)
		return
	}
	req := cmd.(*raft.InstallSnapshotRequest)
	if req.Size < 0 {
		t.logger.Warn("transport: snapshot of negative size", "peer", from)
		return
	}
	// The data is read by raft as it installs; the deadline follows the sender's.
	_ = c.SetReadDeadline(time.Now().Add(t.opts.ReadTimeout * time.Duration(max(1, req.Size/snapshotTimeoutScale))))
	got := make(chan raft.RPCResponse, 1)
	if !rt.enqueue(raft.RPC{Command: req, Reader: io.LimitReader(br, req.Size), RespChan: rt.responses}, inboundRPC{snap: got}) {
		answer(raft.RPCResponse{Error: fmt.Errorf("transport: raft group %d is busy or closed", h.group)})
		return
	}
	select {
	case r := <-got:
		answer(r)
	case <-t.done:
	}
}

// contextWithTimeout is context.WithTimeout that treats a non-positive timeout as none.
func contextWithTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, d)
}
