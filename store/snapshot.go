package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"unsafe"

	"github.com/google/btree"
	"google.golang.org/protobuf/encoding/protowire"
)

// SnapshotFormatVersion is the format_version this package writes in a
// snapshot header. Restore reads it and format 1, which has no deadlines
// and no history.
const SnapshotFormatVersion = 2

// Bounds on the records of a snapshot stream, checked before a record is
// read so that a corrupt length cannot make Restore allocate without
// limit. An entry's or event's fixed part is at most five tags, two length
// varints (at most 2 and 3 bytes for the maximum key and value) and two
// 10-byte varints: 64 leaves room for unknown fields a later format might
// add.
const (
	maxHeaderRecord = 256
	maxEntryRecord  = MaxKeySize + MaxValueSize + 64
)

// Protobuf tags of storepb.SnapshotHeader, storepb.SnapshotEntry and
// storepb.SnapshotEvent.
const (
	tagHeaderFormat   = 1<<3 | byte(protowire.VarintType)
	tagHeaderIndex    = 2<<3 | byte(protowire.VarintType)
	tagHeaderCount    = 3<<3 | byte(protowire.VarintType)
	tagHeaderEvents   = 4<<3 | byte(protowire.VarintType)
	tagHeaderFloor    = 5<<3 | byte(protowire.VarintType)
	tagEntryKey       = 1<<3 | byte(protowire.BytesType)
	tagEntryValue     = 2<<3 | byte(protowire.BytesType)
	tagEntryVersion   = 3<<3 | byte(protowire.VarintType)
	tagEntryExpiresAt = 4<<3 | byte(protowire.VarintType)
	tagEventType      = 1<<3 | byte(protowire.VarintType)
	tagEventKey       = 2<<3 | byte(protowire.BytesType)
	tagEventValue     = 3<<3 | byte(protowire.BytesType)
	tagEventVersion   = 4<<3 | byte(protowire.VarintType)
	tagEventExpiresAt = 5<<3 | byte(protowire.VarintType)
)

// snapshotBufBytes is the buffer size of WriteTo and Restore: large
// enough that small entries cost no system call each.
const snapshotBufBytes = 64 << 10

// Snapshot is a point-in-time view of a partition, made by
// Partition.Snapshot. It shares the partition's records, which is safe
// because records are never modified. WriteTo and Release must not be
// called concurrently with each other.
type Snapshot struct {
	index    uint64
	keys     *btree.BTreeG[record] // a copy-on-write clone of the partition's key index
	history  []change
	floor    uint64
	released bool
}

// Snapshot returns a view of the partition as of AppliedIndex: its keys and
// its history. It must be called on the apply goroutine, between applies;
// later applies do not change it. It costs O(1) for the keys: it clones the
// ordered index lazily, so the partition copies an index node (about 1 KiB)
// the first time a later write touches it, while the snapshot lives. It
// copies the history's list of records (16 bytes a change), never keys or
// values.
func (p *Partition) Snapshot() *Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &Snapshot{
		index:   p.applied.Load(),
		keys:    p.ix.keys.Clone(),
		history: p.hist.changes(),
		floor:   p.hist.floor,
	}
}

// Index returns the applied index the snapshot was taken at.
func (s *Snapshot) Index() uint64 { return s.index }

// Len returns the number of keys in the snapshot.
func (s *Snapshot) Len() int {
	if s.keys == nil {
		return 0
	}
	return s.keys.Len()
}

// WriteTo writes the snapshot to w in format 2: a storepb.SnapshotHeader,
// one storepb.SnapshotEntry per key in key order, then one
// storepb.SnapshotEvent per change of the history, oldest first; each
// record is preceded by its length as a varint (the protodelim framing).
// Every replica of a partition at the same index writes the same bytes.
// Writes are buffered; a value is passed to w without being copied into an
// intermediate record. It returns the bytes w accepted.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	if s.released {
		return 0, errors.New("store: snapshot written after Release")
	}
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, snapshotBufBytes)

	// The header.
	scratch := make([]byte, 0, 64+MaxKeySize)
	var msg []byte
	msg = append(msg, tagHeaderFormat)
	msg = protowire.AppendVarint(msg, SnapshotFormatVersion)
	for _, f := range []struct {
		tag byte
		v   uint64
	}{
		{tagHeaderIndex, s.index},
		{tagHeaderCount, uint64(s.Len())},
		{tagHeaderEvents, uint64(len(s.history))},
		{tagHeaderFloor, s.floor},
	} {
		if f.v != 0 {
			msg = append(msg, f.tag)
			msg = protowire.AppendVarint(msg, f.v)
		}
	}
	scratch = protowire.AppendVarint(scratch, uint64(len(msg)))
	scratch = append(scratch, msg...)
	if _, err := bw.Write(scratch); err != nil {
		return cw.n, err
	}

	// The entries, then the events. Each is written as the fields before
	// the value, the value, and the fields after it, so that the value
	// goes straight from the partition's memory to bw; the fields stay in
	// field-number order, as proto.Marshal writes them.
	var err error
	if s.keys != nil {
		s.keys.Ascend(func(r record) bool {
			scratch, err = writeEntry(bw, scratch, r)
			return err == nil
		})
	}
	for i := 0; i < len(s.history) && err == nil; i++ {
		scratch, err = writeEvent(bw, scratch, &s.history[i])
	}
	if err != nil {
		return cw.n, err
	}
	err = bw.Flush()
	return cw.n, err
}

