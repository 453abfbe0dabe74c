package store_test

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/feellmoose/gridkv/store"
)

func TestSetGetDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		if _, _, ok := p.Get("a"); ok {
			t.Fatal("empty partition has a key")
		}
		v1 := set(t, p, 5, "a", "one")
		if v1 != store.Version(5, 0) {
			t.Fatalf("version %#x, want %#x", v1, store.Version(5, 0))
		}
		got, ver, ok := p.Get("a")
		if !ok || string(got) != "one" || ver != v1 {
			t.Fatalf("Get = %q, %#x, %v", got, ver, ok)
		}
		v2 := set(t, p, 6, "a", "two")
		if got, ver, _ := p.Get("a"); string(got) != "two" || ver != v2 || v2 <= v1 {
			t.Fatalf("after overwrite Get = %q, %#x (v1 %#x)", got, ver, v1)
		}
		if p.Len() != 1 || p.AppliedIndex() != 6 {
			t.Fatalf("Len %d, AppliedIndex %d", p.Len(), p.AppliedIndex())
		}

		res := p.ApplyBatch(7, []store.Command{{Op: store.OpDelete, Key: "a"}, {Op: store.OpDelete, Key: "a"}})
		if res[0].Err != nil || res[0].Version != v2 {
			t.Fatalf("Delete = %+v, want version %#x", res[0], v2)
		}
		if !errors.Is(res[1].Err, store.ErrKeyNotFound) || res[1].Version != 0 {
			t.Fatalf("second Delete = %+v, want ErrKeyNotFound", res[1])
		}
		if _, _, ok := p.Get("a"); ok || p.Len() != 0 {
			t.Fatal("deleted key still present")
		}
	})
}

func TestEmptyValue(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	set(t, p, 1, "k", "")
	v, ver, ok := p.Get("k")
	if !ok || v == nil || len(v) != 0 || ver == 0 {
		t.Fatalf("Get of empty value = %v (nil %v), %d, %v", v, v == nil, ver, ok)
	}
}

func TestCAS(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		cas := func(index uint64, key string, expect uint64, value string) store.Result {
			return p.ApplyBatch(index, []store.Command{{Op: store.OpCAS, Key: key, Value: []byte(value), Version: expect}})[0]
		}

		// Wrong expectation on an absent key: current version 0, no value.
		if r := cas(1, "k", 42, "x"); !errors.Is(r.Err, store.ErrVersionMismatch) || r.Version != 0 || r.Value != nil {
			t.Fatalf("CAS on absent key with version 42 = %+v", r)
		}
		// Version 0 creates an absent key.
		r := cas(2, "k", 0, "first")
		if r.Err != nil || r.Version != store.Version(2, 0) {
			t.Fatalf("create-if-absent = %+v", r)
		}
		created := r.Version
		// Version 0 fails once the key exists, reporting what is there.
		r = cas(3, "k", 0, "second")
		if !errors.Is(r.Err, store.ErrVersionMismatch) || r.Version != created || string(r.Value) != "first" {
			t.Fatalf("create-if-absent on present key = %+v", r)
		}
		r.Value[0] = 'X' // the mismatch value is a copy
		if v, _, _ := p.Get("k"); string(v) != "first" {
			t.Fatalf("mutating CAS mismatch value changed the store: %q", v)
		}
		// The right version swaps.
		r = cas(4, "k", created, "third")
		if r.Err != nil || r.Version != store.Version(4, 0) {
			t.Fatalf("CAS with the current version = %+v", r)
		}
		if v, ver, _ := p.Get("k"); string(v) != "third" || ver != r.Version {
			t.Fatalf("after CAS Get = %q, %#x", v, ver)
		}
		// A stale version fails.
		if r := cas(5, "k", created, "fourth"); !errors.Is(r.Err, store.ErrVersionMismatch) || string(r.Value) != "third" {
			t.Fatalf("CAS with a stale version = %+v", r)
		}
		if p.AppliedIndex() != 5 {
			t.Fatalf("a failed CAS did not mark its index: %d", p.AppliedIndex())
		}
	})
}

