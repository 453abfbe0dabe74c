package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const kindEcho, kindFail, kindBlock, kindBig, kindPanic, kindSlow uint8 = 1, 2, 3, 4, 5, 6

// pairWithHandlers starts two transports whose second serves the test kinds.
func pairWithHandlers(t *testing.T, opts NetworkOptions) (client, server *Transport) {
	client, _ = newTestTransport(t, opts)
	server, _ = newTestTransport(t, opts)
	server.Handle(kindEcho, echo)
	server.Handle(kindFail, func(context.Context, string, []byte) ([]byte, error) {
		return nil, errors.New("boom")
	})
	server.Handle(kindBlock, func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		<-ctx.Done()
		// The handler's ctx carries the caller's budget and can expire a
		// hair before the caller's own deadline; answer late so these tests
		// observe the caller's timeout, not this error.
		time.Sleep(200 * time.Millisecond)
		return nil, ctx.Err()
	})
	server.Handle(kindBig, func(context.Context, string, []byte) ([]byte, error) {
		return make([]byte, opts.WithDefaults().MaxFrameSize+1), nil
	})
	server.Handle(kindPanic, func(context.Context, string, []byte) ([]byte, error) { panic("handler bug") })
	return client, server
}

func TestCallRoundTrip(t *testing.T) {
	a, b := pairWithHandlers(t, testOptions())
	var gotFrom string
	a.Handle(kindEcho, func(_ context.Context, from string, req []byte) ([]byte, error) {
		gotFrom = from
		return append([]byte("a:"), req...), nil
	})
	for i := range 5 {
		req := []byte(fmt.Sprintf("hello %d", i))
		resp, err := a.Call(context.Background(), b.Addr(), kindEcho, req)
		if err != nil || !bytes.Equal(resp, req) {
			t.Fatalf("Call = %q, %v; want %q", resp, err, req)
		}
	}
	// Calls take turns on the MaxConns links, dialled once.
	if n := a.linkDials(b.Addr()); n != 2 {
		t.Errorf("sequential calls dialled %d links, want MaxConns (2)", n)
	}
	resp, err := b.Call(context.Background(), a.Addr(), kindEcho, []byte("x"))
	if err != nil || string(resp) != "a:x" {
		t.Fatalf("reverse Call = %q, %v", resp, err)
	}
	if gotFrom != b.Addr() {
		t.Errorf("handler saw from=%q, want %q", gotFrom, b.Addr())
	}
	// Empty request and response.
	if resp, err := a.Call(context.Background(), b.Addr(), kindEcho, nil); err != nil || len(resp) != 0 {
		t.Fatalf("empty Call = %q, %v", resp, err)
	}
}

func TestCallConcurrent(t *testing.T) {
	opts := testOptions()
	a, b := pairWithHandlers(t, opts)
	c, _ := newTestTransport(t, opts)
	c.Handle(kindEcho, echo)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := b.Addr()
			if g%2 == 1 {
				target = c.Addr()
			}
			for i := range 20 {
				req := []byte(fmt.Sprintf("g%d-i%d", g, i))
				resp, err := a.Call(context.Background(), target, kindEcho, req)
				if err != nil || !bytes.Equal(resp, req) {
					errs <- fmt.Errorf("call %s: got %q, %v", req, resp, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, addr := range []string{b.Addr(), c.Addr()} {
		if n := a.linkDials(addr); n > int64(opts.MaxConns) {
			t.Errorf("dialled %d links to %s, MaxConns %d", n, addr, opts.MaxConns)
		}
	}
}

func TestCallContextCancel(t *testing.T) {
	a, b := pairWithHandlers(t, testOptions())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := a.Call(ctx, b.Addr(), kindBlock, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Call err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("cancelled Call took %v", d)
	}

	ctx, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start = time.Now()
	_, err = a.Call(ctx, b.Addr(), kindBlock, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("Call with deadline: err=%v after %v", err, time.Since(start))
	}

	// An already-cancelled ctx fails without touching the network, and says nothing was sent.
	if _, err := a.Call(ctx, b.Addr(), kindEcho, nil); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("Call with expired ctx: %v, want context.DeadlineExceeded and ErrNotSent", err)
	}
	// The connection is still fine afterwards.
	if _, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("ok")); err != nil {
		t.Fatalf("Call after cancellations: %v", err)
	}
}

// lateTimerCtx is a context whose deadline has passed but whose timer has
// not fired yet, so Err is still nil: the moment CI once caught between a
// stream deadline expiring and the context noticing the same instant.
type lateTimerCtx struct{ context.Context }

func (lateTimerCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

func TestCallPastDeadlineIsNotSent(t *testing.T) {
	a, b := pairWithHandlers(t, testOptions())
	// A finished call leaves a connection and an idle stream behind, so a
	// late Call would find everything ready to write on.
	if _, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("warm")); err != nil {
		t.Fatalf("warm-up Call: %v", err)
	}
	ctx := lateTimerCtx{context.Background()}
	if _, err := a.Call(ctx, b.Addr(), kindEcho, nil); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("Call past its deadline: %v, want context.DeadlineExceeded and ErrNotSent", err)
	}
	if _, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("ok")); err != nil {
		t.Fatalf("Call after the late one: %v", err)
	}
}

