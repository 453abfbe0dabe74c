package gridkv_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// BenchmarkCluster3Set measures Set (W=2) on a 3-node in-process cluster, clients spread over
// the nodes. Run with -cpuprofile to see where a write's time goes.
func BenchmarkCluster3Set(b *testing.B) {
	c := cluster.Start(b, 3, nil)
	c.WaitReady(b, 60*time.Second)
	cluster.WaitFor(b, 60*time.Second, "full replication", func() bool {
		for _, p := range c.Node(0).KV.Status().Partitions {
			if p.Leader == "" || len(p.Replicas) != 3 {
				return false
			}
		}
		return true
	})
	nodes := c.Live()
	var next atomic.Int64
	value := make([]byte, 64)
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1)
		kv := nodes[int(i)%len(nodes)].KV
		ctx := context.Background()
		for pb.Next() {
			i := next.Add(1)
			if err := kv.Set(ctx, fmt.Sprintf("key-%d", i%100000), value); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSingleNodeStaleGet measures the stale read path of one node.
func BenchmarkSingleNodeStaleGet(b *testing.B) {
	c := cluster.Start(b, 1, nil)
	c.WaitReady(b, 30*time.Second)
	kv := c.Node(0).KV
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		if err := kv.Set(ctx, fmt.Sprintf("key-%d", i), make([]byte, 64)); err != nil {
			b.Fatal(err)
		}
	}
	stale := gridkv.WithConsistency(gridkv.Stale)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := kv.Get(ctx, "key-7", stale); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
