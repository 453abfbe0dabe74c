package store_test

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/feellmoose/gridkv/store"
)

func keysOf(entries []store.Entry) string {
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	return strings.Join(keys, ",")
}

func TestList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		apply(p, 1,
			store.Command{Op: store.OpSet, Key: "b", Value: []byte("B")},
			store.Command{Op: store.OpSet, Key: "a/3", Value: []byte("3"), ExpiresAt: 1000},
			store.Command{Op: store.OpSet, Key: "a", Value: []byte("A")},
			store.Command{Op: store.OpSet, Key: "a/2", Value: []byte("2"), ExpiresAt: 100}, // expired at 200
			store.Command{Op: store.OpSet, Key: "a/1", Value: []byte("1")},
			store.Command{Op: store.OpSet, Key: "b/1"},
			store.Command{Op: store.OpSet, Key: "\xff\x00"},
			store.Command{Op: store.OpSet, Key: "a/0"},
			store.Command{Op: store.OpDelete, Key: "a/0"})
		for _, tc := range []struct {
			prefix, startAfter string
			limit              int
			now                int64
			want               string
			more               bool
		}{
			{"", "", 100, 0, "a,a/1,a/2,a/3,b,b/1,\xff\x00", false},
			{"", "", 100, 200, "a,a/1,a/3,b,b/1,\xff\x00", false},
			{"", "", 100, 1000, "a,a/1,b,b/1,\xff\x00", false},
			{"a/", "", 100, 200, "a/1,a/3", false},
			{"a/", "", 1, 200, "a/1", true},
			{"a/", "a/1", 1, 200, "a/3", false}, // a/2 skipped as expired, no more after a/3
			{"a/", "a/1", 1, 0, "a/2", true},
			{"a/", "a/", 5, 0, "a/1,a/2,a/3", false},
			{"a", "a", 2, 0, "a/1,a/2", true},
			{"", "b", 100, 0, "b/1,\xff\x00", false},
			{"", "a/10", 2, 0, "a/2,a/3", true},
			{"a/", "b", 100, 0, "", false},
			{"c", "", 100, 0, "", false},
			{"\xff", "", 100, 0, "\xff\x00", false},
			{"", "", 7, 0, "a,a/1,a/2,a/3,b,b/1,\xff\x00", false},
			{"", "", 6, 0, "a,a/1,a/2,a/3,b,b/1", true},
			{"", "", 0, 0, "", true},
			{"c", "", 0, 0, "", false},
			{"", strings.Repeat("a", 2*store.MaxKeySize), 2, 0, "b,b/1", true},
		} {
			entries, more, position := p.List(tc.prefix, tc.startAfter, tc.limit, tc.now)
			if got := keysOf(entries); got != tc.want || more != tc.more || position != p.Position() {
				t.Errorf("List(%q, %q, %d, %d) = %q, %v, %#x; want %q, %v, %#x", tc.prefix, tc.startAfter,
					tc.limit, tc.now, got, more, position, tc.want, tc.more, p.Position())
			}
		}

		entries, _, _ := p.List("a/", "", 10, 0)
		want := []store.Entry{
			{Key: "a/1", Value: []byte("1"), Version: store.Version(1, 4)},
			{Key: "a/2", Value: []byte("2"), Version: store.Version(1, 3), ExpiresAt: 100},
			{Key: "a/3", Value: []byte("3"), Version: store.Version(1, 1), ExpiresAt: 1000},
		}
		if !reflect.DeepEqual(entries, want) {
			t.Fatalf("entries %+v", entries)
		}
		// Values are copies, and appending to one does not run into the next.
		entries[0].Value[0] = 'X'
		_ = append(entries[0].Value, 'Y')
		if again, _, _ := p.List("a/", "", 10, 0); !reflect.DeepEqual(again, want) {
			t.Fatalf("List shares its values: %+v", again)
		}
		if e, _, _ := p.List("b/", "", 1, 0); e[0].Value == nil {
			t.Fatal("an empty value listed as nil")
		}
	})
}

// A listing holds exactly the changes up to the position it reports, with
// the apply loop running: every key of an index up to position is in it
// and none of a later index.
func TestListConsistentWithPosition(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	const batches = 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 1)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			entries, more, position := p.List("k", "", math.MaxInt, 0)
			applied := position >> 16
			if more || uint64(len(entries)) != applied {
				errs <- fmt.Errorf("position %#x (index %d) with %d keys", position, applied, len(entries))
				return
			}
		}
	})
	for i := uint64(1); i <= batches; i++ {
		apply(p, i, store.Command{Op: store.OpSet, Key: fmt.Sprintf("k%06d", i)})
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func TestGetEntry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		apply(p, 1,
			store.Command{Op: store.OpSet, Key: "ttl", Value: []byte("v"), ExpiresAt: 100},
			store.Command{Op: store.OpSet, Key: "forever", Value: []byte("w")})
		e, ok := p.GetEntry("ttl", 99)
		if want := (store.Entry{Key: "ttl", Value: []byte("v"), Version: store.Version(1, 0), ExpiresAt: 100}); !ok || !reflect.DeepEqual(e, want) {
			t.Fatalf("GetEntry before the deadline = %+v, %v", e, ok)
		}
		e.Value[0] = 'X'
		if e, _ := p.GetEntry("ttl", 0); string(e.Value) != "v" {
			t.Fatal("GetEntry shares its value")
		}
		for _, now := range []int64{100, 101, math.MaxInt64} {
			if e, ok := p.GetEntry("ttl", now); ok {
				t.Fatalf("GetEntry at %d = %+v, want absent", now, e)
			}
		}
		if v, _, ok := p.Get("ttl"); !ok || string(v) != "v" {
			t.Fatal("Get hides an expired key; only GetEntry should")
		}
		if e, ok := p.GetEntry("forever", math.MaxInt64); !ok || e.ExpiresAt != 0 || string(e.Value) != "w" {
			t.Fatalf("permanent key = %+v, %v", e, ok)
		}
		if _, ok := p.GetEntry("absent", 0); ok {
			t.Fatal("absent key found")
		}
		// A write without a deadline makes the key permanent again.
		set(t, p, 2, "ttl", "again")
		if e, ok := p.GetEntry("ttl", math.MaxInt64); !ok || e.ExpiresAt != 0 {
			t.Fatalf("rewritten key = %+v, %v", e, ok)
		}
	})
}

