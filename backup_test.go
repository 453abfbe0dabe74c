package gridkv_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/internal/watch"
	"github.com/feellmoose/gridkv/ring"
	"github.com/feellmoose/gridkv/store"
)

// writeEntries writes every entry through kv, 256 at a time, each WithTTL until its deadline
// if it has one.
func writeEntries(t testing.TB, ctx context.Context, kv *gridkv.GridKV, entries []gridkv.Entry) {
	t.Helper()
	next := atomic.Int64{}
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(entries) && failed.Load() == nil; i = int(next.Add(1)) - 1 {
				e := entries[i]
				var opts []gridkv.Option
				if !e.ExpiresAt.IsZero() {
					opts = append(opts, gridkv.WithTTL(time.Until(e.ExpiresAt)))
				}
				err := kv.Set(ctx, e.Key, e.Value, opts...)
				for try := 0; errors.Is(err, gridkv.ErrUnavailable) && try < 5; try++ {
					err = kv.Set(ctx, e.Key, e.Value, opts...) // a leader lost while committing: set again
				}
				if err != nil {
					err = fmt.Errorf("Set(%q): %w", e.Key, err)
					failed.Store(&err)
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(*err)
	}
}

// readBackup reads a backup whole, with every key it holds.
func readBackup(t testing.TB, b []byte) (gridkv.BackupInfo, []gridkv.Entry) {
	t.Helper()
	var entries []gridkv.Entry
	info, err := gridkv.ReadBackup(bytes.NewReader(b), func(e gridkv.Entry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		t.Fatalf("ReadBackup: %v", err)
	}
	if info.Keys != len(entries) {
		t.Fatalf("ReadBackup counted %d keys and handed over %d", info.Keys, len(entries))
	}
	return info, entries
}

// backupPositions returns the position of every partition's copy in a backup.
func backupPositions(t testing.TB, info gridkv.BackupInfo) []uint64 {
	t.Helper()
	positions, err := watch.DecodeCursor(info.Cursor.String())
	if err != nil || len(positions) != info.Partitions {
		t.Fatalf("the backup's Cursor %q holds %d positions for %d partitions: %v", info.Cursor, len(positions), info.Partitions, err)
	}
	return positions
}

// A backup of 100k keys, some with TTLs and some large, taken from a three-node cluster of 4
// partitions and restored into a new three-node cluster of 8, gives back every key, value
// and deadline; the backup itself carries the source's versions.
func TestBackupRestoreRoundTrip(t *testing.T) {
	src := cluster.Start(t, 3, cluster.Options{Partitions: 4, Wait: cluster.WaitFormed,
		SkipReplicaCheck: "the source cluster stops once backed up, to leave the machine to the new one"})
	ctx := testContext(t, 10*time.Minute)

	const keys = 100_000
	deadline := time.Now().Add(time.Hour)
	var want []gridkv.Entry
	for i := range keys {
		e := gridkv.Entry{Key: fmt.Sprintf("k/%06d", i), Value: fmt.Appendf(nil, "%064d", i)[:64]}
		if i%10 == 0 {
			e.ExpiresAt = deadline.Add(time.Duration(i) * time.Millisecond)
		}
		want = append(want, e)
	}
	// The largest values, 17 MiB in all: more than one page read from another node carries
	// (half a transport frame), so pages of them are cut short.
	for i := range 20 {
		size := gridkv.MaxValueSize
		if i%5 == 0 {
			size /= 4
		}
		want = append(want, gridkv.Entry{Key: fmt.Sprintf("large/%02d", i), Value: bytes.Repeat([]byte{byte('a' + i)}, size)})
	}
	began := time.Now()
	// Loaded by restoring a backup the test builds: a third of the time writeEntries takes
	// under the race detector, as Restore writes one partition at a time, which batches
	// better. What the source holds is checked against want below all the same.
	load := newTestBackup(4, want)
	for p := range load.keys {
		for i := range load.keys[p] {
			load.keys[p][i].Version = 1
		}
	}
	if err := src.Node(0).KV.Restore(ctx, bytes.NewReader(load.encode())); err != nil {
		t.Fatalf("loading the source: %v", err)
	}
	t.Logf("loaded %d keys in %v", len(want), time.Since(began).Round(time.Millisecond))

	var buf bytes.Buffer
	began = time.Now()
	if err := src.Node(1).KV.Backup(ctx, &buf); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	t.Logf("backup of %d keys: %d bytes in %v", len(want), buf.Len(), time.Since(began).Round(time.Millisecond))

	info, backedUp := readBackup(t, buf.Bytes())
	if info.Format != gridkv.BackupFormat || info.Partitions != 4 || info.Keys != len(want) ||
		time.Since(info.TakenAt) > 10*time.Minute || info.TakenAt.After(time.Now()) {
		t.Fatalf("backup info %+v; want format %d, 4 partitions, %d keys, taken just now", info, gridkv.BackupFormat, len(want))
	}
	positions := backupPositions(t, info)
	slices.SortFunc(backedUp, func(a, b gridkv.Entry) int { return strings.Compare(a.Key, b.Key) })
	slices.SortFunc(want, func(a, b gridkv.Entry) int { return strings.Compare(a.Key, b.Key) })
	for i, e := range backedUp {
		w := want[i]
		// A deadline is set when the leader proposes the write, from a TTL rounded up to the
		// millisecond: no earlier than asked, and later by the write's latency.
		if e.Key != w.Key || !bytes.Equal(e.Value, w.Value) || w.ExpiresAt.IsZero() != e.ExpiresAt.IsZero() ||
			e.ExpiresAt.Before(w.ExpiresAt) || e.ExpiresAt.After(w.ExpiresAt.Add(10*time.Second)) {
			t.Fatalf("backed up %s (%d bytes) expiring %v; %s (%d bytes) expiring %v was written",
				e.Key, len(e.Value), e.ExpiresAt, w.Key, len(w.Value), w.ExpiresAt)
		}
		if p := ring.PartitionOf(e.Key, 4); e.Version > positions[p] {
			t.Fatalf("%s at version %#x, after its partition's position %#x", e.Key, e.Version, positions[p])
		}
		// The backup carries the source's versions and deadlines (a sample of them).
		if i%97 == 0 || strings.HasPrefix(e.Key, "large/") {
			got, err := src.Node(i%3).KV.GetEntry(ctx, e.Key)
			if err != nil || got.Version != e.Version || !got.ExpiresAt.Equal(e.ExpiresAt) {
				t.Fatalf("backed up %s at version %d expiring %v; the source has version %d expiring %v (%v)",
					e.Key, e.Version, e.ExpiresAt, got.Version, got.ExpiresAt, err)
			}
		}
	}
	for i := range 3 {
		src.Stop(i) // the source's work is done: leave the machine to the new cluster
	}

	dst := cluster.Start(t, 3, cluster.Options{Partitions: 8, Wait: cluster.WaitFormed})
	began = time.Now()
	if err := dst.Node(2).KV.Restore(ctx, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Logf("restore of %d keys: %v", len(want), time.Since(began).Round(time.Millisecond))

	restored, _ := listAll(t, ctx, dst.Node(0).KV, "", gridkv.MaxListLimit)
	if len(restored) != len(backedUp) {
		t.Fatalf("the new cluster lists %d keys; the backup holds %d", len(restored), len(backedUp))
	}
	for i, e := range restored {
		b := backedUp[i]
		if e.Key != b.Key || !bytes.Equal(e.Value, b.Value) {
			t.Fatalf("restored %s (%d bytes); the backup holds %s (%d bytes), or another value", e.Key, len(e.Value), b.Key, len(b.Value))
		}
		// The deadline is written again as a TTL, kept to the millisecond, rounded up, from
		// the moment the leader proposes the write.
		if b.ExpiresAt.IsZero() != e.ExpiresAt.IsZero() || e.ExpiresAt.Before(b.ExpiresAt) || e.ExpiresAt.After(b.ExpiresAt.Add(10*time.Second)) {
			t.Fatalf("%s restored expiring %v; the backup says %v", e.Key, e.ExpiresAt, b.ExpiresAt)
		}
	}
}

// hotOp is one write of a key with one writer: a put at a known version, or a delete (whose
// version lies between the puts around it).
type hotOp struct {
	put     bool
	version uint64
	value   string
}

// A backup taken while keys change shows every partition as it was at the backup's position
// for it: each changing key at the last write before that position. Backups are taken from
// every node of four, so that some read partitions they have no replica of. Writers rewrite
// keys spread over every page of every partition, and delete and create them again, while
// backups run; each key's writes are known with their versions, so a backup that mixed
// moments (a page's state with another page's position) shows a key the history forbids.
func TestBackupConsistentWhileWriting(t *testing.T) {
	c := cluster.Start(t, 4, cluster.Options{Partitions: 2, Wait: cluster.WaitFormed})
	ctx := testContext(t, 5*time.Minute)

	// 12k keys a partition: two pages each.
	var filler []gridkv.Entry
	for i := range 24_000 {
		filler = append(filler, gridkv.Entry{Key: fmt.Sprintf("f/%05d", i), Value: []byte(fmt.Sprint("filler-", i))})
	}
	writeEntries(t, ctx, c.Node(0).KV, filler)

	const hot = 16
	histories := make([][]hotOp, hot)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range hot {
		key := fmt.Sprintf("f/%05d-hot", i*1500) // spread over the key space, so over pages
		kv := c.Node(i % 4).KV
		wg.Go(func() {
			var version uint64
			for n := 0; !stop.Load(); n++ {
				if n%5 == 4 {
					_, err := kv.CompareAndDelete(ctx, key, version)
					if errors.Is(err, gridkv.ErrUnavailable) {
						// A leader lost while committing: only this writer writes the key,
						// so whether it is there says whether the delete applied.
						if _, gerr := kv.GetEntry(ctx, key); errors.Is(gerr, gridkv.ErrKeyNotFound) {
							err = nil
						}
					}
					if err != nil {
						t.Errorf("CompareAndDelete(%s, %d): %v", key, version, err)
						return
					}
					histories[i] = append(histories[i], hotOp{})
					version = 0
					continue
				}
				value := fmt.Sprint(key, "=", n)
				e, err := kv.CompareAndSwap(ctx, key, version, []byte(value))
				if errors.Is(err, gridkv.ErrUnavailable) {
					if cur, gerr := kv.GetEntry(ctx, key); gerr == nil && string(cur.Value) == value {
						e, err = cur, nil // it applied
					}
				}
				if err != nil {
					t.Errorf("CompareAndSwap(%s, %d): %v", key, version, err)
					return
				}
				version = e.Version
				histories[i] = append(histories[i], hotOp{put: true, version: version, value: value})
			}
		})
	}

	var backups [][]byte
	for i := range 4 {
		time.Sleep(100 * time.Millisecond) // let the writers move on between backups
		var buf bytes.Buffer
		if err := c.Node(i).KV.Backup(ctx, &buf); err != nil {
			t.Fatalf("Backup through node %d: %v", i, err)
		}
		backups = append(backups, buf.Bytes())
	}
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}

	for b, raw := range backups {
		info, entries := readBackup(t, raw)
		positions := backupPositions(t, info)
		got := make(map[string]gridkv.Entry, len(entries))
		for _, e := range entries {
			got[e.Key] = e
		}
		for _, f := range filler {
			if e, ok := got[f.Key]; !ok || !bytes.Equal(e.Value, f.Value) {
				t.Fatalf("backup %d: filler key %s is missing or changed: %q", b, f.Key, e.Value)
			}
		}
		if len(got) > len(filler)+hot {
			t.Fatalf("backup %d holds %d keys; at most %d exist", b, len(got), len(filler)+hot)
		}
		for i, ops := range histories {
			key := fmt.Sprintf("f/%05d-hot", i*1500)
			position := positions[ring.PartitionOf(key, 2)]
			// The last put at or before the position, and whether a delete follows it (whose
			// version, between that put's and the next's, may be at or before the position).
			last, mayBeDeleted := -1, false
			for j, op := range ops {
				if op.put && op.version > position {
					break
				}
				if op.put {
					last, mayBeDeleted = j, false
				} else {
					mayBeDeleted = true
				}
			}
			e, present := got[key]
			switch {
			case last < 0 && present:
				t.Fatalf("backup %d holds %s at version %#x; it was first written after the position %#x", b, key, e.Version, position)
			case last < 0:
			case !present && !mayBeDeleted:
				t.Fatalf("backup %d lacks %s; at the position %#x it had version %#x", b, key, position, ops[last].version)
			case present && (e.Version != ops[last].version || string(e.Value) != ops[last].value):
				t.Fatalf("backup %d holds %s = %q at version %#x; at the position %#x it was %q at version %#x",
					b, key, e.Value, e.Version, position, ops[last].value, ops[last].version)
			}
		}
		t.Logf("backup %d: %d keys, positions %x", b, len(got), positions)
	}
}

// A partition that changes faster than its history keeps while it is listed is listed again,
// a bounded number of times, and then the backup fails, saying why; once the writes stop, a
// backup succeeds.
func TestBackupFailsWhenHistoryTooShort(t *testing.T) {
	c := cluster.Start(t, 1, cluster.Options{Partitions: 1, Mutate: func(_ int, o *gridkv.GridKVOptions) {
		o.Storage = &store.StorageOptions{HistoryEvents: 1}
	}})
	kv := c.Node(0).KV
	ctx := testContext(t, 2*time.Minute)
	var filler []gridkv.Entry
	for i := range gridkv.MaxListLimit + 2000 { // two pages
		filler = append(filler, gridkv.Entry{Key: fmt.Sprintf("f/%05d", i), Value: []byte("v")})
	}
	writeEntries(t, ctx, kv, filler)

	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				if err := kv.Set(ctx, fmt.Sprint("busy/", w), []byte(fmt.Sprint(n))); err != nil {
					t.Errorf("Set: %v", err)
					return
				}
			}
		})
	}
	err := kv.Backup(ctx, io.Discard)
	stop.Store(true)
	wg.Wait()
	if !errors.Is(err, gridkv.ErrCompacted) || !strings.Contains(err.Error(), "listed 5 times") {
		t.Fatalf("Backup of a partition changing faster than its history of 1 change: %v; want ErrCompacted after 5 listings", err)
	}
	t.Log(err)
	var buf bytes.Buffer
	if err := kv.Backup(ctx, &buf); err != nil {
		t.Fatalf("Backup once the writes stopped: %v", err)
	}
	if info, _ := readBackup(t, buf.Bytes()); info.Keys != len(filler)+8 {
		t.Fatalf("the backup holds %d keys; want %d", info.Keys, len(filler)+8)
	}
}

