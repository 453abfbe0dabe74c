// Package testlog is a slog.Handler for tests that must check what was logged.
package testlog

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Recorder keeps every record as one line: level, message and attributes. With
// GRIDKV_TEST_LOG=1 it also writes the lines to standard error. Safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex // protects lines
	lines []string
}

func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *Recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *Recorder) WithGroup(string) slog.Handler            { return r }

func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	if os.Getenv("GRIDKV_TEST_LOG") == "1" {
		os.Stderr.WriteString(b.String() + "\n")
	}
	return nil
}

// Contains reports whether some line contains sub.
func (r *Recorder) Contains(sub string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
