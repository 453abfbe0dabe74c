package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A link is one TCP connection carrying frames: the Raft traffic of every group and the
// requests of Call between two nodes. The dialer sends requests and reads their responses;
// the accepting side reads requests and answers on the same connection. Every frame names
// the request it belongs to, so any number of requests of any number of groups are in
// flight on a link at once, and their answers may come back in any order.
//
// Frame layout (big-endian):
//
//	uint32 length of what follows
//	uint8  frame type (frameRaftReq, frameRaftResp, frameCallReq, frameCallResp)
//	uint8  kind: the Raft RPC (raft*), the Call kind, or a response status (status*)
//	uint32 Raft group (Raft requests; zero otherwise)
//	uint64 request ID, chosen by the dialer and echoed in the response
//	uint64 the target's incarnation (Raft requests) or the caller's time budget in
//	       nanoseconds (Call requests); zero otherwise
//	body   the message: a raftcodec encoding, a Call body, or an error text
//
// Each link has two goroutines, whatever it carries: a reader that decodes frames and hands
// them on, and the coalescingConn flusher, which writes in one system call every frame queued
// while the previous write was on the wire. Senders never wait for the network unless more
// than maxPending bytes are queued.
const (
	linkHeaderSize = 4 + 1 + 1 + 4 + 8 + 8

	frameRaftReq  uint8 = 1
	frameRaftResp uint8 = 2
	frameCallReq  uint8 = 3
	frameCallResp uint8 = 4

	// maxLinkFrame bounds any frame on a link. Raft frames may carry many log entries, so the
	// bound is above MaxFrameSize (which still bounds Call frames); the reader allocates as
	// the bytes arrive, not on the length prefix's say-so.
	maxLinkFrame = 64 << 20
	// raftFrameBudget is the encoded size past which an AppendEntries sends fewer entries
	// than raft gave it (raft advances by what the follower acknowledged), so that no frame
	// holds the link's reader for long.
	raftFrameBudget = 4 << 20
	// eagerFrameAlloc is the largest body allocated at once from the length prefix.
	eagerFrameAlloc = 1 << 20

	linkReadBuffer = 64 << 10
)

// errLinkClosed fails the requests in flight on a link that ended.
var errLinkClosed = errors.New("transport: connection to peer closed")

// link is one framed connection, in either direction.
type link struct {
	t      *Transport
	peer   string // the other end's advertised address
	cc     *coalescingConn
	closed chan struct{} // closed when the link has ended
	once   sync.Once
	err    error // why it ended; written before closed is closed

	// mu guards waiters and nextID (dialled links only).
	mu      sync.Mutex
	waiters map[uint64]*waiter
	nextID  uint64

	// handlers counts the request handlers running for this (inbound) link.
	handlers atomic.Int64

	// hbResp receives raft's answers to heartbeats, which the reader serves itself.
	hbResp chan raft.RPCResponse

	// used is set by every send; the idle sweep clears it and notes when it last found it
	// set in lastUsed (UnixNano, written by the sweep only).
	used     atomic.Bool
	lastUsed atomic.Int64
}

func newLink(t *Transport, c net.Conn, peer string) *link {
	l := &link{
		t:       t,
		peer:    peer,
		cc:      newCoalescingConn(c, t.opts.WriteTimeout, muxFaults{faults: t.opts.Faults, local: t.advertise, remote: peer}),
		closed:  make(chan struct{}),
		waiters: make(map[uint64]*waiter),
		hbResp:  make(chan raft.RPCResponse, 1),
	}
	l.lastUsed.Store(time.Now().UnixNano())
	return l
}

// close ends the link once with err and fails every request in flight on it.
func (l *link) close(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.closed)
		_ = l.cc.Close()
		l.mu.Lock()
		ws := l.waiters
		l.waiters = nil
		l.mu.Unlock()
		for _, w := range ws {
			w.finish(nil, fmt.Errorf("%w: %w", errLinkClosed, err))
		}
	})
}

// dead reports whether the link has ended.
func (l *link) dead() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// waiter is a request in flight on a dialled link: who receives the response.
type waiter struct {
	// done receives the outcome of a synchronous request (raft RPC or Call); nil for a
	// pipelined AppendEntries, whose future is fut.
	done chan error
	// resp is where a Raft answer is decoded: a pointer to raft's response struct; nil for
	// a Call.
	resp any
	// body receives a Call's response body.
	body []byte
	fut  *appendFuture
}

