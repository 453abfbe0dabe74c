package gridkv_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/internal/faultnet"
	"github.com/feellmoose/gridkv/internal/lincheck"
	"github.com/feellmoose/gridkv/transport"
)

// The scenarios below inject real faults (cut, slow and lossy links, crashes, restarts,
// membership changes) into a cluster under load. Every scenario runs lincheck clients on every
// live node and one stale reader per node (startLoad). When it ends:
//   - the load checks the stale reads: each returns a value some client wrote (or nothing
//     before any write) and never a version older than one the same reader already saw from
//     the same replica of the same node;
//   - the harness checks the clients' history with porcupine, per key, then heals, requires a
//     write to every partition to succeed, and requires every replica of every partition to
//     hold the same data once their applied indexes match.

var soakFlag = flag.Duration("soak", 0, "run TestFaultSoak for this long (also GRIDKV_SOAK); 0: a short CI run")

const (
	faultKeys      = 16
	faultOpTime    = 3 * time.Second
	clientsPerNode = 3
)

// load drives lincheck clients and stale readers against the nodes attached to it, until
// finish. Safe for concurrent use.
type load struct {
	h      *lincheck.History
	nextID atomic.Int64
	wg     sync.WaitGroup
	done   atomic.Bool
	stale  staleLog

	mu    sync.Mutex                      // guards stops
	stops map[*gridkv.GridKV]*atomic.Bool // per attached node: its clients stop when set
}

// startLoad attaches a load to every live node of c. Its history is the harness's to check;
// a cleanup registered here (so it runs before the harness's checks) stops the clients and
// checks the stale reads.
func startLoad(t *testing.T, c *cluster.Cluster) *load {
	l := &load{h: c.NewHistory(), stops: make(map[*gridkv.GridKV]*atomic.Bool)}
	for _, n := range c.Live() {
		l.attach(n)
	}
	t.Cleanup(func() {
		l.finish()
		if !t.Failed() {
			l.check(t)
		}
	})
	return l
}

// attach starts clientsPerNode lincheck clients and one stale reader on n.
func (l *load) attach(n *cluster.Node) {
	stop := new(atomic.Bool)
	l.mu.Lock()
	l.stops[n.KV] = stop
	l.mu.Unlock()
	stopped := func() bool { return stop.Load() || l.done.Load() }
	for range clientsPerNode {
		cl := lincheck.Client{ID: int(l.nextID.Add(1)), KV: n.KV, Keys: faultKeys, OpTime: faultOpTime,
			Until: time.Now().Add(time.Hour), Stop: stopped}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			cl.Run(l.h)
		}()
	}
	reader := int(l.nextID.Add(1))
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.stale.read(reader, n, stopped)
	}()
}

// detach stops n's clients (before n is crashed or removed); in-flight calls finish.
func (l *load) detach(n *cluster.Node) {
	l.mu.Lock()
	if s := l.stops[n.KV]; s != nil {
		s.Store(true)
	}
	l.mu.Unlock()
}

// finish stops every client and waits for them. It may be called more than once.
func (l *load) finish() {
	l.done.Store(true)
	l.wg.Wait()
}

// check verifies the stale reads against the history (porcupine's verdict on it is the
// harness's).
func (l *load) check(t *testing.T) {
	t.Helper()
	ops := l.h.Ops()
	t.Logf("history: %d operations (%d unknown outcome, %d failed reads dropped, %d CAS swapped, %d mismatched); %d stale reads (%d failed)",
		len(ops), l.h.Unknown.Load(), l.h.Dropped.Load(), l.h.Swaps.Load(), l.h.Mismatches.Load(),
		l.stale.reads.Load(), l.stale.failed.Load())
	if len(ops) < 100 {
		t.Errorf("only %d operations: too few for the check to mean anything", len(ops))
	}
	l.stale.check(t, ops)
}

