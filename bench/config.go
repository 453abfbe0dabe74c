package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/store"
)

// config is the parsed command line.
type config struct {
	scenarios  []scenario
	workers    int
	rate       float64 // total ops/s in open-loop mode; 0: closed loop
	duration   time.Duration
	warmup     time.Duration
	keys       int
	valueSizes []int
	dists      []string
	readRatios []float64
	partitions int    // 0: the library's default
	timings    string // "default" or "local"
	procs      bool
	jsonOut    bool
	cpuProfile string // file for a CPU profile of the run; "" for none
	verbose    bool
	quick      bool
	metrics    bool          // every node gets a Prometheus registry in GridKVOptions.Metrics
	dataDir    string        // where durable clusters make their nodes' directories; "": os.TempDir()
	inflight   int           // Timings.Raft.MaxInflightBatches; 0: the timings' own
	commit     time.Duration // Timings.Raft.CommitTimeout; 0: the timings' own
}

// shape is a cluster layout; scenarios of the same shape share one cluster.
type shape struct {
	nodes       int
	replicas    int // N
	writeQuorum int // W; 0: the library's default (majority)
	disk        disk
}

func (s shape) String() string {
	w := s.writeQuorum
	if w == 0 {
		w = s.replicas/2 + 1
	}
	return fmt.Sprintf("%d nodes N=%d W=%d%s", s.nodes, s.replicas, w, s.disk)
}

// disk is where a cluster's nodes keep their Raft logs, votes and snapshots.
type disk int

const (
	inMemory   disk = iota // no DataDir: what every scenario but the durable ones measures
	diskSync               // a DataDir each, store.SyncAlways
	diskNoSync             // a DataDir each, store.SyncNone
)

func (d disk) durable() bool { return d != inMemory }

// sync is the store.SyncMode of a durable cluster's nodes.
func (d disk) sync() store.SyncMode {
	if d == diskNoSync {
		return store.SyncNone
	}
	return store.SyncAlways
}

// String is the suffix of a shape's name: nothing in memory.
func (d disk) String() string {
	switch d {
	case diskSync:
		return ", on disk, fsync always"
	case diskNoSync:
		return ", on disk, no fsync"
	}
	return ""
}

type scenarioKind int

const (
	kindWorkload scenarioKind = iota
	kindIdle
	kindHeap
	kindList
	kindWatch
)

// scenario is one named measurement. For a workload, readRatio < 0 means "take -read-ratio".
type scenario struct {
	name      string
	kind      scenarioKind
	shape     shape
	readRatio float64
	level     gridkv.Consistency // read level; 0: what the cluster's quorums imply
	// watchers are the watches open during the run: of every key for kindWatch, of a prefix
	// nothing writes for a workload.
	watchers int
	ttl      bool // writes carry WithTTL
	parked   int  // goroutines parked during the run, as many as idle watchers would hold
	about    string
}

var (
	threeNodes = shape{nodes: 3, replicas: 3}
	oneNode    = shape{nodes: 1, replicas: 1}
	fiveNodes  = shape{nodes: 5, replicas: 3}
	// Durable clusters are shapes of their own, so they never share a cluster with (and so
	// never change) the in-memory scenarios.
	threeNodesDisk       = shape{nodes: 3, replicas: 3, disk: diskSync}
	threeNodesDiskNoSync = shape{nodes: 3, replicas: 3, disk: diskNoSync}
)