var waiterPool = sync.Pool{New: func() any { return &waiter{done: make(chan error, 1)} }}

func getWaiter(resp any) *waiter {
	w := waiterPool.Get().(*waiter)
	w.resp = resp
	return w
}

// putWaiter returns w to the pool. Only the owner of w may call it: the one that took w out
// of its link's waiters, after the outcome (if any) was received from done.
func putWaiter(w *waiter) {
	w.resp, w.body, w.fut = nil, nil, nil
	waiterPool.Put(w)
}

// forget gives up on request id, whose waiter is w, and returns w to the pool. When the
// answer came meanwhile (the link's reader took w first), answered is true and err is its
// outcome: the waiter is drained before it is reused.
func (l *link) forget(id uint64, w *waiter) (answered bool, err error) {
	if l.take(id) == nil {
		answered, err = true, <-w.done
	}
	putWaiter(w)
	return answered, err
}

// finish delivers the outcome. It is called by whoever removed w from its link's waiters.
// A pipelined request's waiter goes back to the pool here: nothing else refers to it once
// it is out of the link's waiters (its pipeline keeps only the future).
func (w *waiter) finish(body []byte, err error) {
	if f := w.fut; f != nil {
		putWaiter(w)
		f.complete(err)
		return
	}
	w.body = body
	w.done <- err
}

// register adds w and returns its request ID, or fails when the link has ended.
func (l *link) register(w *waiter) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiters == nil {
		return 0, fmt.Errorf("%w: %w", errLinkClosed, l.err)
	}
	l.nextID++
	l.waiters[l.nextID] = w
	return l.nextID, nil
}

// take removes the waiter of id and returns it, or nil when it is gone (answered, abandoned,
// or the link ended). Whoever takes a waiter finishes it.
func (l *link) take(id uint64) *waiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.waiters[id]
	if w != nil {
		delete(l.waiters, id)
	}
	return w
}

// urgentFrame is the largest frame that may be sent ahead of bulk frames.
const urgentFrame = 64 << 10

// send queues one frame. The frame is copied; buf may be reused when send returns. An urgent
// frame no larger than urgentFrame goes ahead of the bulk frames queued (log entries), which
// keep their order; requests and answers are urgent, AppendEntries carrying entries are not.
func (l *link) send(buf []byte, urgent bool) error {
	if !l.used.Load() {
		l.used.Store(true)
	}
	write := l.cc.Write
	if urgent && len(buf) <= urgentFrame {
		write = l.cc.WriteUrgent
	}
	if _, err := write(buf); err != nil {
		l.close(err)
		return fmt.Errorf("%w: %w", errLinkClosed, err)
	}
	return nil
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	typ, kind uint8
	group     uint32
	id        uint64
	aux       uint64 // incarnation or time budget
}

// appendFrameHeader starts a frame in b; finishFrame fills in its length once the body is
// appended.
func appendFrameHeader(b []byte, h frameHeader) []byte {
	b = append(b, 0, 0, 0, 0, h.typ, h.kind)
	b = binary.BigEndian.AppendUint32(b, h.group)
	b = binary.BigEndian.AppendUint64(b, h.id)
	return binary.BigEndian.AppendUint64(b, h.aux)
}

