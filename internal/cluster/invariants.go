package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/lincheck"
)

// Inspector looks inside a node beyond its public API, for the predicates that compare
// replicas and identities.
type Inspector struct {
	ServerID func(kv *gridkv.GridKV) string    // kv's Raft server ID: node ID and incarnation
	Replicas func(kv *gridkv.GridKV) []Replica // a digest of every replica kv hosts
}

// Replica summarises one node's replica of one partition.
type Replica struct {
	Partition int
	ServerID  string   // this replica's Raft server ID
	Leader    bool     // this replica believes it leads the group
	Voters    []string // voter server IDs in this replica's view of the configuration
	Applied   uint64   // the partition's applied index when the digest was taken
	Keys      int
	Sum       uint64 // order-independent hash of every key, value and version
}

// Inspect is how the harness looks inside nodes. Only the root package's tests can fill it
// (from its export_test.go, which no other package sees): their TestMain sets it before any
// test runs, and nothing changes it afterwards.
var Inspect Inspector

func mustInspect() {
	if Inspect.ServerID == nil || Inspect.Replicas == nil {
		panic("cluster: Inspect is not set: the root package's TestMain sets it from export_test.go")
	}
}

// How long the end-of-test checks wait: for porcupine's verdict on one history, for a write to
// every partition after healing, and then for every replica to agree.
const (
	historyTimeout  = 120 * time.Second
	writableTimeout = 30 * time.Second
	agreeTimeout    = 60 * time.Second
)

// NewHistory starts a lincheck history whose operations the harness checks for
// linearizability when the test ends. The test's clients must have stopped by then.
func (c *Cluster) NewHistory() *lincheck.History {
	h := lincheck.NewHistory()
	c.mu.Lock()
	c.histories = append(c.histories, h)
	c.mu.Unlock()
	return h
}

// The state of every test that started a cluster: its clusters, so that WaitFor can describe
// them, and whether the test opted out of the leak check.
var (
	registryMu sync.Mutex
	registry   = map[testing.TB]*testState{}
)

type testState struct {
	clusters  []*Cluster
	skipLeaks string // a reason, if some cluster's Options.SkipLeakCheck gave one
}

// register records c as one of t's clusters and registers the end-of-test checks. Cleanups
// run last-registered first, so the order below is the reverse of the order they run in.
func register(t testing.TB, c *Cluster) {
	registryMu.Lock()
	st, started := registry[t]
	if !started {
		st = &testState{}
		registry[t] = st
	}
	st.clusters = append(st.clusters, c)
	if c.opts.SkipLeakCheck != "" {
		st.skipLeaks = c.opts.SkipLeakCheck
	}
	registryMu.Unlock()
	if !started {
		t.Cleanup(func() {
			registryMu.Lock()
			delete(registry, t)
			registryMu.Unlock()
		})
		// Once per test, by its first cluster: its cleanups run after every later cluster's,
		// so every node of the test is closed by then. Goroutines that existed before are
		// other tests' business (TestMain checks the binary as a whole).
		before := goleak.IgnoreCurrent()
		t.Cleanup(func() { checkLeaks(t, st, before) })
	}
	t.Cleanup(func() { c.closeAll(t) })
	t.Cleanup(func() { c.checkReplicas(t) })
	t.Cleanup(func() { c.checkHistories(t) })
}

func clustersOf(t testing.TB) []*Cluster {
	registryMu.Lock()
	defer registryMu.Unlock()
	if st := registry[t]; st != nil {
		return append([]*Cluster(nil), st.clusters...)
	}
	return nil
}

// checkHistories checks every history made with NewHistory with porcupine.
func (c *Cluster) checkHistories(t testing.TB) {
	if t.Failed() {
		return
	}
	c.mu.Lock()
	histories := append([]*lincheck.History(nil), c.histories...)
	c.mu.Unlock()
	for _, h := range histories {
		lincheck.Check(t, h.Ops(), historyTimeout)
	}
}

// checkReplicas heals the network, requires a write to every partition to succeed and then
// every replica of every partition to agree, for a cluster that ever had more than one node.
func (c *Cluster) checkReplicas(t testing.TB) {
	if t.Failed() {
		return
	}
	c.mu.Lock()
	started := len(c.nodes)
	c.mu.Unlock()
	if started < 2 {
		return
	}
	if why := c.opts.SkipReplicaCheck; why != "" {
		t.Logf("cluster: replicas not compared at the end: %s", why)
		return
	}
	mustInspect()
	live := c.Live()
	if len(live) == 0 {
		t.Fatalf("cluster: every node stopped before the test ended, so no replicas can be compared; say why in Options.SkipReplicaCheck")
	}
	c.Heal()
	start := time.Now()
	partitions, _ := c.settings()
	var wg sync.WaitGroup
	errs := make([]error, partitions)
	for p := 0; p < partitions; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = writeThroughAny(live, p, c.KeyIn("cluster-final", p))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("cluster: after healing, no write succeeded within %v:\n%v\n%s", writableTimeout, err, c.Describe())
	}
	writable := time.Since(start)
	WaitFor(t, agreeTimeout, "cluster: every replica of every partition agrees", c.ReplicasAgree)
	t.Logf("cluster: after healing, every partition writable in %v, every replica agreeing in %v",
		writable.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// writeThroughAny sets key, of partition p, through one live node after another until a write
// succeeds or writableTimeout passes.
func writeThroughAny(live []*Node, p int, key string) error {
	deadline := time.Now().Add(writableTimeout)
	for attempt := 0; ; attempt++ {
		node := live[(p+attempt)%len(live)]
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := node.KV.Set(ctx, key, []byte(fmt.Sprintf("final-%d", attempt)))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("partition %d, last through %s: %w", p, node.ID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkLeaks fails t if a goroutine started since its first cluster outlives its nodes.
func checkLeaks(t testing.TB, st *testState, before goleak.Option) {
	if t.Failed() {
		return
	}
	registryMu.Lock()
	why := st.skipLeaks
	registryMu.Unlock()
	if why != "" {
		t.Logf("cluster: goroutine leak check skipped: %s", why)
		return
	}
	// goleak retries for about 2 s. memberlist's Shutdown does not wait for a probe in
	// flight: its goroutine waits for the probe's own timer (a probe interval) and then
	// ends. On a loaded CI machine that outlasted goleak's retries; look again for up to
	// about 10 s before calling a goroutine leaked.
	err := goleak.Find(before)
	for deadline := time.Now().Add(8 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		err = goleak.Find(before)
	}
	if err != nil {
		t.Errorf("cluster: goroutines outlived every node of the test: %v", err)
	}
}
