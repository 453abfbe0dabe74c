package gridkv_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// BenchmarkAllocsSetW2 counts the allocations of one Set (W=2, the default) on a 3-node
// cluster, counted over the whole process: client, forwarding, leader, both followers and
// the transport. local: the caller's node leads the key's partition; forwarded: another node
// does; parallel: 100 clients spread over the nodes, as BenchmarkCluster3Set runs them, so
// operations share batches. Keys are made before the timer starts, so the benchmark's own
// formatting is not counted. Run with -memprofile to see the sites.
func BenchmarkAllocsSetW2(b *testing.B) {
	value := make([]byte, 64)
	benchmarkAllocs(b, func(ctx context.Context, kv *gridkv.GridKV, key string) error {
		return kv.Set(ctx, key, value)
	})
}

// BenchmarkAllocsGetLinearizable counts the allocations of one linearizable Get (R=2, the
// default) on a 3-node cluster, as BenchmarkAllocsSetW2 does for Set.
func BenchmarkAllocsGetLinearizable(b *testing.B) {
	benchmarkAllocs(b, func(ctx context.Context, kv *gridkv.GridKV, key string) error {
		_, err := kv.Get(ctx, key)
		return err
	})
}

func benchmarkAllocs(b *testing.B, op func(context.Context, *gridkv.GridKV, string) error) {
	// Balanced: leadership transfers would otherwise move partitions mid-run.
	c := cluster.Start(b, 3, cluster.Options{Wait: cluster.WaitBalanced})
	nodes := c.Live()
	ctx := context.Background()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
		if err := nodes[0].KV.Set(ctx, keys[i], make([]byte, 64)); err != nil {
			b.Fatal(err)
		}
	}
	var led, notLed []string // by node 0
	for _, k := range keys {
		if gridkv.LeadsKey(nodes[0].KV, k) {
			led = append(led, k)
		} else {
			notLed = append(notLed, k)
		}
	}
	if len(led) == 0 || len(notLed) == 0 {
		b.Fatalf("node 0 leads the partitions of %d of %d keys: need some led and some not", len(led), len(keys))
	}
	serial := func(keys []string) func(*testing.B) {
		return func(b *testing.B) {
			kv := nodes[0].KV
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := op(ctx, kv, keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("local", serial(led))
	b.Run("forwarded", serial(notLed))
	b.Run("parallel", func(b *testing.B) {
		var next atomic.Int64
		b.SetParallelism((100 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			kv := nodes[int(next.Add(1))%len(nodes)].KV
			for pb.Next() {
				if err := op(ctx, kv, keys[int(next.Add(1))%len(keys)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
