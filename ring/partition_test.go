package ring

import (
	"fmt"
	"testing"
)

func TestPartitionOfRangeAndUniformity(t *testing.T) {
	for _, partitions := range []int{1, 7, 16, 64, 256, 1024} {
		counts := make([]int, partitions)
		const keys = 200_000
		for i := range keys {
			p := PartitionOf(fmt.Sprintf("user:%d", i), partitions)
			if p < 0 || p >= partitions {
				t.Fatalf("PartitionOf(_, %d) = %d, out of range", partitions, p)
			}
			counts[p]++
		}
		// With ~200 keys or more per partition a uniform hash stays well
		// within 35% of the mean; a broken reduction (say, low bits only)
		// would leave partitions empty.
		mean := float64(keys) / float64(partitions)
		for p, c := range counts {
			if float64(c) < 0.65*mean || float64(c) > 1.35*mean {
				t.Errorf("partitions=%d: partition %d has %d keys, mean %.0f", partitions, p, c, mean)
			}
		}
	}
}

// TestPartitionOfIsStable pins the mapping: stored data is found through it,
// so a change here breaks every existing cluster.
func TestPartitionOfIsStable(t *testing.T) {
	golden := map[string]int{"": 59, "a": 52, "user:1": 54, "user:2": 12, "hello world": 17}
	for key, want := range golden {
		if got := PartitionOf(key, 64); got != want {
			t.Errorf("PartitionOf(%q, 64) = %d, want %d", key, got, want)
		}
	}
}

func TestPartitionOfPanicsOnNoPartitions(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("PartitionOf(_, 0) did not panic")
		}
	}()
	PartitionOf("k", 0)
}

func TestPartitionOfDoesNotAllocate(t *testing.T) {
	key := "some-moderately-long-key-0123456789"
	if n := testing.AllocsPerRun(1000, func() { PartitionOf(key, 64) }); n != 0 {
		t.Fatalf("PartitionOf allocates %.1f times per call", n)
	}
}

func BenchmarkPartitionOf(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%08d", i)
	}
	b.ReportAllocs()
	sink := 0
	for i := 0; b.Loop(); i++ {
		sink += PartitionOf(keys[i&1023], 256)
	}
	_ = sink
}
