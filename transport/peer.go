package transport

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Outbound sessions are opened as load needs them, not up to a target:
//
//   - A new stream goes on the first session, in dial order, that is not
//     busy. A session is busy when sessionBusyStreams or more of its streams
//     are in use: open in yamux (NumStreams) and not idle in the request
//     pool. Raft streams count as in use for as long as raft keeps them.
//   - Only when every open session is busy is another dialled, one dial at a
//     time per peer, and never past MaxConns; meanwhile, and at MaxConns,
//     the least busy session takes the stream.
//   - Filling sessions in order leaves the later ones to drain when load
//     falls: the idle sweep closes a session that has had no stream in use
//     (only idle pooled request streams, or none) for IdleTimeout. The next
//     call that needs one dials again.
const (
	// sessionBusyStreams is the number of in-use streams that makes a
	// session busy. yamux multiplexes streams cheaply and coalescingConn
	// batches their frames into shared writes, so one connection serves
	// moderate concurrency best: on loopback with 2 cores, 4 to 16 callers
	// made calls as fast or faster over one connection than over two, and
	// 32 callers (twice the default MaxIdle, so streams were opened and
	// closed all the time) about 15% faster over two.
	sessionBusyStreams = 32

	// idleSweepsPerTimeout is how often, per IdleTimeout, the idle sweep
	// runs: a session is closed between IdleTimeout and 1.25*IdleTimeout
	// after its last use.
	idleSweepsPerTimeout = 4
)

// peer is the outbound state for one remote address: the yamux sessions
// this node dialled to it (at most MaxConns) and the idle request streams
// kept for reuse (at most MaxIdle).
type peer struct {
	addr string

	// mu protects sessions, dialing, idle and the fields of this peer's
	// outSessions marked as guarded by it. It is held while asking yamux
	// sessions IsClosed and NumStreams; those take only yamux's own locks
	// and never call back into this package.
	mu       sync.Mutex
	sessions []*outSession // open sessions, in the order they were dialled
	dialing  chan struct{} // non-nil while a session is being dialled; closed when that ends
	idle     []idleStream  // idle request streams, most recently used last

	// dials counts sessions dialled to this peer over the transport's life.
	dials atomic.Int64
}

// outSession is one yamux session this node dialled to a peer.
type outSession struct {
	sess *yamux.Session

	// Guarded by peer.mu:
	pooled   int       // streams of this session in peer.idle
	used     bool      // handed out (a stream opened or taken from the pool) since the last idle sweep
	lastUsed time.Time // when it was dialled, or an idle sweep last found it in use
	gone     bool      // no longer in peer.sessions: it ended, or the idle sweep closed it
	reaped   bool      // the idle sweep closed it
}

// idleStream is a request stream kept for reuse, with the session it runs on.
type idleStream struct {
	st *yamux.Stream
	s  *outSession
}

// peer returns the outbound state for addr, creating it on first use.
func (t *Transport) peer(addr string) *peer {
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	p := t.peers[addr]
	if p == nil {
		p = &peer{addr: addr}
		t.peers[addr] = p
	}
	return p
}

// session returns an open outbound session to p for a new stream: the first
// that is not busy, else a new one if MaxConns allows and no other dial is
// under way, else the least busy. With no session open it dials one, or
// waits for the dial another caller started (or for its ctx).
func (t *Transport) session(ctx context.Context, p *peer) (*outSession, error) {
	for {
		p.mu.Lock()
		s, busy := p.pickLocked(t.sessionBusyStreams)
		if s != nil && (!busy || p.dialing != nil || len(p.sessions) >= t.opts.MaxConns) {
			s.used = true
			p.mu.Unlock()
			return s, nil
		}
		if wait := p.dialing; wait != nil { // none open, and one is on its way
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-t.done:
				return nil, ErrClosed
			}
		}
		done := make(chan struct{})
		p.dialing = done
		p.mu.Unlock()
		return t.dialOutSession(ctx, p, done)
	}
}

// dialOutSession dials a new session to p on behalf of session, which set
// p.dialing to done, and adds it to p's sessions.
func (t *Transport) dialOutSession(ctx context.Context, p *peer, done chan struct{}) (*outSession, error) {
	sess, err := t.dialSession(ctx, p.addr)

	p.mu.Lock()
	p.dialing = nil
	close(done)
	if err != nil {
		// A busy session is better than failing the call (this dial may
		// have lost a race with the peer's MaxInbound, say).
		s, _ := p.pickLocked(t.sessionBusyStreams)
		if s != nil {
			s.used = true
		}
		p.mu.Unlock()
		if s != nil {
			return s, nil
		}
		return nil, err
	}
	s := &outSession{sess: sess, used: true, lastUsed: time.Now()}
	p.sessions = append(p.sessions, s)
	p.mu.Unlock()

	p.dials.Add(1)
	if !t.goTracked("outbound session", sess, func() { t.watchSession(p, s) }) {
		_ = sess.Close()
		return nil, ErrClosed
	}
	return s, nil
}

// pickLocked drops sessions that have ended and returns the first open
// session that is not busy or, when all are busy (busy is then true), the
// one with the fewest streams in use. It returns nil when none is open.
func (p *peer) pickLocked(busyStreams int) (best *outSession, busy bool) {
	fewest := 0
	for i := 0; i < len(p.sessions); {
		s := p.sessions[i]
		if s.sess.IsClosed() {
			p.removeLocked(i)
			continue
		}
		inUse := s.sess.NumStreams() - s.pooled
		if inUse < busyStreams {
			return s, false
		}
		if best == nil || inUse < fewest {
			best, fewest = s, inUse
		}
		i++
	}
	return best, best != nil
}

