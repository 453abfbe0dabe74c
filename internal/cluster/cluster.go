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
	"github.com/feellmoose/gridkv/internal/lincheck"
	"github.com/feellmoose/gridkv/internal/testlog"
	"github.com/feellmoose/gridkv/transport"
)

// bindAttempts is how often Start and Add pick a new port when another process took the one
// they chose between probing it and binding it.
const bindAttempts = 8

// Node is one member of a Cluster.
type Node struct {
	ID   string
	Addr string
	KV   *gridkv.GridKV
	Log  *testlog.Recorder // what the node logged, with Options.RecordLogs; else nil

	stopped atomic.Bool
}

// Cluster is a set of GridKV nodes started by one test. Its methods may be called from the
// test goroutine and from goroutines the test starts, except Add, Restart and WaitReady, which
// may fail the test.
type Cluster struct {
	opts   Options
	logger *slog.Logger

	// Net is the fault network every node's transport consults; tests cut, slow and heal
	// links through it or through the helpers below.
	Net *faultnet.Net

	mu         sync.Mutex          // guards the fields below
	nodes      []*Node             // every node ever started, by index; stopped ones stay in place until Restart
	partitions int                 // the cluster's partition count, known once a node started
	replicas   int                 // the cluster's ReplicaCount, known once a node started
	histories  []*lincheck.History // checked at the end of the test
	reasons    map[string]string   // predicate -> why it last returned false, for Describe
}

// Start starts n nodes on 127.0.0.1, every one wired to the cluster's fault network Net, and
// waits as o.Wait says. Node 0 creates the cluster; node i > 0 joins with the addresses of the
// live nodes as seeds. It registers the end-of-test checks described in the package doc.
func Start(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	c := &Cluster{opts: o, logger: testLogger(t), Net: faultnet.New(faultSeed(t))}
	register(t, c)
	for i := 0; i < n; i++ {
		c.Add(t)
	}
	if n == 0 {
		return c
	}
	c.WaitReady(t, startTimeout)
	switch o.Wait {
	case WaitFormed:
		WaitFor(t, startTimeout, fmt.Sprintf("%d nodes formed", n), c.Formed)
	case WaitBalanced:
		WaitFor(t, startTimeout, fmt.Sprintf("%d nodes formed with balanced leaders", n), func() bool {
			return c.Formed() && c.Balanced()
		})
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

// AddAt starts a node with the given ID on addr (empty: a free port), joining through seeds
// rather than the live nodes, and returns NewGridKV's error instead of failing the test, so
// that it may run on any goroutine: several AddAt calls may run at once (nodes that must find
// each other to finish joining). Each node is appended when its NewGridKV returns.
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
		opts, log := c.nodeOptions(i, id, addr, seeds)
		kv, err := gridkv.NewGridKV(opts)
		if err == nil {
			c.learnSettings(opts)
			return &Node{ID: id, Addr: addr, KV: kv, Log: log}, nil
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

// nodeOptions returns node i's options as the cluster's Options make them, and the recorder
// of its log if they ask for one.
func (c *Cluster) nodeOptions(i int, id, addr string, seeds []string) (*gridkv.GridKVOptions, *testlog.Recorder) {
	timings := gridkv.LocalTimings()
	if c.opts.Timings != nil {
		timings = c.opts.Timings()
	}
	o := &gridkv.GridKVOptions{
		LocalNodeID:  id,
		LocalAddress: addr,
		SeedAddrs:    append([]string(nil), seeds...),
		Partitions:   DefaultPartitions,
		Timings:      &timings,
		Logger:       c.logger,
		ClusterKey:   c.opts.ClusterKey,
	}
	switch p := c.opts.Partitions; {
	case p == LibraryPartitions:
		o.Partitions = 0
	case p != 0:
		o.Partitions = p
	}
	if c.opts.TLS != nil {
		o.TLS = c.opts.TLS(id)
	}
	var log *testlog.Recorder
	if c.opts.RecordLogs {
		log = &testlog.Recorder{}
		o.Logger = slog.New(log)
	}
	if c.opts.Mutate != nil {
		c.opts.Mutate(i, o)
	}
	network := transport.NetworkOptions{}
	if o.Network != nil {
		network = *o.Network
	}
	if network.Faults == nil {
		network.Faults = c.Net
	}
	o.Network = &network
	return o, log
}

// learnSettings records the partition count and ReplicaCount of the cluster's first node: a
// joining node takes the cluster's (or fails to start).
func (c *Cluster) learnSettings(o *gridkv.GridKVOptions) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.partitions != 0 {
		return
	}
	c.partitions, c.replicas = o.Partitions, o.ReplicaCount
	if c.partitions == 0 {
		c.partitions = gridkv.DefaultPartitions
	}
	if c.replicas == 0 {
		c.replicas = 3 // GridKVOptions' documented default
	}
}

// settings returns the cluster's partition count and ReplicaCount (zero before a node started).
func (c *Cluster) settings() (partitions, replicas int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.partitions, c.replicas
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

// Restart starts a node in place of stopped node i, with the same ID and address: a new,
// empty one under a new incarnation, or, when its options give it a DataDir, the node it
// was, from its disk. Every fault naming the address is lifted first. It
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

// RestartWithSeeds is Restart with the given seeds instead of the live nodes' addresses (none:
// the node starts as the first node of a cluster does, or, with a DataDir, rejoins its own).
func (c *Cluster) RestartWithSeeds(t testing.TB, i int, seeds []string) *Node {
	t.Helper()
	old := c.Node(i)
	if !old.stopped.Load() {
		t.Fatalf("cluster: RestartWithSeeds(%d): %s is still running", i, old.ID)
	}
	c.Net.Forget(old.Addr)
	node, err := c.startWith(i, old.ID, old.Addr, seeds)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.mu.Lock()
	c.nodes[i] = node
	c.mu.Unlock()
	return node
}

// Stop closes node i gracefully. Stopping a stopped node does nothing.
func (c *Cluster) Stop(i int) {
	n := c.Node(i)
	if n.stopped.CompareAndSwap(false, true) {
		_ = n.KV.Close()
	}
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

// LiveExcept returns the indexes of the live nodes other than node i.
func (c *Cluster) LiveExcept(i int) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for j, n := range c.nodes {
		if j != i && !n.stopped.Load() {
			out = append(out, j)
		}
	}
	return out
}

// WaitReady waits until every live node's WaitReady returns, failing the test after timeout.
// Unlike WaitFor it does not poll: GridKV's WaitReady blocks until the node is ready.
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

// FreeAddr returns a 127.0.0.1 address whose port was free for both TCP and UDP a moment ago.
// Another process may take it before the caller binds it; Start and Add retry in that case.
func FreeAddr() (string, error) { return freeport.Addr() }

func isBindConflict(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}
