package gridkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/store"
)

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSingleSetGetDelete(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0).KV
	ctx := testContext(t, 30*time.Second)

	if _, err := kv.Get(ctx, "missing"); !errors.Is(err, gridkv.ErrKeyNotFound) {
		t.Fatalf("Get of a missing key: err = %v, want ErrKeyNotFound", err)
	}
	if _, err := kv.GetEntry(ctx, "missing"); !errors.Is(err, gridkv.ErrKeyNotFound) {
		t.Fatalf("GetEntry of a missing key: err = %v, want ErrKeyNotFound", err)
	}
	if err := kv.Set(ctx, "k", []byte("v1")); err != nil {
		t.Fatalf("Set: %v", err)
	}
	got, err := kv.Get(ctx, "k")
	if err != nil || string(got) != "v1" {
		t.Fatalf("Get = %q, %v; want v1", got, err)
	}
	e, err := kv.GetEntry(ctx, "k")
	if err != nil || e.Key != "k" || string(e.Value) != "v1" || e.Version == 0 {
		t.Fatalf("GetEntry = %+v, %v; want key k, value v1, a non-zero version", e, err)
	}
	// An empty value is a value, not an absent key.
	if err := kv.Set(ctx, "empty", nil); err != nil {
		t.Fatalf("Set of an empty value: %v", err)
	}
	if got, err := kv.Get(ctx, "empty"); err != nil || len(got) != 0 {
		t.Fatalf("Get of an empty value = %q, %v; want empty, nil", got, err)
	}
	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := kv.Get(ctx, "k"); !errors.Is(err, gridkv.ErrKeyNotFound) {
		t.Fatalf("Get after Delete: err = %v, want ErrKeyNotFound", err)
	}
	// errors.go documents Delete of a missing key as a success.
	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete of a missing key: %v, want nil (documented as idempotent)", err)
	}
	// Stale reads on a single node see the same data.
	if err := kv.Set(ctx, "k", []byte("v2")); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if got, err := kv.Get(ctx, "k", gridkv.WithConsistency(gridkv.Stale)); err != nil || string(got) != "v2" {
		t.Fatalf("stale Get = %q, %v; want v2", got, err)
	}
}

func TestSingleVersionsIncrease(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0).KV
	ctx := testContext(t, 30*time.Second)

	var last uint64
	for i := 0; i < 20; i++ {
		key := "versioned"
		if err := kv.Set(ctx, key, []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("Set %d: %v", i, err)
		}
		e, err := kv.GetEntry(ctx, key)
		if err != nil {
			t.Fatalf("GetEntry %d: %v", i, err)
		}
		if e.Version <= last {
			t.Fatalf("write %d got version %d, not above the previous %d", i, e.Version, last)
		}
		last = e.Version
		// A CAS against the version just read succeeds and moves the version up again.
		ne, err := kv.CompareAndSwap(ctx, key, e.Version, []byte(fmt.Sprint("cas", i)))
		if err != nil {
			t.Fatalf("CAS %d at version %d: %v", i, e.Version, err)
		}
		if ne.Version <= last {
			t.Fatalf("CAS %d got version %d, not above the previous %d", i, ne.Version, last)
		}
		last = ne.Version
		// A write to another key in between must not make the versions of this key repeat.
		if err := kv.Set(ctx, fmt.Sprint("other", i), []byte("x")); err != nil {
			t.Fatalf("Set other: %v", err)
		}
	}
}

