package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/freeport"
	"github.com/prometheus/client_golang/prometheus"
)

// nodeSpec is everything needed to start one node, in this process or in a child (it travels
// to a child as JSON, hence the exported fields).
type nodeSpec struct {
	ID          string
	Addr        string
	Seeds       []string
	Nodes       int // cluster size, for the readiness check
	Replicas    int
	WriteQuorum int
	Partitions  int
	Timings     string
	Verbose     bool
	Metrics     bool // register the node's metrics in a registry of its own
}

func (s nodeSpec) options(t gridkv.Timings) *gridkv.GridKVOptions {
	return &gridkv.GridKVOptions{
		LocalNodeID:  s.ID,
		LocalAddress: s.Addr,
		SeedAddrs:    s.Seeds,
		ReplicaCount: s.Replicas,
		WriteQuorum:  s.WriteQuorum,
		Partitions:   s.Partitions,
		Logger:       newLogger(s.Verbose, s.ID),
		Timings:      &t,
		Metrics:      s.registry(),
	}
}

// registry is a fresh registry with -metrics, nil without. Nothing scrapes it during a run:
// what is measured is the instrumentation on the request path.
func (s nodeSpec) registry() prometheus.Registerer {
	if !s.Metrics {
		return nil
	}
	return prometheus.NewRegistry()
}

func newLogger(verbose bool, node string) *slog.Logger {
	if !verbose {
		return nil // GridKV discards
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("bench", node)
}

// cluster is the set of nodes of one shape. In-process, nodes holds them all; with -procs,
// nodes holds only the driver's own node and children the others.
type cluster struct {
	shape    shape
	nodes    []*gridkv.GridKV
	children []*child
	loaded   int // value size the keys were last preloaded with; -1: not loaded
}

// startCluster starts a cluster of sh and waits until it is fully replicated and its
// leadership has settled.
func startCluster(ctx context.Context, cfg *config, sh shape) (*cluster, error) {
	c := &cluster{shape: sh, loaded: -1}
	timings := cfg.gridTimings()
	var first string
	for i := 0; i < sh.nodes; i++ {
		spec := nodeSpec{
			ID:          fmt.Sprintf("node-%d", i+1),
			Nodes:       sh.nodes,
			Replicas:    sh.replicas,
			WriteQuorum: sh.writeQuorum,
			Partitions:  cfg.partitions,
			Timings:     cfg.timings,
			Verbose:     cfg.verbose,
			Metrics:     cfg.metrics,
		}
		if i > 0 {
			spec.Seeds = []string{first}
		}
		if cfg.procs && i > 0 {
			ch, err := startChild(spec)
			if err != nil {
				c.close()
				return nil, err
			}
			c.children = append(c.children, ch)
			continue
		}
		kv, addr, err := startNode(spec, timings)
		if err != nil {
			c.close()
			return nil, err
		}
		if i == 0 {
			first = addr
		}
		c.nodes = append(c.nodes, kv)
	}
	for _, ch := range c.children {
		if err := ch.waitReady(ctx); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := waitReplicated(ctx, c.nodes, sh, 4*timings.ReconcileInterval); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// startNode starts a node on a free loopback port, retrying with another port when someone
// else took the chosen one between probing and binding.
func startNode(spec nodeSpec, t gridkv.Timings) (*gridkv.GridKV, string, error) {
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		spec.Addr = addr
		kv, err := gridkv.NewGridKV(spec.options(t))
		if err == nil {
			return kv, addr, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, "", fmt.Errorf("starting %s: %w", spec.ID, lastErr)
}

// freeAddr returns a loopback address whose port is free for both TCP and UDP right now.
func freeAddr() (string, error) { return freeport.Addr() }

// waitReplicated polls the nodes' Status until, in every node's view, all members are alive
// and every partition has a leader and min(N, nodes) replicas; then until the leaders stay
// put for a while, since the placement moves leadership to preferred replicas after the
// replica sets are complete: settle is how long they must stay put.
func waitReplicated(ctx context.Context, nodes []*gridkv.GridKV, sh shape, settle time.Duration) error {
	want := min(sh.replicas, sh.nodes)
	var lastLeaders []string
	stableSince := time.Time{}
	for {
		ok := true
		var leaders []string
		for _, kv := range nodes {
			st := kv.Status()
			ok = ok && fullyReplicated(st, sh.nodes, want)
			if leaders == nil {
				for _, p := range st.Partitions {
					leaders = append(leaders, p.Leader)
				}
			}
		}
		switch {
		case !ok:
			stableSince = time.Time{}
		case !slices.Equal(leaders, lastLeaders) || stableSince.IsZero():
			stableSince = time.Now()
		case time.Since(stableSince) >= settle:
			return nil
		}
		lastLeaders = leaders
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to replicate every partition: %w", sh, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func fullyReplicated(st gridkv.Status, nodes, replicas int) bool {
	alive := 0
	for _, m := range st.Members {
		if m.State == "alive" {
			alive++
		}
	}
	if alive != nodes || len(st.Partitions) == 0 {
		return false
	}
	for _, p := range st.Partitions {
		if p.Leader == "" || len(p.Replicas) != replicas {
			return false
		}
	}
	return true
}

// close stops every node, the in-process ones in parallel since each Close may wait seconds
// for leadership hand-off.
func (c *cluster) close() {
	done := make(chan struct{}, len(c.nodes)+len(c.children))
	for _, kv := range c.nodes {
		go func() { kv.Close(); done <- struct{}{} }()
	}
	for _, ch := range c.children {
		go func() { ch.stop(); done <- struct{}{} }()
	}
	for range len(c.nodes) + len(c.children) {
		<-done
	}
}
