// Command sessioncache keeps web sessions in GridKV, the high-concurrency cache setting:
// N=3 with R=1 and W=1, so a write is acknowledged as soon as the partition leader has
// appended it and a read is served from the node's own replica without a network round trip
// (stale). Many goroutines on each of three in-process nodes log users in (a session written
// with a TTL), read sessions and log users out. It prints the throughput and latencies, how
// often a read missed a session its own client had just written (the price of stale reads)
// and how many acknowledged writes were lost, and checks that reads never went back in time
// on a node and that the nodes' replicas converge on the same sessions.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/feellmoose/gridkv"
)

const (
	clientsPerNode    = 16
	sessionsPerClient = 200
	sessionTTL        = 30 * time.Minute
)

// nodeTimings are the nodes' clocks: LocalTimings, for nodes that share one machine. The
// test lengthens Raft's timeouts under the race detector.
var nodeTimings = gridkv.LocalTimings()

func main() {
	base := flag.Int("port", 7501, "first of three consecutive loopback ports")
	traffic := flag.Duration("d", 10*time.Second, "how long to send traffic")
	verbose := flag.Bool("v", false, "log GridKV's messages to stderr")
	flag.Parse()
	if err := run(addrsFrom(*base, 3), *traffic, loggerFor(*verbose)); err != nil {
		fmt.Fprintln(os.Stderr, "sessioncache:", err)
		os.Exit(1)
	}
}

// client is one goroutine's share of the sessions, and what it measured.
type client struct {
	node int
	// last is the sequence number of each session's last acknowledged write; 0: none yet,
	// -1: logged out.
	last    [sessionsPerClient]int
	seq     int
	reads   *hdrhistogram.Histogram
	writes  *hdrhistogram.Histogram
	misses  int // reads that found nothing where this client had written a session
	retries int // writes repeated after ErrUnavailable
	err     error
}

