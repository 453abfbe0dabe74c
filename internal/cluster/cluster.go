// Package cluster runs GridKV clusters inside one test process: every node listens on its own
// loopback port, and the test closes them all when it ends. It is a test harness only; no
// production package imports it.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/faultnet"
	"github.com/feellmoose/gridkv/internal/freeport"
	"github.com/feellmoose/gridkv/transport"
)

// DefaultPartitions is the partition count a harness node gets unless mutate changes it: small
// enough that a three-node cluster converges in a few seconds under the race detector.
const DefaultPartitions = 16

// bindAttempts is how often Start and Add pick a new port when another process took the one
// they chose between probing it and binding it.
const bindAttempts = 8

// Node is one member of a Cluster.
type Node struct {
	ID   string
	Addr string
	KV   *gridkv.GridKV

	stopped atomic.Bool
}

// Cluster is a set of GridKV nodes started by one test. Its methods may be called from the
// test goroutine and from goroutines the test starts.
type Cluster struct {
	mutate func(i int, o *gridkv.GridKVOptions)
	logger *slog.Logger

	// Net is the fault network every node's transport consults; tests cut, slow and heal
	// links through it or through the helpers below.
	Net *faultnet.Net

	mu    sync.Mutex // guards nodes
	nodes []*Node    // every node ever started, by index; stopped ones stay in place until Restart
}

// Start starts n nodes on 127.0.0.1, every one wired to the cluster's fault network Net. Node 0 creates the cluster; node i > 0 joins with the
// addresses of nodes 0..i-1 as seeds. Every node starts from LocalTimings and DefaultPartitions;
// mutate (may be nil) then changes node i's options. Start registers a cleanup that closes
// every node, and returns once all nodes are created; call WaitReady to wait for leaders.
func Start(t testing.TB, n int, mutate func(i int, o *gridkv.GridKVOptions)) *Cluster {
	t.Helper()
	seed := faultSeed(t)
	c := &Cluster{mutate: mutate, logger: testLogger(t), Net: faultnet.New(seed)}
	register(t, c)
	t.Cleanup(func() { c.closeAll(t) })
	for i := 0; i < n; i++ {
		c.Add(t)
	}
	return c
}

// Add starts one more node, joining through the addresses of every live node.
func (c *Cluster) Add(t testing.TB) *Node {
	t.Helper()
	c.mu.Lock()
	i := len(c.nodes)
	c.mu.Unlock()
	node := c.start(t, i, fmt.Sprintf("node-%d", i), "")
	c.mu.Lock()
	c.nodes = append(c.nodes, node)
	c.mu.Unlock()
	return node
}

// AddAt starts a node with the given ID on addr, joining through seeds rather than the live
// nodes, and returns NewGridKV's error instead of failing the test, so that it may run on any
// goroutine: several AddAt calls may run at once (nodes that must find each other to finish
// joining). Each node is appended when its NewGridKV returns.
func (c *Cluster) AddAt(t testing.TB, id, addr string, seeds []string) (*Node, error) {
	c.mu.Lock()
	i := len(c.nodes)
	c.mu.Unlock()
	node, err := c.startWith(i, id, addr, seeds)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, node)
	c.mu.Unlock()
	return node, nil
}

// seeds returns the addresses of every live node.
func (c *Cluster) seeds() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var seeds []string
	for _, n := range c.nodes {
		if !n.stopped.Load() {
			seeds = append(seeds, n.Addr)
		}
	}
	return seeds
}

// start creates node i with the given ID on addr (empty: a free port), seeded with every live
// node, and wired to the cluster's fault network.
func (c *Cluster) start(t testing.TB, i int, id, addr string) *Node {
	t.Helper()
	node, err := c.startWith(i, id, addr, c.seeds())
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return node
}

