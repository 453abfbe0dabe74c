package store_test

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/feellmoose/gridkv/store"
)

func TestEntrySize(t *testing.T) {
	if got := store.EntrySize(3, 10); got != 13+store.EntryOverhead {
		t.Fatalf("EntrySize(3, 10) = %d", got)
	}
	if got := store.EntrySize(-5, -1); got != store.EntryOverhead {
		t.Fatalf("EntrySize of negatives = %d", got)
	}
}

func TestAccountantAdmit(t *testing.T) {
	unlimited := store.NewAccountant(0)
	if unlimited.Limit() != 0 || unlimited.Admit(store.MaxKeySize, store.MaxValueSize) != nil {
		t.Fatal("unlimited accountant refused a write")
	}
	if store.NewAccountant(-1).Limit() != 0 {
		t.Fatal("negative limit not treated as none")
	}

	a := store.NewAccountant(1)
	if a.Limit() != 1<<20 {
		t.Fatalf("Limit() = %d, want 1 MiB", a.Limit())
	}
	p := store.NewPartition(store.StorageOptions{}, a)
	// Fill to just under the limit with one entry.
	big := (1 << 20) - store.EntryOverhead - 1 - 100
	p.ApplyBatch(1, []store.Command{{Op: store.OpSet, Key: "a", Value: make([]byte, big)}})
	if a.Used() != store.EntrySize(1, big) {
		t.Fatalf("Used() = %d, want %d", a.Used(), store.EntrySize(1, big))
	}
	if err := a.Admit(1, 99-store.EntryOverhead); err != nil {
		t.Fatalf("write that exactly fits refused: %v", err)
	}
	err := a.Admit(1, 100-store.EntryOverhead)
	if !errors.Is(err, store.ErrMemoryLimit) {
		t.Fatalf("Admit over the limit = %v, want ErrMemoryLimit", err)
	}
	want := fmt.Sprintf("%d bytes used", a.Used())
	if !containsStr(err.Error(), want) {
		t.Fatalf("error %q does not give the numbers (%q)", err, want)
	}
	// Admit reserves nothing.
	if a.Used() != store.EntrySize(1, big) {
		t.Fatal("Admit changed Used")
	}
}

// Committed commands apply even over the limit, and the account follows.
func TestApplyIgnoresLimit(t *testing.T) {
	a := store.NewAccountant(1)
	p := store.NewPartition(store.StorageOptions{}, a)
	for i := range 3 {
		res := p.ApplyBatch(uint64(i+1), []store.Command{{Op: store.OpSet, Key: fmt.Sprint(i), Value: make([]byte, 600<<10)}})
		if res[0].Err != nil {
			t.Fatalf("apply over limit failed: %v", res[0].Err)
		}
	}
	if p.Len() != 3 || a.Used() <= a.Limit() {
		t.Fatalf("Len %d, Used %d, Limit %d", p.Len(), a.Used(), a.Limit())
	}
	if err := a.Admit(1, 0); !errors.Is(err, store.ErrMemoryLimit) {
		t.Fatalf("Admit while over the limit = %v", err)
	}
}

func TestAccountingFollowsWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		a := store.NewAccountant(0)
		p1 := store.NewPartition(opts, a)
		p2 := store.NewPartition(opts, a)
		set(t, p1, 1, "key", "12345")
		set(t, p2, 1, "k", "")
		want1 := store.EntrySize(3, 5)
		want2 := store.EntrySize(1, 0)
		check := func(step string) {
			t.Helper()
			if p1.Bytes() != want1 || p2.Bytes() != want2 || a.Used() != want1+want2 {
				t.Fatalf("%s: p1 %d (want %d), p2 %d (want %d), used %d", step, p1.Bytes(), want1, p2.Bytes(), want2, a.Used())
			}
		}
		check("insert")
		set(t, p1, 2, "key", "12") // overwrite shrinks
		want1 = store.EntrySize(3, 2)
		check("overwrite")
		p1.ApplyBatch(3, []store.Command{{Op: store.OpCAS, Key: "key", Version: 1}}) // mismatch: no change
		check("failed CAS")
		p1.ApplyBatch(4, []store.Command{{Op: store.OpCAS, Key: "new", Value: []byte("abc")}})
		want1 += store.EntrySize(3, 3)
		check("CAS insert")
		p1.ApplyBatch(5, []store.Command{{Op: store.OpDelete, Key: "key"}, {Op: store.OpDelete, Key: "absent"}})
		want1 = store.EntrySize(3, 3)
		check("delete")

		p1.Close()
		want1 = 0
		check("close")
		p1.Close()
		check("second close")
		p2.Close()
		if a.Used() != 0 {
			t.Fatalf("Used() = %d after closing everything", a.Used())
		}
	})
}

func TestCloseDropsState(t *testing.T) {
	a := store.NewAccountant(0)
	p := store.NewPartition(store.StorageOptions{}, a)
	set(t, p, 1, "k", "v")
	p.Close()
	if _, _, ok := p.Get("k"); ok || p.Len() != 0 || p.Bytes() != 0 {
		t.Fatalf("closed partition still holds data: len %d bytes %d", p.Len(), p.Bytes())
	}
	res := p.ApplyBatch(2, []store.Command{{Op: store.OpSet, Key: "k", Value: []byte("v")}})
	if !errors.Is(res[0].Err, store.ErrPartitionClosed) || a.Used() != 0 || p.Len() != 0 {
		t.Fatalf("apply after Close: %v, used %d, len %d", res[0].Err, a.Used(), p.Len())
	}
}

// Close racing an apply loop must leave the Accountant at exactly zero:
// nothing counted twice, nothing added after Close gave bytes back.
func TestCloseConcurrentWithApply(t *testing.T) {
	for range 20 {
		a := store.NewAccountant(0)
		p := store.NewPartition(store.StorageOptions{ShardCount: 4}, a)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 2000 {
				p.ApplyBatch(uint64(i+1), []store.Command{{Op: store.OpSet, Key: fmt.Sprint(i % 50), Value: []byte("value")}})
			}
		}()
		runtime.Gosched()
		p.Close()
		<-done
		if a.Used() != 0 || p.Bytes() != 0 {
			t.Fatalf("after Close: used %d, bytes %d", a.Used(), p.Bytes())
		}
	}
}

// TestEntryOverheadMatchesHeap keeps EntryOverhead honest: the heap really
// grown by small entries must be within a factor of two of what EntrySize
// charges for them.
func TestEntryOverheadMatchesHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 100_000
	value := []byte("0123456789abcdef")
	cmds := make([]store.Command, 64)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p := store.NewPartition(store.StorageOptions{}, nil)
	for i := 0; i < n; i += len(cmds) {
		batch := cmds[:min(len(cmds), n-i)]
		for j := range batch {
			// Allocated here so the heap growth includes the keys,
			// which the partition keeps.
			batch[j] = store.Command{Op: store.OpSet, Key: fmt.Sprintf("key-%012d", i+j), Value: value}
		}
		p.ApplyBatch(uint64(i+1), batch)
	}
	clear(cmds)
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEntry := float64(after.HeapAlloc-before.HeapAlloc) / n
	charged := float64(store.EntrySize(16, 16))
	t.Logf("heap per entry %.1f bytes, charged %.0f", perEntry, charged)
	if perEntry > 2*charged || perEntry < charged/2 {
		t.Fatalf("heap per entry %.1f bytes, EntrySize charges %.0f", perEntry, charged)
	}
	runtime.KeepAlive(p)
}