// catalog lists every scenario in the order they run by default.
var catalog = []scenario{
	{name: "idle", kind: kindIdle, shape: threeNodes, about: "3 nodes, no traffic: CPU only"},
	{name: "read-lin", shape: threeNodes, readRatio: 1, level: gridkv.Linearizable, about: "3 nodes, Get, linearizable"},
	{name: "read-stale", shape: threeNodes, readRatio: 1, level: gridkv.Stale, about: "3 nodes, Get, stale"},
	{name: "write-w2", shape: threeNodes, readRatio: 0, about: "3 nodes, Set, W=2 (majority)"},
	{name: "mixed", shape: threeNodes, readRatio: -1, about: "3 nodes, Get/Set at -read-ratio"},
	{name: "write-w1", shape: shape{nodes: 3, replicas: 3, writeQuorum: 1}, readRatio: 0, about: "3 nodes, Set, W=1"},
	{name: "write-w3", shape: shape{nodes: 3, replicas: 3, writeQuorum: 3}, readRatio: 0, about: "3 nodes, Set, W=3 (all)"},
	{name: "1node-read", shape: oneNode, readRatio: 1, about: "1 node, N=1, Get"},
	{name: "1node-write", shape: oneNode, readRatio: 0, about: "1 node, N=1, Set"},
	{name: "5node-read", shape: fiveNodes, readRatio: 1, about: "5 nodes, N=3, Get (default level)"},
	{name: "5node-write", shape: fiveNodes, readRatio: 0, about: "5 nodes, N=3, Set"},
	{name: "heap", kind: kindHeap, shape: oneNode, about: "heap of -keys keys on 1 node vs the raw map"},
	{name: "list", kind: kindList, shape: oneNode, about: "1 node holding -keys keys, List of a 100-key page after a random key"},
	{name: "watch", kind: kindWatch, shape: threeNodes, watchers: 10, about: "3 nodes, Set W=2, 10 watchers of every key: events/s and lag"},
	{name: "write-w2-idle-watch", shape: threeNodes, readRatio: 0, watchers: 1000, about: "3 nodes, Set W=2, with 1000 idle watchers open"},
	{name: "write-w2-idle-goroutines", shape: threeNodes, readRatio: 0, parked: 1000, about: "3 nodes, Set W=2, with 1000 parked goroutines: the control for write-w2-idle-watch"},
	{name: "write-w2-ttl", shape: threeNodes, readRatio: 0, ttl: true, about: "3 nodes, Set W=2, every key WithTTL(1h)"},
	{name: "write-durable", shape: threeNodesDisk, readRatio: 0, about: "3 nodes, Set W=2, each node with a DataDir, SyncAlways: fsyncs/s and writes per fsync"},
	{name: "write-durable-nosync", shape: threeNodesDiskNoSync, readRatio: 0, about: "3 nodes, Set W=2, each node with a DataDir, SyncNone (the OS writes back)"},
}

// aliases are other names accepted by -scenario.
var aliases = map[string]string{
	"read":         "read-lin",
	"read-linear":  "read-lin",
	"write":        "write-w2",
	"single-read":  "1node-read",
	"single-write": "1node-write",
}

func parseConfig(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		scenarios  = fs.String("scenario", "all", "comma-separated scenarios to run, or \"all\"; see -list")
		list       = fs.Bool("list", false, "list the scenarios and exit")
		workers    = fs.Int("workers", 100, "concurrent clients, spread over the nodes")
		rate       = fs.Float64("rate", 0, "open-loop mode: total requests per second on a fixed schedule (0: closed loop)")
		duration   = fs.Duration("duration", 5*time.Second, "measured time per scenario (after a warm-up of a fifth of it, at most 2s)")
		keys       = fs.Int("keys", 100000, "distinct keys")
		valueSizes = fs.String("value-size", "64", "value size in bytes; a comma-separated list runs each")
		dists      = fs.String("dist", "uniform", "key choice: uniform or zipf (s=1.1); a comma-separated list runs each")
		ratios     = fs.String("read-ratio", "0.9", "fraction of reads in the mixed scenario; a comma-separated list runs each")
		partitions = fs.Int("partitions", 0, "partitions per cluster (0: the library's default)")
		timings    = fs.String("timings", "default", "cluster clocks: default (gridkv.DefaultTimings) or local (gridkv.LocalTimings)")
		procs      = fs.Bool("procs", false, "run every node but the first in its own OS process (see the package doc)")
		jsonOut    = fs.Bool("json", false, "print the rows as JSON instead of a table")
		verbose    = fs.Bool("v", false, "log GridKV's messages to stderr")
		cpuProfile = fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
		quick      = fs.Bool("quick", false, "short run: 1s per scenario, 10000 keys, local timings (explicit flags win)")
		metrics    = fs.Bool("metrics", false, "give every node a Prometheus registry (GridKVOptions.Metrics), to measure the instrumentation's cost")
		inflight   = fs.Int("max-inflight", 0, "batches each Raft group may have in flight at once (Timings.Raft.MaxInflightBatches; 0: the default of -timings)")
		commit     = fs.Duration("commit-timeout", 0, "how long an idle Raft group waits before an empty append carries the commit index (Timings.Raft.CommitTimeout; 0: the default of -timings)")
		dataDir    = fs.String("data-dir", "", "directory in which durable scenarios make a temporary directory for their nodes' data, removed afterwards (default: the system's temp dir, $TMPDIR or /tmp); it should be on the disk to measure")
	)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *list {
		for _, s := range catalog {
			fmt.Fprintf(stderr, "  %-12s %s\n", s.name, s.about)
		}
		return nil, flag.ErrHelp
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	c := &config{
		workers:    *workers,
		rate:       *rate,
		duration:   *duration,
		keys:       *keys,
		partitions: *partitions,
		timings:    *timings,
		procs:      *procs,
		jsonOut:    *jsonOut,
		cpuProfile: *cpuProfile,
		verbose:    *verbose,
		quick:      *quick,
		metrics:    *metrics,
		dataDir:    *dataDir,
		inflight:   *inflight,
		commit:     *commit,
	}
	if c.quick {
		if !set["duration"] {
			c.duration = time.Second
		}
		if !set["keys"] {
			c.keys = 10000
		}
		if !set["timings"] {
			c.timings = "local"
		}
	}
	c.warmup = min(c.duration/5, 2*time.Second)

	var err error
	if c.scenarios, err = pickScenarios(*scenarios); err != nil {
		return nil, err
	}
	if c.valueSizes, err = parseList(*valueSizes, strconv.Atoi); err != nil {
		return nil, fmt.Errorf("-value-size: %w", err)
	}
	if c.readRatios, err = parseList(*ratios, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }); err != nil {
		return nil, fmt.Errorf("-read-ratio: %w", err)
	}
	if c.dists, err = parseList(*dists, func(s string) (string, error) { return s, nil }); err != nil {
		return nil, fmt.Errorf("-dist: %w", err)
	}
	return c, c.validate()
}