// testBackup builds backups by the format in docs/backup.md, independently of the library's
// writer: a check of the format as documented, and streams the library would never write.
type testBackup struct {
	format     uint64
	partitions int
	takenAt    int64
	positions  []uint64         // by partition
	keys       [][]gridkv.Entry // by partition, in byte order
}

// newTestBackup returns a backup of entries (with versions below 1<<32) over partitions.
func newTestBackup(partitions int, entries []gridkv.Entry) *testBackup {
	b := &testBackup{format: gridkv.BackupFormat, partitions: partitions, takenAt: time.Now().UnixNano(),
		positions: make([]uint64, partitions), keys: make([][]gridkv.Entry, partitions)}
	for p := range b.positions {
		b.positions[p] = 1<<32 | 0xFFFF
	}
	for _, e := range entries {
		p := ring.PartitionOf(e.Key, partitions)
		b.keys[p] = append(b.keys[p], e)
	}
	for _, ks := range b.keys {
		slices.SortFunc(ks, func(a, b gridkv.Entry) int { return strings.Compare(a.Key, b.Key) })
	}
	return b
}

func (b *testBackup) encode() []byte {
	out := []byte("GRIDKVBK")
	out = binary.AppendUvarint(out, b.format)
	out = binary.AppendUvarint(out, uint64(b.partitions))
	out = binary.AppendUvarint(out, uint64(b.takenAt))
	total := 0
	for p, ks := range b.keys {
		out = append(out, 'P')
		out = binary.AppendUvarint(out, uint64(p))
		out = binary.AppendUvarint(out, b.positions[p])
		out = binary.AppendUvarint(out, uint64(len(ks)))
		for _, e := range ks {
			out = binary.AppendUvarint(out, uint64(len(e.Key)))
			out = append(out, e.Key...)
			out = binary.AppendUvarint(out, uint64(len(e.Value)))
			out = append(out, e.Value...)
			out = binary.AppendUvarint(out, e.Version)
			var exp int64
			if !e.ExpiresAt.IsZero() {
				exp = e.ExpiresAt.UnixNano()
			}
			out = binary.AppendUvarint(out, uint64(exp))
		}
		total += len(ks)
	}
	out = append(out, 'T')
	out = binary.AppendUvarint(out, uint64(len(b.keys)))
	out = binary.AppendUvarint(out, uint64(total))
	return binary.BigEndian.AppendUint64(out, xxhash.Sum64(out))
}

