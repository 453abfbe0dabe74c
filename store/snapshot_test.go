package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/store/storepb"
)

// filled returns a partition with n keys, some with empty values, applied
// up to index n+1, and its accountant.
func filled(t testing.TB, opts store.StorageOptions, n int) (*store.Partition, *store.Accountant) {
	a := store.NewAccountant(0)
	p := store.NewPartition(opts, a)
	for i := range n {
		value := fmt.Sprint("value-", i)
		if i%10 == 0 {
			value = ""
		}
		set(t, p, uint64(i+1), fmt.Sprint("key-", i), value)
	}
	p.MarkApplied(uint64(n + 1))
	return p, a
}

func snapshotBytes(t testing.TB, p *store.Partition) []byte {
	t.Helper()
	s := p.Snapshot()
	defer s.Release()
	var buf bytes.Buffer
	n, err := s.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d", n, err, buf.Len())
	}
	return buf.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	for _, from := range backends {
		for _, to := range backends {
			t.Run(from.name+"->"+to.name, func(t *testing.T) {
				src, srcAcct := filled(t, from.opts, 500)
				data := snapshotBytes(t, src)

				a := store.NewAccountant(0)
				dst := store.NewPartition(to.opts, a)
				set(t, dst, 1, "stale", "will be replaced")
				if err := dst.Restore(bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
				if got, want := stateOf(dst, a), stateOf(src, srcAcct); !got.equal(want) {
					t.Fatalf("restored state differs: applied %d/%d, len %d/%d, bytes %d/%d, used %d/%d",
						got.applied, want.applied, got.length, want.length, got.bytes, want.bytes, got.used, want.used)
				}
				if _, _, ok := dst.Get("stale"); ok {
					t.Fatal("key from before Restore survived")
				}
				// The restored partition keeps working.
				set(t, dst, 600, "after", "restore")
				if dst.Len() != 501 {
					t.Fatalf("Len after restore and set = %d", dst.Len())
				}
			})
		}
	}
}

func TestSnapshotEmptyPartition(t *testing.T) {
	src := store.NewPartition(store.StorageOptions{}, nil)
	data := snapshotBytes(t, src)
	dst, _ := filled(t, store.StorageOptions{}, 10)
	if err := dst.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if dst.Len() != 0 || dst.Bytes() != 0 || dst.AppliedIndex() != 0 {
		t.Fatalf("restore of empty snapshot: len %d bytes %d applied %d", dst.Len(), dst.Bytes(), dst.AppliedIndex())
	}
}

// Later applies must not change what an earlier snapshot writes.
func TestSnapshotIsolatedFromLaterApplies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, opts store.StorageOptions) {
		p, a := filled(t, opts, 100)
		want := stateOf(p, a)
		s := p.Snapshot()
		if s.Index() != 101 || s.Len() != 100 {
			t.Fatalf("snapshot index %d len %d", s.Index(), s.Len())
		}
		p.ApplyBatch(200, []store.Command{
			{Op: store.OpSet, Key: "key-1", Value: []byte("overwritten")},
			{Op: store.OpDelete, Key: "key-2"},
			{Op: store.OpSet, Key: "brand-new", Value: []byte("x")},
			{Op: store.OpCAS, Key: "key-3", Value: []byte("swapped"), Version: store.Version(4, 0)},
		})
		var buf bytes.Buffer
		if _, err := s.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		s.Release()
		if _, err := s.WriteTo(io.Discard); err == nil {
			t.Fatal("WriteTo after Release succeeded")
		}
		a2 := store.NewAccountant(0)
		restored := store.NewPartition(opts, a2)
		if err := restored.Restore(&buf); err != nil {
			t.Fatal(err)
		}
		if got := stateOf(restored, a2); !got.equal(want) {
			t.Fatal("snapshot reflects applies made after it was taken")
		}
	})
}

