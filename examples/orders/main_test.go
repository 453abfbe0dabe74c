package main

import (
	"testing"

	"github.com/feellmoose/gridkv/examples/internal/ports"
	"github.com/feellmoose/gridkv/examples/internal/race"
)

// Four products of 60 units each sell out with the books balanced.
func TestRun(t *testing.T) {
	nodeTimings = race.Timings(nodeTimings)
	addrs, err := ports.Loopback(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(addrs, 60, nil); err != nil {
		t.Fatal(err)
	}
}