func smallBackup() *testBackup {
	var entries []gridkv.Entry
	for i := range 20 {
		e := gridkv.Entry{Key: fmt.Sprint("key/", i), Value: []byte(strings.Repeat("v", i)), Version: uint64(i+1) << 16}
		if i%3 == 0 {
			e.ExpiresAt = time.Unix(0, int64(2e18)+int64(i))
		}
		entries = append(entries, e)
	}
	return newTestBackup(3, entries)
}

// ReadBackup refuses, with an error that says what and where, every stream that is not a
// whole backup: cut short anywhere, any one byte changed, and each way a stream could lie
// about its contents; it allocates no more than a key's or value's limit for a length it
// reads.
func TestBackupReadRefusesDamage(t *testing.T) {
	good := smallBackup().encode()
	if info, entries := readBackup(t, good); info.Keys != 20 || info.Partitions != 3 || len(entries) != 20 {
		t.Fatalf("the test's own backup reads as %+v", info)
	}
	for n := range len(good) {
		_, err := gridkv.ReadBackup(bytes.NewReader(good[:n]), nil)
		if !errors.Is(err, gridkv.ErrInvalidBackup) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("a backup cut to %d of %d bytes: %v; want ErrInvalidBackup and io.ErrUnexpectedEOF", n, len(good), err)
		}
	}
	for i := range len(good) {
		for _, flip := range []byte{0x01, 0x80, 0xFF} {
			bad := slices.Clone(good)
			bad[i] ^= flip
			if _, err := gridkv.ReadBackup(bytes.NewReader(bad), nil); !errors.Is(err, gridkv.ErrInvalidBackup) {
				t.Fatalf("a backup with byte %d xor %#x: %v; want ErrInvalidBackup", i, flip, err)
			}
		}
	}

	cases := map[string]struct {
		mutate func(b *testBackup) []byte
		want   string
	}{
		"empty":          {func(*testBackup) []byte { return nil }, "ends early"},
		"another format": {func(b *testBackup) []byte { b.format = 2; return b.encode() }, "format version 2"},
		"no partitions":  {func(b *testBackup) []byte { b.partitions = 0; return b.encode() }, "0 partitions"},
		"not a backup":   {func(b *testBackup) []byte { return append([]byte("PK\x03\x04"), b.encode()...) }, "not a GridKV backup"},
		"missing section": {func(b *testBackup) []byte {
			b.keys = b.keys[:2]
			return b.encode()
		}, "2 partition sections for 3 partitions"},
		"sections out of order": {func(b *testBackup) []byte {
			b.keys[0], b.keys[1] = b.keys[1], b.keys[0]
			return b.encode()
		}, "is of partition"},
		"keys out of order": {func(b *testBackup) []byte {
			ks := b.keys[0]
			ks[0], ks[1] = ks[1], ks[0]
			return b.encode()
		}, "increasing byte order"},
		"a key twice": {func(b *testBackup) []byte {
			b.keys[0] = append(b.keys[0], b.keys[0][len(b.keys[0])-1])
			return b.encode()
		}, "increasing byte order"},
		"version after the position": {func(b *testBackup) []byte {
			b.keys[1][0].Version = b.positions[1] + 1
			return b.encode()
		}, "the section's position"},
		"version 0": {func(b *testBackup) []byte {
			b.keys[1][0].Version = 0
			return b.encode()
		}, "at version 0x0"},
		"key too long": {func(b *testBackup) []byte {
			k := strings.Repeat("k", gridkv.MaxKeySize+1)
			b = newTestBackup(1, []gridkv.Entry{{Key: k, Version: 1}})
			return b.encode()
		}, "a key of 1025 bytes"},
		"value too long": {func(b *testBackup) []byte {
			b = newTestBackup(1, []gridkv.Entry{{Key: "k", Value: make([]byte, gridkv.MaxValueSize+1), Version: 1}})
			return b.encode()
		}, "over 1048576"},
		"bytes after the trailer": {func(b *testBackup) []byte { return append(b.encode(), 0) }, "bytes follow the trailer"},
		"a wrong checksum": {func(b *testBackup) []byte {
			out := b.encode()
			out[len(out)-1]++
			return out
		}, "the backup is corrupt"},
	}
	for name, tc := range cases {
		_, err := gridkv.ReadBackup(bytes.NewReader(tc.mutate(smallBackup())), nil)
		if !errors.Is(err, gridkv.ErrInvalidBackup) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want ErrInvalidBackup saying %q", name, err, tc.want)
		}
	}

	// A length that claims more than the limit is refused before anything is allocated.
	huge := []byte("GRIDKVBK\x01\x01\x00P\x00\xff\xff\x03\x01\x01k")
	huge = binary.AppendUvarint(huge, 1<<62)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := gridkv.ReadBackup(bytes.NewReader(huge), nil); !errors.Is(err, gridkv.ErrInvalidBackup) || !strings.Contains(err.Error(), "over") {
		t.Fatalf("a value length of 1<<62: %v", err)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("refusing a value length of 1<<62 allocated %d bytes", n)
	}

	// A read error is the reader's, not a verdict on the backup.
	boom := errors.New("disk on fire")
	_, err := gridkv.ReadBackup(io.MultiReader(bytes.NewReader(good[:30]), iotestErrReader{boom}), nil)
	if !errors.Is(err, boom) || errors.Is(err, gridkv.ErrInvalidBackup) {
		t.Fatalf("a read error: %v; want it as is", err)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

// FuzzReadBackup: ReadBackup never panics, refuses what it refuses with ErrInvalidBackup, and
// what it accepts is exactly what the documented format writes for what it read.
func FuzzReadBackup(f *testing.F) {
	f.Add(smallBackup().encode())
	f.Add(newTestBackup(1, nil).encode())
	f.Add(newTestBackup(2, []gridkv.Entry{{Key: "a", Value: []byte("b"), Version: 1}}).encode())
	f.Add([]byte("GRIDKVBK\x01\x01\x00P\x00\xff\xff\x03\x01\x01k\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var entries []gridkv.Entry
		info, err := gridkv.ReadBackup(bytes.NewReader(data), func(e gridkv.Entry) error {
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			if !errors.Is(err, gridkv.ErrInvalidBackup) {
				t.Fatalf("an error without ErrInvalidBackup: %v", err)
			}
			return
		}
		b := newTestBackup(info.Partitions, entries)
		b.takenAt = info.TakenAt.UnixNano()
		b.positions = backupPositions(t, info)
		if again := b.encode(); !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, which reads as %+v; written again it is %x", data, info, again)
		}
	})
}

// Restore writes each key with the time left of its deadline, skips keys whose deadline has
// passed, loads a backup of another partition count, and says a damaged backup left the
// cluster with part of it.
func TestRestoreTTLsAndDamage(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: 4}).Node(0).KV
	ctx := testContext(t, time.Minute)
	later := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	b := newTestBackup(3, []gridkv.Entry{
		{Key: "permanent", Value: []byte("p"), Version: 7},
		{Key: "expired", Value: []byte("e"), Version: 8, ExpiresAt: time.Now().Add(-time.Second)},
		{Key: "later", Value: []byte("l"), Version: 9, ExpiresAt: later},
		{Key: "empty", Value: []byte{}, Version: 10},
	})
	if err := kv.Restore(ctx, bytes.NewReader(b.encode())); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	page, err := kv.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if keys := entryKeys(page.Entries); !slices.Equal(keys, []string{"empty", "later", "permanent"}) {
		t.Fatalf("restored %v; want empty, later and permanent", keys)
	}
	if e := page.Entries[1]; e.ExpiresAt.Before(later) || e.ExpiresAt.After(later.Add(5*time.Second)) {
		t.Fatalf("later restored expiring %v; the backup says %v", e.ExpiresAt, later)
	}

	var many []gridkv.Entry
	for i := range 2000 {
		many = append(many, gridkv.Entry{Key: fmt.Sprint("many/", i), Value: []byte("v"), Version: 1})
	}
	cut := newTestBackup(3, many).encode()
	cut = cut[:len(cut)-5]
	err = kv.Restore(ctx, bytes.NewReader(cut))
	if !errors.Is(err, gridkv.ErrInvalidBackup) || !strings.Contains(err.Error(), "part of the backup") {
		t.Fatalf("Restore of a backup cut short: %v; want ErrInvalidBackup saying the cluster holds part of it", err)
	}
	t.Log(err)
}

