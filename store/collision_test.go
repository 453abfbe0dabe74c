package store

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// narrowHash makes every key hash to one of 1<<bits values for the rest of
// the test, so that most keys share their hash with others and live in a
// shard's spill map.
func narrowHash(t *testing.T, bits uint) {
	old := hashMask
	hashMask = 1<<bits - 1
	t.Cleanup(func() { hashMask = old })
}

type modelEntry struct {
	value   string
	version uint64
}

func dumpPartition(p *Partition) map[string]modelEntry {
	m := make(map[string]modelEntry)
	p.Range(func(k string, v []byte, version uint64) bool {
		m[k] = modelEntry{string(v), version}
		return true
	})
	return m
}

// TestSharedHashesAgainstModel runs random batches against a partition whose
// keys mostly share hashes, and against a plain map: every result, every
// read, Len, Bytes and a snapshot round trip must agree.
func TestSharedHashesAgainstModel(t *testing.T) {
	for _, opts := range []StorageOptions{{}, {ShardCount: 2}, {Backend: BackendMemory}} {
		t.Run(fmt.Sprint(opts.Backend, opts.ShardCount), func(t *testing.T) {
			narrowHash(t, 2)
			rng := rand.New(rand.NewPCG(3, 4))
			a := NewAccountant(0)
			p := NewPartition(opts, a)
			model := map[string]modelEntry{}
			var bytesWant int64
			key := func() string { return fmt.Sprint("k", rng.IntN(60)) }
			for index := uint64(1); index <= 400; index++ {
				cmds := make([]Command, 1+rng.IntN(8))
				for i := range cmds {
					c := Command{Key: key(), Value: []byte(fmt.Sprint("v", index, "-", i))}
					switch rng.IntN(4) {
					case 0:
						c.Op = OpDelete
					case 1:
						c.Op = OpCAS
						if e, ok := model[c.Key]; ok && rng.IntN(2) == 0 {
							c.Version = e.version
						} else if rng.IntN(2) == 0 {
							c.Version = 0
						} else {
							c.Version = 12345
						}
					default:
						c.Op = OpSet
						if rng.IntN(10) == 0 {
							c.Value = nil
						}
					}
					cmds[i] = c
				}
				results := p.ApplyBatch(index, cmds)
				for i, c := range cmds {
					old, had := model[c.Key]
					r := results[i]
					switch {
					case c.Op == OpDelete && !had:
						if r.Err != ErrKeyNotFound {
							t.Fatalf("index %d cmd %d: delete of absent key: %v", index, i, r.Err)
						}
					case c.Op == OpDelete:
						if r.Err != nil || r.Version != old.version {
							t.Fatalf("index %d cmd %d: delete: %+v, want version %d", index, i, r, old.version)
						}
						delete(model, c.Key)
						bytesWant -= EntrySize(len(c.Key), len(old.value))
					case c.Op == OpCAS && c.Version != old.version:
						if r.Err != ErrVersionMismatch || r.Version != old.version ||
							(had && !bytes.Equal(r.Value, []byte(old.value))) {
							t.Fatalf("index %d cmd %d: failed CAS: %+v, want version %d value %q", index, i, r, old.version, old.value)
						}
					default:
						want := Version(index, i)
						if r.Err != nil || r.Version != want {
							t.Fatalf("index %d cmd %d: %v: %+v, want version %d", index, i, c.Op, r, want)
						}
						model[c.Key] = modelEntry{string(c.Value), want}
						if had {
							bytesWant -= EntrySize(len(c.Key), len(old.value))
						}
						bytesWant += EntrySize(len(c.Key), len(c.Value))
					}
				}
				for k := range 60 {
					k := fmt.Sprint("k", k)
					v, version, ok := p.Get(k)
					e, had := model[k]
					if ok != had || version != e.version || string(v) != e.value {
						t.Fatalf("index %d: Get(%q) = %q, %d, %v; want %q, %d, %v", index, k, v, version, ok, e.value, e.version, had)
					}
				}
			}
			if got := dumpPartition(p); !maps.Equal(got, model) {
				t.Fatalf("Range saw %d keys, model has %d", len(got), len(model))
			}
			if p.Len() != len(model) || p.Bytes() != bytesWant || a.Used() != bytesWant {
				t.Fatalf("Len %d Bytes %d Used %d; want %d, %d", p.Len(), p.Bytes(), a.Used(), len(model), bytesWant)
			}

			// A snapshot restores into a partition with the same narrow hash.
			var buf bytes.Buffer
			s := p.Snapshot()
			if _, err := s.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			s.Release()
			q := NewPartition(opts, nil)
			if err := q.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatal(err)
			}
			if got := dumpPartition(q); !maps.Equal(got, model) || q.Bytes() != bytesWant {
				t.Fatalf("restored %d keys, %d bytes; want %d, %d", len(got), q.Bytes(), len(model), bytesWant)
			}
			// A duplicate key is found even when it sits in a spill map:
			// with every key hashing to 0, "b" and "c" go to spill.
			hashMask = 0
			dup := snapshotStream(9, "a", "b", "c", "c")
			err := NewPartition(opts, nil).Restore(bytes.NewReader(dup))
			if err == nil || !strings.Contains(err.Error(), "duplicate key") {
				t.Fatalf("Restore of a duplicate key in spill: %v", err)
			}
			if err := NewPartition(opts, nil).Restore(bytes.NewReader(snapshotStream(9, "a", "b", "c"))); err != nil {
				t.Fatalf("Restore without the duplicate: %v", err)
			}
		})
	}
}