func finishFrame(b []byte) []byte {
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// linkBufPool recycles frame encode buffers; large ones are dropped.
var linkBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getLinkBuf() *[]byte { return linkBufPool.Get().(*[]byte) }

func putLinkBuf(b *[]byte) {
	if cap(*b) > 256<<10 {
		return
	}
	*b = (*b)[:0]
	linkBufPool.Put(b)
}

// readLinkFrame reads one frame's header and body. The body is freshly allocated and never
// reused, so decoded messages may alias it. With conn set, a frame that has begun must
// arrive whole within timeout; the wait for a frame to begin has no deadline, and a frame
// already buffered costs no deadline at all.
func readLinkFrame(r *bufio.Reader, hdr *[linkHeaderSize]byte, max int, conn net.Conn, timeout time.Duration) (frameHeader, []byte, error) {
	if _, err := r.Peek(1); err != nil {
		return frameHeader{}, nil, err
	}
	deadline := false
	if conn != nil && r.Buffered() < linkHeaderSize {
		deadline = true
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
	}
	h, body, err := readLinkFrameBody(r, hdr, max, conn, timeout, &deadline)
	if deadline && err == nil {
		_ = conn.SetReadDeadline(time.Time{})
	}
	return h, body, err
}

func readLinkFrameBody(r *bufio.Reader, hdr *[linkHeaderSize]byte, max int, conn net.Conn, timeout time.Duration, deadline *bool) (frameHeader, []byte, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frameHeader{}, nil, unexpectedEOF(err)
	}
	n := int(binary.BigEndian.Uint32(hdr[:4]))
	if n < linkHeaderSize-4 || n > max {
		return frameHeader{}, nil, fmt.Errorf("%w: frame of %d bytes, limit %d", errMalformedFrame, n, max)
	}
	h := frameHeader{
		typ:   hdr[4],
		kind:  hdr[5],
		group: binary.BigEndian.Uint32(hdr[6:10]),
		id:    binary.BigEndian.Uint64(hdr[10:18]),
		aux:   binary.BigEndian.Uint64(hdr[18:26]),
	}
	size := n - (linkHeaderSize - 4)
	if size == 0 {
		return h, nil, nil
	}
	if conn != nil && !*deadline && r.Buffered() < size {
		*deadline = true
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
	}
	if size <= eagerFrameAlloc {
		body := make([]byte, size)
		_, err := io.ReadFull(r, body)
		return h, body, unexpectedEOF(err)
	}
	// A large frame is allocated whole only once its first eagerFrameAlloc bytes have
	// arrived: a peer's length prefix alone does not make this node reserve megabytes.
	head := make([]byte, eagerFrameAlloc)
	if _, err := io.ReadFull(r, head); err != nil {
		return h, nil, unexpectedEOF(err)
	}
	body := make([]byte, size)
	copy(body, head)
	_, err := io.ReadFull(r, body[eagerFrameAlloc:])
	return h, body, unexpectedEOF(err)
}

// readLoop reads the link's frames until it ends, then closes it. A malformed frame or one
// that has no business on this side of the link ends the link: the peer does not speak the
// protocol, and nothing it sent is acted on.
func (l *link) readLoop(inbound bool) {
	br := bufio.NewReaderSize(l.cc.Conn, linkReadBuffer)
	var hdr [linkHeaderSize]byte
	for {
		h, body, err := readLinkFrame(br, &hdr, maxLinkFrame, l.cc.Conn, l.t.opts.ReadTimeout)
		if err != nil {
			if isProtocolError(err) {
				l.t.logger.Warn("transport: closing connection to peer", "peer", l.peer, "error", err)
			}
			l.close(err)
			return
		}
		switch {
		case inbound && h.typ == frameRaftReq:
			err = l.t.serveRaftFrame(l, h, body)
		case inbound && h.typ == frameCallReq:
			err = l.t.serveCallFrame(l, h, body)
		case !inbound && (h.typ == frameRaftResp || h.typ == frameCallResp):
			err = l.deliver(h, body)
		default:
			err = fmt.Errorf("%w: frame type %d on an %s link", errMalformedFrame, h.typ, direction(inbound))
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.t.logger.Warn("transport: closing connection to peer", "peer", l.peer, "error", err)
			}
			l.close(err)
			return
		}
	}
}

func direction(inbound bool) string {
	if inbound {
		return "inbound"
	}
	return "outbound"
}

// deliver hands a response to its waiter. A response nobody waits for any more (its caller
// gave up) is dropped.
func (l *link) deliver(h frameHeader, body []byte) error {
	w := l.take(h.id)
	if w == nil {
		return nil
	}
	switch h.kind {
	case statusOK:
	case statusError, statusUnknownKind:
		w.finish(nil, &RemoteError{Msg: string(body), unknownKind: h.kind == statusUnknownKind})
		return nil
	default:
		w.finish(nil, fmt.Errorf("%w: response status %d", errMalformedFrame, h.kind))
		return errMalformedFrame
	}
	if (h.typ == frameRaftResp) != (w.resp != nil) {
		w.finish(nil, fmt.Errorf("%w: frame type %d answering the other kind of request", errMalformedFrame, h.typ))
		return errMalformedFrame
	}
	if w.resp != nil {
		if err := decodeRaftResponse(body, w.resp); err != nil {
			w.finish(nil, err)
			return err
		}
		w.finish(nil, nil)
		return nil
	}
	w.finish(body, nil)
	return nil
}

