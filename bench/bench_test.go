package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs a short write-then-read scenario on a one-node cluster, baseline included.
func TestSmoke(t *testing.T) {
	cfg, err := parseConfig([]string{
		"-quick", "-scenario", "1node-read", "-duration", "700ms", "-keys", "1000", "-workers", "8",
	}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := newBench(cfg, &progress{start: time.Now()})
	rows, err := b.runAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Ops == 0 || rows[0].Errors != 0 || rows[0].RatioOps == 0 {
		t.Fatalf("rows = %+v, want one row with operations, no errors and a baseline ratio", rows)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// TestDurableSmoke runs the durable scenario briefly: it counts fsyncs, and the nodes' data
// is gone once the run ends.
func TestDurableSmoke(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseConfig([]string{
		"-quick", "-scenario", "write-durable", "-duration", "500ms", "-keys", "1000", "-workers", "8", "-data-dir", dir,
	}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := newBench(cfg, &progress{start: time.Now()})
	rows, err := b.runAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Ops == 0 || rows[0].Errors != 0 || rows[0].FsyncsPerSec == 0 || rows[0].WritesPerFsync == 0 {
		t.Fatalf("rows = %+v, want one row with operations, no errors, and fsyncs", rows)
	}
	left, err := os.ReadDir(dir)
	if err != nil || len(left) != 0 {
		t.Fatalf("-data-dir holds %v after the run (%v), want nothing", left, err)
	}
}

// Durable scenarios count fsyncs from in-process registries: -procs is refused, not ignored.
func TestDurableRefusesProcs(t *testing.T) {
	_, err := parseConfig([]string{"-scenario", "write-durable", "-procs"}, testWriter{t})
	if err == nil || !strings.Contains(err.Error(), "-procs") {
		t.Fatalf("parseConfig(write-durable -procs) = %v, want an error naming -procs", err)
	}
}
