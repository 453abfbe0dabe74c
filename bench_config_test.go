package gridkv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// BenchmarkList1M lists pages of 100 keys, each after a different key, from one node that
// holds a million: a page costs O(log n + page) per partition, not a scan.
//
//	go test -run X -bench List1M .
func BenchmarkList1M(b *testing.B) {
	const keys = 1_000_000
	kv := cluster.Start(b, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0).KV
	ctx := context.Background()
	value := make([]byte, 64)
	errs := make(chan error, 64)
	start := time.Now()
	for w := range 64 {
		go func() {
			for i := w; i < keys; i += 64 {
				if err := kv.Set(ctx, fmt.Sprintf("key-%07d", i), value); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("loaded %d keys in %v", keys, time.Since(start).Round(time.Millisecond))
	for i := 0; b.Loop(); i++ {
		page, err := kv.List(ctx, "", gridkv.WithStartAfter(fmt.Sprintf("key-%07d", (i*7919)%keys)), gridkv.WithLimit(100))
		if err != nil || len(page.Entries) == 0 {
			b.Fatalf("List: %d entries, %v", len(page.Entries), err)
		}
	}
}
