package main

import (
	"testing"

	"github.com/feellmoose/gridkv/internal/freeport"
)

// The example runs to a clean end on free loopback ports.
func TestRun(t *testing.T) {
	var addrs []string
	for range 3 {
		addr, err := freeport.Addr()
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, addr)
	}
	if err := run(addrs); err != nil {
		t.Fatal(err)
	}
}
