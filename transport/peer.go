package transport

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// peer is the outbound state for one remote address: up to MaxConns yamux
// sessions used round-robin, and idle request streams kept for reuse.
type peer struct {
	addr  string
	slots []*sessionSlot // len == MaxConns; fixed after creation

	// mu protects next, idle and every slot's sess.
	mu   sync.Mutex
	next int             // round-robin cursor over slots
	idle []*yamux.Stream // idle request streams, most recently used last

	// dials counts sessions dialled to this peer over the transport's life.
	dials atomic.Int64
}

// sessionSlot is one of a peer's MaxConns connection slots.
type sessionSlot struct {
	// dialing is a one-token semaphore held while the slot's session is
	// dialled: concurrent callers wait for that dial (or their ctx) instead
	// of opening extra connections past MaxConns.
	dialing chan struct{}
	sess    *yamux.Session // nil until dialled, and again once it breaks; guarded by peer.mu
}

// peer returns the outbound state for addr, creating it on first use.
func (t *Transport) peer(addr string) *peer {
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	p := t.peers[addr]
	if p == nil {
		p = &peer{addr: addr, slots: make([]*sessionSlot, t.opts.MaxConns)}
		for i := range p.slots {
			p.slots[i] = &sessionSlot{dialing: make(chan struct{}, 1)}
		}
		t.peers[addr] = p
	}
	return p
}

// session returns a live outbound session to p, taking the slots in turn and
// dialling a slot that has none (lazily, or again after it broke, e.g.
// because the peer restarted).
func (t *Transport) session(ctx context.Context, p *peer) (*yamux.Session, error) {
	p.mu.Lock()
	slot := p.slots[p.next%len(p.slots)]
	p.next++
	sess := slot.sess
	p.mu.Unlock()
	if sess != nil && !sess.IsClosed() {
		return sess, nil
	}

	select {
	case slot.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.done:
		return nil, ErrClosed
	}
	defer func() { <-slot.dialing }()

	// Someone else may have dialled while this caller waited.
	p.mu.Lock()
	sess = slot.sess
	p.mu.Unlock()
	if sess != nil && !sess.IsClosed() {
		return sess, nil
	}

	sess, err := t.dialSession(ctx, p.addr)
	if err == nil {
		p.dials.Add(1)
	}
	if err != nil {
		// Another slot may still be healthy (this dial may have lost a race
		// with the peer's MaxInbound, say); prefer it to failing the call.
		if live := p.liveSession(); live != nil {
			return live, nil
		}
		return nil, err
	}
	p.mu.Lock()
	slot.sess = sess
	p.mu.Unlock()
	if !t.goTracked("outbound session", sess, func() { t.watchSession(p, slot, sess) }) {
		_ = sess.Close()
		return nil, ErrClosed
	}
	return sess, nil
}

// liveSession returns any open session of p, or nil.
func (p *peer) liveSession() *yamux.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if s.sess != nil && !s.sess.IsClosed() {
			return s.sess
		}
	}
	return nil
}

// dialSession opens a TCP connection to addr, performs the mux handshake and
// starts a yamux client session on it.
func (t *Transport) dialSession(ctx context.Context, addr string) (*yamux.Session, error) {
	// A stuck peer must not hold the dial slot for longer than it would
	// hold a request.
	c, err := t.dialConn(ctx, addr, connTypeMux, t.opts.ReadTimeout+t.opts.WriteTimeout)
	if err != nil {
		return nil, err
	}
	cc := newCoalescingConn(c, t.opts.WriteTimeout, muxFaults{faults: t.opts.Faults, local: t.advertise, remote: addr})
	sess, err := yamux.Client(cc, t.yamuxConf)
	if err != nil { // only for an invalid config, which newYamuxConfig rules out
		_ = cc.Close()
		return nil, fmt.Errorf("transport: yamux client: %w", err)
	}
	t.dialedMux.Add(1)
	t.logger.Debug("transport: session opened", "peer", addr)
	return sess, nil
}

// watchSession owns an outbound session until it ends, then frees its slot
// so the next call redials. The peer is not supposed to open streams on a
// session this node dialled (it has its own); any it opens are closed.
func (t *Transport) watchSession(p *peer, slot *sessionSlot, sess *yamux.Session) {
	defer func() {
		_ = sess.Close()
		p.mu.Lock()
		if slot.sess == sess {
			slot.sess = nil
		}
		p.mu.Unlock()
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if !t.isClosed() {
				t.logger.Debug("transport: session ended", "peer", p.addr, "error", err)
			}
			return
		}
		t.logger.Warn("transport: peer opened a stream on an outbound session; closing it", "peer", p.addr)
		_ = st.Close()
	}
}

// openStream opens a stream to p and writes its header. A session that
// cannot open streams is closed so the next attempt redials.
func (t *Transport) openStream(ctx context.Context, p *peer, header []byte) (*yamux.Stream, error) {
	sess, err := t.session(ctx, p)
	if err != nil {
		return nil, err
	}
	st, err := sess.OpenStream()
	if err != nil {
		_ = sess.Close()
		if t.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("transport: open stream to %s: %w", p.addr, err)
	}
	deadline := time.Now().Add(t.opts.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetWriteDeadline(deadline)
	if _, err := st.Write(header); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("transport: write stream header to %s: %w", p.addr, err)
	}
	_ = st.SetWriteDeadline(time.Time{})
	return st, nil
}

// takeIdle pops an idle request stream whose session is still open.
// Streams of dead sessions are dropped (their session already released
// them).
func (p *peer) takeIdle() *yamux.Stream {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		st := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if !st.Session().IsClosed() {
			return st
		}
	}
	return nil
}

// putIdle keeps st for reuse if there is room; it reports whether it did.
func (p *peer) putIdle(st *yamux.Stream, maxIdle int) bool {
	if st.Session().IsClosed() {
		return false
	}
	st.Shrink() // an idle stream need not keep its receive buffer
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= maxIdle {
		return false
	}
	p.idle = append(p.idle, st)
	return true
}
