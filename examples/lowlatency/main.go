// Command lowlatency serves game state from GridKV with stale reads, the low-latency setting:
// N=3, R=1, W=2, so writes are acknowledged on commit and reads are served by the node's own
// replica with no network round trip. Every node holds a replica of every partition here,
// so every read is local. Readers on each of three in-process nodes read player states at a
// steady rate while writers update them; one reader per node makes linearizable reads of the
// same keys for comparison.
// It prints the latency percentiles of each, and checks that every read returned a state
// that was written for that player and never one older (by version) than its node had
// returned before.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/feellmoose/gridkv"
)

const readersPerNode = 2

// players is how many player states there are; the test uses fewer, to preload faster.
var players = 10_000

// nodeTimings are the nodes' clocks: LocalTimings, for nodes that share one machine. The
// test lengthens Raft's timeouts under the race detector.
var nodeTimings = gridkv.LocalTimings()

func main() {
	base := flag.Int("port", 7801, "first of three consecutive loopback ports")
	traffic := flag.Duration("d", 10*time.Second, "how long to send traffic")
	rate := flag.Int("rate", 20_000, "stale reads per second, over all nodes")
	verbose := flag.Bool("v", false, "log GridKV's messages to stderr")
	flag.Parse()
	if err := run(addrsFrom(*base, 3), *traffic, *rate, loggerFor(*verbose)); err != nil {
		fmt.Fprintln(os.Stderr, "lowlatency:", err)
		os.Exit(1)
	}
}