func run(addrs []string, traffic time.Duration, logger *slog.Logger) error {
	nodes, err := startCluster(addrs, logger)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), traffic+60*time.Second)
	defer cancel()

	var clients []*client
	for n := range nodes {
		for range clientsPerNode {
			clients = append(clients, &client{node: n, reads: newHistogram(), writes: newHistogram()})
		}
	}
	stop := time.Now().Add(traffic)
	var wg sync.WaitGroup
	for id, c := range clients {
		wg.Go(func() { c.err = c.run(ctx, nodes[c.node], id, stop) })
	}
	wg.Wait()

	reads, writes := newHistogram(), newHistogram()
	misses, retries := 0, 0
	var errs []error
	for _, c := range clients {
		reads.Merge(c.reads)
		writes.Merge(c.writes)
		misses += c.misses
		retries += c.retries
		errs = append(errs, c.err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	secs := traffic.Seconds()
	fmt.Printf("%d clients over %v: %.0f ops/s (%.0f reads/s, %.0f writes/s)\n", len(clients), traffic,
		float64(reads.TotalCount()+writes.TotalCount())/secs, float64(reads.TotalCount())/secs, float64(writes.TotalCount())/secs)
	fmt.Printf("stale reads: p50 %v p99 %v; writes (W=1): p50 %v p99 %v, %d retried after ErrUnavailable\n",
		nanos(reads.ValueAtQuantile(50)), nanos(reads.ValueAtQuantile(99)),
		nanos(writes.ValueAtQuantile(50)), nanos(writes.ValueAtQuantile(99)), retries)
	fmt.Printf("%d of %d reads (%.3f%%) missed a session their client had just written\n",
		misses, reads.TotalCount(), 100*float64(misses)/float64(max(1, reads.TotalCount())))
	fmt.Println("check passed: no read returned an older session than one its node had returned before")

	start := time.Now()
	lost, err := awaitConverged(ctx, nodes, clients, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("check passed: every node's replica holds the same sessions (converged %v after the traffic)\n",
		time.Since(start).Round(time.Millisecond))
	fmt.Printf("%d of %d sessions lost their last acknowledged write (W=1 can lose writes when leadership moves)\n",
		lost, len(clients)*sessionsPerClient)
	return nil
}

// run sends traffic through kv until stop: 88% reads, 10% logins or refreshes, 2% logouts,
// each on a random session of this client's.
func (c *client) run(ctx context.Context, kv *gridkv.GridKV, id int, stop time.Time) error {
	// seen is the highest sequence number a read returned for each session: reads through
	// one node never go back in time, even stale ones.
	var seen [sessionsPerClient]int
	for time.Now().Before(stop) {
		s := rand.IntN(sessionsPerClient)
		key := sessionKey(id, s)
		t := time.Now()
		switch r := rand.IntN(100); {
		case r < 10:
			c.seq++
			if err := c.retry(ctx, func() error {
				return kv.Set(ctx, key, sessionValue(id, c.seq), gridkv.WithTTL(sessionTTL))
			}); err != nil {
				return err
			}
			c.last[s] = c.seq
			c.writes.RecordValue(time.Since(t).Nanoseconds())
		case r < 12:
			if err := c.retry(ctx, func() error { return kv.Delete(ctx, key) }); err != nil {
				return err
			}
			c.last[s] = -1
			c.writes.RecordValue(time.Since(t).Nanoseconds())
		default:
			v, err := kv.Get(ctx, key, gridkv.WithConsistency(gridkv.Stale))
			c.reads.RecordValue(time.Since(t).Nanoseconds())
			if errors.Is(err, gridkv.ErrKeyNotFound) {
				if c.last[s] > 0 {
					c.misses++
				}
				continue
			}
			if err != nil {
				return err
			}
			seq, err := parseSession(id, v)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if seq < seen[s] {
				return fmt.Errorf("%s: a read returned write %d after one had returned write %d", key, seq, seen[s])
			}
			seen[s] = seq
		}
	}
	return nil
}

// retry repeats a write that failed with ErrUnavailable (the leader changed while it was in
// flight, so it may or may not have applied), at most 10 times. Setting a session or
// deleting it again is harmless.
func (c *client) retry(ctx context.Context, write func() error) error {
	for attempt := 1; ; attempt++ {
		err := write()
		if !errors.Is(err, gridkv.ErrUnavailable) || attempt == 10 || ctx.Err() != nil {
			return err
		}
		c.retries++
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitConverged polls every node's own replica (stale reads) until all of them hold the same
// version of each session, then compares it with the client's last acknowledged write. It
// returns how many sessions lost that write: W=1 acknowledges a write once the leader has
// appended it, so a write the leader had not yet replicated is lost if another replica takes
// over. Replicas that never agree are an error.
func awaitConverged(ctx context.Context, nodes []*gridkv.GridKV, clients []*client, limit time.Duration) (lost int, err error) {
	deadline := time.Now().Add(limit)
	for id, c := range clients {
		for s, want := range c.last {
			key := sessionKey(id, s)
			var seqs []int
			for {
				seqs = seqs[:0]
				for _, kv := range nodes {
					seq, err := staleSeq(ctx, kv, id, key)
					if err != nil {
						return lost, err
					}
					seqs = append(seqs, seq)
				}
				if !slices.ContainsFunc(seqs, func(seq int) bool { return seq != seqs[0] }) {
					break
				}
				if time.Now().After(deadline) {
					return lost, fmt.Errorf("%s: the nodes still hold different writes after %v: %v", key, limit, seqs)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if max(want, 0) != seqs[0] {
				lost++
			}
		}
	}
	return lost, nil
}

// staleSeq returns the sequence number of the session this node's replica holds, 0 if none.
func staleSeq(ctx context.Context, kv *gridkv.GridKV, client int, key string) (int, error) {
	v, err := kv.Get(ctx, key, gridkv.WithConsistency(gridkv.Stale))
	if errors.Is(err, gridkv.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	seq, err := parseSession(client, v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	return seq, nil
}

func sessionKey(client, s int) string { return fmt.Sprintf("session/%d/%d", client, s) }

// sessionValue is what a login stores: the user and the client's write sequence number.
func sessionValue(client, seq int) []byte {
	return []byte(fmt.Sprintf("user=u%d;seq=%d", client, seq))
}

func parseSession(client int, v []byte) (int, error) {
	user, seq, ok := strings.Cut(string(v), ";seq=")
	if !ok || user != fmt.Sprintf("user=u%d", client) {
		return 0, fmt.Errorf("value %q was never written", v)
	}
	return strconv.Atoi(seq)
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

// startCluster starts a node on each address with N=3, R=1, W=1, the first creating the
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
			WriteQuorum:  1,
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