// snapshotStream encodes a snapshot taken at index holding keys, each with
// value "v" and version Version(index, 0).
func snapshotStream(index uint64, keys ...string) []byte {
	record := func(dst, msg []byte) []byte {
		return append(protowire.AppendVarint(dst, uint64(len(msg))), msg...)
	}
	var msg []byte
	msg = protowire.AppendTag(msg, 1, protowire.VarintType)
	msg = protowire.AppendVarint(msg, SnapshotFormatVersion)
	msg = protowire.AppendTag(msg, 2, protowire.VarintType)
	msg = protowire.AppendVarint(msg, index)
	msg = protowire.AppendTag(msg, 3, protowire.VarintType)
	msg = protowire.AppendVarint(msg, uint64(len(keys)))
	out := record(nil, msg)
	for _, k := range keys {
		msg = protowire.AppendTag(msg[:0], 1, protowire.BytesType)
		msg = protowire.AppendString(msg, k)
		msg = protowire.AppendTag(msg, 2, protowire.BytesType)
		msg = protowire.AppendString(msg, "v")
		msg = protowire.AppendTag(msg, 3, protowire.VarintType)
		msg = protowire.AppendVarint(msg, Version(index, 0))
		out = record(out, msg)
	}
	return out
}

// TestSpillFreedWithItsLastKey checks that a shard drops its spill map when
// the last key in it goes, and that a key in spill stays reachable after the
// key holding its hash in the main map is deleted.
func TestSpillFreedWithItsLastKey(t *testing.T) {
	narrowHash(t, 0) // every key has hash 0
	p := NewPartition(StorageOptions{Backend: BackendMemory}, nil)
	p.ApplyBatch(1, []Command{{Op: OpSet, Key: "a", Value: []byte("1")}, {Op: OpSet, Key: "b", Value: []byte("2")}})
	s := &p.table.Load().shards[0]
	if len(s.byHash) != 1 || len(s.spill) != 1 {
		t.Fatalf("byHash %d spill %d, want 1 and 1", len(s.byHash), len(s.spill))
	}
	p.ApplyBatch(2, []Command{{Op: OpDelete, Key: "a"}})
	if v, _, ok := p.Get("b"); !ok || string(v) != "2" {
		t.Fatalf("Get(b) after deleting a = %q, %v", v, ok)
	}
	p.ApplyBatch(3, []Command{{Op: OpSet, Key: "b", Value: []byte("3")}})
	if v, version, ok := p.Get("b"); !ok || string(v) != "3" || version != Version(3, 0) {
		t.Fatalf("Get(b) after overwrite = %q, %d, %v", v, version, ok)
	}
	p.ApplyBatch(4, []Command{{Op: OpDelete, Key: "b"}})
	if s.spill != nil || len(s.byHash) != 0 || p.Len() != 0 {
		t.Fatalf("after deleting every key: byHash %d spill %v len %d", len(s.byHash), s.spill, p.Len())
	}
}
