// Command quickstart runs a three-node GridKV cluster on loopback in one process: it writes
// through one node, reads through another, closes a node, keeps writing, and prints the
// cluster's status as a surviving node sees it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/feellmoose/gridkv"
)

func main() {
	base := flag.Int("port", 7101, "first of three consecutive loopback ports")
	verbose := flag.Bool("v", false, "log GridKV's info messages to stderr")
	flag.Parse()
	if err := run(*base, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(base int, verbose bool) error {
	var logger *slog.Logger
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	timings := gridkv.LocalTimings()
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }

	var nodes []*gridkv.GridKV
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for i := 0; i < 3; i++ {
		opts := &gridkv.GridKVOptions{
			LocalNodeID:  fmt.Sprintf("node-%d", i+1),
			LocalAddress: addr(i),
			ReplicaCount: 3,
			WriteQuorum:  2,
			ReadQuorum:   2,
			Logger:       logger,
			Timings:      &timings,
		}
		if i > 0 {
			opts.SeedAddrs = []string{addr(0)}
		}
		kv, err := gridkv.NewGridKV(opts)
		if err != nil {
			return err
		}
		nodes = append(nodes, kv)
		fmt.Printf("started %s at %s\n", opts.LocalNodeID, opts.LocalAddress)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			return fmt.Errorf("waiting for the cluster: %w", err)
		}
	}

	start := time.Now()
	for !fullyReplicated(nodes[0], 3) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for three replicas of every partition: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	fmt.Printf("every partition has 3 replicas and a leader (%v)\n", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	const keys = 1000
	for i := 0; i < keys; i++ {
		if err := nodes[0].Set(ctx, fmt.Sprintf("user:%d", i), []byte(fmt.Sprintf("value-%d", i))); err != nil {
			return fmt.Errorf("set through node-1: %w", err)
		}
	}
	fmt.Printf("wrote %d keys through node-1 in %v\n", keys, time.Since(start).Round(time.Millisecond))

	v, err := nodes[1].Get(ctx, "user:42")
	if err != nil {
		return fmt.Errorf("linearizable get through node-2: %w", err)
	}
	fmt.Printf("node-2 reads user:42 = %q (linearizable)\n", v)
	e, err := nodes[2].GetEntry(ctx, "user:7", gridkv.WithConsistency(gridkv.Stale))
	if err != nil {
		return fmt.Errorf("stale get through node-3: %w", err)
	}
	fmt.Printf("node-3 reads user:7 = %q version %d (stale, local replica)\n", e.Value, e.Version)

	if err := nodes[2].Close(); err != nil {
		return err
	}
	nodes = nodes[:2]
	fmt.Println("closed node-3")

	start = time.Now()
	for i := 0; i < keys; i++ {
		if err := nodes[1].Set(ctx, fmt.Sprintf("after:%d", i), []byte("still here")); err != nil {
			return fmt.Errorf("set after closing node-3: %w", err)
		}
	}
	fmt.Printf("wrote %d more keys through node-2 in %v with node-3 gone\n", keys, time.Since(start).Round(time.Millisecond))
	for i := 0; i < keys; i += 97 {
		if _, err := nodes[0].Get(ctx, fmt.Sprintf("user:%d", i)); err != nil {
			return fmt.Errorf("reading an early write back: %w", err)
		}
	}
	fmt.Println("every early write sampled is still readable")

	st := nodes[0].Status()
	fmt.Printf("\nstatus as %s sees it:\n", st.NodeID)
	for _, m := range st.Members {
		fmt.Printf("  member %-8s %-16s %s\n", m.ID, m.Address, m.State)
	}
	leads := map[string]int{}
	for _, p := range st.Partitions {
		leads[p.Leader]++
	}
	for id, n := range leads {
		fmt.Printf("  %s leads %d of %d partitions\n", id, n, len(st.Partitions))
	}
	return nil
}

// fullyReplicated reports whether kv sees every partition with a leader and n replicas.
func fullyReplicated(kv *gridkv.GridKV, n int) bool {
	for _, p := range kv.Status().Partitions {
		if p.Leader == "" || len(p.Replicas) != n {
			return false
		}
	}
	return true
}