func TestSingleCompareAndSwap(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0).KV
	ctx := testContext(t, 30*time.Second)

	// Version 0 succeeds only while the key is absent.
	e1, err := kv.CompareAndSwap(ctx, "c", 0, []byte("first"))
	if err != nil {
		t.Fatalf("CAS 0 on an absent key: %v", err)
	}
	if e1.Key != "c" || string(e1.Value) != "first" || e1.Version == 0 {
		t.Fatalf("CAS 0 returned %+v; want key c, value first, a non-zero version", e1)
	}
	cur, err := kv.CompareAndSwap(ctx, "c", 0, []byte("second"))
	if !errors.Is(err, gridkv.ErrVersionMismatch) {
		t.Fatalf("CAS 0 on a present key: err = %v, want ErrVersionMismatch", err)
	}
	if string(cur.Value) != "first" || cur.Version != e1.Version {
		t.Fatalf("CAS mismatch returned %+v; want the current entry (first, version %d)", cur, e1.Version)
	}

	// A wrong version fails and reports the current entry; the value is unchanged.
	cur, err = kv.CompareAndSwap(ctx, "c", e1.Version+1000, []byte("wrong"))
	if !errors.Is(err, gridkv.ErrVersionMismatch) {
		t.Fatalf("CAS with a wrong version: err = %v, want ErrVersionMismatch", err)
	}
	if string(cur.Value) != "first" || cur.Version != e1.Version {
		t.Fatalf("CAS mismatch returned %+v; want (first, version %d)", cur, e1.Version)
	}
	if got, _ := kv.Get(ctx, "c"); string(got) != "first" {
		t.Fatalf("a failed CAS changed the value to %q", got)
	}

	// The right version succeeds.
	e2, err := kv.CompareAndSwap(ctx, "c", e1.Version, []byte("second"))
	if err != nil {
		t.Fatalf("CAS at the current version: %v", err)
	}
	if string(e2.Value) != "second" || e2.Version <= e1.Version {
		t.Fatalf("CAS returned %+v; want value second and a version above %d", e2, e1.Version)
	}
	if got, err := kv.GetEntry(ctx, "c"); err != nil || string(got.Value) != "second" || got.Version != e2.Version {
		t.Fatalf("GetEntry after CAS = %+v, %v; want (second, %d)", got, err, e2.Version)
	}
	// The version it replaced is stale now.
	if _, err := kv.CompareAndSwap(ctx, "c", e1.Version, []byte("third")); !errors.Is(err, gridkv.ErrVersionMismatch) {
		t.Fatalf("CAS with a superseded version: err = %v, want ErrVersionMismatch", err)
	}

	// On an absent key a non-zero version fails with Version 0 in the entry.
	cur, err = kv.CompareAndSwap(ctx, "absent", 7, []byte("x"))
	if !errors.Is(err, gridkv.ErrVersionMismatch) {
		t.Fatalf("CAS 7 on an absent key: err = %v, want ErrVersionMismatch", err)
	}
	if cur.Version != 0 || cur.Value != nil {
		t.Fatalf("CAS mismatch on an absent key returned %+v; want Version 0 and no value", cur)
	}
	if _, err := kv.Get(ctx, "absent"); !errors.Is(err, gridkv.ErrKeyNotFound) {
		t.Fatalf("a failed CAS created the key: err = %v", err)
	}

	// After a Delete, version 0 works again.
	if err := kv.Delete(ctx, "c"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	e3, err := kv.CompareAndSwap(ctx, "c", 0, []byte("reborn"))
	if err != nil {
		t.Fatalf("CAS 0 after Delete: %v", err)
	}
	if e3.Version <= e2.Version {
		t.Fatalf("version after delete and re-create %d is not above %d", e3.Version, e2.Version)
	}
}

