package main

import (
	"os"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/examples/internal/ports"
	"github.com/feellmoose/gridkv/examples/internal/race"
)

// TestMain lets the test binary serve as the child node, as the program does.
func TestMain(m *testing.M) {
	nodeTimings = race.Timings(nodeTimings)
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(serveNode(spec))
	}
	os.Exit(m.Run())
}

// Ten seconds of traffic, with the child node killed two seconds in, pass the example's
// checks. Every client must write again after the kill: under -race the election timeouts
// are 2 s, and on a loaded CI machine a client of a partition the killed node led has
// waited over 4 s for its new leader, so the traffic runs 8 s past the kill.
func TestRun(t *testing.T) {
	addrs, err := ports.Loopback(nodeCount)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(addrs, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}