// writeEntry writes r as a length-prefixed storepb.SnapshotEntry.
func writeEntry(bw *bufio.Writer, scratch []byte, r record) ([]byte, error) {
	key, value, version, expiresAt := r.key(), r.value(), r.version(), r.expiresAt()
	size := 1 + protowire.SizeBytes(len(key)) + 1 + protowire.SizeVarint(version)
	if len(value) > 0 {
		size += 1 + protowire.SizeBytes(len(value))
	}
	if expiresAt != 0 {
		size += 1 + protowire.SizeVarint(uint64(expiresAt))
	}
	scratch = protowire.AppendVarint(scratch[:0], uint64(size))
	scratch = append(scratch, tagEntryKey)
	scratch = protowire.AppendString(scratch, key)
	if len(value) > 0 {
		scratch = append(scratch, tagEntryValue)
		scratch = protowire.AppendVarint(scratch, uint64(len(value)))
	}
	if _, err := bw.Write(scratch); err != nil {
		return scratch, err
	}
	if _, err := bw.Write(value); err != nil {
		return scratch, err
	}
	scratch = append(scratch[:0], tagEntryVersion)
	scratch = protowire.AppendVarint(scratch, version)
	if expiresAt != 0 {
		scratch = append(scratch, tagEntryExpiresAt)
		scratch = protowire.AppendVarint(scratch, uint64(expiresAt))
	}
	_, err := bw.Write(scratch)
	return scratch, err
}

// writeEvent writes c as a length-prefixed storepb.SnapshotEvent.
func writeEvent(bw *bufio.Writer, scratch []byte, c *change) ([]byte, error) {
	key, value, version, expiresAt := c.rec.key(), c.rec.value(), c.rec.version(), c.rec.expiresAt()
	size := 1 + protowire.SizeVarint(uint64(c.typ)) + 1 + protowire.SizeBytes(len(key)) +
		1 + protowire.SizeVarint(version)
	if len(value) > 0 {
		size += 1 + protowire.SizeBytes(len(value))
	}
	if expiresAt != 0 {
		size += 1 + protowire.SizeVarint(uint64(expiresAt))
	}
	scratch = protowire.AppendVarint(scratch[:0], uint64(size))
	scratch = append(scratch, tagEventType)
	scratch = protowire.AppendVarint(scratch, uint64(c.typ))
	scratch = append(scratch, tagEventKey)
	scratch = protowire.AppendString(scratch, key)
	if len(value) > 0 {
		scratch = append(scratch, tagEventValue)
		scratch = protowire.AppendVarint(scratch, uint64(len(value)))
	}
	if _, err := bw.Write(scratch); err != nil {
		return scratch, err
	}
	if _, err := bw.Write(value); err != nil {
		return scratch, err
	}
	scratch = append(scratch[:0], tagEventVersion)
	scratch = protowire.AppendVarint(scratch, version)
	if expiresAt != 0 {
		scratch = append(scratch, tagEventExpiresAt)
		scratch = protowire.AppendVarint(scratch, uint64(expiresAt))
	}
	_, err := bw.Write(scratch)
	return scratch, err
}

// Release drops the snapshot's references to the partition's records, so
// that records replaced since the snapshot can be collected. The snapshot
// cannot be written afterwards.
func (s *Snapshot) Release() {
	s.keys, s.history = nil, nil
	s.released = true
}

// countingWriter counts the bytes its writer accepts, for WriteTo's
// result.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// snapshotHeader is a decoded storepb.SnapshotHeader.
type snapshotHeader struct {
	format uint64
	index  uint64
	count  uint64 // entries
	events uint64 // format 2
	floor  uint64 // format 2
}

// Restore replaces the partition's state with the snapshot read from r, as
// written by Snapshot.WriteTo in format 2 or 1. It must be called on the
// apply goroutine.
//
// Restore reads the whole stream and validates every record (sizes,
// versions no later than the snapshot's index, no duplicate keys, the
// entry and event counts, events in increasing version order above the
// history's floor, nothing after the last record) into new maps, indexes
// and history before it swaps them in; on any error the old state,
// accounting and applied index are untouched. Malformed input yields an
// error wrapping ErrCorrupt; errors from r are returned wrapped. Memory use
// peaks at the old state plus the new one.
//
// The history restored is the snapshot's, trimmed to this partition's
// bounds (StorageOptions.HistoryEvents, HistoryBytes). A format 1 snapshot
// has none: the history starts empty at the snapshot's position, and its
// keys have no deadlines. A successful Restore wakes Changed's waiters.
func (p *Partition) Restore(r io.Reader) error { return p.RestoreIf(r, nil) }

