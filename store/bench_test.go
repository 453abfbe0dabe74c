package store_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/feellmoose/gridkv/store"
)

const benchKeys = 1 << 16

func benchKeyNames() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench-key-%08d", i)
	}
	return keys
}

func benchValue() []byte { return make([]byte, 100) }

// BenchmarkGet is the stale read path: one allocation, the copy.
func BenchmarkGet(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			keys := benchKeyNames()
			p := store.NewPartition(be.opts, nil)
			for i, k := range keys {
				p.ApplyBatch(uint64(i+1), []store.Command{{Op: store.OpSet, Key: k, Value: benchValue()}})
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, _, ok := p.Get(keys[i&(benchKeys-1)]); !ok {
					b.Fatal("missing key")
				}
				i++
			}
		})
	}
}

// BenchmarkGetParallel is BenchmarkGet from every core at once.
func BenchmarkGetParallel(b *testing.B) {
	keys := benchKeyNames()
	p := store.NewPartition(store.StorageOptions{}, nil)
	for i, k := range keys {
		p.ApplyBatch(uint64(i+1), []store.Command{{Op: store.OpSet, Key: k, Value: benchValue()}})
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			p.Get(keys[i&(benchKeys-1)])
			i += 7
		}
	})
}

// BenchmarkSet is one command per log entry through ApplyBatch.
func BenchmarkSet(b *testing.B) {
	keys := benchKeyNames()
	value := benchValue()
	p := store.NewPartition(store.StorageOptions{}, nil)
	cmd := make([]store.Command, 1)
	b.ReportAllocs()
	index := uint64(0)
	for b.Loop() {
		index++
		cmd[0] = store.Command{Op: store.OpSet, Key: keys[index&(benchKeys-1)], Value: value}
		p.ApplyBatch(index, cmd)
	}
}

// BenchmarkApplyBatch64 is 64 commands per log entry; ns/op is per batch.
func BenchmarkApplyBatch64(b *testing.B) {
	keys := benchKeyNames()
	value := benchValue()
	p := store.NewPartition(store.StorageOptions{}, nil)
	cmds := make([]store.Command, 64)
	b.ReportAllocs()
	index := uint64(0)
	for b.Loop() {
		index++
		for i := range cmds {
			cmds[i] = store.Command{Op: store.OpSet, Key: keys[(int(index)*64+i)&(benchKeys-1)], Value: value}
		}
		p.ApplyBatch(index, cmds)
	}
}

// BenchmarkApplyEntry64 is BenchmarkApplyBatch64 from encoded log entries,
// as the Raft apply loop calls it; ns/op is per entry.
func BenchmarkApplyEntry64(b *testing.B) {
	keys := benchKeyNames()
	value := benchValue()
	p := store.NewPartition(store.StorageOptions{}, nil)
	entries := make([][]byte, benchKeys/64)
	cmds := make([]store.Command, 64)
	for e := range entries {
		for i := range cmds {
			cmds[i] = store.Command{Op: store.OpSet, Key: keys[e*64+i], Value: value}
		}
		entries[e] = store.AppendBatch(nil, cmds)
	}
	b.ReportAllocs()
	index := uint64(0)
	for b.Loop() {
		index++
		if _, err := p.ApplyEntry(index, entries[int(index)%len(entries)]); err != nil {
			b.Fatal(err)
		}
	}
}

func benchBatch() []store.Command {
	keys := benchKeyNames()
	cmds := make([]store.Command, 64)
	for i := range cmds {
		cmds[i] = store.Command{Op: store.OpSet, Key: keys[i], Value: benchValue()}
	}
	return cmds
}

// BenchmarkEncodeBatch encodes 64 commands into a reused buffer.
func BenchmarkEncodeBatch(b *testing.B) {
	cmds := benchBatch()
	buf := store.AppendBatch(nil, cmds)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = store.AppendBatch(buf[:0], cmds)
	}
}

// BenchmarkDecodeBatch decodes 64 commands.
func BenchmarkDecodeBatch(b *testing.B) {
	data := store.AppendBatch(nil, benchBatch())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := store.DecodeBatch(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshot is taking and writing a snapshot of 64K keys.
func BenchmarkSnapshot(b *testing.B) {
	keys := benchKeyNames()
	p := store.NewPartition(store.StorageOptions{}, nil)
	for i, k := range keys {
		p.ApplyBatch(uint64(i+1), []store.Command{{Op: store.OpSet, Key: k, Value: benchValue()}})
	}
	b.ReportAllocs()
	for b.Loop() {
		s := p.Snapshot()
		if _, err := s.WriteTo(discard{}); err != nil {
			b.Fatal(err)
		}
		s.Release()
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// millionKeys returns a partition of 1M keys of 16 bytes ("key-%012d")
// with 64-byte values, applied 1000 commands per batch.
func millionKeys(b *testing.B) *store.Partition {
	b.Helper()
	const n, perBatch = 1 << 20, 1000
	value := make([]byte, 64)
	p := store.NewPartition(store.StorageOptions{}, nil)
	cmds := make([]store.Command, 0, perBatch)
	for i := 0; i < n; {
		cmds = cmds[:0]
		for ; len(cmds) < perBatch && i < n; i++ {
			cmds = append(cmds, store.Command{Op: store.OpSet, Key: fmt.Sprintf("key-%012d", i), Value: value})
		}
		p.ApplyBatch(uint64(i), cmds)
	}
	return p
}

// BenchmarkList1M lists a page of 100 keys from a random point of a
// partition of 1M keys: O(log n + page), values copied.
func BenchmarkList1M(b *testing.B) {
	p := millionKeys(b)
	rng := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := fmt.Sprintf("key-%012d", rng.IntN(p.Len()-100))
		entries, more, _ := p.List("key-", start, 100, 0)
		if len(entries) != 100 || !more {
			b.Fatalf("page of %d, more %v", len(entries), more)
		}
	}
}

// BenchmarkEvents is a watcher reading the 100 changes after a random
// point of a full history (10000 changes).
func BenchmarkEvents(b *testing.B) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	keys := benchKeyNames()
	for i := range 20000 {
		p.ApplyBatch(uint64(i+1), []store.Command{{Op: store.OpSet, Key: keys[i&(benchKeys-1)], Value: benchValue()}})
	}
	rng := rand.New(rand.NewPCG(1, 1))
	start := p.HistoryStart()
	b.ReportAllocs()
	for b.Loop() {
		after := store.Version(start>>16+1+uint64(rng.IntN(9000)), 0)
		if events, _, err := p.Events(after, "", 100); err != nil || len(events) != 100 {
			b.Fatalf("%d events, %v", len(events), err)
		}
	}
}