// A CAS can succeed or fail inside a batch depending on the commands
// before it in the same batch.
func TestCASWithinBatch(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	res := p.ApplyBatch(10, []store.Command{
		{Op: store.OpSet, Key: "k", Value: []byte("a")},
		{Op: store.OpCAS, Key: "k", Value: []byte("b"), Version: store.Version(10, 0)},
		{Op: store.OpCAS, Key: "k", Value: []byte("c"), Version: store.Version(10, 0)},
		{Op: store.OpDelete, Key: "k"},
		{Op: store.OpCAS, Key: "k", Value: []byte("d")},
	})
	want := []struct {
		err     error
		version uint64
	}{
		{nil, store.Version(10, 0)},
		{nil, store.Version(10, 1)},
		{store.ErrVersionMismatch, store.Version(10, 1)},
		{nil, store.Version(10, 1)},
		{nil, store.Version(10, 4)},
	}
	for i, w := range want {
		if !errors.Is(res[i].Err, w.err) || res[i].Version != w.version {
			t.Errorf("command %d: %+v, want err %v version %#x", i, res[i], w.err, w.version)
		}
	}
	if v, ver, _ := p.Get("k"); string(v) != "d" || ver != store.Version(10, 4) {
		t.Fatalf("final Get = %q, %#x", v, ver)
	}
}

func TestVersionsUniqueAndIncreasing(t *testing.T) {
	if store.Version(1, 0) != 1<<16|1 {
		t.Fatalf("Version(1, 0) = %#x", store.Version(1, 0))
	}
	if store.Version(1, store.MaxBatch-1) >= store.Version(2, 0) {
		t.Fatal("last version of a batch not below the first of the next")
	}
	if store.Version(0, 0) == 0 {
		t.Fatal("a version is 0")
	}
	if store.Version(3, -1)>>16 != 3 || store.Version(3, 1<<20)>>16 != 3 {
		t.Fatal("out-of-range pos spilled into the index bits")
	}

	p := store.NewPartition(store.StorageOptions{ShardCount: 8}, nil)
	var last uint64
	seen := make(map[uint64]bool)
	for index := uint64(1); index <= 50; index++ {
		cmds := make([]store.Command, 1+int(index%7))
		for i := range cmds {
			cmds[i] = store.Command{Op: store.OpSet, Key: fmt.Sprint(i % 3), Value: []byte{byte(i)}} // repeats keys in a batch
		}
		for i, r := range p.ApplyBatch(index, cmds) {
			if r.Version <= last || seen[r.Version] {
				t.Fatalf("index %d command %d: version %#x after %#x", index, i, r.Version, last)
			}
			last = r.Version
			seen[r.Version] = true
		}
	}
}

func TestValuesCopied(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		in := []byte("original")
		p.ApplyBatch(1, []store.Command{{Op: store.OpSet, Key: "k", Value: in}})
		in[0] = 'X'
		out, _, _ := p.Get("k")
		if string(out) != "original" {
			t.Fatalf("caller's slice changed stored value: %q", out)
		}
		out[0] = 'Y'
		if again, _, _ := p.Get("k"); string(again) != "original" {
			t.Fatalf("Get result aliases stored value: %q", again)
		}

		// Decoded commands alias the entry; applying must copy.
		entry := store.AppendBatch(nil, []store.Command{{Op: store.OpSet, Key: "e", Value: []byte("from-log")}})
		if _, err := p.ApplyEntry(2, entry); err != nil {
			t.Fatal(err)
		}
		clear(entry)
		if v, _, _ := p.Get("e"); string(v) != "from-log" {
			t.Fatalf("stored value aliases the log entry: %q", v)
		}
	})
}

func TestApplyBatchInvalidCommands(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	res := p.ApplyBatch(3, []store.Command{
		{Op: store.OpSet, Key: ""},
		{Op: 0, Key: "k"},
		{Op: 9, Key: "k"},
		{Op: store.OpSet, Key: string(make([]byte, store.MaxKeySize+1))},
		{Op: store.OpSet, Key: "k", Value: make([]byte, store.MaxValueSize+1)},
		{Op: store.OpSet, Key: "ok", Value: []byte("v")},
	})
	for i, r := range res[:5] {
		if !errors.Is(r.Err, store.ErrInvalidCommand) {
			t.Errorf("command %d: %v, want ErrInvalidCommand", i, r.Err)
		}
	}
	if res[5].Err != nil || res[5].Version != store.Version(3, 5) || p.Len() != 1 {
		t.Fatalf("valid command after invalid ones: %+v, len %d", res[5], p.Len())
	}
}