// linkSet is this node's dialled links to one peer: MaxConns slots for requests (calls, and
// the Raft RPCs other than AppendEntries, a group always on the same one), and one more for
// the AppendEntries of every group, so that heartbeats, votes and calls never wait behind log
// entries on the wire or in the peer's reader. Each is dialled when first needed and again
// after its link ends.
type linkSet struct {
	addr  string
	slots []linkSlot
	next  atomic.Uint32 // round robin for calls
	dials atomic.Int64  // links dialled to the peer over the transport's life
}

type linkSlot struct {
	cur atomic.Pointer[link]
	mu  sync.Mutex // serialises dialling the slot
}

// linkSet returns the dialled links to addr, creating the set on first use.
func (t *Transport) linkSet(addr string) *linkSet {
	t.peersMu.RLock()
	s := t.links[addr]
	t.peersMu.RUnlock()
	if s != nil {
		return s
	}
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	s = t.links[addr]
	if s == nil {
		s = &linkSet{addr: addr, slots: make([]linkSlot, t.opts.MaxConns+1)}
		t.links[addr] = s
	}
	return s
}

// bulkSlot names the link that carries AppendEntries; other slots are taken modulo MaxConns.
const bulkSlot = ^uint32(0)

// link returns a live link of s in slot (modulo MaxConns, or bulkSlot), dialling one if
// needed. timeout bounds the dial.
func (t *Transport) link(s *linkSet, slot uint32, timeout time.Duration) (*link, error) {
	addr := s.addr
	i := len(s.slots) - 1
	if slot != bulkSlot {
		i = int(slot % uint32(len(s.slots)-1))
	}
	sl := &s.slots[i]
	if l := sl.cur.Load(); l != nil && !l.dead() {
		return l, nil
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if l := sl.cur.Load(); l != nil && !l.dead() {
		return l, nil
	}
	if t.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := contextWithTimeout(t.baseCtx, timeout)
	defer cancel()
	c, err := t.dialConn(ctx, addr, connTypeLink, timeout)
	if err != nil {
		return nil, err
	}
	l := newLink(t, c, addr)
	if !t.goTracked("outbound link", nil, func() { l.readLoop(false) }) {
		l.close(ErrClosed)
		return nil, ErrClosed
	}
	t.dialedMux.Add(1)
	s.dials.Add(1)
	sl.cur.Store(l)
	t.logger.Debug("transport: link opened", "peer", addr)
	return l, nil
}

// linkDials is how many links this node has dialled to addr.
func (t *Transport) linkDials(addr string) int64 { return t.linkSet(addr).dials.Load() }

// serveLink runs an accepted link until it ends.
func (t *Transport) serveLink(c net.Conn, from string) {
	t.acceptedMux.Add(1)
	l := newLink(t, c, from)
	l.readLoop(true)
}

// closeIdleLinks closes the dialled links that have sent nothing for idle and have no request
// in flight.
func (t *Transport) closeIdleLinks(now time.Time, idle time.Duration) {
	t.peersMu.RLock()
	var sets []*linkSet
	for _, s := range t.links {
		sets = append(sets, s)
	}
	t.peersMu.RUnlock()
	for _, s := range sets {
		for i := range s.slots {
			l := s.slots[i].cur.Load()
			if l == nil || l.dead() {
				continue
			}
			if l.used.Swap(false) {
				l.lastUsed.Store(now.UnixNano())
				continue
			}
			if l.lastUsed.Load() >= now.Add(-idle).UnixNano() {
				continue
			}
			l.mu.Lock()
			busy := len(l.waiters) > 0
			l.mu.Unlock()
			if !busy {
				t.logger.Debug("transport: closing idle link", "peer", s.addr)
				l.close(ErrClosed)
			}
		}
	}
}

// idleSweepsPerTimeout is how often, per IdleTimeout, the idle sweep runs: a link is closed
// between IdleTimeout and 1.25*IdleTimeout after its last request.
const idleSweepsPerTimeout = 4

// sweepIdleLinks runs until Close, closing the dialled links idle for IdleTimeout. Raft's
// heartbeats keep the links between the replicas of a group in use; a link to a node this one
// only forwarded to once is closed, and dialled again when needed.
func (t *Transport) sweepIdleLinks() {
	tick := time.NewTicker(t.opts.IdleTimeout / idleSweepsPerTimeout)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			t.closeIdleLinks(now, t.opts.IdleTimeout)
			t.idleSweeps.Add(1)
		}
	}
}
