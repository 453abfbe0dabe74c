package gridkv_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/raftgroup"
)

// A node whose Partitions or ReplicaCount differ from its cluster's is refused by NewGridKV,
// with both values named, and the cluster goes on serving; a node that leaves them zero
// takes the cluster's.
func TestJoinRefusesOtherClusterSettings(t *testing.T) {
	const partitions = 4
	joiner := func(o *gridkv.GridKVOptions) {}
	c := cluster.Start(t, 1, cluster.Options{Mutate: func(i int, o *gridkv.GridKVOptions) {
		o.Partitions = partitions
		if i > 0 {
			joiner(o)
		}
	}})
	c.WaitReady(t, 30*time.Second)
	first := c.Node(0)
	ctx := testContext(t, 60*time.Second)

	for _, tc := range []struct {
		name   string
		change func(o *gridkv.GridKVOptions)
		want   string
	}{
		{"Partitions", func(o *gridkv.GridKVOptions) { o.Partitions = 8 }, "Partitions is 8 here, the cluster's is 4"},
		{"ReplicaCount", func(o *gridkv.GridKVOptions) { o.Partitions = 0; o.ReplicaCount = 5 }, "ReplicaCount is 5 here, the cluster's is 3"},
	} {
		joiner = tc.change
		addr, err := cluster.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		node, err := c.AddAt(t, "odd-"+tc.name, addr, []string{first.Addr})
		if err == nil {
			t.Fatalf("%s: a node set otherwise joined (%s)", tc.name, node.ID)
		}
		if !errors.Is(err, gridkv.ErrClusterMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: NewGridKV: %v; want ErrClusterMismatch saying %q", tc.name, err, tc.want)
		}
		if err := first.KV.Set(ctx, "after-"+tc.name, []byte("v")); err != nil {
			t.Fatalf("%s: the cluster stopped serving after refusing a node: %v", tc.name, err)
		}
	}

	joiner = func(o *gridkv.GridKVOptions) { o.Partitions, o.ReplicaCount = 0, 0 }
	second := c.Add(t)
	c.WaitReady(t, 30*time.Second)
	if got := len(second.KV.Status().Partitions); got != partitions {
		t.Fatalf("a node with Partitions 0 has %d partitions; want the cluster's %d", got, partitions)
	}
	if err := second.KV.Set(ctx, "through-second", []byte("v")); err != nil {
		t.Fatalf("Set through the node that took the cluster's settings: %v", err)
	}
	if v, err := first.KV.Get(ctx, "through-second"); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
}

// Raft timing relations are checked on every node in NewGridKV, a joining one included, with
// the fields named; raft itself would only refuse them when a replica starts.
func TestJoiningNodeTimingsAreValidated(t *testing.T) {
	c := cluster.Start(t, 1, cluster.Options{})
	c.WaitReady(t, 30*time.Second)
	timings := gridkv.LocalTimings()
	timings.Raft = raftgroup.DefaultTuning()
	timings.Raft.HeartbeatTimeout = 500 * time.Millisecond // below the default lease
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "bad-timings",
		LocalAddress: addr,
		SeedAddrs:    []string{c.Node(0).Addr},
		Partitions:   cluster.DefaultPartitions,
		Timings:      &timings,
	})
	if err == nil {
		kv.Close()
		t.Fatal("a joining node with a lease above its heartbeat timeout started")
	}
	for _, want := range []string{"LeaderLeaseTimeout 1s", "HeartbeatTimeout 500ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NewGridKV: %v; want it to name %q", err, want)
		}
	}
}