func (c *Cluster) startWith(i int, id, addr string, seeds []string) (*Node, error) {
	fixed := addr != ""
	var lastErr error
	for attempt := 0; attempt < bindAttempts; attempt++ {
		if !fixed {
			var err error
			if addr, err = FreeAddr(); err != nil {
				return nil, fmt.Errorf("finding a free port for %s: %w", id, err)
			}
		}
		timings := gridkv.LocalTimings()
		opts := &gridkv.GridKVOptions{
			LocalNodeID:  id,
			LocalAddress: addr,
			SeedAddrs:    append([]string(nil), seeds...),
			Partitions:   DefaultPartitions,
			Timings:      &timings,
		}
		if c.logger != nil {
			opts.Logger = c.logger
		}
		if c.mutate != nil {
			c.mutate(i, opts)
		}
		network := transport.NetworkOptions{}
		if opts.Network != nil {
			network = *opts.Network
		}
		if network.Faults == nil {
			network.Faults = c.Net
		}
		opts.Network = &network
		kv, err := gridkv.NewGridKV(opts)
		if err == nil {
			return &Node{ID: id, Addr: addr, KV: kv}, nil
		}
		lastErr = err
		if !isBindConflict(err) {
			break
		}
		if fixed {
			time.Sleep(200 * time.Millisecond) // the old socket may linger for a moment
		}
	}
	return nil, fmt.Errorf("starting %s: %w", id, lastErr)
}

// Crash stops node i abruptly as far as the others can tell: its every link is cut first, so
// its graceful leave, leadership hand-off and final messages never reach them, then it is
// closed so that its port and goroutines are freed. The others see it fall silent and, after
// gossip's failure detection, dead. Crashing a stopped node does nothing.
func (c *Cluster) Crash(i int) {
	n := c.Node(i)
	c.Net.Isolate(n.Addr)
	if n.stopped.CompareAndSwap(false, true) {
		_ = n.KV.Close()
	}
}

// Restart starts a new, empty node in place of stopped node i, with the same ID and address
// (GridKV gives it a new incarnation). Every fault naming the address is lifted first. It
// joins through the live nodes and replaces node i in Node, Live and Index.
func (c *Cluster) Restart(t testing.TB, i int) *Node {
	t.Helper()
	old := c.Node(i)
	if !old.stopped.Load() {
		t.Fatalf("cluster: Restart(%d): %s is still running", i, old.ID)
	}
	c.Net.Forget(old.Addr)
	node := c.start(t, i, old.ID, old.Addr)
	c.mu.Lock()
	c.nodes[i] = node
	c.mu.Unlock()
	return node
}

// Partition cuts every link between nodes of different groups of node indexes, both ways.
func (c *Cluster) Partition(groups ...[]int) {
	addrs := make([][]string, len(groups))
	for g, idx := range groups {
		for _, i := range idx {
			addrs[g] = append(addrs[g], c.Node(i).Addr)
		}
	}
	c.Net.Partition(addrs...)
}

// Isolate cuts node i off from every other node, both ways, for the given classes (all if
// none).
func (c *Cluster) Isolate(i int, classes ...transport.Class) {
	c.Net.Isolate(c.Node(i).Addr, classes...)
}

// Heal lifts every fault: the network is perfect again.
func (c *Cluster) Heal() { c.Net.Heal() }

// faultSeed is the seed of a cluster's random drops and jitter: GRIDKV_FAULT_SEED if set (to
// replay a run), else the clock. It is logged so a failing run can be replayed.
func faultSeed(t testing.TB) uint64 {
	if s := os.Getenv("GRIDKV_FAULT_SEED"); s != "" {
		if v, err := strconv.ParseUint(s, 10, 64); err == nil {
			t.Logf("cluster: fault seed %d (GRIDKV_FAULT_SEED)", v)
			return v
		}
	}
	v := uint64(time.Now().UnixNano())
	t.Logf("cluster: fault seed %d (set GRIDKV_FAULT_SEED to replay)", v)
	return v
}

// Node returns node i, stopped or not.
func (c *Cluster) Node(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Index returns the index of the node with the given ID, or -1.
func (c *Cluster) Index(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n.ID == id {
			return i
		}
	}
	return -1
}

// Stop closes node i gracefully. Stopping a stopped node does nothing.
func (c *Cluster) Stop(i int) {
	n := c.Node(i)
	if n.stopped.CompareAndSwap(false, true) {
		_ = n.KV.Close()
	}
}

// Live returns the nodes not stopped, in start order.
func (c *Cluster) Live() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*Node
	for _, n := range c.nodes {
		if !n.stopped.Load() {
			live = append(live, n)
		}
	}
	return live
}

// WaitReady waits until every live node's WaitReady returns, failing the test after timeout.
func (c *Cluster) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, n := range c.Live() {
		if err := n.KV.WaitReady(ctx); err != nil {
			t.Fatalf("cluster: %s not ready after %v: %v\n%s", n.ID, timeout, err, c.Describe())
		}
	}
}