// run sends stale reads at rate per second for the traffic time, with one linearizable reader
// and one writer per node. The stale reads are paced, as a server's requests arrive, rather
// than sent as fast as they return: a loop of local reads that never waits would starve
// Raft's goroutines of CPU and measure only that.
func run(addrs []string, traffic time.Duration, rate int, logger *slog.Logger) error {
	nodes, err := startCluster(addrs, logger)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), traffic+2*time.Minute)
	defer cancel()

	start := time.Now()
	if err := preload(ctx, nodes); err != nil {
		return err
	}
	fmt.Printf("%d player states written in %v\n", players, time.Since(start).Round(time.Millisecond))
	// A write is acknowledged once two replicas hold it; stale reads start once the third
	// has caught up too, so that none finds a player missing.
	start = time.Now()
	if err := awaitReplicated(ctx, nodes, 30*time.Second); err != nil {
		return err
	}
	fmt.Printf("every node's replica holds them %v later\n", time.Since(start).Round(time.Millisecond))

	stale, linear, writes := newHistogram(), newHistogram(), newHistogram()
	var mu sync.Mutex // guards the three histograms while workers merge into them
	merge := func(into, from *hdrhistogram.Histogram) {
		mu.Lock()
		defer mu.Unlock()
		into.Merge(from)
	}
	stop := time.Now().Add(traffic)
	var errs []error
	var errMu sync.Mutex
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		errs = append(errs, err)
	}
	var wg sync.WaitGroup
	for _, kv := range nodes {
		for r := range readersPerNode + 1 {
			// The last reader of each node reads linearizably, unpaced, for comparison.
			consistency, into, perSecond := gridkv.Stale, stale, rate/(readersPerNode*len(nodes))
			if r == readersPerNode {
				consistency, into, perSecond = gridkv.Linearizable, linear, 0
			}
			wg.Go(func() {
				h := newHistogram()
				defer merge(into, h)
				if err := read(ctx, kv, consistency, perSecond, stop, h); err != nil {
					fail(err)
				}
			})
		}
		wg.Go(func() {
			h := newHistogram()
			defer merge(writes, h)
			if err := write(ctx, kv, stop, h); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	secs := traffic.Seconds()
	fmt.Printf("over %v: %.0f stale reads/s, %.0f linearizable reads/s, %.0f writes/s\n", traffic,
		float64(stale.TotalCount())/secs, float64(linear.TotalCount())/secs, float64(writes.TotalCount())/secs)
	fmt.Println("latency          p50          p90          p99        p99.9          max")
	for _, row := range []struct {
		name string
		h    *hdrhistogram.Histogram
	}{{"stale read", stale}, {"linearizable", linear}, {"write (W=2)", writes}} {
		fmt.Printf("%-12s %12v %12v %12v %12v %12v\n", row.name,
			time.Duration(row.h.ValueAtQuantile(50)), time.Duration(row.h.ValueAtQuantile(90)),
			time.Duration(row.h.ValueAtQuantile(99)), time.Duration(row.h.ValueAtQuantile(99.9)),
			time.Duration(row.h.Max()))
	}
	fmt.Println("check passed: every read returned a state written for its player, never older than one its node had returned before")
	return nil
}

// preload writes every player's first state, 64 at a time, repeating a write that fails with
// ErrUnavailable.
func preload(ctx context.Context, nodes []*gridkv.GridKV) error {
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for w := range errs {
		wg.Go(func() {
			for p := w; p < players; p += len(errs) {
				err := nodes[p%len(nodes)].Set(ctx, playerKey(p), state(p, 0))
				for errors.Is(err, gridkv.ErrUnavailable) && ctx.Err() == nil {
					err = nodes[p%len(nodes)].Set(ctx, playerKey(p), state(p, 0))
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// awaitReplicated polls each node's own replica until it holds every player.
func awaitReplicated(ctx context.Context, nodes []*gridkv.GridKV, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, kv := range nodes {
		for p := 0; p < players; {
			_, err := kv.Get(ctx, playerKey(p), gridkv.WithConsistency(gridkv.Stale))
			switch {
			case err == nil:
				p++
			case !errors.Is(err, gridkv.ErrKeyNotFound):
				return err
			case time.Now().After(deadline):
				return fmt.Errorf("%s still lacks %s after %v", kv.Status().NodeID, playerKey(p), limit)
			default:
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	return nil
}

// read reads random players' states until stop, perSecond a second (0: as fast as they
// return). Reads through one node never go back in time, stale ones included: it checks that
// each player's version does not decrease.
func read(ctx context.Context, kv *gridkv.GridKV, c gridkv.Consistency, perSecond int, stop time.Time, h *hdrhistogram.Histogram) error {
	seen := map[int]uint64{}
	begin := time.Now()
	for n := 0; time.Now().Before(stop); n++ {
		if perSecond > 0 {
			// Ahead of schedule: wait until this read is due.
			if due := begin.Add(time.Duration(n) * time.Second / time.Duration(perSecond)); time.Until(due) > 0 {
				time.Sleep(time.Until(due))
			}
		}
		p := rand.IntN(players)
		t := time.Now()
		e, err := kv.GetEntry(ctx, playerKey(p), gridkv.WithConsistency(c))
		h.RecordValue(time.Since(t).Nanoseconds())
		if err != nil {
			return fmt.Errorf("reading %s: %w", playerKey(p), err)
		}
		if err := checkState(p, e.Value); err != nil {
			return err
		}
		if e.Version < seen[p] {
			return fmt.Errorf("%s: read version %d after version %d", playerKey(p), e.Version, seen[p])
		}
		seen[p] = e.Version
	}
	return nil
}

// write moves random players through kv until stop. A move that fails with ErrUnavailable
// (the leader changed while it was in flight) is dropped: the next one supersedes it.
func write(ctx context.Context, kv *gridkv.GridKV, stop time.Time, h *hdrhistogram.Histogram) error {
	for move := 1; time.Now().Before(stop); move++ {
		p := rand.IntN(players)
		t := time.Now()
		if err := kv.Set(ctx, playerKey(p), state(p, move)); err != nil && !errors.Is(err, gridkv.ErrUnavailable) {
			return err
		}
		h.RecordValue(time.Since(t).Nanoseconds())
	}
	return nil
}

func playerKey(p int) string { return "player/" + strconv.Itoa(p) }

func state(p, move int) []byte { return []byte(fmt.Sprintf("p%d;move=%d", p, move)) }

// checkState returns an error if v is not a state written for player p.
func checkState(p int, v []byte) error {
	who, move, ok := strings.Cut(string(v), ";move=")
	if _, err := strconv.Atoi(move); !ok || who != "p"+strconv.Itoa(p) || err != nil {
		return fmt.Errorf("%s holds %q, never written for it", playerKey(p), v)
	}
	return nil
}

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, int64(time.Minute), 3) }

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

// startCluster starts a node on each address with N=3, R=1, W=2, the first creating the
// cluster and the others joining it, and waits until every partition has a leader and three
// replicas, so that every node holds a replica of every partition to read from.
func startCluster(addrs []string, logger *slog.Logger) ([]*gridkv.GridKV, error) {
	timings := nodeTimings
	var nodes []*gridkv.GridKV
	for i, addr := range addrs {
		opts := &gridkv.GridKVOptions{
			LocalNodeID:  fmt.Sprintf("node-%d", i+1),
			LocalAddress: addr,
			ReplicaCount: 3,
			ReadQuorum:   1,
			WriteQuorum:  2,
			Logger:       logger,
			Timings:      &timings,
		}
		if i > 0 {
			opts.SeedAddrs = []string{addrs[0]}
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
	for !fullyReplicated(nodes, len(addrs)) {
		select {
		case <-ctx.Done():
			return nodes, fmt.Errorf("waiting for every partition to have %d replicas: %w", len(addrs), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nodes, nil
}

// fullyReplicated reports whether every node sees each partition with a leader and n replicas.
func fullyReplicated(nodes []*gridkv.GridKV, n int) bool {
	for _, kv := range nodes {
		for _, p := range kv.Status().Partitions {
			if p.Leader == "" || len(p.Replicas) != n {
				return false
			}
		}
	}
	return true
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