// The stream is protodelim-framed storepb messages, both ways.
func TestSnapshotMatchesGenerated(t *testing.T) {
	p, _ := filled(t, store.StorageOptions{HistoryEvents: 30}, 50)
	apply(p, 60,
		store.Command{Op: store.OpSet, Key: "ttl", Value: []byte("v"), ExpiresAt: 1 << 62},
		store.Command{Op: store.OpDelete, Key: "key-3"},
		store.Command{Op: store.OpExpire, Key: "ttl", Version: store.Version(60, 0)},
		store.Command{Op: store.OpSet, Key: "ttl2", ExpiresAt: 7})
	data := snapshotBytes(t, p)

	r := bytes.NewReader(data)
	var hdr storepb.SnapshotHeader
	if err := protodelim.UnmarshalFrom(r, &hdr); err != nil {
		t.Fatal(err)
	}
	if hdr.FormatVersion != store.SnapshotFormatVersion || hdr.AppliedIndex != 60 || hdr.EntryCount != 50 ||
		hdr.EventCount != 30 || hdr.HistoryFloor != p.HistoryStart() || hdr.HistoryFloor == 0 {
		t.Fatalf("header %v", &hdr)
	}
	// The hand encoder must produce what proto.Marshal produces.
	checkEncoded := func(m proto.Message) {
		t.Helper()
		want, _ := proto.Marshal(m)
		if !bytes.Contains(data, want) {
			t.Fatalf("%v not encoded as proto.Marshal would", m)
		}
	}
	checkEncoded(&hdr)
	var entries []store.Entry
	for range hdr.EntryCount {
		var e storepb.SnapshotEntry
		if err := protodelim.UnmarshalFrom(r, &e); err != nil {
			t.Fatal(err)
		}
		checkEncoded(&e)
		entries = append(entries, store.Entry{Key: string(e.Key), Value: append([]byte{}, e.Value...), Version: e.Version, ExpiresAt: e.ExpiresAt})
	}
	var events []store.Event
	for range hdr.EventCount {
		var e storepb.SnapshotEvent
		if err := protodelim.UnmarshalFrom(r, &e); err != nil {
			t.Fatal(err)
		}
		checkEncoded(&e)
		events = append(events, store.Event{Type: store.EventType(e.Type), Key: string(e.Key), Value: e.Value, Version: e.Version, ExpiresAt: e.ExpiresAt})
	}
	listed, _, _ := p.List("", "", 100, 0)
	if r.Len() != 0 || fmt.Sprint(entries) != fmt.Sprint(listed) { // in key order
		t.Fatalf("generated decoding differs (%d bytes left):\n%v\n%v", r.Len(), entries, listed)
	}
	if eventString(events) != eventString(allEvents(t, p, p.HistoryStart())) {
		t.Fatalf("events differ: %s", eventString(events))
	}

	// And Restore reads a stream written by the generated code.
	var buf bytes.Buffer
	protodelim.MarshalTo(&buf, &storepb.SnapshotHeader{FormatVersion: 2, AppliedIndex: 7, EntryCount: 2, EventCount: 2, HistoryFloor: store.Version(3, 0)})
	protodelim.MarshalTo(&buf, &storepb.SnapshotEntry{Key: []byte("a"), Value: []byte("1"), Version: store.Version(3, 0)})
	protodelim.MarshalTo(&buf, &storepb.SnapshotEntry{Key: []byte("b"), Version: store.Version(7, 2), ExpiresAt: 99})
	protodelim.MarshalTo(&buf, &storepb.SnapshotEvent{Type: storepb.EventType_EVENT_TYPE_DELETE, Key: []byte("c"), Version: store.Version(5, 0)})
	protodelim.MarshalTo(&buf, &storepb.SnapshotEvent{Type: storepb.EventType_EVENT_TYPE_PUT, Key: []byte("b"), Version: store.Version(7, 2), ExpiresAt: 99})
	q := store.NewPartition(store.StorageOptions{}, nil)
	if err := q.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	want := map[string]kv{"a": {"1", store.Version(3, 0)}, "b": {"", store.Version(7, 2)}}
	if !maps.Equal(dump(q), want) || q.AppliedIndex() != 7 || q.HistoryStart() != store.Version(3, 0) {
		t.Fatalf("restored %v at %d, history from %#x", dump(q), q.AppliedIndex(), q.HistoryStart())
	}
	if got := eventString(allEvents(t, q, q.HistoryStart())); got != "Delete c  0x50001 0|Put b  0x70003 99" {
		t.Fatalf("restored events %s", got)
	}
	if e, ok := q.GetEntry("b", 0); !ok || e.ExpiresAt != 99 {
		t.Fatalf("restored deadline %+v", e)
	}
}

// stream builds a snapshot stream from generated messages: a header, then
// entries and events.
func stream(hdr *storepb.SnapshotHeader, records ...proto.Message) []byte {
	var buf bytes.Buffer
	protodelim.MarshalTo(&buf, hdr)
	for _, r := range records {
		protodelim.MarshalTo(&buf, r)
	}
	return buf.Bytes()
}

