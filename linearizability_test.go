package gridkv_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/internal/lincheck"
)

func TestLinearizability(t *testing.T) {
	const (
		clients  = 12
		keys     = 16
		duration = 12 * time.Second
		closeAt  = 4 * time.Second
		opTime   = 3 * time.Second
	)
	c := cluster.Start(t, 3, cluster.Options{Wait: cluster.WaitBalanced})
	nodes := c.Live()

	// Close the node leading the most partitions: the most elections, the most in-flight
	// operations cut off. No node stopped yet, so a node's index is its place in nodes.
	counts := c.LeaderCounts()
	victim := c.MostLeader()
	var victimClosing atomic.Bool

	// The harness checks the history with porcupine when the test ends.
	h := c.NewHistory()
	end := h.Start().Add(duration)
	var wg sync.WaitGroup
	for cl := 0; cl < clients; cl++ {
		node := cl % len(nodes)
		client := lincheck.Client{ID: cl, KV: nodes[node].KV, Keys: keys, OpTime: opTime, Until: end,
			Stop: func() bool { return node == victim && victimClosing.Load() }}
		wg.Add(1)
		go func() {
			defer wg.Done()
			client.Run(h)
		}()
	}

	time.Sleep(time.Until(h.Start().Add(closeAt)))
	t.Logf("closing %s (leads %d partitions; leaders %v)", nodes[victim].ID, counts[nodes[victim].ID], counts)
	victimClosing.Store(true)
	closeStart := time.Now()
	c.Stop(victim)
	t.Logf("Close took %v", time.Since(closeStart).Round(time.Millisecond))
	wg.Wait()

	ops := h.Ops()
	t.Logf("history: %d operations (%d unknown outcome, %d failed reads dropped, %d CAS swapped, %d CAS mismatched)",
		len(ops), h.Unknown.Load(), h.Dropped.Load(), h.Swaps.Load(), h.Mismatches.Load())
	if len(ops) < 500 {
		t.Fatalf("only %d operations in %v: too few for the check to mean anything", len(ops), duration)
	}
	if h.Swaps.Load() < 20 || h.Mismatches.Load() < 1 {
		t.Errorf("CAS outcomes too one-sided to test anything: %d swapped, %d mismatched", h.Swaps.Load(), h.Mismatches.Load())
	}
}