func TestExpired(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p := store.NewPartition(opts, nil)
		apply(p, 1,
			store.Command{Op: store.OpSet, Key: "c", ExpiresAt: 30},
			store.Command{Op: store.OpSet, Key: "a", ExpiresAt: 10},
			store.Command{Op: store.OpSet, Key: "b2", ExpiresAt: 20},
			store.Command{Op: store.OpSet, Key: "b1", ExpiresAt: 20},
			store.Command{Op: store.OpSet, Key: "forever"})
		expire := func(key string, pos int) store.Command {
			return store.Command{Op: store.OpExpire, Key: key, Version: store.Version(1, pos)}
		}
		for _, tc := range []struct {
			now  int64
			max  int
			want []store.Command
		}{
			{9, 10, nil},
			{10, 10, []store.Command{expire("a", 1)}},
			{25, 10, []store.Command{expire("a", 1), expire("b1", 3), expire("b2", 2)}},
			{25, 2, []store.Command{expire("a", 1), expire("b1", 3)}},
			{math.MaxInt64, 10, []store.Command{expire("a", 1), expire("b1", 3), expire("b2", 2), expire("c", 0)}},
			{math.MaxInt64, 0, nil},
		} {
			if got := p.Expired(tc.now, tc.max); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Expired(%d, %d) = %+v, want %+v", tc.now, tc.max, got, tc.want)
			}
		}

		due := p.Expired(25, 10)
		// Rewrites: a becomes permanent, b1 gets a later deadline, c is
		// deleted. Each leaves the deadline index.
		apply(p, 2,
			store.Command{Op: store.OpSet, Key: "a"},
			store.Command{Op: store.OpCAS, Key: "b1", Version: store.Version(1, 3), ExpiresAt: 40},
			store.Command{Op: store.OpDelete, Key: "c"})
		want := []store.Command{expire("b2", 2), {Op: store.OpExpire, Key: "b1", Version: store.Version(2, 1)}}
		if got := p.Expired(math.MaxInt64, 10); !reflect.DeepEqual(got, want) {
			t.Fatalf("after rewrites Expired = %+v", got)
		}

		// The leader proposes what it found due before the rewrites: only
		// b2's still holds.
		before := p.Position()
		results := p.ApplyBatch(3, due)
		for i, r := range results {
			wantErr := error(store.ErrVersionMismatch)
			if due[i].Key == "b2" {
				wantErr = nil
			}
			if !errors.Is(r.Err, wantErr) {
				t.Errorf("expire %q: %v, want %v", due[i].Key, r.Err, wantErr)
			}
		}
		if got := eventString(allEvents(t, p, before)); got != "Expire b2  0x30003 0" {
			t.Fatalf("events %s", got)
		}
		if _, _, ok := p.Get("b2"); ok {
			t.Fatal("expired key still there")
		}
		if got := p.Expired(math.MaxInt64, 10); len(got) != 1 || got[0].Key != "b1" {
			t.Fatalf("Expired after expiry = %+v", got)
		}
	})
}

// A key with a deadline is accounted ExpiryOverhead more, for as long as it
// has one.
func TestAccountingWithDeadlines(t *testing.T) {
	a := store.NewAccountant(0)
	p := store.NewPartition(store.StorageOptions{}, a)
	check := func(step string, want int64) {
		t.Helper()
		if p.Bytes() != want || a.Used() != want {
			t.Fatalf("%s: Bytes %d, Used %d, want %d", step, p.Bytes(), a.Used(), want)
		}
	}
	apply(p, 1, store.Command{Op: store.OpSet, Key: "k", Value: []byte("abc"), ExpiresAt: 5})
	check("set with deadline", store.EntrySize(1, 3)+store.ExpiryOverhead)
	apply(p, 2, store.Command{Op: store.OpSet, Key: "k", Value: []byte("abc")})
	check("rewrite without", store.EntrySize(1, 3))
	apply(p, 3, store.Command{Op: store.OpCAS, Key: "k", Value: []byte("ab"), Version: store.Version(2, 0), ExpiresAt: 9})
	check("CAS with deadline", store.EntrySize(1, 2)+store.ExpiryOverhead)
	apply(p, 4, store.Command{Op: store.OpExpire, Key: "k", Version: store.Version(3, 0)})
	check("expire", 0)
	apply(p, 5, store.Command{Op: store.OpSet, Key: "k", ExpiresAt: 1},
		store.Command{Op: store.OpCompareAndDelete, Key: "k", Version: store.Version(5, 0)})
	check("compare-and-delete", 0)
}
