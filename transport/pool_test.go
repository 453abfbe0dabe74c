package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// outboundConns counts the open TCP connections tr dialled to addr.
func outboundConns(tr *Transport, addr string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for c := range tr.conns {
		if !c.inbound && c.RemoteAddr().String() == addr {
			n++
		}
	}
	return n
}

// inboundConns counts the open TCP connections tr accepted.
func inboundConns(tr *Transport) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.inbound
}

// concurrentCalls makes n calls to addr at once and fails the test on any error.
func concurrentCalls(t *testing.T, a *Transport, addr string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := []byte(fmt.Sprint(i))
			resp, err := a.Call(context.Background(), addr, kindEcho, req)
			if err != nil || !bytes.Equal(resp, req) {
				errs <- fmt.Errorf("call %d: %q, %v", i, resp, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A high MaxConns is a bound, not a target: light load (sequential calls,
// bursts of as many calls as MaxIdle keeps streams for, raft streams opened
// one after another) shares one session.
func TestHighMaxConnsReusesSessions(t *testing.T) {
	opts := testOptions()
	opts.MaxConns = 1000
	a, b := pairWithHandlers(t, opts)
	_ = b.RaftLayer(1) // accepts nothing; the streams only need to open
	la := a.RaftLayer(1)

	for i := range 3000 {
		req := []byte(fmt.Sprint(i))
		if resp, err := a.Call(context.Background(), b.Addr(), kindEcho, req); err != nil || !bytes.Equal(resp, req) {
			t.Fatalf("call %d: %q, %v", i, resp, err)
		}
	}
	for range 100 {
		concurrentCalls(t, a, b.Addr(), opts.MaxIdle)
	}
	for range 20 { // as raft's NetworkTransport does: a stream per RPC connection
		c, err := la.Dial(raft.ServerAddress(b.Addr()), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}

	dials, open := a.peer(b.Addr()).dials.Load(), outboundConns(a, b.Addr())
	t.Logf("MaxConns %d: %d sessions dialled, %d open", opts.MaxConns, dials, open)
	if dials != 1 || open != 1 {
		t.Errorf("light load dialled %d sessions and holds %d, want 1", dials, open)
	}
}

// waitSweeps waits until the idle sweep of tr has run n more times and at
// least d has passed: long enough for a session idle throughout to be closed.
func waitSweeps(t *testing.T, tr *Transport, n int64, d time.Duration) {
	t.Helper()
	start, from := time.Now(), tr.idleSweeps.Load()
	eventually(t, 10*time.Second+d, "idle sweeps", func() bool {
		return tr.idleSweeps.Load() >= from+n && time.Since(start) >= d
	})
}

// openSessions counts p's sessions that are in use or could be.
func openSessions(p *peer) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

func TestIdleSessionClosedAndRedialled(t *testing.T) {
	opts := testOptions()
	opts.IdleTimeout = 100 * time.Millisecond
	a, b := pairWithHandlers(t, opts)
	concurrentCalls(t, a, b.Addr(), 8) // leaves idle streams in the pool
	p := a.peer(b.Addr())

	eventually(t, 5*time.Second, "the idle session and its streams to close on both sides", func() bool {
		p.mu.Lock()
		pooled := len(p.idle)
		p.mu.Unlock()
		return openSessions(p) == 0 && pooled == 0 && outboundConns(a, b.Addr()) == 0 && inboundConns(b) == 0
	})
	if resp, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("again")); err != nil || string(resp) != "again" {
		t.Fatalf("Call after the idle close: %q, %v", resp, err)
	}
	if n := p.dials.Load(); n != 2 {
		t.Errorf("dialled %d sessions, want 2 (the first, then one after the idle close)", n)
	}
}

// A Raft stream is in use for as long as it is open, however quiet: the idle
// sweep must not cut it.
func TestRaftStreamKeepsSessionOpen(t *testing.T) {
	opts := testOptions()
	opts.IdleTimeout = 50 * time.Millisecond
	a, _ := newTestTransport(t, opts)
	b, _ := newTestTransport(t, opts)
	lb := b.RaftLayer(3)
	c, err := a.RaftLayer(3).Dial(raft.ServerAddress(b.Addr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := lb.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	waitSweeps(t, a, 8, 4*opts.IdleTimeout)
	p := a.peer(b.Addr())
	if n, open := p.dials.Load(), outboundConns(a, b.Addr()); n != 1 || open != 1 {
		t.Fatalf("with a raft stream open: %d dials, %d connections; want 1 and 1", n, open)
	}
	// The quiet stream still works both ways.
	buf := make([]byte, 4)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("read %q, %v", buf, err)
	}

	// Once raft lets go of it, the session goes idle and is closed.
	_ = c.Close()
	_ = sc.Close()
	eventually(t, 5*time.Second, "the session to close after its raft stream did", func() bool {
		return openSessions(p) == 0 && outboundConns(a, b.Addr()) == 0
	})
}

// holdServer serves kindHold: each call waits until release is closed.
func holdServer(t *testing.T, opts NetworkOptions) (b *Transport, held *atomic.Int64, release chan struct{}) {
	b, _ = newTestTransport(t, opts)
	held, release = new(atomic.Int64), make(chan struct{})
	b.Handle(kindHold, func(ctx context.Context, _ string, req []byte) ([]byte, error) {
		held.Add(1)
		defer held.Add(-1)
		select {
		case <-release:
			return req, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	return b, held, release
}

const kindHold uint8 = 9

// heldCalls starts n calls of kindHold to addr, one at a time, each once
// the one before is held by the handler, so that which session each takes
// does not depend on timing. It returns a function that waits for the calls
// to end and reports their errors.
func heldCalls(t *testing.T, a *Transport, addr string, n int, held *atomic.Int64) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req := []byte(fmt.Sprint(i))
			if resp, err := a.Call(ctx, addr, kindHold, req); err != nil || !bytes.Equal(resp, req) {
				errs <- fmt.Errorf("held call %d: %q, %v", i, resp, err)
			}
		}()
		eventually(t, 10*time.Second, fmt.Sprintf("call %d to reach the handler", i), func() bool { return held.Load() == int64(i+1) })
	}
	return func() {
		t.Helper()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

// maxSampled samples f until stop is closed and returns the largest value seen.
func maxSampled(f func() int, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		highest := 0
		for {
			highest = max(highest, f())
			select {
			case <-stop:
				out <- max(highest, f())
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return out
}

// Under load a peer gets more connections, up to MaxConns and never past it;
// when the load is gone the extra ones close while calls continue on one.
func TestSessionsGrowWithLoadUpToMaxConns(t *testing.T) {
	for _, tc := range []struct {
		name              string
		maxConns, busy, n int
		wantDials         int
	}{
		// 40 calls at 4 per busy session would take 10: MaxConns caps it.
		{name: "capped", maxConns: 3, busy: 4, n: 40, wantDials: 3},
		// 200 calls at the real threshold, with room for 1000.
		{name: "MaxConns1000", maxConns: 1000, busy: sessionBusyStreams, n: 200, wantDials: (200 + sessionBusyStreams - 1) / sessionBusyStreams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions()
			opts.MaxConns = tc.maxConns
			opts.IdleTimeout = 100 * time.Millisecond
			a, _ := newTestTransport(t, opts)
			a.sessionBusyStreams = tc.busy
			b, held, release := holdServer(t, opts)
			b.Handle(kindEcho, echo)

			stop := make(chan struct{})
			highest := maxSampled(func() int { return outboundConns(a, b.Addr()) }, stop)
			wait := heldCalls(t, a, b.Addr(), tc.n, held)
			close(release)
			wait()
			close(stop)

			p := a.peer(b.Addr())
			most, dials := <-highest, p.dials.Load()
			t.Logf("%d calls at once, MaxConns %d, busy at %d streams: %d sessions dialled, at most %d open",
				tc.n, tc.maxConns, tc.busy, dials, most)
			if most > tc.maxConns || dials > int64(tc.maxConns) {
				t.Errorf("%d connections open at once, %d dialled; MaxConns %d", most, dials, tc.maxConns)
			}
			if dials != int64(tc.wantDials) {
				t.Errorf("dialled %d sessions, want %d", dials, tc.wantDials)
			}

			// Sequential calls need one connection; the others go idle and close.
			eventually(t, 5*time.Second, "the extra connections to close", func() bool {
				if _, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("x")); err != nil {
					t.Fatalf("call while draining: %v", err)
				}
				return outboundConns(a, b.Addr()) == 1
			})
		})
	}
}
