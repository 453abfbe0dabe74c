package main

import (
	"testing"
	"time"

	"github.com/feellmoose/gridkv/examples/internal/ports"
	"github.com/feellmoose/gridkv/examples/internal/race"
)

// Two seconds of session traffic pass the example's checks.
func TestRun(t *testing.T) {
	nodeTimings = race.Timings(nodeTimings)
	addrs, err := ports.Loopback(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(addrs, 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}