// RestoreIf is Restore with a check: once the snapshot's header is read, accept (if not nil)
// is called with its index, and an error from it aborts the restore with the state unchanged.
func (p *Partition) RestoreIf(r io.Reader, accept func(index uint64) error) error {
	if p.closed.Load() {
		return ErrPartitionClosed
	}
	br := bufio.NewReaderSize(r, snapshotBufBytes)
	var buf []byte
	rec, err := readRecord(br, buf, maxHeaderRecord, "header")
	if err != nil {
		return err
	}
	hdr, err := decodeHeader(rec)
	if err != nil {
		return err
	}
	if accept != nil {
		if err := accept(hdr.index); err != nil {
			return err
		}
	}

	// entry_count is untrusted: use it to presize the maps only up to a
	// bound, so a corrupt count cannot reserve unbounded memory up front.
	t := newTable(p.shardCount, int(min(hdr.count, 1<<20)))
	ix := newIndexes(p.free)
	var bytes int64
	for i := uint64(0); i < hdr.count; i++ {
		buf, err = readRecord(br, buf, maxEntryRecord, "entry")
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		rec, err := decodeSnapshotEntry(buf, hdr.index)
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		key := rec.key()
		h := keyHash(key)
		s := t.shardFor(h)
		if s.get(h, key).exists() {
			return fmt.Errorf("entry %d: %w", i, corruptf("duplicate key %q", key))
		}
		s.put(h, rec, record{})
		ix.put(rec, record{})
		bytes += rec.size()
	}

	hist := newHistory(p.historyMax, p.historyMaxB, hdr.floor)
	last := hdr.floor
	for i := uint64(0); i < hdr.events; i++ {
		buf, err = readRecord(br, buf, maxEntryRecord, "event")
		if err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		c, err := decodeSnapshotEvent(buf, hdr.index, t)
		if err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		if v := c.rec.version(); v <= last {
			return fmt.Errorf("event %d: %w", i, corruptf("version %#x not above %#x", v, last))
		}
		last = c.rec.version()
		hist.push(c)
	}
	switch _, err := br.ReadByte(); {
	case err == nil:
		return corruptf("snapshot: data after the last of %d entries and %d events", hdr.count, hdr.events)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("store: reading snapshot: %w", err)
	}

	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed.Load() {
		return ErrPartitionClosed
	}
	p.mu.Lock()
	// The applied index moves first: a reader that finds it lowered after reading knows its
	// read may have seen the restored state, which can be older than what it replaced.
	p.applied.Store(hdr.index)
	p.table.Store(t)
	p.ix, p.hist = ix, hist
	p.mu.Unlock()
	p.count.Store(int64(hdr.count))
	p.acct.add(bytes - p.bytes.Swap(bytes))
	p.notifyChanged()
	if l := p.listener.Load(); l != nil {
		(*l)("") // the whole history was replaced
	}
	return nil
}

// readRecord reads one varint-length-prefixed record of at most limit bytes
// into buf (reused when large enough) and returns it. A stream that ends
// before or inside the record is corrupt: the header's count said more
// was coming.
func readRecord(br *bufio.Reader, buf []byte, limit uint64, what string) ([]byte, error) {
	n, err := readUvarint(br)
	if err != nil {
		return nil, readErr(err, what)
	}
	if n > limit {
		return nil, corruptf("snapshot %s of %d bytes exceeds %d", what, n, limit)
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, readErr(err, what)
	}
	return buf, nil
}

// readUvarint reads a record length. Unlike binary.ReadUvarint it reports
// an overflowing varint as ErrCorrupt, which callers can recognise without
// comparing error strings.
func readUvarint(br io.ByteReader) (uint64, error) {
	var v uint64
	for i := range binary.MaxVarintLen64 {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			break
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, corruptf("snapshot record length varint overflows 64 bits")
}

// readErr classifies a read failure: end of stream means a truncated
// snapshot, ErrCorrupt passes through, anything else is the reader's own
// error.
func readErr(err error, what string) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return corruptf("snapshot truncated in %s", what)
	case errors.Is(err, ErrCorrupt):
		return err
	default:
		return fmt.Errorf("store: reading snapshot %s: %w", what, err)
	}
}