// errReader fails after its data.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestRestoreRejectsBadInput(t *testing.T) {
	src, _ := filled(t, store.StorageOptions{}, 20)
	valid := snapshotBytes(t, src)
	hdr := func(index, count uint64) *storepb.SnapshotHeader {
		return &storepb.SnapshotHeader{FormatVersion: 1, AppliedIndex: index, EntryCount: count}
	}
	hdr2 := func(index, count, events, floor uint64) *storepb.SnapshotHeader {
		return &storepb.SnapshotHeader{FormatVersion: 2, AppliedIndex: index, EntryCount: count, EventCount: events, HistoryFloor: floor}
	}
	entry := func(key string, value []byte, version uint64) *storepb.SnapshotEntry {
		return &storepb.SnapshotEntry{Key: []byte(key), Value: value, Version: version}
	}
	event := func(typ storepb.EventType, key string, version uint64) *storepb.SnapshotEvent {
		return &storepb.SnapshotEvent{Type: typ, Key: []byte(key), Version: version}
	}
	put, del := storepb.EventType_EVENT_TYPE_PUT, storepb.EventType_EVENT_TYPE_DELETE
	v := store.Version(5, 0)
	withValue := event(del, "a", v)
	withValue.Value = []byte("x")
	withDeadline := event(storepb.EventType_EVENT_TYPE_EXPIRE, "a", v)
	withDeadline.ExpiresAt = 3
	negativePut := event(put, "a", v)
	negativePut.ExpiresAt = -3
	v2valid := stream(hdr2(5, 1, 2, store.Version(3, 0)), entry("a", nil, v), event(del, "b", store.Version(4, 0)), event(put, "a", v))

	cases := map[string][]byte{
		"empty":           nil,
		"trailing data":   append(bytes.Clone(valid), 0),
		"garbage":         bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 100),
		"format 0":        stream(&storepb.SnapshotHeader{AppliedIndex: 5}),
		"format 3":        stream(&storepb.SnapshotHeader{FormatVersion: 3, AppliedIndex: 5}),
		"too few entries": stream(hdr(5, 2), entry("a", nil, v)),
		"too many":        stream(hdr(5, 1), entry("a", nil, v), entry("b", nil, v)),
		"duplicate key":   stream(hdr(5, 2), entry("a", nil, v), entry("a", nil, v+1)),
		"empty key":       stream(hdr(5, 1), entry("", nil, v)),
		"key too long":    stream(hdr(5, 1), entry(string(make([]byte, store.MaxKeySize+1)), nil, v)),
		"value too long":  stream(hdr(5, 1), entry("a", make([]byte, store.MaxValueSize+1), v)),
		"version 0":       stream(hdr(5, 1), entry("a", nil, 0)),
		"version pos 0":   stream(hdr(5, 1), entry("a", nil, 5<<16)),
		"future version":  stream(hdr(5, 1), entry("a", nil, store.Version(6, 0))),
		"huge record":     {0xff, 0xff, 0xff, 0xff, 0x0f},
		"varint overflow": bytes.Repeat([]byte{0xff}, 11),
		"huge count":      stream(hdr(5, 1<<62)),
		"negative deadline": stream(hdr2(5, 1, 0, 0),
			&storepb.SnapshotEntry{Key: []byte("a"), Version: v, ExpiresAt: -1}),
		"floor after position":  stream(hdr2(5, 0, 0, store.Version(6, 0))),
		"too few events":        stream(hdr2(5, 0, 2, 0), event(put, "a", v)),
		"too many events":       stream(hdr2(5, 0, 1, 0), event(put, "a", v), event(put, "b", v+1)),
		"events out of order":   stream(hdr2(5, 0, 2, 0), event(put, "a", v+1), event(put, "b", v)),
		"same version twice":    stream(hdr2(5, 0, 2, 0), event(put, "a", v), event(del, "a", v)),
		"event at the floor":    stream(hdr2(5, 0, 1, v), event(put, "a", v)),
		"event type 0":          stream(hdr2(5, 0, 1, 0), event(0, "a", v)),
		"event type 4":          stream(hdr2(5, 0, 1, 0), event(4, "a", v)),
		"event type 257":        stream(hdr2(5, 0, 1, 0), event(257, "a", v)),
		"event empty key":       stream(hdr2(5, 0, 1, 0), event(put, "", v)),
		"event future version":  stream(hdr2(5, 0, 1, 0), event(put, "a", store.Version(6, 0))),
		"event version pos 0":   stream(hdr2(5, 0, 1, 0), event(put, "a", 5<<16)),
		"delete with a value":   stream(hdr2(5, 0, 1, 0), withValue),
		"expire with deadline":  stream(hdr2(5, 0, 1, 0), withDeadline),
		"negative put deadline": stream(hdr2(5, 0, 1, 0), negativePut),
		"v2 trailing data":      append(bytes.Clone(v2valid), 0),
	}
	if err := store.NewPartition(store.StorageOptions{}, nil).Restore(bytes.NewReader(v2valid)); err != nil {
		t.Fatalf("the valid v2 stream the cases derive from: %v", err)
	}
	for i := range len(v2valid) {
		cases[fmt.Sprint("v2 truncated at ", i)] = v2valid[:i]
	}
	for i := range len(valid) {
		cases[fmt.Sprint("truncated at ", i)] = valid[:i]
	}

	for name, data := range cases {
		a := store.NewAccountant(0)
		p := store.NewPartition(store.StorageOptions{ShardCount: 8}, a)
		set(t, p, 3, "old", "state")
		before := stateOf(p, a)
		err := p.Restore(bytes.NewReader(data))
		if !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("%s: Restore = %v, want ErrCorrupt", name, err)
		}
		if !stateOf(p, a).equal(before) {
			t.Errorf("%s: failed Restore changed the state", name)
		}
	}

	// A reader's own error is returned, not reported as corruption.
	ioErr := errors.New("disk on fire")
	p := store.NewPartition(store.StorageOptions{}, nil)
	err := p.Restore(&errReader{data: valid[:len(valid)/2], err: ioErr})
	if !errors.Is(err, ioErr) || errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Restore with failing reader = %v", err)
	}

	p.Close()
	if err := p.Restore(bytes.NewReader(valid)); !errors.Is(err, store.ErrPartitionClosed) {
		t.Fatalf("Restore after Close = %v", err)
	}
}