func TestSingleInvalidInput(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0).KV
	ctx := testContext(t, 30*time.Second)

	longKey := strings.Repeat("k", gridkv.MaxKeySize+1)
	maxKey := strings.Repeat("k", gridkv.MaxKeySize)
	for _, key := range []string{"", longKey} {
		name := fmt.Sprintf("key of %d bytes", len(key))
		if err := kv.Set(ctx, key, []byte("v")); !errors.Is(err, gridkv.ErrInvalidKey) {
			t.Errorf("Set with %s: err = %v, want ErrInvalidKey", name, err)
		}
		if _, err := kv.Get(ctx, key); !errors.Is(err, gridkv.ErrInvalidKey) {
			t.Errorf("Get with %s: err = %v, want ErrInvalidKey", name, err)
		}
		if _, err := kv.GetEntry(ctx, key); !errors.Is(err, gridkv.ErrInvalidKey) {
			t.Errorf("GetEntry with %s: err = %v, want ErrInvalidKey", name, err)
		}
		if err := kv.Delete(ctx, key); !errors.Is(err, gridkv.ErrInvalidKey) {
			t.Errorf("Delete with %s: err = %v, want ErrInvalidKey", name, err)
		}
		if _, err := kv.CompareAndSwap(ctx, key, 0, []byte("v")); !errors.Is(err, gridkv.ErrInvalidKey) {
			t.Errorf("CompareAndSwap with %s: err = %v, want ErrInvalidKey", name, err)
		}
	}
	// The limits themselves are allowed.
	if err := kv.Set(ctx, maxKey, make([]byte, gridkv.MaxValueSize)); err != nil {
		t.Fatalf("Set with a %d-byte key and a %d-byte value: %v", gridkv.MaxKeySize, gridkv.MaxValueSize, err)
	}
	if got, err := kv.Get(ctx, maxKey); err != nil || len(got) != gridkv.MaxValueSize {
		t.Fatalf("Get of the largest entry: %d bytes, %v", len(got), err)
	}

	big := make([]byte, gridkv.MaxValueSize+1)
	if err := kv.Set(ctx, "big", big); !errors.Is(err, gridkv.ErrValueTooLarge) {
		t.Errorf("Set with a value of %d bytes: err = %v, want ErrValueTooLarge", len(big), err)
	}
	if _, err := kv.CompareAndSwap(ctx, "big", 0, big); !errors.Is(err, gridkv.ErrValueTooLarge) {
		t.Errorf("CompareAndSwap with a value of %d bytes: err = %v, want ErrValueTooLarge", len(big), err)
	}
	if _, err := kv.Get(ctx, "big"); !errors.Is(err, gridkv.ErrKeyNotFound) {
		t.Errorf("a rejected value was stored: Get err = %v", err)
	}
}

func TestSingleValuesAreCopied(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0).KV
	ctx := testContext(t, 30*time.Second)

	in := []byte("original")
	if err := kv.Set(ctx, "k", in); err != nil {
		t.Fatalf("Set: %v", err)
	}
	copy(in, "XXXXXXXX") // the caller reuses its buffer
	for _, c := range []gridkv.Consistency{gridkv.Linearizable, gridkv.Stale} {
		got, err := kv.Get(ctx, "k", gridkv.WithConsistency(c))
		if err != nil || string(got) != "original" {
			t.Fatalf("Get (consistency %d) after the caller changed its buffer = %q, %v; want original", c, got, err)
		}
		copy(got, "YYYYYYYY") // the caller changes what it got
		e, err := kv.GetEntry(ctx, "k", gridkv.WithConsistency(c))
		if err != nil || string(e.Value) != "original" {
			t.Fatalf("GetEntry (consistency %d) after the caller changed a returned value = %q, %v; want original", c, e.Value, err)
		}
		copy(e.Value, "ZZZZZZZZ")
		if got, _ := kv.Get(ctx, "k", gridkv.WithConsistency(c)); string(got) != "original" {
			t.Fatalf("Get (consistency %d) after the caller changed GetEntry's value = %q; want original", c, got)
		}
	}

	// CompareAndSwap copies its input, and the entry it returns is the caller's.
	e, _ := kv.GetEntry(ctx, "k")
	casIn := []byte("swapped!")
	ne, err := kv.CompareAndSwap(ctx, "k", e.Version, casIn)
	if err != nil {
		t.Fatalf("CAS: %v", err)
	}
	copy(casIn, "AAAAAAAA")
	copy(ne.Value, "BBBBBBBB")
	if got, _ := kv.Get(ctx, "k"); string(got) != "swapped!" {
		t.Fatalf("Get after the caller changed CAS's buffers = %q; want swapped!", got)
	}
	cur, err := kv.CompareAndSwap(ctx, "k", 1, []byte("nope"))
	if !errors.Is(err, gridkv.ErrVersionMismatch) {
		t.Fatalf("CAS with a wrong version: %v", err)
	}
	copy(cur.Value, "CCCCCCCC")
	if got, _ := kv.Get(ctx, "k"); string(got) != "swapped!" {
		t.Fatalf("Get after the caller changed a mismatch's entry = %q; want swapped!", got)
	}
}