// WaitFor is the package-level WaitFor, reporting this cluster's status on failure.
func (c *Cluster) WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	waitFor(t, timeout, msg, cond, c.Describe)
}

// closeTimeout bounds how long the cleanup waits for Close: a Close that hangs is a bug to
// report, not a reason to stall the whole test binary until its timeout.
const closeTimeout = 30 * time.Second

// closeAll closes every live node at once: closing them one by one would make each wait for
// elections among the others. Two nodes are the exception: closing at once, each would wait
// (up to 5 s) for the other to drop it from their two-voter groups, so one closes first. A
// node whose Close does not return within closeTimeout fails the test, with every goroutine's
// stack written to a file for diagnosis.
func (c *Cluster) closeAll(t testing.TB) {
	live := c.Live()
	if len(live) == 2 {
		c.closeAtOnce(t, live[:1])
		live = live[1:]
	}
	c.closeAtOnce(t, live)
}

func (c *Cluster) closeAtOnce(t testing.TB, nodes []*Node) {
	var wg sync.WaitGroup
	var hung sync.Map // node ID -> true while its Close runs
	for _, n := range nodes {
		if !n.stopped.CompareAndSwap(false, true) {
			continue
		}
		wg.Add(1)
		hung.Store(n.ID, true)
		go func() {
			defer wg.Done()
			_ = n.KV.Close()
			hung.Delete(n.ID)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		var ids []string
		hung.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
		t.Errorf("cluster: Close of %v did not return within %v; goroutines: %s", ids, closeTimeout, dumpGoroutines())
	}
}

// dumpGoroutines writes every goroutine's stack to a temporary file and returns its path.
func dumpGoroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	f, err := os.CreateTemp("", "gridkv-goroutines-*.txt")
	if err != nil {
		return "(not written: " + err.Error() + ")"
	}
	defer f.Close()
	if _, err := f.Write(buf); err != nil {
		return "(not written: " + err.Error() + ")"
	}
	return f.Name()
}

// Describe renders every live node's Status, for failure messages.
func (c *Cluster) Describe() string {
	var b strings.Builder
	for _, n := range c.Live() {
		st := n.KV.Status()
		fmt.Fprintf(&b, "status of %s (%s):\n", n.ID, n.Addr)
		for _, m := range st.Members {
			fmt.Fprintf(&b, "  member %s %s %s\n", m.ID, m.Address, m.State)
		}
		for _, p := range st.Partitions {
			fmt.Fprintf(&b, "  partition %2d leader=%q replicas=%v\n", p.ID, p.Leader, p.Replicas)
		}
	}
	return b.String()
}

// WaitFor polls cond every 50ms until it returns true. After timeout it fails the test with msg
// and the last Status of every live node of the clusters the test started.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	waitFor(t, timeout, msg, cond, func() string {
		var b strings.Builder
		for _, c := range clustersOf(t) {
			b.WriteString(c.Describe())
		}
		return b.String()
	})
}

func waitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v\n%s", msg, timeout, describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FreeAddr returns a 127.0.0.1 address whose port was free for both TCP and UDP a moment ago.
// Another process may take it before the caller binds it; Start and Add retry in that case.
func FreeAddr() (string, error) { return freeport.Addr() }

func isBindConflict(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// The clusters each test started, so that the package-level WaitFor can describe them.
var (
	registryMu sync.Mutex
	registry   = map[testing.TB][]*Cluster{}
)

func register(t testing.TB, c *Cluster) {
	registryMu.Lock()
	registry[t] = append(registry[t], c)
	registryMu.Unlock()
	t.Cleanup(func() {
		registryMu.Lock()
		delete(registry, t)
		registryMu.Unlock()
	})
}

func clustersOf(t testing.TB) []*Cluster {
	registryMu.Lock()
	defer registryMu.Unlock()
	return append([]*Cluster(nil), registry[t]...)
}

// testLogger returns a logger writing to t.Log when GRIDKV_TEST_LOG=1, else nil. Lines that
// arrive after the test ended are dropped: t.Log panics then.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GRIDKV_TEST_LOG") != "1" {
		return nil
	}
	w := &testWriter{t: t}
	// Registered before the cleanup that closes the nodes, so it runs after it.
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