// ctx stops Backup and Restore, and Backup returns its writer's error.
func TestBackupRestoreStopWithContext(t *testing.T) {
	kv := cluster.Start(t, 1, cluster.Options{Partitions: 4}).Node(0).KV
	ctx := testContext(t, time.Minute)
	var entries []gridkv.Entry
	for i := range 4000 {
		entries = append(entries, gridkv.Entry{Key: fmt.Sprintf("k/%04d", i), Value: bytes.Repeat([]byte{'v'}, 200)})
	}
	writeEntries(t, ctx, kv, entries)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := kv.Backup(cancelled, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("Backup with a cancelled ctx: %v", err)
	}

	// A writer that cancels on its first write: the backup stops at the next partition.
	cancelled, cancel = context.WithCancel(ctx)
	w := writerFunc(func(b []byte) (int, error) { cancel(); return len(b), nil })
	if err := kv.Backup(cancelled, w); !errors.Is(err, context.Canceled) {
		t.Fatalf("Backup whose ctx ends while it writes: %v", err)
	}
	boom := errors.New("disk full")
	if err := kv.Backup(ctx, writerFunc(func([]byte) (int, error) { return 0, boom })); !errors.Is(err, boom) {
		t.Fatalf("Backup to a failing writer: %v", err)
	}

	var buf bytes.Buffer
	if err := kv.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := kv.Delete(ctx, e.Key); err != nil {
			t.Fatal(err)
		}
	}
	// A reader that cancels halfway through: Restore stops, with fewer keys than the backup.
	cancelled, cancel = context.WithCancel(ctx)
	r := &cancellingReader{r: bytes.NewReader(buf.Bytes()), after: buf.Len() / 2, cancel: cancel}
	err := kv.Restore(cancelled, r)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "restore stopped") {
		t.Fatalf("Restore whose ctx ends halfway: %v", err)
	}
	page, lerr := kv.List(ctx, "", gridkv.WithLimit(gridkv.MaxListLimit))
	if lerr != nil || len(page.Entries) == len(entries) {
		t.Fatalf("after a cancelled Restore the cluster holds %d keys of %d (%v)", len(page.Entries), len(entries), lerr)
	}
	t.Log(err)
	if err := kv.Restore(cancelled, bytes.NewReader(buf.Bytes())); !errors.Is(err, context.Canceled) {
		t.Fatalf("Restore with a cancelled ctx: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// cancellingReader calls cancel once after bytes have been read.
type cancellingReader struct {
	r      io.Reader
	read   int
	after  int
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b[:min(len(b), 4096)])
	c.read += n
	if c.read >= c.after {
		c.cancel()
	}
	return n, err
}

// BenchmarkBackupRestore100k measures Backup of 100k keys of 64-byte values from a three-node
// cluster at the default partition count, and Restore of that backup into another
// three-node cluster: the figures of docs/backup.md. Each round backs up and restores once.
func BenchmarkBackupRestore100k(b *testing.B) {
	opts := cluster.Options{Partitions: cluster.LibraryPartitions, Wait: cluster.WaitFormed}
	src, dst := cluster.Start(b, 3, opts), cluster.Start(b, 3, opts)
	ctx := context.Background()
	var entries []gridkv.Entry
	for i := range 100_000 {
		entries = append(entries, gridkv.Entry{Key: fmt.Sprintf("key:%08d", i), Value: fmt.Appendf(nil, "%064d", i)})
	}
	writeEntries(b, ctx, src.Node(0).KV, entries)
	var backup, restore time.Duration
	var size int
	for b.Loop() {
		var buf bytes.Buffer
		began := time.Now()
		if err := src.Node(1).KV.Backup(ctx, &buf); err != nil {
			b.Fatal(err)
		}
		backup += time.Since(began)
		size = buf.Len()
		began = time.Now()
		if err := dst.Node(2).KV.Restore(ctx, &buf); err != nil {
			b.Fatal(err)
		}
		restore += time.Since(began)
	}
	b.ReportMetric(float64(backup.Milliseconds())/float64(b.N), "backup-ms")
	b.ReportMetric(float64(restore.Milliseconds())/float64(b.N), "restore-ms")
	b.ReportMetric(float64(size), "bytes")
	b.ReportMetric(0, "ns/op")
}