// staleLog records what stale readers saw and the violations they noticed while reading.
type staleLog struct {
	reads, failed atomic.Int64

	mu         sync.Mutex // guards seen and violations
	seen       []staleRead
	violations []string
}

type staleRead struct {
	reader  int
	node    string
	key     string
	value   string
	version uint64
}

// read issues stale GetEntry calls on n until stopped. For each key it remembers the replica
// it read from and the highest version seen there; a read from that same replica must not
// return an older version, nor a different value at the same version.
func (s *staleLog) read(reader int, n *cluster.Node, stopped func() bool) {
	type last struct {
		replica any
		version uint64
		value   string
	}
	seen := make(map[string]last)
	rng := rand.New(rand.NewPCG(uint64(reader), 7))
	for !stopped() {
		key := fmt.Sprintf("lin-%d", rng.IntN(faultKeys))
		before := gridkv.ReplicaOf(n.KV, key)
		ctx, cancel := context.WithTimeout(context.Background(), faultOpTime)
		e, err := n.KV.GetEntry(ctx, key, gridkv.WithConsistency(gridkv.Stale))
		cancel()
		after := gridkv.ReplicaOf(n.KV, key)
		switch {
		case errors.Is(err, gridkv.ErrKeyNotFound):
			e = gridkv.Entry{}
		case err != nil:
			s.failed.Add(1)
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s.reads.Add(1)
		time.Sleep(500 * time.Microsecond) // enough reads to catch a regression, CPU left for the nodes
		r := staleRead{reader: reader, node: n.ID, key: key, value: string(e.Value), version: e.Version}
		s.mu.Lock()
		s.seen = append(s.seen, r)
		if before != nil && before == after {
			if prev, ok := seen[key]; ok && prev.replica == before {
				switch {
				case e.Version < prev.version:
					s.violations = append(s.violations, fmt.Sprintf("reader %d on %s: %s went back from version %d (%q) to %d (%q)",
						reader, n.ID, key, prev.version, prev.value, e.Version, e.Value))
				case e.Version == prev.version && string(e.Value) != prev.value:
					s.violations = append(s.violations, fmt.Sprintf("reader %d on %s: %s version %d read as %q, then as %q",
						reader, n.ID, key, e.Version, prev.value, e.Value))
				}
			}
			if prev, ok := seen[key]; !ok || prev.replica != before || e.Version >= prev.version {
				seen[key] = last{replica: before, version: e.Version, value: string(e.Value)}
			}
		} else {
			delete(seen, key) // the replica changed under the read: start over with the next
		}
		s.mu.Unlock()
	}
}

// check fails t on violations seen while reading, on a stale value no client wrote, and on a
// value reported with two different versions (by stale reads or by the clients' history).
func (s *staleLog) check(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	written := make(map[string]bool)
	versionOf := make(map[string]uint64) // value -> the version some read or CAS reported
	note := func(where, value string, version uint64) {
		if v, ok := versionOf[value]; ok && v != version {
			t.Errorf("value %q reported at version %d and at %d (%s)", value, v, version, where)
		}
		versionOf[value] = version
	}
	for _, op := range ops {
		in, out := op.Input.(lincheck.Input), op.Output.(lincheck.Output)
		switch in.Kind {
		case lincheck.Set:
			written[in.Value] = true
		case lincheck.CAS:
			written[in.Value] = true
			if out.Swapped {
				note("CAS result", in.Value, out.Version)
			} else if out.Found {
				note("CAS mismatch", out.Value, out.Version)
			}
		case lincheck.GetEntry:
			if out.Found {
				note("linearizable GetEntry", out.Value, out.Version)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, v := range s.violations {
		if i == 10 {
			t.Errorf("... and %d more stale-read regressions", len(s.violations)-10)
			break
		}
		t.Errorf("stale read regressed: %s", v)
	}
	bad := 0
	for _, r := range s.seen {
		if r.version == 0 {
			if r.value != "" {
				t.Errorf("stale read by %d on %s of %s: value %q without a version", r.reader, r.node, r.key, r.value)
			}
			continue
		}
		if !written[r.value] {
			if bad++; bad <= 10 {
				t.Errorf("stale read by %d on %s of %s returned %q (version %d), which no client wrote", r.reader, r.node, r.key, r.value, r.version)
			}
			continue
		}
		note("stale read on "+r.node, r.value, r.version)
	}
}

// sleepUntil sleeps until t.
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// 1. The leader of many partitions is cut off from the majority, both ways. Its own clients
// keep calling it: its reads must fail or be linearizable. The majority elects new leaders.
func TestFaultLeaderPartitioned(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	victim := c.MostLeader()
	l := startLoad(t, c)
	wl := startWatchLoad(t, c)
	start := time.Now()
	sleepUntil(start.Add(1500 * time.Millisecond))
	majority := c.LiveExcept(victim)
	t.Logf("partitioning %s (leads %d) from %v", c.Node(victim).ID, c.LeaderCounts()[c.Node(victim).ID], majority)
	c.Partition([]int{victim}, majority)
	cut := time.Now()
	cluster.WaitFor(t, 20*time.Second, fmt.Sprintf("every partition led from nodes %v", majority), func() bool { return c.LedBy(majority) })
	t.Logf("the majority leads every partition %v after the cut", time.Since(cut).Round(time.Millisecond))
	sleepUntil(start.Add(6 * time.Second))
	c.Heal()
	sleepUntil(start.Add(8 * time.Second))
	l.finish()
	wl.check(t)
}

// 2. The leader of many partitions is paused: cut off both ways for longer than the election
// timeout, then let back in as if nothing happened.
func TestFaultLeaderPaused(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	victim := c.MostLeader()
	l := startLoad(t, c)
	start := time.Now()
	for round := 0; round < 2; round++ {
		sleepUntil(start.Add(time.Duration(1+3*round) * time.Second))
		c.Isolate(victim)
		time.Sleep(4 * gridkv.LocalTimings().Raft.ElectionTimeout)
		c.Heal()
		t.Logf("paused %s for %v", c.Node(victim).ID, 4*gridkv.LocalTimings().Raft.ElectionTimeout)
		victim = c.MostLeader()
	}
	sleepUntil(start.Add(8 * time.Second))
	l.finish()
}

// crashAndRestart crashes node i, waits until the others see it dead if awaitDead, then starts
// it again empty on the same ID and address, under load.
func crashAndRestart(t *testing.T, c *cluster.Cluster, l *load, i int, awaitDead bool) *cluster.Node {
	t.Helper()
	old := c.Node(i)
	l.detach(old)
	crashed := time.Now()
	c.Crash(i)
	t.Logf("crashed %s (Close took %v)", old.ID, time.Since(crashed).Round(time.Millisecond))
	if awaitDead {
		cluster.WaitFor(t, 20*time.Second, old.ID+" seen dead", func() bool {
			for _, n := range c.Live() {
				for _, m := range n.KV.Status().Members {
					if m.ID == old.ID && m.State == "alive" {
						return false
					}
				}
			}
			return true
		})
	}
	n := c.Restart(t, i)
	l.attach(n)
	t.Logf("restarted %s as %s %v after the crash", n.ID, gridkv.LocalServerID(n.KV), time.Since(crashed).Round(time.Millisecond))
	return n
}

// 3. A random node crashes every few seconds and comes back empty, so the cluster keeps three
// nodes; DeadGrace is short, so the dead identity is replaced.
func TestFaultRandomCrashes(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	l := startLoad(t, c)
	wl := startWatchLoad(t, c)
	start := time.Now()
	for round := 0; round < 2; round++ {
		time.Sleep(1500 * time.Millisecond)
		i := rng.IntN(3)
		crashAndRestart(t, c, l, i, round%2 == 0)
		cluster.WaitFor(t, 60*time.Second, "every partition's voters are live identities", c.IdentitiesLive)
		t.Logf("round %d: converged %v into the run", round, time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(time.Second)
	l.finish()
	wl.check(t)
}

// 4. A node restarts at once with empty state, before the others notice it died: it comes
// back under a new identity, is added and refilled, and its old identity is removed.
func TestFaultRestartEmpty(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	l := startLoad(t, c)
	time.Sleep(2 * time.Second)
	oldID := gridkv.LocalServerID(c.Node(1).KV)
	n := crashAndRestart(t, c, l, 1, false)
	newID := gridkv.LocalServerID(n.KV)
	if newID == oldID {
		t.Fatalf("restarted node kept its server ID %s", oldID)
	}
	restarted := time.Now()
	cluster.WaitFor(t, 60*time.Second, "every partition's voters are live identities", c.IdentitiesLive)
	t.Logf("%s replaced by %s in every partition %v after the restart", oldID, newID, time.Since(restarted).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	l.finish()
	// The new identity holds a replica of every partition (three nodes, three replicas), as
	// the digests of replicas that stopped applying show.
	cluster.WaitFor(t, 60*time.Second, "every replica of every partition agrees", c.ReplicasAgree)
	hosted := 0
	for _, d := range gridkv.ReplicaDigests(n.KV) {
		if d.ServerID == newID {
			hosted++
		}
	}
	if hosted != partitions {
		t.Errorf("%s hosts %d partitions after the restart, want %d", newID, hosted, partitions)
	}
}

// 5. A node joins and another leaves gracefully, both under load.
func TestFaultJoinAndRemove(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	l := startLoad(t, c)
	time.Sleep(1500 * time.Millisecond)
	joined := time.Now()
	n := c.Add(t)
	l.attach(n)
	cluster.WaitFor(t, 60*time.Second, "the live nodes formed", c.Formed)
	cluster.WaitFor(t, 60*time.Second, "every partition's voters are live identities", c.IdentitiesLive)
	t.Logf("%s joined and placement settled in %v", n.ID, time.Since(joined).Round(time.Millisecond))
	time.Sleep(time.Second)
	leaving := c.Node(1)
	l.detach(leaving)
	removed := time.Now()
	c.Stop(1)
	t.Logf("%s closed in %v", leaving.ID, time.Since(removed).Round(time.Millisecond))
	cluster.WaitFor(t, 60*time.Second, "the live nodes formed", c.Formed)
	cluster.WaitFor(t, 60*time.Second, "every partition's voters are live identities", c.IdentitiesLive)
	t.Logf("%s removed and placement settled in %v", leaving.ID, time.Since(removed).Round(time.Millisecond))
	time.Sleep(time.Second)
	l.finish()
}

// 6. Leadership of random partitions moves every ~300 ms.
func TestFaultLeadershipTransfers(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 6))
	l := startLoad(t, c)
	end := time.Now().Add(7 * time.Second)
	moved, tried := 0, 0
	for time.Now().Before(end) {
		time.Sleep(200*time.Millisecond + time.Duration(rng.IntN(200))*time.Millisecond)
		p := rng.IntN(partitions)
		for _, n := range c.Live() {
			if err := gridkv.TransferLeadership(n.KV, p); !errors.Is(err, gridkv.ErrNotHostedLeader) {
				tried++
				if err == nil {
					moved++
				}
				break
			}
		}
	}
	l.finish()
	t.Logf("leadership transfers: %d of %d succeeded", moved, tried)
	if moved < tried/2 || moved == 0 {
		t.Errorf("only %d of %d leadership transfers succeeded", moved, tried)
	}
}

// snapshotCounter counts raft's "Installed remote snapshot" lines of one node.
type snapshotCounter struct{ n *atomic.Int64 }

func (h snapshotCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h snapshotCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "Installed remote snapshot") {
		h.n.Add(1)
	}
	return nil
}
func (h snapshotCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h snapshotCounter) WithGroup(string) slog.Handler      { return h }

// 7. A follower is cut off while the others write far past the log they keep, so it can only
// catch up from a snapshot; after healing its replicas must match.
func TestFaultFollowerNeedsSnapshot(t *testing.T) {
	const victim = 2
	installs := new(atomic.Int64)
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced,
		Mutate: func(i int, o *gridkv.GridKVOptions) {
			o.Timings.Raft.SnapshotThreshold = 64
			o.Timings.Raft.TrailingLogs = 16
			o.Timings.Raft.SnapshotInterval = 200 * time.Millisecond
			if i == victim {
				o.Logger = slog.New(snapshotCounter{installs})
			}
		}})
	l := startLoad(t, c)
	wl := startWatchLoad(t, c)
	time.Sleep(time.Second)
	c.Isolate(victim)
	t.Logf("isolated %s", c.Node(victim).ID)
	cluster.WaitFor(t, 20*time.Second, "every partition led from the others", func() bool { return c.LedBy(c.LiveExcept(victim)) })

	// Sequential writers: about one log entry per write, on every partition.
	var bulk sync.WaitGroup
	var written atomic.Int64
	stopBulk := time.Now().Add(4 * time.Second)
	for w := 0; w < 8; w++ {
		node := c.Node(w % victim) // nodes 0 and 1
		bulk.Add(1)
		go func() {
			defer bulk.Done()
			for i := 0; time.Now().Before(stopBulk); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if node.KV.Set(ctx, fmt.Sprintf("bulk-%d-%d", w, i), []byte("x")) == nil {
					written.Add(1)
				}
				cancel()
			}
		}()
	}
	bulk.Wait()
	t.Logf("%d writes while %s was cut off", written.Load(), c.Node(victim).ID)
	if written.Load() < 40*partitions {
		t.Logf("few writes: some partitions may not have compacted past the follower")
	}
	c.Heal()
	time.Sleep(2 * time.Second)
	l.finish()
	wl.check(t)
	cluster.WaitFor(t, 60*time.Second, c.Node(victim).ID+" caught up: every replica agrees", c.ReplicasAgree)
	t.Logf("%s installed %d snapshots", c.Node(victim).ID, installs.Load())
	if installs.Load() == 0 {
		t.Errorf("%s caught up without installing a snapshot: the scenario did not test what it means to", c.Node(victim).ID)
	}
}

// 8. Slow links everywhere: delay and jitter on the multiplexed connections (dropping a mux
// write would close the connection, too brutal for a lossy-link test), real loss on gossip
// packets and delay on gossip streams.
func TestFaultLossyLinks(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	l := startLoad(t, c)
	time.Sleep(time.Second)
	c.Net.SetDefault(faultnet.Link{Delay: 2 * time.Millisecond, Jitter: 15 * time.Millisecond, Classes: []transport.Class{transport.ClassMux}})
	c.Net.SetDefault(faultnet.Link{Drop: 0.1, Classes: []transport.Class{transport.ClassPacket}})
	c.Net.SetDefault(faultnet.Link{Delay: 10 * time.Millisecond, Jitter: 10 * time.Millisecond, Classes: []transport.Class{transport.ClassGossip}})
	time.Sleep(6 * time.Second)
	l.finish()
	mux, pkt := c.Net.Stats(transport.ClassMux), c.Net.Stats(transport.ClassPacket)
	t.Logf("mux: %+v; packets: %+v", mux, pkt)
	if mux.Delayed == 0 || pkt.Refused == 0 {
		t.Errorf("the faults touched no traffic: mux %+v, packets %+v", mux, pkt)
	}
}

// 9. Gossip cut while Raft flows between two nodes, then the reverse: Raft and forwarded
// requests cut while gossip flows.
func TestFaultSplitPlanes(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	a, b := c.Node(0).Addr, c.Node(1).Addr
	l := startLoad(t, c)
	time.Sleep(time.Second)
	c.Net.Cut(a, b, transport.ClassPacket, transport.ClassGossip)
	t.Logf("gossip cut between %s and %s, Raft up", c.Node(0).ID, c.Node(1).ID)
	time.Sleep(3 * time.Second)
	c.Heal()
	time.Sleep(time.Second)
	c.Net.Cut(a, b, transport.ClassMux)
	t.Logf("Raft and forwarding cut between %s and %s, gossip up", c.Node(0).ID, c.Node(1).ID)
	time.Sleep(3 * time.Second)
	c.Heal()
	time.Sleep(time.Second)
	l.finish()
	if s := c.Net.Stats(transport.ClassMux); s.Refused == 0 {
		t.Errorf("the mux cut refused nothing: %+v", s)
	}
}

// 10. Five nodes start while the network is split {0,1,2} | {3,4}; nodes 3 and 4 have seeds in
// both halves. After healing, exactly one cluster must form: every node sees five alive
// members and the same leader for every partition.
func TestFaultSplitDiscovery(t *testing.T) {
	c := cluster.Start(t, 0, cluster.Options{Timings: cluster.FaultTimings})
	addrs := make([]string, 5)
	for i := range addrs {
		var err error
		if addrs[i], err = cluster.FreeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	c.Net.Partition(addrs[:3], addrs[3:])
	for i := 0; i < 3; i++ {
		if _, err := c.AddAt(t, fmt.Sprintf("node-%d", i), addrs[i], addrs[:i]); err != nil {
			t.Fatalf("starting node-%d: %v", i, err)
		}
	}
	c.WaitReady(t, 60*time.Second)
	l := startLoad(t, c)
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := 3; i < 5; i++ {
		seeds := slices.Concat(addrs[:i], addrs[i+1:])
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.AddAt(t, fmt.Sprintf("node-%d", i), addrs[i], seeds)
		}()
	}
	time.Sleep(3 * time.Second) // discovery runs while the halves cannot see each other
	c.Heal()
	healed := time.Now()
	wg.Wait()
	for i := 3; i < 5; i++ {
		if errs[i] != nil {
			t.Errorf("node-%d failed to start: %v", i, errs[i])
		}
	}
	for _, n := range c.Live()[3:] {
		l.attach(n)
	}
	live := len(c.Live())
	cluster.WaitFor(t, 60*time.Second, "one cluster of every node with the same leaders", func() bool {
		if !c.Formed() {
			return false
		}
		var want []string
		for _, n := range c.Live() {
			var got []string
			for _, p := range n.KV.Status().Partitions {
				got = append(got, p.Leader)
			}
			if want == nil {
				want = got
			} else if !slices.Equal(got, want) {
				return false
			}
		}
		return true
	})
	t.Logf("one cluster of %d nodes %v after healing", live, time.Since(healed).Round(time.Millisecond))
	if live != 5 {
		t.Errorf("%d nodes running, want 5", live)
	}
	time.Sleep(2 * time.Second)
	l.finish()
}

// soakDuration is how long TestFaultSoak runs: -soak, else GRIDKV_SOAK, else 10 s.
func soakDuration(t *testing.T) time.Duration {
	if *soakFlag > 0 {
		return *soakFlag
	}
	if s := os.Getenv("GRIDKV_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("GRIDKV_SOAK=%q: %v", s, err)
		}
		return d
	}
	return 10 * time.Second
}

