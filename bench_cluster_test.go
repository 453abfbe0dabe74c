package gridkv_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// BenchmarkCluster3Set measures Set (W=2) on a 3-node in-process cluster with 100 clients
// spread over the nodes, at the default partition count and at the earlier default of 16. It
// reports the commands per Raft log entry (cmds/entry): a group's entry carries only the
// commands waiting on it, so fewer partitions batch better. Run with -cpuprofile to see where
// a write's time goes. metrics=on gives every node a Prometheus registry: the difference is
// the instrumentation's cost.
func BenchmarkCluster3Set(b *testing.B) {
	for _, partitions := range []int{gridkv.DefaultPartitions, 16} {
		for _, metrics := range []bool{false, true} {
			b.Run(fmt.Sprintf("partitions=%d/metrics=%s", partitions, onOff(metrics)), func(b *testing.B) {
				benchmarkCluster3Set(b, partitions, metrics)
			})
		}
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// withMetrics is a cluster.Options Mutate that gives every node one shared registry, or nil.
func withMetrics(on bool) func(int, *gridkv.GridKVOptions) {
	if !on {
		return nil
	}
	reg := prometheus.NewRegistry()
	return func(_ int, o *gridkv.GridKVOptions) { o.Metrics = reg }
}

func benchmarkCluster3Set(b *testing.B, partitions int, metrics bool) {
	c := cluster.Start(b, 3, cluster.Options{Partitions: partitions, Wait: cluster.WaitFormed, Mutate: withMetrics(metrics)})
	nodes := c.Live()
	batching := func() (entries, commands uint64) {
		for _, n := range nodes {
			e, c := gridkv.Batching(n.KV)
			entries += e
			commands += c
		}
		return entries, commands
	}
	var next atomic.Int64
	value := make([]byte, 64)
	b.SetParallelism((100 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	entries0, commands0 := batching()
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
	b.StopTimer()
	if entries, commands := batching(); entries > entries0 {
		b.ReportMetric(float64(commands-commands0)/float64(entries-entries0), "cmds/entry")
	}
}

// BenchmarkSingleNodeStaleGet measures the stale read path of one node, the cheapest
// operation, without and with metrics.
func BenchmarkSingleNodeStaleGet(b *testing.B) {
	for _, metrics := range []bool{false, true} {
		b.Run("metrics="+onOff(metrics), func(b *testing.B) { benchmarkSingleNodeStaleGet(b, metrics) })
	}
}

func benchmarkSingleNodeStaleGet(b *testing.B, metrics bool) {
	kv := cluster.Start(b, 1, cluster.Options{Mutate: withMetrics(metrics)}).Node(0).KV
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
