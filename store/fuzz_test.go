package store_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/store/storepb"
)

// FuzzDecodeBatch checks that DecodeBatch never panics, that whatever it
// accepts is valid, re-encodes to something it decodes identically, and
// is read the same way by the generated code.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte{})
	f.Add(store.AppendBatch(nil, sampleCommands()[:5]))
	f.Add(store.AppendBatch(nil, sampleCommands()[6:]))
	f.Add(store.AppendBatch(nil, []store.Command{{Op: store.OpDelete, Key: "k"}}))
	f.Add([]byte{0x0a, 0x05, 0x08, 0x01, 0x12, 0x01, 'k'})
	f.Add([]byte{0x0a, 0x05, 0x08, 0x81, 0x02, 0x12, 0x01}) // op 257, truncated
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := store.DecodeBatch(data)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) || cmds != nil {
				t.Fatalf("failure %v does not wrap ErrCorrupt or returned commands", err)
			}
			return
		}
		for i, c := range cmds {
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted invalid command %d: %v", i, err)
			}
		}
		again, err := store.DecodeBatch(store.AppendBatch(nil, cmds))
		if err != nil || !reflect.DeepEqual(normalize(again), normalize(cmds)) {
			t.Fatalf("re-encoding changed the batch: %v", err)
		}
		var pb storepb.Batch
		// DecodeBatch skips unknown fields; the generated code keeps them.
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &pb); err != nil {
			t.Fatalf("DecodeBatch accepted what the generated code rejects: %v", err)
		}
		if !proto.Equal(&pb, toProto(cmds)) {
			t.Fatal("generated code reads the batch differently")
		}
	})
}

// FuzzRestore checks that Restore never panics, leaves the state alone when
// it fails, and when it succeeds produces a partition that snapshots back
// to an equal state: keys, deadlines, ordered index and history.
func FuzzRestore(f *testing.F) {
	p, _ := filled(f, store.StorageOptions{}, 5)
	valid := snapshotBytes(f, p)
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(snapshotBytes(f, store.NewPartition(store.StorageOptions{}, nil)))
	f.Add(stream(&storepb.SnapshotHeader{FormatVersion: 1, AppliedIndex: 9, EntryCount: 1},
		&storepb.SnapshotEntry{Key: []byte("k"), Value: []byte("v"), Version: store.Version(9, 0)}))
	// Format 2 with deadlines, every event type and an evicted history.
	p, _ = filled(f, store.StorageOptions{HistoryEvents: 6}, 4)
	apply(p, 9, store.Command{Op: store.OpSet, Key: "t", Value: []byte("v"), ExpiresAt: 1 << 40},
		store.Command{Op: store.OpDelete, Key: "key-1"},
		store.Command{Op: store.OpSet, Key: "u", ExpiresAt: 5})
	apply(p, 10, store.Command{Op: store.OpExpire, Key: "u", Version: store.Version(9, 2)})
	f.Add(snapshotBytes(f, p))
	f.Add(stream(&storepb.SnapshotHeader{FormatVersion: 2, AppliedIndex: 9, EventCount: 1, HistoryFloor: 5},
		&storepb.SnapshotEvent{Type: storepb.EventType_EVENT_TYPE_DELETE, Key: []byte("k"), Version: store.Version(9, 0)}))
	f.Add([]byte{0x02, 0x08, 0x01})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a := store.NewAccountant(0)
		p := store.NewPartition(store.StorageOptions{ShardCount: 4}, a)
		set(t, p, 1, "existing", "value")
		before := stateOf(p, a)
		err := p.Restore(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("failure %v does not wrap ErrCorrupt", err)
			}
			if !stateOf(p, a).equal(before) {
				t.Fatal("failed Restore changed the state")
			}
			return
		}
		restored := stateOf(p, a)
		a2 := store.NewAccountant(0)
		q := store.NewPartition(store.StorageOptions{Backend: store.BackendMemory}, a2)
		if err := q.Restore(bytes.NewReader(snapshotBytes(t, p))); err != nil {
			t.Fatalf("snapshot of a restored partition does not restore: %v", err)
		}
		if !stateOf(q, a2).equal(restored) {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}
