package cluster

import (
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// testLogger returns a logger writing to t.Log when GRIDKV_TEST_LOG=1, else nil. Lines that
// arrive after the test ended are dropped: t.Log panics then.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GRIDKV_TEST_LOG") != "1" {
		return nil
	}
	w := &testWriter{t: t}
	// Registered before the cleanup that closes the nodes, so it runs after it.
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
