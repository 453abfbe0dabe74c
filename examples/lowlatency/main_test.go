package main

import (
	"testing"
	"time"

	"github.com/feellmoose/gridkv/examples/internal/ports"
	"github.com/feellmoose/gridkv/examples/internal/race"
)

// Two seconds of game-state traffic pass the example's checks.
func TestRun(t *testing.T) {
	nodeTimings = race.Timings(nodeTimings)
	players = 2000
	addrs, err := ports.Loopback(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(addrs, 2*time.Second, 5000, nil); err != nil {
		t.Fatal(err)
	}
}
