package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
)

// Every op's effect on the history: one event for each change, none for a
// command that changed nothing.
func TestEventsPerOp(t *testing.T) {
	const deadline = 1_000
	var (
		vK   = store.Version(1, 0) // "k" = "v", permanent
		vT   = store.Version(1, 1) // "t" = "tv", expires at deadline
		vNew = store.Version(2, 0) // the command under test
	)
	for _, tc := range []struct {
		name    string
		cmd     store.Command
		err     error
		version uint64 // Result.Version
		value   string // Result.Value
		want    []store.Event
	}{
		{"set", store.Command{Op: store.OpSet, Key: "k", Value: []byte("new")}, nil, vNew, "",
			[]store.Event{{Type: store.EventPut, Key: "k", Value: []byte("new"), Version: vNew}}},
		{"set with deadline", store.Command{Op: store.OpSet, Key: "n", ExpiresAt: 5}, nil, vNew, "",
			[]store.Event{{Type: store.EventPut, Key: "n", Version: vNew, ExpiresAt: 5}}},
		{"CAS", store.Command{Op: store.OpCAS, Key: "k", Value: []byte("x"), Version: vK}, nil, vNew, "",
			[]store.Event{{Type: store.EventPut, Key: "k", Value: []byte("x"), Version: vNew}}},
		{"CAS create", store.Command{Op: store.OpCAS, Key: "n", Value: []byte("x")}, nil, vNew, "",
			[]store.Event{{Type: store.EventPut, Key: "n", Value: []byte("x"), Version: vNew}}},
		{"failed CAS", store.Command{Op: store.OpCAS, Key: "k", Value: []byte("x"), Version: 99},
			store.ErrVersionMismatch, vK, "v", nil},
		{"delete", store.Command{Op: store.OpDelete, Key: "k"}, nil, vK, "",
			[]store.Event{{Type: store.EventDelete, Key: "k", Version: vNew}}},
		{"delete of missing", store.Command{Op: store.OpDelete, Key: "nope"}, store.ErrKeyNotFound, 0, "", nil},
		{"compare-and-delete", store.Command{Op: store.OpCompareAndDelete, Key: "t", Version: vT}, nil, vT, "",
			[]store.Event{{Type: store.EventDelete, Key: "t", Version: vNew}}},
		{"compare-and-delete, wrong version", store.Command{Op: store.OpCompareAndDelete, Key: "k", Version: 99},
			store.ErrVersionMismatch, vK, "v", nil},
		{"compare-and-delete of missing", store.Command{Op: store.OpCompareAndDelete, Key: "nope", Version: vK},
			store.ErrVersionMismatch, 0, "", nil},
		{"expire", store.Command{Op: store.OpExpire, Key: "t", Version: vT}, nil, vT, "",
			[]store.Event{{Type: store.EventExpire, Key: "t", Version: vNew}}},
		{"expire, rewritten", store.Command{Op: store.OpExpire, Key: "t", Version: vK},
			store.ErrVersionMismatch, vT, "", nil},
		{"expire of a key without deadline", store.Command{Op: store.OpExpire, Key: "k", Version: vK},
			store.ErrVersionMismatch, vK, "", nil},
		{"expire of missing", store.Command{Op: store.OpExpire, Key: "nope", Version: vK},
			store.ErrKeyNotFound, 0, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := store.NewPartition(store.StorageOptions{}, nil)
			apply(p, 1,
				store.Command{Op: store.OpSet, Key: "k", Value: []byte("v")},
				store.Command{Op: store.OpSet, Key: "t", Value: []byte("tv"), ExpiresAt: deadline})
			before := p.Position()
			before1 := stateOf(p, store.NewAccountant(0))
			r := apply(p, 2, tc.cmd)[0]
			if !errors.Is(r.Err, tc.err) || r.Version != tc.version || string(r.Value) != tc.value {
				t.Fatalf("result %+v, want err %v version %#x value %q", r, tc.err, tc.version, tc.value)
			}
			got := allEvents(t, p, before)
			if len(got) != len(tc.want) || (len(got) > 0 && !reflect.DeepEqual(normalizeEvents(got), tc.want)) {
				t.Fatalf("events %+v, want %+v", got, tc.want)
			}
			if tc.want == nil && !before1.equal(stateOf(p, store.NewAccountant(0))) && p.AppliedIndex() != 2 {
				t.Fatal("a command without an event changed the state")
			}
			if p.AppliedIndex() != 2 || p.Position() != 2<<16|0xFFFF {
				t.Fatalf("applied %d, position %#x", p.AppliedIndex(), p.Position())
			}
		})
	}
}

// normalizeEvents maps empty values to nil, as the table writes them.
func normalizeEvents(events []store.Event) []store.Event {
	out := make([]store.Event, len(events))
	for i, e := range events {
		if len(e.Value) == 0 {
			e.Value = nil
		}
		out[i] = e
	}
	return out
}

