package gridkv_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/store"
)

var recoverKeys = flag.Int("recover.keys", 1_000_000, "keys BenchmarkRecover1M loads into its node before restarting it")

const (
	recoverValueSize = 64
	recoverWriters   = 64
	recoverSample    = 1000 // keys read back, spread over the key space, before recovery counts as done
)

// BenchmarkRecover1M measures how long a durable node holding a million keys takes to come
// back from its own disk: one node (N=1, the default 8 partitions, default timings,
// SyncAlways) is loaded with 64-byte values by 64 writers and closed; each iteration then
// starts it again on the same DataDir and is done once WaitReady returned, every partition
// has applied everything it had applied before the Close, and a sample of keys reads back
// with its values. Afterwards the replicas are compared with their state before the Close,
// key count and content. It reports the DataDir's allocated bytes (du) per key, and logs the
// load rate and each phase of a recovery. A benchmark, so `go test ./...` never runs it:
//
//	go test -run X -bench Recover1M -benchtime 1x .
//	go test -run X -bench Recover1M -benchtime 1x . -recover.keys 100000
func BenchmarkRecover1M(b *testing.B) {
	n := *recoverKeys
	dir := b.TempDir()
	addr, err := cluster.FreeAddr()
	if err != nil {
		b.Fatal(err)
	}
	node := recoverNode{dir: dir, addr: addr}
	kv, _ := node.start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	loadKeys(b, kv, n)
	load := time.Since(start)
	before := digestsByPartition(gridkv.ReplicaDigests(kv))
	applied := make(map[int]uint64, len(before))
	keys := 0
	for p, d := range before {
		applied[p] = d.Applied
		keys += d.Keys
	}
	if keys != n {
		b.Fatalf("the node holds %d keys after loading %d", keys, n)
	}
	if err := kv.Close(); err != nil {
		b.Fatal(err)
	}
	disk := dirBytes(b, dir)

	// The load runs once: a benchmark with sub-benchmarks runs its own body once, while a
	// sub-benchmark's body runs again for each b.N it tries.
	b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
		b.Logf("loaded %d keys of %d bytes with %d writers in %v (%.0f writes/s, SyncAlways); DataDir %v",
			n, recoverValueSize, recoverWriters, load.Round(time.Millisecond), float64(n)/load.Seconds(), disk)
		b.ReportMetric(float64(disk.allocated)/float64(n), "disk-B/key")
		for range b.N {
			kv := node.recover(b, applied, n)
			b.StopTimer()
			if after := digestsByPartition(gridkv.ReplicaDigests(kv)); !sameContent(after, before) {
				b.Fatalf("replicas after the restart %v, before %v", after, before)
			}
			if err := kv.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

// recoverNode is the benchmark's one durable node: every start uses the same ID, address and
// DataDir, as a restart must.
type recoverNode struct {
	dir, addr string
}

// start starts the node, with a registry of its own, without waiting for it.
func (r recoverNode) start(b *testing.B) (*gridkv.GridKV, *prometheus.Registry) {
	b.Helper()
	timings := gridkv.DefaultTimings()
	reg := prometheus.NewRegistry()
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "recover",
		LocalAddress: r.addr,
		ReplicaCount: 1,
		Timings:      &timings,
		Storage:      &store.StorageOptions{DataDir: r.dir, Sync: store.SyncAlways},
		Metrics:      reg,
	})
	if err != nil {
		b.Fatal(err)
	}
	return kv, reg
}

