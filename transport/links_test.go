package transport

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
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
			want := fmt.Sprint("call ", i)
			resp, err := a.Call(context.Background(), addr, kindEcho, []byte(want))
			if err == nil && string(resp) != want {
				err = fmt.Errorf("got %q, want %q", resp, want)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// waitSweeps waits until the idle sweep of tr has run n more times and d has passed.
func waitSweeps(t *testing.T, tr *Transport, n int64, d time.Duration) {
	t.Helper()
	start, from := time.Now(), tr.idleSweeps.Load()
	eventually(t, 10*time.Second+d, "idle sweeps", func() bool {
		return tr.idleSweeps.Load() >= from+n && time.Since(start) >= d
	})
}

// TestCallsShareFixedLinks: however many calls are in flight, a node dials at most MaxConns
// links to a peer, and reuses them.
func TestCallsShareFixedLinks(t *testing.T) {
	opts := testOptions()
	a, b := pairWithHandlers(t, opts)
	for range 5 {
		concurrentCalls(t, a, b.Addr(), 200)
	}
	if n := a.linkDials(b.Addr()); n > int64(opts.MaxConns) {
		t.Fatalf("dialled %d links for 1000 calls, MaxConns %d", n, opts.MaxConns)
	}
	if n := outboundConns(a, b.Addr()); n > opts.MaxConns {
		t.Fatalf("%d connections open, MaxConns %d", n, opts.MaxConns)
	}
}

// TestIdleLinkClosedAndRedialled: a link unused for IdleTimeout is closed on both sides, and
// the next call dials again.
func TestIdleLinkClosedAndRedialled(t *testing.T) {
	opts := testOptions()
	opts.MaxConns = 1
	opts.IdleTimeout = 100 * time.Millisecond
	a, b := pairWithHandlers(t, opts)
	concurrentCalls(t, a, b.Addr(), 8)
	eventually(t, 5*time.Second, "the idle link to close on both sides", func() bool {
		return outboundConns(a, b.Addr()) == 0 && inboundConns(b) == 0
	})
	if resp, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("again")); err != nil || string(resp) != "again" {
		t.Fatalf("Call after the idle close: %q, %v", resp, err)
	}
	if n := a.linkDials(b.Addr()); n != 2 {
		t.Errorf("dialled %d links, want 2 (the first, then one after the idle close)", n)
	}
}

// TestBusyLinkNotIdle: a link with a call in flight is not closed by the idle sweep, however
// long the call takes.
func TestBusyLinkNotIdle(t *testing.T) {
	opts := testOptions()
	opts.MaxConns = 1
	opts.IdleTimeout = 50 * time.Millisecond
	a, b := pairWithHandlers(t, opts)
	release := make(chan struct{})
	b.Handle(kindSlow, func(ctx context.Context, _ string, req []byte) ([]byte, error) {
		select {
		case <-release:
			return req, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	done := make(chan error, 1)
	go func() {
		resp, err := a.Call(context.Background(), b.Addr(), kindSlow, []byte("slow"))
		if err == nil && string(resp) != "slow" {
			err = fmt.Errorf("got %q", resp)
		}
		done <- err
	}()
	eventually(t, 5*time.Second, "the call to be in flight", func() bool { return outboundConns(a, b.Addr()) == 1 })
	waitSweeps(t, a, 4, 4*opts.IdleTimeout)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("call across idle sweeps: %v", err)
	}
	if n := a.linkDials(b.Addr()); n != 1 {
		t.Fatalf("dialled %d links, want 1", n)
	}
}