// A batch's events come in command order with the batch's versions, and
// the history keeps them across batches.
func TestEventsAcrossBatches(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	if p.Position() != 0xFFFF || p.HistoryStart() != 0 {
		t.Fatalf("empty partition: position %#x, history start %#x", p.Position(), p.HistoryStart())
	}
	apply(p, 3,
		store.Command{Op: store.OpSet, Key: "a", Value: []byte("1")},
		store.Command{Op: store.OpSet, Key: "a", Value: []byte("2")},
		store.Command{Op: store.OpDelete, Key: "missing"},
		store.Command{Op: store.OpDelete, Key: "a"})
	p.MarkApplied(4)
	apply(p, 5, store.Command{Op: store.OpSet, Key: "b", ExpiresAt: 9})
	want := "Put a 1 0x30001 0|Put a 2 0x30002 0|Delete a  0x30004 0|Put b  0x50001 9"
	if got := eventString(allEvents(t, p, 0)); got != want {
		t.Fatalf("events\n %s\nwant\n %s", got, want)
	}
	if got := eventString(allEvents(t, p, store.Version(3, 1))); got != want[strings.Index(want, "Delete"):] {
		t.Fatalf("events after the second put: %s", got)
	}
	if got, next, err := p.Events(p.Position(), "", 0); len(got) != 0 || next != p.Position() || err != nil {
		t.Fatalf("Events(Position()) = %v, %#x, %v", got, next, err)
	}
}

func eventString(events []store.Event) string {
	s := make([]string, len(events))
	for i, e := range events {
		s[i] = fmt.Sprintf("%v %s %s %#x %d", e.Type, e.Key, e.Value, e.Version, e.ExpiresAt)
	}
	return strings.Join(s, "|")
}

// The history drops its oldest events beyond HistoryEvents or
// HistoryBytes, and Events reports a position before the oldest kept as
// ErrCompacted.
func TestHistoryEviction(t *testing.T) {
	t.Run("by count", func(t *testing.T) {
		p := store.NewPartition(store.StorageOptions{HistoryEvents: 3}, nil)
		for i := uint64(1); i <= 5; i++ {
			set(t, p, i, fmt.Sprint("k", i), "v")
		}
		if got := p.HistoryStart(); got != store.Version(2, 0) {
			t.Fatalf("HistoryStart = %#x, want the version of the second event", got)
		}
		for _, after := range []uint64{0, store.Version(1, 0), store.Version(2, 0) - 1} {
			if _, _, err := p.Events(after, "", 0); !errors.Is(err, store.ErrCompacted) {
				t.Fatalf("Events(%#x) = %v, want ErrCompacted", after, err)
			}
		}
		got := allEvents(t, p, store.Version(2, 0))
		if len(got) != 3 || got[0].Key != "k3" || got[2].Key != "k5" {
			t.Fatalf("kept %s", eventString(got))
		}
		// A position at or after the start works whatever it matched.
		if got := allEvents(t, p, store.Version(4, 0)); len(got) != 1 || got[0].Key != "k5" {
			t.Fatalf("after k4: %s", eventString(got))
		}
	})
	t.Run("by bytes", func(t *testing.T) {
		p := store.NewPartition(store.StorageOptions{HistoryBytes: 12}, nil)
		set(t, p, 1, "a", "12345") // 6 bytes
		set(t, p, 2, "b", "12345") // 12: both fit
		if got := allEvents(t, p, 0); len(got) != 2 {
			t.Fatalf("kept %s", eventString(got))
		}
		apply(p, 3, store.Command{Op: store.OpDelete, Key: "a"}) // 1 byte: 13 > 12 evicts the first
		if got := allEvents(t, p, p.HistoryStart()); eventString(got) != "Put b 12345 0x20001 0|Delete a  0x30001 0" {
			t.Fatalf("kept %s", eventString(got))
		}
		if p.HistoryStart() != store.Version(1, 0) {
			t.Fatalf("HistoryStart %#x", p.HistoryStart())
		}
		// An event larger than the bound on its own is still kept, alone.
		set(t, p, 4, "big", strings.Repeat("x", 100))
		if got := allEvents(t, p, p.HistoryStart()); len(got) != 1 || got[0].Key != "big" {
			t.Fatalf("kept %s", eventString(got))
		}
		if _, _, err := p.Events(store.Version(3, 0)-1, "", 0); !errors.Is(err, store.ErrCompacted) {
			t.Fatalf("Events before the big one: %v", err)
		}
	})
}