func (c *config) validate() error {
	switch {
	case c.workers < 1:
		return fmt.Errorf("-workers %d must be at least 1", c.workers)
	case c.rate < 0:
		return fmt.Errorf("-rate %g must not be negative", c.rate)
	case c.duration <= 0:
		return fmt.Errorf("-duration %v must be positive", c.duration)
	case c.keys < 1:
		return fmt.Errorf("-keys %d must be at least 1", c.keys)
	case c.partitions < 0:
		return fmt.Errorf("-partitions %d must not be negative", c.partitions)
	case c.timings != "default" && c.timings != "local":
		return fmt.Errorf("-timings %q must be default or local", c.timings)
	case c.inflight < 0:
		return fmt.Errorf("-max-inflight %d must not be negative", c.inflight)
	case c.commit < 0:
		return fmt.Errorf("-commit-timeout %v must not be negative", c.commit)
	}
	for _, sc := range c.scenarios {
		if sc.shape.disk.durable() && c.procs {
			return fmt.Errorf("-procs with %s: durable scenarios run in-process only (their fsyncs are counted from each node's registry)", sc.name)
		}
	}
	for _, v := range c.valueSizes {
		if v < 0 || v > gridkv.MaxValueSize {
			return fmt.Errorf("-value-size %d must be in 0..%d", v, gridkv.MaxValueSize)
		}
	}
	for _, d := range c.dists {
		if d != "uniform" && d != "zipf" {
			return fmt.Errorf("-dist %q must be uniform or zipf", d)
		}
	}
	for _, r := range c.readRatios {
		if r < 0 || r > 1 {
			return fmt.Errorf("-read-ratio %g must be in 0..1", r)
		}
	}
	return nil
}

// gridTimings returns the cluster clocks -timings names, with -max-inflight and
// -commit-timeout.
func (c *config) gridTimings() gridkv.Timings {
	t := gridkv.DefaultTimings()
	if c.timings == "local" {
		t = gridkv.LocalTimings()
	}
	if c.inflight > 0 {
		t.Raft.MaxInflightBatches = c.inflight
	}
	if c.commit > 0 {
		t.Raft.CommitTimeout = c.commit
	}
	return t
}

func pickScenarios(spec string) ([]scenario, error) {
	if spec == "all" || spec == "" {
		return catalog, nil
	}
	want := map[string]bool{}
	for _, name := range strings.Split(spec, ",") {
		name = strings.TrimSpace(name)
		if a, ok := aliases[name]; ok {
			name = a
		}
		found := false
		for _, s := range catalog {
			found = found || s.name == name
		}
		if !found {
			return nil, fmt.Errorf("-scenario: unknown scenario %q (see -list)", name)
		}
		want[name] = true
	}
	var out []scenario
	for _, s := range catalog { // catalog order keeps scenarios of one shape together
		if want[s.name] {
			out = append(out, s)
		}
	}
	return out, nil
}

func parseList[T any](s string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, part := range strings.Split(s, ",") {
		v, err := parse(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
