package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/freeport"
	"github.com/feellmoose/gridkv/store"
	"github.com/prometheus/client_golang/prometheus"
)

// nodeSpec is everything needed to start one node, in this process or in a child (it travels
// to a child as JSON, hence the exported fields).
type nodeSpec struct {
	ID            string
	Addr          string
	Seeds         []string
	Nodes         int // cluster size, for the readiness check
	Replicas      int
	WriteQuorum   int
	Partitions    int
	Timings       string
	MaxInflight   int           // -max-inflight
	CommitTimeout time.Duration // -commit-timeout
	Verbose       bool
	Metrics       bool           // register the node's metrics in a registry of its own
	DataDir       string         // "": the node keeps its Raft state in memory
	Sync          store.SyncMode // with DataDir
}

func (s nodeSpec) options(t gridkv.Timings, reg prometheus.Registerer) *gridkv.GridKVOptions {
	o := &gridkv.GridKVOptions{
		LocalNodeID:  s.ID,
		LocalAddress: s.Addr,
		SeedAddrs:    s.Seeds,
		ReplicaCount: s.Replicas,
		WriteQuorum:  s.WriteQuorum,
		Partitions:   s.Partitions,
		Logger:       newLogger(s.Verbose, s.ID),
		Timings:      &t,
		Metrics:      reg,
	}
	if s.DataDir != "" {
		o.Storage = &store.StorageOptions{DataDir: s.DataDir, Sync: s.Sync}
	}
	return o
}

// registry is a fresh registry with -metrics (or a durable node, whose fsyncs are read from
// it), nil otherwise. Nothing scrapes it during a run: what is measured is the
// instrumentation on the request path.
func (s nodeSpec) registry() *prometheus.Registry {
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

	registries []*prometheus.Registry // the in-process nodes' registries, when they have one
	dataRoot   string                 // a durable cluster's directory, removed by close; else ""
}

// startCluster starts a cluster of sh and waits until it is fully replicated and its
// leadership has settled.
func startCluster(ctx context.Context, cfg *config, sh shape) (*cluster, error) {
	c := &cluster{shape: sh, loaded: -1}
	if sh.disk.durable() {
		root, err := os.MkdirTemp(cfg.dataDir, "gridkv-bench-")
		if err != nil {
			return nil, fmt.Errorf("a data directory for %s: %w", sh, err)
		}
		c.dataRoot = root
	}
	timings := cfg.gridTimings()
	var first string
	for i := 0; i < sh.nodes; i++ {
		spec := nodeSpec{
			ID:            fmt.Sprintf("node-%d", i+1),
			Nodes:         sh.nodes,
			Replicas:      sh.replicas,
			WriteQuorum:   sh.writeQuorum,
			Partitions:    cfg.partitions,
			Timings:       cfg.timings,
			MaxInflight:   cfg.inflight,
			CommitTimeout: cfg.commit,
			Verbose:       cfg.verbose,
			Metrics:       cfg.metrics || sh.disk.durable(),
		}
		if sh.disk.durable() {
			spec.DataDir = filepath.Join(c.dataRoot, spec.ID)
			spec.Sync = sh.disk.sync()
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
		kv, addr, reg, err := startNode(spec, timings)
		if err != nil {
			c.close()
			return nil, err
		}
		if i == 0 {
			first = addr
		}
		c.nodes = append(c.nodes, kv)
		if reg != nil {
			c.registries = append(c.registries, reg)
		}
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
// else took the chosen one between probing and binding. It returns the node's registry, if
// the spec asks for one.
func startNode(spec nodeSpec, t gridkv.Timings) (*gridkv.GridKV, string, *prometheus.Registry, error) {
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, "", nil, err
		}
		spec.Addr = addr
		if spec.DataDir != "" && attempt > 0 {
			// The failed attempt may have recorded its address there; the directory is
			// this run's own and holds nothing else yet.
			if err := os.RemoveAll(spec.DataDir); err != nil {
				return nil, "", nil, err
			}
		}
		reg := spec.registry()
		kv, err := gridkv.NewGridKV(spec.options(t, nilIfNone(reg)))
		if err == nil {
			return kv, addr, reg, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, "", nil, fmt.Errorf("starting %s: %w", spec.ID, lastErr)
}

// nilIfNone turns a nil registry into a nil Registerer (not an interface holding nil).
func nilIfNone(reg *prometheus.Registry) prometheus.Registerer {
	if reg == nil {
		return nil
	}
	return reg
}

// walFsyncs returns the log fsyncs of the in-process nodes so far, summed from their
// registries' gridkv_wal_fsyncs_total.
func (c *cluster) walFsyncs() (uint64, error) {
	var total float64
	for _, reg := range c.registries {
		families, err := reg.Gather()
		if err != nil {
			return 0, err
		}
		for _, f := range families {
			if f.GetName() != "gridkv_wal_fsyncs_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return uint64(total), nil
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
// for leadership hand-off, then removes a durable cluster's data.
func (c *cluster) close() {
	defer c.removeData()
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

// removeData deletes a durable cluster's directory; the nodes must be closed.
func (c *cluster) removeData() {
	if c.dataRoot == "" {
		return
	}
	if err := os.RemoveAll(c.dataRoot); err != nil {
		fmt.Fprintf(os.Stderr, "bench: removing %s: %v\n", c.dataRoot, err)
	}
}