func TestApplyEntry(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	set(t, p, 1, "k", "v")
	before := dump(p)

	res, err := p.ApplyEntry(2, []byte{0x0a, 0x05, 0x08}) // truncated command
	if !errors.Is(err, store.ErrCorrupt) || res != nil {
		t.Fatalf("ApplyEntry(garbage) = %v, %v", res, err)
	}
	if !maps.Equal(before, dump(p)) || p.AppliedIndex() != 2 {
		t.Fatalf("garbage entry changed state or did not mark index (applied %d)", p.AppliedIndex())
	}

	res, err = p.ApplyEntry(3, nil) // an empty batch
	if err != nil || len(res) != 0 || p.AppliedIndex() != 3 {
		t.Fatalf("empty entry: %v, %v, applied %d", res, err, p.AppliedIndex())
	}

	entry := store.AppendBatch(nil, []store.Command{
		{Op: store.OpSet, Key: "a", Value: []byte("1")},
		{Op: store.OpDelete, Key: "k"},
	})
	res, err = p.ApplyEntry(4, entry)
	if err != nil || len(res) != 2 || res[0].Version != store.Version(4, 0) || res[1].Err != nil {
		t.Fatalf("ApplyEntry = %+v, %v", res, err)
	}
	p.MarkApplied(9)
	if p.AppliedIndex() != 9 {
		t.Fatalf("MarkApplied: %d", p.AppliedIndex())
	}
}

// randomCommand draws a command of any kind on one of 30 keys, with a value (and now and
// then a deadline) for the kinds that write one; callers set Version.
func randomCommand(rng *rand.Rand) store.Command {
	c := store.Command{Op: store.Op(1 + rng.IntN(5)), Key: fmt.Sprint(rng.IntN(30))}
	if c.Op == store.OpSet || c.Op == store.OpCAS {
		c.Value = []byte(fmt.Sprint(rng.Uint32()))
		if rng.IntN(3) == 0 {
			c.ExpiresAt = 1 + rng.Int64N(5)
		}
	}
	return c
}

// An entry applied unanswered (a follower's) changes the partition exactly as ApplyEntry
// does: the same keys, versions, deadlines, size and history, for random batches that
// include mismatched compare-and-swaps (whose answered results carry value copies) and
// entries that do not decode.
func TestApplyEntryUnansweredMatchesApplyEntry(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	answered := store.NewPartition(store.StorageOptions{}, nil)
	unanswered := store.NewPartition(store.StorageOptions{}, nil)
	for index := uint64(1); index <= 300; index++ {
		var entry []byte
		if rng.IntN(20) == 0 {
			entry = []byte{0x0a, 0x05, 0x08} // truncated: marks the index applied, nothing else
		} else {
			cmds := make([]store.Command, 1+rng.IntN(20))
			for i := range cmds {
				c := randomCommand(rng)
				if c.Op != store.OpSet && c.Op != store.OpDelete {
					c.Version = 1 + rng.Uint64N(uint64(index)<<16)
					if _, v, ok := answered.Get(c.Key); ok && rng.IntN(2) == 0 {
						c.Version = v // this one holds
					}
				}
				cmds[i] = c
			}
			entry = store.AppendBatch(nil, cmds)
		}
		res, errA := answered.ApplyEntry(index, entry)
		errU := unanswered.ApplyEntryUnanswered(index, entry)
		if (errA == nil) != (errU == nil) {
			t.Fatalf("index %d: ApplyEntry %v, ApplyEntryUnanswered %v", index, errA, errU)
		}
		if errA == nil && len(res) == 0 {
			t.Fatalf("index %d: ApplyEntry answered nothing", index)
		}
	}
	if a, u := dump(answered), dump(unanswered); !maps.Equal(a, u) {
		t.Fatalf("states differ:\nanswered   %v\nunanswered %v", a, u)
	}
	if answered.AppliedIndex() != unanswered.AppliedIndex() || answered.Len() != unanswered.Len() || answered.Bytes() != unanswered.Bytes() {
		t.Fatalf("applied %d/%d, len %d/%d, bytes %d/%d", answered.AppliedIndex(), unanswered.AppliedIndex(),
			answered.Len(), unanswered.Len(), answered.Bytes(), unanswered.Bytes())
	}
	ea, _, errA := answered.Events(0, "", 1<<20)
	eu, _, errU := unanswered.Events(0, "", 1<<20)
	if errA != nil || errU != nil || !reflect.DeepEqual(ea, eu) {
		t.Fatalf("histories differ (%v, %v): %d and %d events", errA, errU, len(ea), len(eu))
	}
	if len(ea) == 0 {
		t.Fatal("no events: the batches changed nothing")
	}
}

