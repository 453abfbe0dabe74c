package transport

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logRecorder is a slog.Handler that keeps every message, so tests can check
// that bad input was logged. With GRIDKV_TEST_LOG=1 it also prints them.
type logRecorder struct {
	mu   sync.Mutex // protects msgs
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, b.String())
	r.mu.Unlock()
	if os.Getenv("GRIDKV_TEST_LOG") == "1" {
		os.Stderr.WriteString(b.String() + "\n")
	}
	return nil
}

// contains reports whether some message contains sub.
func (r *logRecorder) contains(sub string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// testOptions are fast options for loopback tests.
func testOptions() NetworkOptions {
	o := DefaultNetworkOptions()
	o.ReadTimeout = 2 * time.Second
	o.WriteTimeout = 2 * time.Second
	return o
}

// newTestTransport listens on a free loopback port and closes on cleanup.
func newTestTransport(t testing.TB, opts NetworkOptions) (*Transport, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	tr, err := Listen(opts, "127.0.0.1:0", slog.New(rec))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, rec
}

// echo is a handler that returns its request.
func echo(_ context.Context, _ string, req []byte) ([]byte, error) { return req, nil }

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