// TestSingleClose closes a node by hand. That everything it started is gone after Close is
// the harness's goroutine leak check, which runs when the test ends.
func TestSingleClose(t *testing.T) {
	node := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions}).Node(0)
	kv := node.KV
	ctx := testContext(t, 30*time.Second)
	if err := kv.Set(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("Set: %v", err)
	}

	if err := kv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := kv.Close(); err != nil {
		t.Fatalf("second Close: %v, want nil (Close is idempotent)", err)
	}

	calls := map[string]func() error{
		"Set":    func() error { return kv.Set(ctx, "k", []byte("v")) },
		"Get":    func() error { _, err := kv.Get(ctx, "k"); return err },
		"Stale":  func() error { _, err := kv.Get(ctx, "k", gridkv.WithConsistency(gridkv.Stale)); return err },
		"Entry":  func() error { _, err := kv.GetEntry(ctx, "k"); return err },
		"Delete": func() error { return kv.Delete(ctx, "k") },
		"CAS":    func() error { _, err := kv.CompareAndSwap(ctx, "k", 0, []byte("v")); return err },
		"Ready":  func() error { return kv.WaitReady(ctx) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, gridkv.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
	// Status after Close must not panic or block.
	if st := kv.Status(); st.NodeID != node.ID {
		t.Errorf("Status after Close has NodeID %q", st.NodeID)
	}
}

func TestSingleInvalidOptions(t *testing.T) {
	t.Parallel() // no node is started: nothing binds a port
	valid := func() *gridkv.GridKVOptions {
		return &gridkv.GridKVOptions{LocalNodeID: "n1", LocalAddress: "127.0.0.1:1"}
	}
	cases := []struct {
		name   string
		change func(o *gridkv.GridKVOptions)
		want   []string // substrings the error must contain: the field and the value
	}{
		{"missing LocalNodeID", func(o *gridkv.GridKVOptions) { o.LocalNodeID = "" }, []string{"LocalNodeID"}},
		{"long LocalNodeID", func(o *gridkv.GridKVOptions) { o.LocalNodeID = strings.Repeat("n", 129) }, []string{"LocalNodeID"}},
		{"missing LocalAddress", func(o *gridkv.GridKVOptions) { o.LocalAddress = "" }, []string{"LocalAddress"}},
		{"LocalAddress without port", func(o *gridkv.GridKVOptions) { o.LocalAddress = "localhost" }, []string{"LocalAddress", "localhost"}},
		{"LocalAddress without host", func(o *gridkv.GridKVOptions) { o.LocalAddress = ":7000" }, []string{"LocalAddress", ":7000"}},
		{"LocalAddress port out of range", func(o *gridkv.GridKVOptions) { o.LocalAddress = "127.0.0.1:70000" }, []string{"LocalAddress", "70000"}},
		{"bad seed", func(o *gridkv.GridKVOptions) { o.SeedAddrs = []string{"127.0.0.1:2", "seed-without-port"} }, []string{"SeedAddrs[1]", "seed-without-port"}},
		{"WriteQuorum above ReplicaCount", func(o *gridkv.GridKVOptions) { o.ReplicaCount, o.WriteQuorum = 3, 4 }, []string{"WriteQuorum", "4", "3"}},
		{"ReadQuorum above ReplicaCount", func(o *gridkv.GridKVOptions) { o.ReplicaCount, o.ReadQuorum = 3, 5 }, []string{"ReadQuorum", "5", "3"}},
		{"negative WriteQuorum", func(o *gridkv.GridKVOptions) { o.WriteQuorum = -1 }, []string{"WriteQuorum", "-1"}},
		{"negative ReplicaCount", func(o *gridkv.GridKVOptions) { o.ReplicaCount = -2 }, []string{"ReplicaCount", "-2"}},
		{"negative Partitions", func(o *gridkv.GridKVOptions) { o.Partitions = -1 }, []string{"Partitions", "-1"}},
		{"too many Partitions", func(o *gridkv.GridKVOptions) { o.Partitions = gridkv.MaxPartitions + 1 }, []string{"Partitions", fmt.Sprint(gridkv.MaxPartitions + 1)}},
		{"negative MaxMemoryMB", func(o *gridkv.GridKVOptions) { o.Storage = &store.StorageOptions{MaxMemoryMB: -1} }, []string{"MaxMemoryMB", "-1"}},
		{"ShardCount not a power of two", func(o *gridkv.GridKVOptions) { o.Storage = &store.StorageOptions{ShardCount: 3} }, []string{"ShardCount", "3"}},
		{"negative ReconcileInterval", func(o *gridkv.GridKVOptions) {
			tm := gridkv.LocalTimings()
			tm.ReconcileInterval = -time.Second
			o.Timings = &tm
		}, []string{"ReconcileInterval", "-1s"}},
		{"lease above heartbeat", func(o *gridkv.GridKVOptions) {
			tm := gridkv.LocalTimings()
			tm.Raft.LeaderLeaseTimeout = time.Second
			o.Timings = &tm
		}, []string{"LeaderLeaseTimeout 1s", "HeartbeatTimeout 500ms"}},
	}
	for _, tc := range cases {
		o := valid()
		tc.change(o)
		kv, err := gridkv.NewGridKV(o)
		if err == nil {
			kv.Close()
			t.Errorf("%s: NewGridKV succeeded, want an error", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not name %q", tc.name, err, w)
			}
		}
	}
	if _, err := gridkv.NewGridKV(nil); err == nil {
		t.Errorf("NewGridKV(nil) succeeded, want an error")
	}
}

func TestSingleMemoryLimit(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: cluster.LibraryPartitions, Mutate: func(_ int, o *gridkv.GridKVOptions) {
		o.Storage = &store.StorageOptions{MaxMemoryMB: 1}
	}}).Node(0).KV
	ctx := testContext(t, 60*time.Second)

	value := bytes.Repeat([]byte("m"), 32<<10)
	// 1 MiB holds about 32 such values; 200 writes without hitting the limit is a failure.
	const maxWrites = 200
	written := 0
	var limitErr error
	for i := 0; i < maxWrites; i++ {
		err := kv.Set(ctx, fmt.Sprintf("mem-%03d", i), value)
		if errors.Is(err, gridkv.ErrMemoryLimit) {
			limitErr = err
			break
		}
		if err != nil {
			t.Fatalf("Set %d: %v, want nil or ErrMemoryLimit", i, err)
		}
		written++
	}
	if limitErr == nil {
		t.Fatalf("wrote %d values of %d bytes under a 1 MiB limit without ErrMemoryLimit", maxWrites, len(value))
	}
	if written == 0 || written > 40 {
		t.Fatalf("ErrMemoryLimit after %d writes of %d bytes; want it near 1 MiB (about 31)", written, len(value))
	}
	t.Logf("ErrMemoryLimit after %d writes: %v", written, limitErr)

	// A CAS that would add an entry is refused too.
	if _, err := kv.CompareAndSwap(ctx, "mem-cas", 0, value); !errors.Is(err, gridkv.ErrMemoryLimit) {
		t.Errorf("CAS past the limit: err = %v, want ErrMemoryLimit", err)
	}
	// Everything written before the limit is still there and readable both ways.
	for i := 0; i < written; i++ {
		key := fmt.Sprintf("mem-%03d", i)
		for _, c := range []gridkv.Consistency{gridkv.Linearizable, gridkv.Stale} {
			got, err := kv.Get(ctx, key, gridkv.WithConsistency(c))
			if err != nil || !bytes.Equal(got, value) {
				t.Fatalf("Get %s (consistency %d) after the limit: %d bytes, %v", key, c, len(got), err)
			}
		}
	}
	if _, err := kv.Get(ctx, fmt.Sprintf("mem-%03d", written)); !errors.Is(err, gridkv.ErrKeyNotFound) {
		t.Errorf("the refused write was stored: Get err = %v", err)
	}
	// Deleting frees room, so writes succeed again.
	for i := 0; i < 4; i++ {
		if err := kv.Delete(ctx, fmt.Sprintf("mem-%03d", i)); err != nil {
			t.Fatalf("Delete under the limit: %v", err)
		}
	}
	cluster.WaitFor(t, 10*time.Second, "a write after deletes freed memory", func() bool {
		return kv.Set(ctx, "mem-after-delete", value) == nil
	})
}