func TestRange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		want := make(map[string]kv)
		for i := range 100 {
			k := fmt.Sprint("key", i)
			want[k] = kv{fmt.Sprint(i), set(t, p, uint64(i+1), k, fmt.Sprint(i))}
		}
		if got := dump(p); !maps.Equal(got, want) {
			t.Fatalf("Range saw %d keys, want %d", len(got), len(want))
		}
		calls := 0
		p.Range(func(string, []byte, uint64) bool { calls++; return calls < 10 })
		if calls != 10 {
			t.Fatalf("Range went on after false: %d calls", calls)
		}
	})
}

// TestAgainstModel applies random batches of every op to every backend and
// to a plain map, and compares each result, the history, and the final
// state as every read path sees it.
func TestAgainstModel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		rng := rand.New(rand.NewPCG(1, 2))
		a := store.NewAccountant(0)
		p := store.NewPartition(opts, a)
		type entry struct {
			kv
			expiresAt int64
		}
		model := make(map[string]entry)
		var events []string
		for index := uint64(1); index <= 300; index++ {
			cmds := make([]store.Command, rng.IntN(20))
			for i := range cmds {
				c := randomCommand(rng)
				switch {
				case c.Op == store.OpSet || c.Op == store.OpDelete:
				case rng.IntN(3) > 0:
					c.Version = model[c.Key].version // usually right
				default:
					c.Version = rng.Uint64N(4)
				}
				if c.Version == 0 && (c.Op == store.OpExpire || c.Op == store.OpCompareAndDelete) {
					c.Version = 1
				}
				cmds[i] = c
			}
			res := p.ApplyBatch(index, cmds)
			for i, c := range cmds {
				cur, had := model[c.Key]
				var want store.Result
				event := ""
				switch {
				case (c.Op == store.OpDelete || c.Op == store.OpExpire) && !had:
					want.Err = store.ErrKeyNotFound
				case c.Op == store.OpExpire && (c.Version != cur.version || cur.expiresAt == 0):
					want.Err, want.Version = store.ErrVersionMismatch, cur.version
				case (c.Op == store.OpCAS || c.Op == store.OpCompareAndDelete) && c.Version != cur.version:
					want.Err, want.Version = store.ErrVersionMismatch, cur.version
				case c.Op == store.OpDelete || c.Op == store.OpExpire || c.Op == store.OpCompareAndDelete:
					want.Version = cur.version
					delete(model, c.Key)
					typ := store.EventDelete
					if c.Op == store.OpExpire {
						typ = store.EventExpire
					}
					event = fmt.Sprintf("%v %s  %#x 0", typ, c.Key, store.Version(index, i))
				default:
					want.Version = store.Version(index, i)
					model[c.Key] = entry{kv{string(c.Value), want.Version}, c.ExpiresAt}
					event = fmt.Sprintf("Put %s %s %#x %d", c.Key, c.Value, want.Version, c.ExpiresAt)
				}
				got := res[i]
				if got.Err != want.Err || got.Version != want.Version {
					t.Fatalf("index %d command %d (%v %q v%#x): got %+v, want %+v", index, i, c.Op, c.Key, c.Version, got, want)
				}
				if event != "" {
					events = append(events, event)
				}
			}
		}
		keys := slices.Sorted(maps.Keys(model))
		var (
			bytes   int64
			entries []store.Entry
			expired []store.Command
			plain   = make(map[string]kv)
		)
		for _, k := range keys {
			e := model[k]
			plain[k] = e.kv
			bytes += store.EntrySize(len(k), len(e.value))
			entries = append(entries, store.Entry{Key: k, Value: []byte(e.value), Version: e.version, ExpiresAt: e.expiresAt})
			if e.expiresAt != 0 {
				bytes += store.ExpiryOverhead
				expired = append(expired, store.Command{Op: store.OpExpire, Key: k, Version: e.version})
			}
		}
		slices.SortStableFunc(expired, func(x, y store.Command) int {
			return cmp.Compare(model[x.Key].expiresAt, model[y.Key].expiresAt)
		})
		if !maps.Equal(dump(p), plain) || p.Len() != len(model) {
			t.Fatalf("final state differs from model")
		}
		if p.Bytes() != bytes || a.Used() != bytes {
			t.Fatalf("Bytes %d, Used %d, want %d", p.Bytes(), a.Used(), bytes)
		}
		listed, more, _ := p.List("", "", 1000, 0)
		if more || fmt.Sprint(listed) != fmt.Sprint(entries) {
			t.Fatalf("List differs from the model:\n%v\n%v", listed, entries)
		}
		if got := p.Expired(math.MaxInt64, 1000); !reflect.DeepEqual(got, expired) {
			t.Fatalf("Expired differs from the model:\n%v\n%v", got, expired)
		}
		if got := eventString(allEvents(t, p, 0)); got != strings.Join(events, "|") {
			t.Fatalf("history differs from the model")
		}
	})
}