// decodeFields decodes the protobuf message b, whose fields 1 to
// len(schema) have the wire types schema lists (protowire.VarintType or
// protowire.BytesType); other fields are skipped. A known field with
// another wire type is corrupt.
func decodeFields(b []byte, schema ...protowire.Type) (varints [6]uint64, bytes [6][]byte, err error) {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return varints, bytes, corruptf("%v", err)
		}
		b = b[n:]
		known := num >= 1 && int(num) <= len(schema)
		switch {
		case known && typ != schema[num-1]:
			return varints, bytes, corruptf("field %d has wire type %d, want %d", num, typ, schema[num-1])
		case known && typ == protowire.VarintType:
			varints[num], n = protowire.ConsumeVarint(b)
		case known:
			bytes[num], n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return varints, bytes, corruptf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return varints, bytes, nil
}

// Wire types of decodeFields schemas.
const (
	wireVarint = protowire.VarintType
	wireBytes  = protowire.BytesType
)

func decodeHeader(b []byte) (snapshotHeader, error) {
	v, _, err := decodeFields(b, wireVarint, wireVarint, wireVarint, wireVarint, wireVarint)
	if err != nil {
		return snapshotHeader{}, fmt.Errorf("snapshot header: %w", err)
	}
	h := snapshotHeader{format: v[1], index: v[2], count: v[3]}
	switch h.format {
	case 1:
		// No history (fields 4 and 5 are unknown to format 1): the
		// history starts at the snapshot's position.
		h.floor = position(h.index)
	case 2:
		h.events, h.floor = v[4], v[5]
		if h.floor > position(h.index) {
			return h, corruptf("snapshot history floor %#x after its position %#x", h.floor, position(h.index))
		}
	default:
		return h, corruptf("snapshot format version %d, want 1 or %d", h.format, SnapshotFormatVersion)
	}
	return h, nil
}

// checkVersion reports whether version could have been written by a log
// entry no later than index: Version(i, pos) with pos < MaxBatch and
// i <= index.
func checkVersion(version, index uint64) error {
	if version&0xFFFF == 0 || version>>16 > index {
		return corruptf("version %#x impossible at index %d", version, index)
	}
	return nil
}

// checkKeyValue checks the sizes of a decoded key and value, and that a
// deadline is not negative.
func checkKeyValue(key, value []byte, expiresAt int64) error {
	switch {
	case len(key) == 0 || len(key) > MaxKeySize:
		return corruptf("key of %d bytes, want 1..%d", len(key), MaxKeySize)
	case len(value) > MaxValueSize:
		return corruptf("value of %d bytes exceeds %d", len(value), MaxValueSize)
	case expiresAt < 0:
		return corruptf("negative deadline %d", expiresAt)
	}
	return nil
}

// decodeSnapshotEntry decodes and validates one storepb.SnapshotEntry of a
// snapshot taken at index into a record. The record copies the key and
// value out of b, which the caller reuses.
func decodeSnapshotEntry(b []byte, index uint64) (record, error) {
	v, f, err := decodeFields(b, wireBytes, wireBytes, wireVarint, wireVarint)
	if err != nil {
		return record{}, err
	}
	key, value, version, expiresAt := f[1], f[2], v[3], int64(v[4])
	if err := checkKeyValue(key, value, expiresAt); err != nil {
		return record{}, err
	}
	if err := checkVersion(version, index); err != nil {
		return record{}, err
	}
	return newRecord(key, value, version, expiresAt), nil
}

// decodeSnapshotEvent decodes and validates one storepb.SnapshotEvent of a
// snapshot taken at index. A put that is still its key's current state in
// t shares the record restored for that key instead of holding a second
// copy of the value.
func decodeSnapshotEvent(b []byte, index uint64, t *table) (change, error) {
	v, f, err := decodeFields(b, wireVarint, wireBytes, wireBytes, wireVarint, wireVarint)
	if err != nil {
		return change{}, err
	}
	typ, key, value, version, expiresAt := v[1], f[2], f[3], v[4], int64(v[5])
	if err := checkKeyValue(key, value, expiresAt); err != nil {
		return change{}, err
	}
	if err := checkVersion(version, index); err != nil {
		return change{}, err
	}
	if typ < uint64(EventPut) || typ > uint64(EventExpire) { // the full varint, not its low byte
		return change{}, corruptf("unknown event type %d", typ)
	}
	if EventType(typ) == EventPut {
		k := unsafe.String(unsafe.SliceData(key), len(key))
		h := keyHash(k)
		if cur := t.shardFor(h).get(h, k); cur.version() == version &&
			cur.expiresAt() == expiresAt && string(cur.value()) == string(value) {
			return change{cur, EventPut}, nil
		}
		return change{newRecord(key, value, version, expiresAt), EventPut}, nil
	}
	if len(value) != 0 || expiresAt != 0 {
		return change{}, corruptf("%v event with a value or a deadline", EventType(typ))
	}
	return change{newRecord(key, nil, version, 0), EventType(typ)}, nil
}