// usage samples the process: goroutines and live heap after a GC.
type usage struct {
	goroutines int
	heap       uint64
}

func sampleUsage() usage {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc}
}

// TestFaultSoak runs mixed load while a random fault strikes every few seconds, healing and
// letting the cluster converge between faults. It checks linearizability of the whole run,
// and that goroutines and heap stay bounded over time. CI runs it for 10 s; GRIDKV_SOAK=5m or
// -soak=5m runs it for minutes.
func TestFaultSoak(t *testing.T) {
	duration := soakDuration(t)
	c := cluster.Start(t, 3, cluster.Options{Timings: cluster.FaultTimings, Wait: cluster.WaitBalanced})
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 11))
	t.Logf("soak for %v, fault choice seed %d", duration, seed)
	base := sampleUsage()
	l := startLoad(t, c)
	wl := startWatchLoad(t, c)
	start := time.Now()
	var samples []usage
	for round := 0; time.Since(start) < duration; round++ {
		live := c.Live()
		i := c.Index(live[rng.IntN(len(live))].ID)
		j := c.LiveExcept(i)[rng.IntN(len(live)-1)]
		hold := time.Second + time.Duration(rng.IntN(2000))*time.Millisecond
		var what string
		switch rng.IntN(7) {
		case 0:
			what = "partition " + c.Node(i).ID + " from the rest"
			c.Partition([]int{i}, c.LiveExcept(i))
			time.Sleep(hold)
		case 1:
			what = "pause " + c.Node(i).ID
			c.Isolate(i)
			time.Sleep(hold)
		case 2:
			what = "crash and restart " + c.Node(i).ID
			crashAndRestart(t, c, l, i, rng.IntN(2) == 0)
		case 3:
			what = "leadership transfers"
			for end := time.Now().Add(hold); time.Now().Before(end); {
				p := rng.IntN(partitions)
				for _, n := range c.Live() {
					if !errors.Is(gridkv.TransferLeadership(n.KV, p), gridkv.ErrNotHostedLeader) {
						break
					}
				}
				time.Sleep(300 * time.Millisecond)
			}
		case 4:
			what = "slow mux, lossy gossip"
			c.Net.SetDefault(faultnet.Link{Delay: time.Millisecond, Jitter: 10 * time.Millisecond, Classes: []transport.Class{transport.ClassMux}})
			c.Net.SetDefault(faultnet.Link{Drop: 0.1, Classes: []transport.Class{transport.ClassPacket}})
			time.Sleep(hold)
		case 5:
			what = "gossip cut " + c.Node(i).ID + " <-> " + c.Node(j).ID
			c.Net.Cut(c.Node(i).Addr, c.Node(j).Addr, transport.ClassPacket, transport.ClassGossip)
			time.Sleep(hold)
		case 6:
			what = "mux cut " + c.Node(i).ID + " -> " + c.Node(j).ID
			c.Net.CutOneWay(c.Node(i).Addr, c.Node(j).Addr, transport.ClassMux)
			time.Sleep(hold)
		}
		c.Heal()
		cluster.WaitFor(t, 60*time.Second, "every partition's voters are live identities", c.IdentitiesLive)
		u := sampleUsage()
		samples = append(samples, u)
		t.Logf("round %d at %v: %s; %d goroutines, heap %d KiB, %d operations so far",
			round, time.Since(start).Round(time.Second), what, u.goroutines, u.heap>>10, len(l.h.Ops()))
	}
	l.finish()
	wl.check(t)
	end := sampleUsage()
	t.Logf("usage: before load %d goroutines, heap %d KiB; after %d goroutines, heap %d KiB",
		base.goroutines, base.heap>>10, end.goroutines, end.heap>>10)
	// The history grows with the run, so the heap bound is loose; goroutines must not grow.
	if end.goroutines > 2*base.goroutines+100 {
		t.Errorf("goroutines grew from %d to %d over the soak", base.goroutines, end.goroutines)
	}
	if len(samples) >= 4 {
		mid := samples[len(samples)/2]
		if end.goroutines > 2*mid.goroutines+100 {
			t.Errorf("goroutines grew from %d mid-run to %d at the end", mid.goroutines, end.goroutines)
		}
	}
	if end.heap > 8*base.heap+256<<20 {
		t.Errorf("heap grew from %d KiB to %d KiB over the soak", base.heap>>10, end.heap>>10)
	}
}
