// Command bench measures GridKV on this machine and prints a results table.
//
// It starts GridKV clusters on loopback (127.0.0.1, free ports), runs each scenario against
// them, and runs the same workload against a baseline in the same run: a 256-shard map with
// a read-write lock per shard that copies values in and out. Every throughput and p99 figure
// is printed with its ratio to the baseline ("x raw").
//
// Usage:
//
//	go run ./bench                      # every scenario, 5s each
//	go run ./bench -quick               # every scenario, 1s each, 10000 keys: under a minute
//	go run ./bench -scenario read-stale,write-w2 -duration 10s -value-size 64,1024 -dist zipf
//	go run ./bench -rate 20000          # open loop: 20000 requests/s on a fixed schedule
//	go run ./bench -procs               # nodes 2..n in their own OS processes
//	go run ./bench -list                # the scenarios
//	go run ./bench -metrics             # every node with Prometheus metrics (GridKVOptions.Metrics)
//	go run ./bench -scenario write-durable -data-dir /mnt/ssd   # nodes with a DataDir there
//
// Closed loop (the default) runs -workers clients, each issuing its next request as soon as
// the previous one returns; in-process, client i uses node i mod n. Open loop (-rate R)
// gives each client R/workers requests per second on a fixed schedule and measures each
// latency from the request's scheduled start, so a stall counts against every request it
// delays.
//
// Scenarios sharing a cluster shape (node count, N, W) share one cluster, started once and
// measured only after every partition has a leader and its full replica set in every node's
// view and leadership has stopped moving. Keys are preloaded before reads. The baselines run
// first, before any cluster exists.
//
// With -procs, node 1 runs in the bench process and serves every client; nodes 2..n are
// this binary re-executed with a hidden -node argument, one process each. They report ready
// on stdout and leave the cluster when their stdin closes. CPU then adds the children's
// user+system time (from /proc) to the bench process's; allocations count the bench process
// only. The heap scenario always runs in-process.
//
// Columns: ops/s and its ratio to the baseline; latency percentiles (HdrHistogram); p99
// over the baseline's p99; CPU as user+system time over wall time, in percent of one core
// (every node's and the clients' together); heap allocations per operation (Mallocs delta
// over operations, clients included). "idle" reports CPU of a 3-node cluster with no
// traffic; "heap" the heap growth (HeapAlloc after GC) from loading -keys keys into one node,
// against the baseline holding the same data.
//
// The durable scenarios (write-durable, write-durable-nosync) give each of their 3 nodes a
// DataDir (Storage.DataDir) in a fresh directory under -data-dir, or the system's temp dir,
// removed when the cluster closes: put it on the disk to be measured (a tmpfs /tmp measures
// memory). Their nodes always have a metrics registry, since the fsyncs are read from
// gridkv_wal_fsyncs_total before and after the measured window: the note gives fsyncs per
// second summed over the nodes and writes per fsync (group commit). To compare with write-w2
// like for like, run it with -metrics, and in a process of its own. Durable clusters are
// shapes of their own, so they change nothing the in-memory scenarios measure; they run
// in-process only (not with -procs).
//
// Only the table (or, with -json, the rows as JSON) goes to stdout; progress goes to stderr,
// and GridKV's logs too with -v.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == childFlag {
		if err := runChild(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench node:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config) error {
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	b := newBench(cfg, newProgress())
	rows, err := b.runAll(ctx)
	b.prog.done()
	if len(rows) > 0 {
		var perr error
		if cfg.jsonOut {
			perr = printJSON(os.Stdout, rows)
		} else {
			perr = printTable(os.Stdout, cfg.summary(), rows)
		}
		if err == nil {
			err = perr
		}
	}
	return err
}

// summary is the line above the table.
func (c *config) summary() string {
	mode := fmt.Sprintf("closed loop, %d workers", c.workers)
	if c.rate > 0 {
		mode = fmt.Sprintf("open loop at %.0f ops/s over %d workers", c.rate, c.workers)
	}
	where := "in-process nodes"
	if c.procs {
		where = "one process per node"
	}
	if c.metrics {
		where += ", metrics on"
	}
	if c.inflight > 0 {
		where += fmt.Sprintf(", %d batches in flight per group", c.inflight)
	}
	for _, sc := range c.scenarios {
		if sc.shape.disk.durable() {
			where += ", durable nodes under " + cmp.Or(c.dataDir, os.TempDir())
			break
		}
	}
	return fmt.Sprintf("# gridkv bench: %s, %d keys, values %v B, %v keys, %v per scenario, %s timings, %s",
		mode, c.keys, c.valueSizes, c.dists, c.duration, c.timings, where)
}