// removeLocked takes p.sessions[i] out of use: out of the session list and,
// with its streams, out of the idle pool. Closing it is the caller's job.
func (p *peer) removeLocked(i int) {
	s := p.sessions[i]
	s.gone = true
	p.sessions = slices.Delete(p.sessions, i, i+1)
	if s.pooled > 0 {
		p.idle = slices.DeleteFunc(p.idle, func(e idleStream) bool { return e.s == s })
		s.pooled = 0
	}
}

// dialSession opens a TCP connection to addr, performs the mux handshake and
// starts a yamux client session on it.
func (t *Transport) dialSession(ctx context.Context, addr string) (*yamux.Session, error) {
	// A stuck peer must not hold up the callers waiting for this dial for
	// longer than it would hold a request.
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

// watchSession owns an outbound session until it ends, then takes it out
// of p's sessions so that it is not handed out again. The peer is not
// supposed to open streams on a session this node dialled (it has its
// own); any it opens are closed.
func (t *Transport) watchSession(p *peer, s *outSession) {
	defer func() {
		_ = s.sess.Close()
		p.mu.Lock()
		if i := slices.Index(p.sessions, s); i >= 0 {
			p.removeLocked(i)
		}
		p.mu.Unlock()
	}()
	for {
		st, err := s.sess.AcceptStream()
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

// openStream opens a stream to p and writes its header; it returns the
// session the stream runs on. A session that cannot open streams is closed
// so that the next attempt dials again.
func (t *Transport) openStream(ctx context.Context, p *peer, header []byte) (*yamux.Stream, *outSession, error) {
	s, st, err := t.newStream(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(t.opts.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetWriteDeadline(deadline)
	if _, err := st.Write(header); err != nil {
		_ = st.Close()
		return nil, nil, fmt.Errorf("transport: write stream header to %s: %w", p.addr, err)
	}
	_ = st.SetWriteDeadline(time.Time{})
	return st, s, nil
}

// newStream opens a yamux stream on one of p's sessions.
func (t *Transport) newStream(ctx context.Context, p *peer) (*outSession, *yamux.Stream, error) {
	for {
		s, err := t.session(ctx, p)
		if err != nil {
			return nil, nil, err
		}
		st, err := s.sess.OpenStream()
		if err == nil {
			return s, st, nil
		}
		if t.isClosed() {
			return nil, nil, ErrClosed
		}
		if p.wasReaped(s) && ctx.Err() == nil {
			// The idle sweep closed it after it was picked (which takes a
			// caller stalled for a whole IdleTimeout): the link is fine.
			continue
		}
		_ = s.sess.Close()
		return nil, nil, fmt.Errorf("transport: open stream to %s: %w", p.addr, err)
	}
}

// wasReaped reports whether the idle sweep closed s.
func (p *peer) wasReaped(s *outSession) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.reaped
}

// takeIdle pops an idle request stream whose session is still open, and
// returns it with its session. Streams of closed sessions are dropped
// (their session already released them).
func (p *peer) takeIdle() (*yamux.Stream, *outSession) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		e := p.idle[n-1]
		p.idle[n-1] = idleStream{}
		p.idle = p.idle[:n-1]
		e.s.pooled--
		if !e.s.sess.IsClosed() {
			e.s.used = true
			return e.st, e.s
		}
	}
	return nil, nil
}

// putIdle keeps st, a request stream of s, for reuse if there is room and s
// is still in use; it reports whether it did.
func (p *peer) putIdle(st *yamux.Stream, s *outSession, maxIdle int) bool {
	if s.sess.IsClosed() {
		return false
	}
	st.Shrink() // an idle stream need not keep its receive buffer
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.gone || len(p.idle) >= maxIdle {
		return false
	}
	p.idle = append(p.idle, idleStream{st: st, s: s})
	s.pooled++
	return true
}

// sweepIdleSessions runs until Close, closing every IdleTimeout/4 the
// outbound sessions that have been idle for IdleTimeout.
func (t *Transport) sweepIdleSessions() {
	tick := time.NewTicker(t.opts.IdleTimeout / idleSweepsPerTimeout)
	defer tick.Stop()
	var peers []*peer
	var idle []*yamux.Session
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			t.peersMu.Lock()
			for _, p := range t.peers {
				peers = append(peers, p)
			}
			t.peersMu.Unlock()
			for _, p := range peers {
				idle = p.reapIdle(now, t.opts.IdleTimeout, idle[:0])
				for _, sess := range idle {
					t.logger.Debug("transport: closing idle session", "peer", p.addr, "idle_timeout", t.opts.IdleTimeout)
					_ = sess.Close()
				}
			}
			clear(peers)
			peers = peers[:0]
			clear(idle)
			t.idleSweeps.Add(1)
		}
	}
}

// reapIdle takes out of use the sessions of p that have had no stream in
// use since an idle sweep at least idleTimeout before now, and appends them
// to closing for the caller to close. A stream in use is one open in yamux
// and not idle in the pool, so raft's streams keep their session open for
// as long as raft holds them.
func (p *peer) reapIdle(now time.Time, idleTimeout time.Duration, closing []*yamux.Session) []*yamux.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i < len(p.sessions); {
		s := p.sessions[i]
		switch {
		case s.used || s.sess.NumStreams() > s.pooled:
			s.used = false
			s.lastUsed = now
		case now.Sub(s.lastUsed) >= idleTimeout:
			s.reaped = true
			p.removeLocked(i)
			closing = append(closing, s.sess)
			continue
		}
		i++
	}
	return closing
}
