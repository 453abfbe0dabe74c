package main

import (
	"testing"
	"time"

	"github.com/feellmoose/gridkv/examples/internal/ports"
)

// The single node passes its checks and serves a second of traffic.
func TestRun(t *testing.T) {
	addrs, err := ports.Loopback(1)
	if err != nil {
		t.Fatal(err)
	}
	err = run(addrs[0], time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
}
