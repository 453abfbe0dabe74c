package transport

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/internal/testlog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logRecorder keeps what a transport logged, so tests can check that bad input was logged.
type logRecorder = testlog.Recorder

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
