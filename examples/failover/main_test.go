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

// Six seconds of traffic, with the child node killed two seconds in, pass the example's
// checks.
func TestRun(t *testing.T) {
	addrs, err := ports.Loopback(nodeCount)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(addrs, 6*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}
