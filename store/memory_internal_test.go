package store

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkHeapPerKey1M measures the heap a partition of 1M keys of 16
// bytes with 64-byte values takes per key, with its ordered index and
// without it (the index dropped and collected), and so what the index
// adds. One run is enough: go test -run XXX -bench HeapPerKey -benchtime 1x.
func BenchmarkHeapPerKey1M(b *testing.B) {
	b.Run("ascending", func(b *testing.B) { benchmarkHeapPerKey(b, func(i int) int { return i }) })
	// A B-tree filled in key order splits its nodes half full; in random
	// order they end about 70% full.
	b.Run("random", func(b *testing.B) {
		benchmarkHeapPerKey(b, func(i int) int { return int(uint32(i) * 2654435761 % (1 << 20)) })
	})
}

func benchmarkHeapPerKey(b *testing.B, order func(int) int) {
	const n, perBatch = 1 << 20, 1000
	for b.Loop() {
		value := make([]byte, 64)
		heap := func() float64 {
			var m runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m)
			return float64(m.HeapAlloc)
		}
		before := heap()
		p := NewPartition(StorageOptions{}, nil)
		cmds := make([]Command, 0, perBatch)
		for i := 0; i < n; {
			cmds = cmds[:0]
			for ; len(cmds) < perBatch && i < n; i++ {
				cmds = append(cmds, Command{Op: OpSet, Key: fmt.Sprintf("key-%012d", order(i)), Value: value})
			}
			p.ApplyBatch(uint64(i), cmds)
		}
		clear(cmds)
		with := heap()
		p.mu.Lock()
		p.ix = newIndexes(p.free)
		p.mu.Unlock()
		without := heap()
		b.ReportMetric((with-before)/n, "B/key")
		b.ReportMetric((without-before)/n, "B/key-without-index")
		b.ReportMetric((with-without)/n, "B/key-index")
		b.ReportMetric(float64(EntrySize(16, 64)), "B/key-accounted")
		runtime.KeepAlive(p)
	}
}
