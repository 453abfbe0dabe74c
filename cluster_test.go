package gridkv_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/raftgroup"
)

// partitions is the partition count of every cluster these tests start with the harness's
// default.
const partitions = cluster.DefaultPartitions

func TestClusterFormation(t *testing.T) {
	start := time.Now()
	c := cluster.Start(t, 3, cluster.Options{Wait: cluster.WaitFormed})
	t.Logf("started and formed in %v", time.Since(start).Round(time.Millisecond))

	// Every node names the same three nodes as replicas, and the leader is one of them.
	ids := []string{c.Node(0).ID, c.Node(1).ID, c.Node(2).ID}
	for _, n := range c.Live() {
		for _, p := range n.KV.Status().Partitions {
			got := slices.Sorted(slices.Values(p.Replicas))
			if !slices.Equal(got, ids) {
				t.Errorf("%s: partition %d has replicas %v, want %v", n.ID, p.ID, p.Replicas, ids)
			}
			if !slices.Contains(ids, p.Leader) {
				t.Errorf("%s: partition %d has leader %q, not a member", n.ID, p.ID, p.Leader)
			}
		}
	}
}

func TestReplicationAcrossNodes(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Wait: cluster.WaitFormed})
	ctx := testContext(t, 60*time.Second)
	nodes := c.Live()

	const perNode = 20
	const staleBound = 5 * time.Second
	for i, w := range nodes {
		keys := make([]string, perNode)
		for j := range keys {
			keys[j] = fmt.Sprintf("rep-%d-%d", i, j)
			if err := w.KV.Set(ctx, keys[j], []byte("from-"+w.ID+"-"+keys[j])); err != nil {
				t.Fatalf("Set %s through %s: %v", keys[j], w.ID, err)
			}
		}
		// Stale reads on every node see the writes soon after the last acknowledgement: an
		// idle follower learns of a commit within CommitTimeout (200 ms). The bound is loose
		// because CI's two cores run three race-enabled nodes, and a starved node can lose
		// its leaders for a moment.
		visible := time.Now().Add(staleBound)
		for _, r := range nodes {
			pending := slices.Clone(keys)
			cluster.WaitFor(t, time.Until(visible), fmt.Sprintf("stale reads on %s to see the %d writes made through %s within %v of their acknowledgement", r.ID, perNode, w.ID, staleBound), func() bool {
				pending = slices.DeleteFunc(pending, func(k string) bool {
					v, err := r.KV.Get(ctx, k, gridkv.WithConsistency(gridkv.Stale))
					return err == nil && string(v) == "from-"+w.ID+"-"+k
				})
				return len(pending) == 0
			})
		}
	}
	// Linearizable reads through every other node return every write at once.
	var before raftgroup.ReadStats
	for _, n := range nodes {
		s := gridkv.ReadStats(n.KV)
		before.Confirmed += s.Confirmed
		before.Vouched += s.Vouched
	}
	for i, w := range nodes {
		for _, r := range nodes {
			if r == w {
				continue
			}
			for j := 0; j < perNode; j++ {
				k := fmt.Sprintf("rep-%d-%d", i, j)
				v, err := r.KV.Get(ctx, k)
				if err != nil || string(v) != "from-"+w.ID+"-"+k {
					t.Fatalf("linearizable Get %s through %s = %q, %v; want the value written through %s", k, r.ID, v, err, w.ID)
				}
				e, err := r.KV.GetEntry(ctx, k)
				if err != nil || string(e.Value) != "from-"+w.ID+"-"+k || e.Version == 0 {
					t.Fatalf("linearizable GetEntry %s through %s = %+v, %v", k, r.ID, e, err)
				}
			}
		}
	}
	// Every node hosts every partition: a read forwarded to the leader carries the
	// forwarder's vouch, and one served where it arrived asks its own term checks.
	var after raftgroup.ReadStats
	for _, n := range nodes {
		s := gridkv.ReadStats(n.KV)
		after.Confirmed += s.Confirmed
		after.Vouched += s.Vouched
	}
	if after.Vouched == before.Vouched || after.Confirmed == before.Confirmed {
		t.Fatalf("linearizable reads: %d vouched, %d confirmed by term checks; want both", after.Vouched-before.Vouched, after.Confirmed-before.Confirmed)
	}
}

func TestLeaderBalance(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Wait: cluster.WaitFormed})
	limit := (partitions+2)/3 + 2
	start := time.Now()
	cluster.WaitFor(t, 60*time.Second, fmt.Sprintf("no node leads more than %d of %d partitions", limit, partitions), func() bool {
		if _, ok := c.Leaders(); !ok {
			return false
		}
		for _, n := range c.LeaderCounts() {
			if n > limit {
				return false
			}
		}
		return true
	})
	t.Logf("leaders balanced after %v: %v", time.Since(start).Round(time.Millisecond), c.LeaderCounts())
}

