package main

import (
	"context"
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
