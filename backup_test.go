package gridkv_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/watch"
	"github.com/feellmoose/gridkv/ring"
)

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