func TestFourthNodeJoins(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Wait: cluster.WaitFormed})
	ctx := testContext(t, 120*time.Second)

	written := make(map[string]string)
	for i := 0; i < 64; i++ {
		k, v := fmt.Sprintf("early-%d", i), fmt.Sprintf("value-%d", i)
		if err := c.Node(i%3).KV.Set(ctx, k, []byte(v)); err != nil {
			t.Fatalf("Set %s: %v", k, err)
		}
		written[k] = v
	}

	fourth := c.Add(t)
	start := time.Now()
	var perNode map[string]int
	cluster.WaitFor(t, 60*time.Second, "replicas spread within 1.5x over 4 nodes", func() bool {
		if !c.Formed() {
			return false
		}
		parts, ok := c.Leaders()
		if !ok {
			return false
		}
		perNode = make(map[string]int)
		for _, n := range c.Live() {
			perNode[n.ID] = 0
		}
		for _, p := range parts {
			if len(p.Replicas) != 3 {
				return false
			}
			for _, id := range p.Replicas {
				perNode[id]++
			}
		}
		lo, hi := partitions*3, 0
		for _, n := range perNode {
			lo, hi = min(lo, n), max(hi, n)
		}
		return len(perNode) == 4 && lo > 0 && float64(hi) <= 1.5*float64(lo)
	})
	t.Logf("placement settled %v after the join: replicas per node %v", time.Since(start).Round(time.Millisecond), perNode)
	// Replicas moved away are dropped once the group has removed them for good: every node
	// ends up hosting exactly the partitions whose configurations list it.
	cluster.WaitFor(t, 60*time.Second, "nodes to host only the replicas the groups count", func() bool {
		parts, ok := c.Leaders()
		if !ok {
			return false
		}
		for _, n := range c.Live() {
			var want, got []int
			for _, p := range parts {
				if slices.Contains(p.Replicas, n.ID) {
					want = append(want, p.ID)
				}
			}
			for _, d := range gridkv.ReplicaDigests(n.KV) {
				got = append(got, d.Partition)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return false
			}
		}
		return true
	})

	for k, v := range written {
		got, err := fourth.KV.Get(ctx, k)
		if err != nil || string(got) != v {
			t.Fatalf("linearizable Get %s through the new node = %q, %v; want %q", k, got, err, v)
		}
	}
	// The new node also serves writes and its own replicas hold what it was given.
	for p := 0; p < partitions; p++ {
		k := c.KeyIn("late", p)
		if err := fourth.KV.Set(ctx, k, []byte("late")); err != nil {
			t.Fatalf("Set %s through the new node: %v", k, err)
		}
		if got, err := c.Node(p%3).KV.Get(ctx, k); err != nil || string(got) != "late" {
			t.Fatalf("Get %s through %s = %q, %v", k, c.Node(p%3).ID, got, err)
		}
	}
}

func TestFailover(t *testing.T) {
	c := cluster.Start(t, 3, cluster.Options{Wait: cluster.WaitBalanced})
	ctx := testContext(t, 180*time.Second)

	acked := make(map[string]string) // every acknowledged write
	var ackedMu sync.Mutex
	keys := make([]string, partitions)
	for p := range keys {
		keys[p] = c.KeyIn("fo", p)
		v := "before-" + keys[p]
		if err := c.Node(p%3).KV.Set(ctx, keys[p], []byte(v)); err != nil {
			t.Fatalf("Set %s: %v", keys[p], err)
		}
		acked[keys[p]] = v
	}

	counts := c.LeaderCounts()
	vi := c.MostLeader()
	victim := c.Node(vi).ID
	t.Logf("closing %s, which leads %d partitions (leaders per node %v)", victim, counts[victim], counts)
	closed := time.Now()
	c.Stop(vi)
	t.Logf("Close returned after %v", time.Since(closed).Round(time.Millisecond))
	survivors := c.Live()

	// Within 10 s of the close, a write to every partition succeeds again.
	deadline := closed.Add(10 * time.Second)
	var wg sync.WaitGroup
	failed := make(chan string, partitions)
	for p, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := survivors[p%len(survivors)]
			for attempt := 0; ; attempt++ {
				v := fmt.Sprintf("after-%s-%d", k, attempt)
				attemptEnd := time.Now().Add(2 * time.Second)
				if attemptEnd.After(deadline) {
					attemptEnd = deadline
				}
				actx, cancel := context.WithDeadline(ctx, attemptEnd)
				err := node.KV.Set(actx, k, []byte(v))
				cancel()
				if err == nil {
					ackedMu.Lock()
					acked[k] = v
					ackedMu.Unlock()
					return
				}
				if time.Now().After(deadline) {
					failed <- fmt.Sprintf("partition %d (key %s through %s): %v", p, k, node.ID, err)
					return
				}
				if !errors.Is(err, gridkv.ErrUnavailable) {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(failed)
	stuck := 0
	for f := range failed {
		t.Errorf("no write succeeded within 10s of closing %s: %s", victim, f)
		stuck++
	}
	if stuck > 0 {
		t.Fatalf("cluster after the failover:\n%s", c.Describe())
	}
	t.Logf("every partition writable %v after the close", time.Since(closed).Round(time.Millisecond))

	// Every acknowledged write, before and after the failure, is readable through each survivor.
	for _, n := range survivors {
		for k, v := range acked {
			got, err := n.KV.Get(ctx, k)
			if err != nil || string(got) != v {
				t.Fatalf("Get %s through %s = %q, %v; want the acknowledged %q", k, n.ID, got, err, v)
			}
		}
	}

	// The closed node leaves every group's configuration.
	cluster.WaitFor(t, 90*time.Second, victim+" removed from every partition's replicas", func() bool {
		for _, n := range survivors {
			for _, p := range n.KV.Status().Partitions {
				if p.Leader == "" || p.Leader == victim || slices.Contains(p.Replicas, victim) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("%s gone from every configuration %v after the close", victim, time.Since(closed).Round(time.Millisecond))
}