// failWriter accepts limit bytes, then fails.
type failWriter struct{ limit int }

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.limit {
		n := w.limit
		w.limit = 0
		return n, io.ErrShortWrite
	}
	w.limit -= len(p)
	return len(p), nil
}

func TestSnapshotWriteError(t *testing.T) {
	p, _ := filled(t, store.StorageOptions{}, 5000)
	s := p.Snapshot()
	defer s.Release()
	n, err := s.WriteTo(&failWriter{limit: 100_000})
	if !errors.Is(err, io.ErrShortWrite) || n != 100_000 {
		t.Fatalf("WriteTo = %d, %v", n, err)
	}
}

// A partition restored from a snapshot has the same keys, deadlines,
// ordered index, history and accounting as the one it was taken from.
func TestSnapshotCarriesHistoryAndDeadlines(t *testing.T) {
	for _, to := range backends {
		t.Run(to.name, func(t *testing.T) {
			src, srcAcct := filled(t, store.StorageOptions{HistoryEvents: 20}, 30)
			apply(src, 40,
				store.Command{Op: store.OpSet, Key: "ttl-1", Value: []byte("a"), ExpiresAt: 500},
				store.Command{Op: store.OpSet, Key: "ttl-2", Value: []byte("b"), ExpiresAt: 100},
				store.Command{Op: store.OpCAS, Key: "key-1", Value: []byte("c"), Version: store.Version(2, 0), ExpiresAt: 300},
				store.Command{Op: store.OpDelete, Key: "key-2"},
				store.Command{Op: store.OpCompareAndDelete, Key: "key-3", Version: store.Version(4, 0)})
			apply(src, 41, store.Command{Op: store.OpExpire, Key: "ttl-2", Version: store.Version(40, 1)},
				store.Command{Op: store.OpSet, Key: "key-1", Value: []byte("d"), ExpiresAt: 200})
			want := stateOf(src, srcAcct)
			if src.HistoryStart() == 0 {
				t.Fatal("the test wants a history that has evicted")
			}

			a := store.NewAccountant(0)
			opts := to.opts
			opts.HistoryEvents = 20 // else the next write evicts in src only
			dst := store.NewPartition(opts, a)
			set(t, dst, 1, "stale", "x")
			if err := dst.Restore(bytes.NewReader(snapshotBytes(t, src))); err != nil {
				t.Fatal(err)
			}
			if got := stateOf(dst, a); !got.equal(want) {
				t.Fatalf("restored state differs:\n%+v\n%+v", got, want)
			}
			if _, _, err := dst.Events(dst.HistoryStart()-1, "", 0); !errors.Is(err, store.ErrCompacted) {
				t.Fatalf("Events before the restored history: %v", err)
			}
			// Both go on identically.
			for _, p := range []*store.Partition{src, dst} {
				apply(p, 42, store.Command{Op: store.OpSet, Key: "ttl-1", Value: []byte("e")})
			}
			if got, want := stateOf(dst, a), stateOf(src, srcAcct); !got.equal(want) {
				t.Fatal("restored partition diverged after a write")
			}
		})
	}
}

