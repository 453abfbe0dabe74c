// Command largecluster runs twenty GridKV nodes in one process, with 64 partitions of three
// replicas each. It waits, through each node's Status, until every partition has a leader and
// three replicas and every node leads at least one partition (the placement spreads
// leadership, and leaders hand it to the preferred replica); then it sends reads and writes
// through every node and checks that each write can be read back through another node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/feellmoose/gridkv"
)

// The scenario's size; the test runs a smaller cluster under the race detector.
const (
	nodeCount  = 20
	partitions = 64
	replicas   = 3
)

// nodeTimings are the nodes' clocks: LocalTimings, for nodes that share one machine. The
// test lengthens Raft's timeouts under the race detector.
var nodeTimings = gridkv.LocalTimings()

func main() {
	base := flag.Int("port", 7901, fmt.Sprintf("first of %d consecutive loopback ports", nodeCount))
	traffic := flag.Duration("d", 10*time.Second, "how long to send traffic")
	verbose := flag.Bool("v", false, "log GridKV's messages to stderr")
	flag.Parse()
	if err := run(addrsFrom(*base, nodeCount), partitions, *traffic, loggerFor(*verbose)); err != nil {
		fmt.Fprintln(os.Stderr, "largecluster:", err)
		os.Exit(1)
	}
}