// Events filters by prefix, stops at max, and its next position lets a
// watcher continue with nothing missed or repeated.
func TestEventsPrefixAndNext(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	apply(p, 1,
		store.Command{Op: store.OpSet, Key: "a/1"},
		store.Command{Op: store.OpSet, Key: "b/1"},
		store.Command{Op: store.OpSet, Key: "a/2"},
		store.Command{Op: store.OpSet, Key: "b/2"},
		store.Command{Op: store.OpDelete, Key: "a/1"})
	p.MarkApplied(2)

	events, next, err := p.Events(0, "a/", 2)
	if err != nil || eventString(events) != "Put a/1  0x10001 0|Put a/2  0x10003 0" || next != store.Version(1, 2) {
		t.Fatalf("first page: %s, next %#x, %v", eventString(events), next, err)
	}
	events, next, err = p.Events(next, "a/", 2)
	if err != nil || eventString(events) != "Delete a/1  0x10005 0" || next != p.Position() {
		t.Fatalf("second page: %s, next %#x, %v", eventString(events), next, err)
	}
	events, next2, err := p.Events(next, "a/", 2)
	if err != nil || len(events) != 0 || next2 != next {
		t.Fatalf("caught up: %s, next %#x, %v", eventString(events), next2, err)
	}
	// Nothing matches: next still moves to the position, past b's events.
	if events, next, err := p.Events(0, "c", 0); len(events) != 0 || next != p.Position() || err != nil {
		t.Fatalf("no match: %v, %#x, %v", events, next, err)
	}
	// A position ahead of this replica (a watcher that came from another)
	// is kept, not moved back.
	ahead := p.Position() + 5<<16
	if events, next, err := p.Events(ahead, "", 0); len(events) != 0 || next != ahead || err != nil {
		t.Fatalf("ahead: %v, %#x, %v", events, next, err)
	}
}

// Event values share the partition's memory; an event of a key's current
// value is the same bytes as the key's record.
func TestEventsShareRecords(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	set(t, p, 1, "k", "value")
	e := allEvents(t, p, 0)[0]
	entries, _, _ := p.List("", "", 1, 0)
	if !bytes.Equal(e.Value, entries[0].Value) || &e.Value[0] == &entries[0].Value[0] {
		t.Fatal("List must copy, Events shares")
	}
}

func TestChanged(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	isClosed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	ch := p.Changed()
	if isClosed(ch) || p.Changed() != ch {
		t.Fatal("a fresh Changed channel is closed, or a second call made another")
	}
	p.MarkApplied(1)
	apply(p, 2, store.Command{Op: store.OpDelete, Key: "missing"},
		store.Command{Op: store.OpCAS, Key: "k", Version: 5})
	if isClosed(ch) {
		t.Fatal("closed by applies that changed nothing")
	}
	set(t, p, 3, "k", "v")
	if !isClosed(ch) {
		t.Fatal("not closed by a write")
	}
	ch2 := p.Changed()
	if ch2 == ch || isClosed(ch2) {
		t.Fatal("no fresh channel after a change")
	}
	data := snapshotBytes(t, p)
	if err := p.Restore(bytes.NewReader(data)); err != nil || !isClosed(ch2) {
		t.Fatalf("Restore: %v, closed %v", err, isClosed(ch2))
	}
	ch3 := p.Changed()
	p.Close()
	if !isClosed(ch3) || !isClosed(p.Changed()) {
		t.Fatal("Close left a waiter waiting")
	}
	if _, _, err := p.Events(0, "", 0); !errors.Is(err, store.ErrPartitionClosed) {
		t.Fatalf("Events after Close: %v", err)
	}
}

// A watcher following the documented loop (Changed, then Events, then wait)
// sees every event exactly once while the apply loop runs.
func TestWatcherSeesEveryEventOnce(t *testing.T) {
	p := store.NewPartition(store.StorageOptions{}, nil)
	const batches = 300
	done := make(chan []store.Event)
	go func() {
		var seen []store.Event
		pos := uint64(0) // the history holds every change from the start
		for len(seen) < batches*2 {
			changed := p.Changed()
			events, next, err := p.Events(pos, "w/", 7)
			if err != nil {
				panic(err)
			}
			seen = append(seen, events...)
			pos = next
			if len(events) == 0 {
				<-changed
			}
		}
		done <- seen
	}()
	for i := uint64(1); i <= batches; i++ {
		apply(p, i,
			store.Command{Op: store.OpSet, Key: fmt.Sprint("w/", i)},
			store.Command{Op: store.OpSet, Key: fmt.Sprint("other/", i)},
			store.Command{Op: store.OpDelete, Key: fmt.Sprint("w/", i)})
	}
	var seen []store.Event
	select {
	case seen = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the watcher missed a wake-up")
	}
	for i, e := range seen {
		if want := store.Version(uint64(i/2+1), i%2*2); e.Version != want || !strings.HasPrefix(e.Key, "w/") {
			t.Fatalf("event %d: %+v, want version %#x", i, e, want)
		}
	}
}
