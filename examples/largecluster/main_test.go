package main

import (
	"testing"
	"time"

	"github.com/feellmoose/gridkv/examples/internal/ports"
	"github.com/feellmoose/gridkv/examples/internal/race"
)

// The cluster balances its leadership and serves two seconds of traffic. Under the race
// detector every goroutine costs several times its normal CPU, and twenty nodes with 64
// Raft groups need more than a small machine has: there the test runs 6 nodes and 16
// partitions, which exercise the same code paths, with longer Raft timeouts (race.Timings).
func TestRun(t *testing.T) {
	nodeTimings = race.Timings(nodeTimings)
	nodes, parts := nodeCount, partitions
	if race.Enabled {
		nodes, parts = 6, 16
	}
	addrs, err := ports.Loopback(nodes)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(addrs, parts, 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}