// Readers run while the apply loop writes; with -race this checks the
// locking, and each reader checks it never sees a key's version go back.
func TestConcurrentReadsDuringApply(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		const keys = 16
		stop := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for r := range 4 {
			wg.Go(func() {
				last := make([]uint64, keys)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					k := (i + r) % keys
					v, ver, ok := p.Get(fmt.Sprint(k))
					if !ok {
						continue
					}
					if ver < last[k] || string(v) != fmt.Sprint(ver) {
						errs <- fmt.Errorf("key %d: version %#x after %#x, value %q", k, ver, last[k], v)
						return
					}
					last[k] = ver
					_ = p.Len()
					_ = p.Bytes()
				}
			})
		}
		for index := uint64(1); index <= 2000; index++ {
			cmds := make([]store.Command, 4)
			for i := range cmds {
				// The value is the version it will get, so readers can check both agree.
				cmds[i] = store.Command{Op: store.OpSet, Key: fmt.Sprint((int(index)*4 + i) % keys),
					Value: []byte(fmt.Sprint(store.Version(index, i)))}
			}
			p.ApplyBatch(index, cmds)
			if index%500 == 0 {
				// Restoring the partition's own snapshot swaps in new maps
				// with the same contents under the readers' feet.
				snap := p.Snapshot()
				var buf bytes.Buffer
				if _, err := snap.WriteTo(&buf); err != nil {
					t.Fatal(err)
				}
				snap.Release()
				if err := p.Restore(&buf); err != nil {
					t.Fatal(err)
				}
			}
		}
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// A listener hears the key of every change once it can be read, and "" after a Restore.
func TestPartitionListener(t *testing.T) {
	p := store.NewPartition(store.DefaultStorageOptions(), nil)
	var heard []string
	p.SetListener(func(key string) {
		if key != "" {
			if evs, _, err := p.Events(0, key, 10); err != nil || len(evs) == 0 {
				t.Errorf("the listener heard %q before Events returned it: %v", key, err)
			}
		}
		heard = append(heard, key)
	})
	p.ApplyBatch(1, []store.Command{{Op: store.OpSet, Key: "a", Value: []byte("1")}, {Op: store.OpSet, Key: "b"}})
	p.ApplyBatch(2, []store.Command{{Op: store.OpDelete, Key: "a"}, {Op: store.OpDelete, Key: "missing"}})
	if got := strings.Join(heard, ","); got != "a,b,a" {
		t.Fatalf("heard %q; want a,b,a (no change for a failed delete)", got)
	}
	var buf bytes.Buffer
	if _, err := p.Snapshot().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := p.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if heard[len(heard)-1] != "" {
		t.Fatalf("after a Restore the listener heard %q; want \"\"", heard[len(heard)-1])
	}
	p.SetListener(nil)
	p.ApplyBatch(3, []store.Command{{Op: store.OpSet, Key: "c"}})
	if len(heard) != 4 {
		t.Fatalf("a removed listener still heard %v", heard)
	}
}