// Restoring into a partition with smaller history bounds keeps the newest
// events and moves the history's start up accordingly.
func TestRestoreTrimsHistory(t *testing.T) {
	src, _ := filled(t, store.StorageOptions{}, 100)
	dst := store.NewPartition(store.StorageOptions{HistoryEvents: 10}, nil)
	if err := dst.Restore(bytes.NewReader(snapshotBytes(t, src))); err != nil {
		t.Fatal(err)
	}
	events := allEvents(t, dst, dst.HistoryStart())
	if len(events) != 10 || events[0].Key != "key-90" || dst.HistoryStart() != store.Version(90, 0) {
		t.Fatalf("kept %d events from %#x, first %+v", len(events), dst.HistoryStart(), events[0])
	}
}

// A format 1 snapshot, written by nodes before the history existed, still
// restores: no deadlines, and a history that starts empty at its position.
func TestRestoreFormat1(t *testing.T) {
	data := stream(
		// Fields 4 and 5 mean nothing to format 1: a format 1 writer
		// never set them, and a format 1 reader skipped them.
		&storepb.SnapshotHeader{FormatVersion: 1, AppliedIndex: 9, EntryCount: 2, EventCount: 5, HistoryFloor: 3},
		&storepb.SnapshotEntry{Key: []byte("b"), Value: []byte("2"), Version: store.Version(9, 0)},
		&storepb.SnapshotEntry{Key: []byte("a"), Value: []byte("1"), Version: store.Version(3, 0)})
	a := store.NewAccountant(0)
	p := store.NewPartition(store.StorageOptions{}, a)
	set(t, p, 1, "old", "x")
	if err := p.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if p.HistoryStart() != p.Position() || p.Position() != 9<<16|0xFFFF {
		t.Fatalf("history starts at %#x, position %#x", p.HistoryStart(), p.Position())
	}
	if events, next, err := p.Events(p.Position(), "", 0); len(events) != 0 || next != p.Position() || err != nil {
		t.Fatalf("Events(Position()) = %v, %#x, %v", events, next, err)
	}
	if _, _, err := p.Events(0, "", 0); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Events(0) after a format 1 restore: %v", err)
	}
	if entries, _, _ := p.List("", "", 10, 0); keysOf(entries) != "a,b" {
		t.Fatalf("listed %q", keysOf(entries))
	}
	if a.Used() != store.EntrySize(1, 1)*2 {
		t.Fatalf("Used %d", a.Used())
	}
	restored := p.Position()
	set(t, p, 10, "c", "3")
	if got := eventString(allEvents(t, p, restored)); got != "Put c 3 0xa0001 0" {
		t.Fatalf("events after restore: %s", got)
	}
}

// Raft writes a snapshot on its own goroutine while the apply loop goes on:
// the copy-on-write index must keep what the snapshot sees unchanged.
func TestSnapshotWrittenDuringApplies(t *testing.T) {
	p, a := filled(t, store.StorageOptions{HistoryEvents: 50}, 2000)
	apply(p, 2001, store.Command{Op: store.OpSet, Key: "ttl", ExpiresAt: 9})
	want := stateOf(p, a)
	s := p.Snapshot()
	written := make(chan []byte)
	go func() {
		var buf bytes.Buffer
		if _, err := s.WriteTo(&buf); err != nil {
			panic(err)
		}
		s.Release()
		written <- buf.Bytes()
	}()
	for i := uint64(2002); i < 2500; i++ {
		apply(p, i,
			store.Command{Op: store.OpSet, Key: fmt.Sprint("key-", i%2000), Value: []byte("new")},
			store.Command{Op: store.OpDelete, Key: fmt.Sprint("key-", (i+7)%2000)},
			store.Command{Op: store.OpSet, Key: fmt.Sprint("added-", i), ExpiresAt: int64(i)})
	}
	data := <-written
	a2 := store.NewAccountant(0)
	q := store.NewPartition(store.StorageOptions{HistoryEvents: 50}, a2)
	if err := q.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if !stateOf(q, a2).equal(want) {
		t.Fatal("the snapshot saw applies made after it was taken")
	}
}