// run starts one node per address with the given partition count, waits for leadership to
// spread over every node, and sends traffic for the given time.
func run(addrs []string, partitions int, traffic time.Duration, logger *slog.Logger) error {
	start := time.Now()
	nodes, err := startCluster(addrs, partitions, logger)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	fmt.Printf("%d nodes started and ready in %v\n", len(nodes), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	leads, err := awaitBalanced(nodes, partitions, 90*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("every partition has a leader and %d replicas, every node leads at least one, after %v more\n",
		replicas, time.Since(start).Round(time.Millisecond))
	counts := slices.Sorted(func(yield func(int) bool) {
		for _, n := range leads {
			if !yield(n) {
				return
			}
		}
	})
	fmt.Printf("partitions led per node: min %d, max %d (%d partitions over %d nodes)\n",
		counts[0], counts[len(counts)-1], partitions, len(nodes))

	return sendTraffic(nodes, traffic)
}

// awaitBalanced polls every node's Status until each partition is led by exactly one node
// that reports three replicas and every node leads at least one partition. A node's Status
// is authoritative for the partitions it hosts, so leadership is counted from each node's
// view of itself. It returns the partitions each node leads.
func awaitBalanced(nodes []*gridkv.GridKV, partitions int, limit time.Duration) (map[string]int, error) {
	deadline := time.Now().Add(limit)
	for {
		leads, problem := leadership(nodes, partitions)
		if problem == "" {
			return leads, nil
		}
		if time.Now().After(deadline) {
			return leads, fmt.Errorf("after %v the cluster is still not balanced: %s", limit, problem)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leadership returns the partitions each node leads by its own view, and what is still
// missing ("" when nothing is).
func leadership(nodes []*gridkv.GridKV, partitions int) (map[string]int, string) {
	leads := map[string]int{}
	leaders := make([]int, partitions)
	var short []string
	for _, kv := range nodes {
		st := kv.Status()
		leads[st.NodeID] += 0
		for _, p := range st.Partitions {
			if p.Leader != st.NodeID {
				continue
			}
			leads[st.NodeID]++
			leaders[p.ID]++
			if len(p.Replicas) != replicas {
				short = append(short, fmt.Sprintf("%d (%d replicas)", p.ID, len(p.Replicas)))
			}
		}
	}
	var problems []string
	var idle []string
	for id, n := range leads {
		if n == 0 {
			idle = append(idle, id)
		}
	}
	if len(idle) > 0 {
		slices.Sort(idle)
		problems = append(problems, "nodes leading no partition: "+strings.Join(idle, ", "))
	}
	var unled []string
	for p, n := range leaders {
		if n != 1 {
			unled = append(unled, fmt.Sprintf("%d (%d leaders)", p, n))
		}
	}
	if len(unled) > 0 {
		problems = append(problems, "partitions without exactly one leader: "+strings.Join(unled, ", "))
	}
	if len(short) > 0 {
		problems = append(problems, "partitions not fully replicated: "+strings.Join(short, ", "))
	}
	return leads, strings.Join(problems, "; ")
}

// sendTraffic runs two clients per node for d: each writes its own keys and reads back the
// ones it wrote (linearizable, the default for R=2, W=2 of N=3). Then every key is read
// through a different node than the one that wrote it. Leaders keep handing partitions to
// their preferred replicas for a while after every node leads one; a request caught in such a
// hand-off fails with ErrUnavailable, and the clients retry it, as an application would.
func sendTraffic(nodes []*gridkv.GridKV, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d+60*time.Second)
	defer cancel()
	type client struct {
		node    int
		written map[string]string
		hist    *hdrhistogram.Histogram
		retries int
		err     error
	}
	var clients []*client
	for i := range nodes {
		for range 2 {
			clients = append(clients, &client{node: i, written: map[string]string{}, hist: newHistogram()})
		}
	}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for c, cl := range clients {
		wg.Go(func() {
			kv := nodes[cl.node]
			var keys []string
			for i := 0; time.Now().Before(stop); i++ {
				t := time.Now()
				if i%2 == 0 || len(keys) == 0 {
					key, value := fmt.Sprintf("item/%d/%d", c, i), fmt.Sprintf("v%d", i)
					if cl.err = retry(ctx, &cl.retries, func() error { return kv.Set(ctx, key, []byte(value)) }); cl.err != nil {
						return
					}
					cl.written[key] = value
					keys = append(keys, key)
				} else {
					key := keys[rand.IntN(len(keys))]
					var got []byte
					err := retry(ctx, &cl.retries, func() (err error) {
						got, err = kv.Get(ctx, key)
						return err
					})
					if err != nil {
						cl.err = fmt.Errorf("get %s: %w", key, err)
						return
					}
					if string(got) != cl.written[key] {
						cl.err = fmt.Errorf("get %s returned %q, want %q", key, got, cl.written[key])
						return
					}
				}
				cl.hist.RecordValue(time.Since(t).Nanoseconds())
			}
		})
	}
	wg.Wait()

	all := newHistogram()
	retries := 0
	var errs []error
	for _, cl := range clients {
		all.Merge(cl.hist)
		retries += cl.retries
		errs = append(errs, cl.err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("%d clients over %v: %d ops, %.0f ops/s, latency p50 %v p99 %v max %v, %d retried after ErrUnavailable\n",
		len(clients), d, all.TotalCount(), float64(all.TotalCount())/d.Seconds(),
		nanos(all.ValueAtQuantile(50)), nanos(all.ValueAtQuantile(99)), nanos(all.Max()), retries)

	checked := 0
	for _, cl := range clients {
		reader := nodes[(cl.node+1)%len(nodes)]
		for key, want := range cl.written {
			var got []byte
			err := retry(ctx, new(int), func() (err error) {
				got, err = reader.Get(ctx, key)
				return err
			})
			if err != nil {
				return fmt.Errorf("reading back %s: %w", key, err)
			}
			if string(got) != want {
				return fmt.Errorf("reading back %s: got %q, want %q", key, got, want)
			}
			checked++
		}
	}
	fmt.Printf("check passed: all %d keys written read back through another node\n", checked)
	return nil
}

// retry calls op until it does not fail with ErrUnavailable, at most 10 times, counting the
// retries. Set and Get are safe to repeat.
func retry(ctx context.Context, retries *int, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if !errors.Is(err, gridkv.ErrUnavailable) || attempt == 10 || ctx.Err() != nil {
			return err
		}
		*retries++
		time.Sleep(50 * time.Millisecond)
	}
}

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, int64(time.Minute), 3) }

func nanos(ns int64) time.Duration { return time.Duration(ns) }

// addrsFrom returns n consecutive loopback addresses from port base.
func addrsFrom(base, n int) []string {
	var addrs []string
	for i := range n {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", base+i))
	}
	return addrs
}

func loggerFor(verbose bool) *slog.Logger {
	if !verbose {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startCluster starts a node on each address and waits until every partition has a leader.
// The first node creates the cluster; every other node names the first three as seeds.
func startCluster(addrs []string, partitions int, logger *slog.Logger) ([]*gridkv.GridKV, error) {
	timings := nodeTimings
	seeds := addrs[:min(3, len(addrs))]
	var nodes []*gridkv.GridKV
	for i, addr := range addrs {
		opts := &gridkv.GridKVOptions{
			LocalNodeID:  fmt.Sprintf("node-%02d", i+1),
			LocalAddress: addr,
			Partitions:   partitions,
			ReplicaCount: replicas,
			Logger:       logger,
			Timings:      &timings,
		}
		if i > 0 {
			opts.SeedAddrs = seeds
		}
		kv, err := gridkv.NewGridKV(opts)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, kv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, kv := range nodes {
		if err := kv.WaitReady(ctx); err != nil {
			return nodes, err
		}
	}
	return nodes, nil
}

// closeAll closes the nodes at once: one by one, each would wait for the others to take over
// its partitions.
func closeAll(nodes []*gridkv.GridKV) {
	var wg sync.WaitGroup
	for _, kv := range nodes {
		wg.Go(func() { kv.Close() })
	}
	wg.Wait()
}