// recover starts the node again and returns once it has recovered: WaitReady returned, every
// partition applied at least applied[p] (what it had applied before it closed), and a sample
// of the n keys reads back with its values.
func (r recoverNode) recover(b *testing.B, applied map[int]uint64, n int) *gridkv.GridKV {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	kv, reg := r.start(b)
	started := time.Since(t0)
	if err := kv.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	ready := time.Since(t0)
	for !caughtUp(b, reg, applied) {
		select {
		case <-ctx.Done():
			b.Fatalf("partitions still behind their applied index before the restart: %v, want %v",
				samples(b, reg, "gridkv_partition_applied_index", nil), applied)
		case <-time.After(time.Millisecond):
		}
	}
	caught := time.Since(t0)
	for i := range recoverSample {
		k := i * (n / recoverSample)
		got, err := kv.Get(ctx, recoverKey(k))
		if err != nil || string(got) != string(recoverValue(k)) {
			b.Fatalf("Get(%s) after the restart = %q, %v; want %q", recoverKey(k), got, err, recoverValue(k))
		}
	}
	b.Logf("recovered: NewGridKV %v, WaitReady at %v, everything applied at %v, %d keys read back at %v",
		started.Round(time.Millisecond), ready.Round(time.Millisecond), caught.Round(time.Millisecond),
		recoverSample, time.Since(t0).Round(time.Millisecond))
	return kv
}

// caughtUp reports whether every partition in applied has applied at least as far again.
func caughtUp(b *testing.B, reg prometheus.Gatherer, applied map[int]uint64) bool {
	now := samples(b, reg, "gridkv_partition_applied_index", map[string]string{"node": "recover"})
	for p, want := range applied {
		if uint64(now["partition="+strconv.Itoa(p)]) < want {
			return false
		}
	}
	return true
}

func recoverKey(i int) string { return fmt.Sprintf("key-%07d", i) }

// recoverValue is key i's value, recoverValueSize bytes that name the key.
func recoverValue(i int) []byte { return fmt.Appendf(nil, "%0*d", recoverValueSize, i) }

// loadKeys writes keys 0..n-1 through kv with recoverWriters concurrent writers.
func loadKeys(b *testing.B, kv *gridkv.GridKV, n int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, recoverWriters)
	for w := range recoverWriters {
		wg.Go(func() {
			for i := w; i < n; i += recoverWriters {
				if err := kv.Set(ctx, recoverKey(i), recoverValue(i)); err != nil {
					errs <- fmt.Errorf("Set(%s): %w", recoverKey(i), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// replicaState is what must survive a restart of a partition's replica: its keys and a hash
// of their content.
type replicaState struct {
	Keys    int
	Sum     uint64
	Applied uint64 // not compared: a restart appends entries of its own
}

func digestsByPartition(ds []gridkv.ReplicaDigest) map[int]replicaState {
	out := make(map[int]replicaState, len(ds))
	for _, d := range ds {
		out[d.Partition] = replicaState{Keys: d.Keys, Sum: d.Sum, Applied: d.Applied}
	}
	return out
}

// sameContent reports whether a and b hold the same partitions with the same keys and content.
func sameContent(a, b map[int]replicaState) bool {
	if len(a) != len(b) {
		return false
	}
	for p, x := range a {
		y, ok := b[p]
		if !ok || x.Keys != y.Keys || x.Sum != y.Sum {
			return false
		}
	}
	return true
}

// diskUse is what a DataDir occupies: allocated blocks (what du reports; raft-wal
// preallocates its segments) in all and by kind of file, and the files' apparent size.
type diskUse struct {
	allocated, apparent int64
	byKind              map[string]int64 // allocated bytes under snapshots/, wal/, and the rest
}

func (u diskUse) String() string {
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	return fmt.Sprintf("%s allocated (du; snapshots %s, wal %s, other %s), %s apparent",
		mib(u.allocated), mib(u.byKind["snapshots"]), mib(u.byKind["wal"]), mib(u.byKind["other"]), mib(u.apparent))
}

func dirBytes(b *testing.B, dir string) diskUse {
	b.Helper()
	u := diskUse{byKind: map[string]int64{}}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		allocated := info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			allocated = st.Blocks * 512
		}
		u.allocated += allocated
		u.apparent += info.Size()
		kind := "other"
		for _, part := range strings.Split(filepath.ToSlash(path), "/") {
			if part == "snapshots" || part == "wal" {
				kind = part
			}
		}
		u.byKind[kind] += allocated
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return u
}