func TestCallWithoutDeadlineIsCappedByReadTimeout(t *testing.T) {
	opts := testOptions()
	opts.ReadTimeout = 300 * time.Millisecond
	a, b := pairWithHandlers(t, opts)
	start := time.Now()
	_, err := a.Call(context.Background(), b.Addr(), kindBlock, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("capped Call returned after %v, want about %v", d, opts.ReadTimeout)
	}
}

func TestCallRemoteErrors(t *testing.T) {
	a, b := pairWithHandlers(t, testOptions())
	_, err := a.Call(context.Background(), b.Addr(), kindFail, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Msg != "boom" {
		t.Fatalf("err = %v, want RemoteError boom", err)
	}
	if errors.Is(err, ErrUnknownKind) {
		t.Fatalf("handler error must not match ErrUnknownKind")
	}

	_, err = a.Call(context.Background(), b.Addr(), 99, nil)
	if !errors.As(err, &re) || !errors.Is(err, ErrUnknownKind) || !strings.Contains(re.Msg, "99") {
		t.Fatalf("unknown kind err = %v", err)
	}

	_, err = a.Call(context.Background(), b.Addr(), kindPanic, nil)
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "panicked") {
		t.Fatalf("panicking handler err = %v", err)
	}

	// An oversized response becomes an error response, not a hang-up.
	_, err = a.Call(context.Background(), b.Addr(), kindBig, nil)
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "too large") {
		t.Fatalf("oversized response err = %v", err)
	}

	// None of that cost the connection.
	if _, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("still")); err != nil {
		t.Fatalf("Call after errors: %v", err)
	}
	if n := a.linkDials(b.Addr()); n > 2 {
		t.Errorf("error responses caused %d dials, want at most MaxConns (2)", n)
	}
}

func TestCallOversizedRequest(t *testing.T) {
	opts := testOptions()
	opts.MaxFrameSize = 4096
	a, b := pairWithHandlers(t, opts)
	_, err := a.Call(context.Background(), b.Addr(), kindEcho, make([]byte, 8192))
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if _, err := a.Call(context.Background(), b.Addr(), kindEcho, make([]byte, 1000)); err != nil {
		t.Fatalf("Call after a refused request: %v", err)
	}
}

func TestCallUnreachableAndClosed(t *testing.T) {
	a, _ := newTestTransport(t, testOptions())
	dead, _ := newTestTransport(t, testOptions())
	addr := dead.Addr()
	_ = dead.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := a.Call(ctx, addr, kindEcho, nil); err == nil {
		t.Fatal("Call to a closed node succeeded")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := a.Call(context.Background(), addr, kindEcho, nil); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("Call after Close: %v, want ErrClosed and ErrNotSent", err)
	}
}

func TestCloseUnblocksRunningCall(t *testing.T) {
	a, b := pairWithHandlers(t, testOptions())
	done := make(chan error, 1)
	go func() {
		_, err := a.Call(context.Background(), b.Addr(), kindBlock, nil)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	// Closing the server cancels the handler's ctx and drops the connection.
	_ = b.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Call succeeded after the server closed")
		}
	case <-time.After(time.Second):
		t.Fatal("Call still blocked after the server closed")
	}
}

func TestReconnectAfterPeerRestart(t *testing.T) {
	opts := testOptions()
	a, _ := newTestTransport(t, opts)
	b, _ := newTestTransport(t, opts)
	b.Handle(kindEcho, echo)
	addr := b.Addr()
	if _, err := a.Call(context.Background(), addr, kindEcho, []byte("1")); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()

	b2, err := Listen(opts, addr, nil)
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	b2.Handle(kindEcho, func(_ context.Context, _ string, req []byte) ([]byte, error) {
		return append([]byte("new:"), req...), nil
	})
	// The old session is gone once a has read its EOF; the next call redials.
	var resp []byte
	attempts := 0
	eventually(t, 3*time.Second, "a call to the restarted peer", func() bool {
		attempts++
		resp, err = a.Call(context.Background(), addr, kindEcho, []byte("2"))
		if err != nil {
			t.Logf("attempt %d: %v", attempts, err)
		}
		return err == nil
	})
	t.Logf("calls until the restarted peer answered: %d", attempts)
	if string(resp) != "new:2" {
		t.Fatalf("resp = %q", resp)
	}
}

func BenchmarkCallRoundTrip(b *testing.B) {
	a, _ := newTestTransport(b, DefaultNetworkOptions())
	s, _ := newTestTransport(b, DefaultNetworkOptions())
	s.Handle(kindEcho, echo)
	req := make([]byte, 64)
	ctx := context.Background()
	if _, err := a.Call(ctx, s.Addr(), kindEcho, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Call(ctx, s.Addr(), kindEcho, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCallRoundTripManyCallers runs 32 callers at once over the links.
func BenchmarkCallRoundTripManyCallers(b *testing.B) {
	a, _ := newTestTransport(b, DefaultNetworkOptions())
	s, _ := newTestTransport(b, DefaultNetworkOptions())
	s.Handle(kindEcho, echo)
	req := make([]byte, 64)
	ctx := context.Background()
	if _, err := a.Call(ctx, s.Addr(), kindEcho, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Call(ctx, s.Addr(), kindEcho, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(a.linkDials(s.Addr())), "dials")
}
