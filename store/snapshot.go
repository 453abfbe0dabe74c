package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// SnapshotFormatVersion is the format_version this package writes in a
// snapshot header and the only one Restore accepts.
const SnapshotFormatVersion = 1

// Bounds on the records of a snapshot stream, checked before a record is
// read so that a corrupt length cannot make Restore allocate without
// limit. An entry's fixed part is three tags, two length varints (at most
// 2 and 3 bytes for the maximum key and value) and a 10-byte version: 64
// leaves room for unknown fields a later format might add.
const (
	maxHeaderRecord = 256
	maxEntryRecord  = MaxKeySize + MaxValueSize + 64
)

// Protobuf tags of storepb.SnapshotHeader and storepb.SnapshotEntry.
const (
	tagHeaderFormat = 1<<3 | byte(protowire.VarintType)
	tagHeaderIndex  = 2<<3 | byte(protowire.VarintType)
	tagHeaderCount  = 3<<3 | byte(protowire.VarintType)
	tagEntryKey     = 1<<3 | byte(protowire.BytesType)
	tagEntryValue   = 2<<3 | byte(protowire.BytesType)
	tagEntryVersion = 3<<3 | byte(protowire.VarintType)
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
	entries  []record
	released bool
}

// Snapshot returns a view of the partition as of AppliedIndex. It must be
// called on the apply goroutine, between applies; later applies do not
// change it. It keeps one pointer per key (8 bytes) to the key's immutable
// record, never a copy of keys or values.
func (p *Partition) Snapshot() *Snapshot {
	t := p.table.Load()
	s := &Snapshot{
		index:   p.applied.Load(),
		entries: make([]record, 0, p.count.Load()),
	}
	for i := range t.shards {
		// No lock: this goroutine is the only writer of the maps.
		s.entries = t.shards[i].appendRecords(s.entries)
	}
	return s
}

// Index returns the applied index the snapshot was taken at.
func (s *Snapshot) Index() uint64 { return s.index }

// Len returns the number of keys in the snapshot.
func (s *Snapshot) Len() int { return len(s.entries) }

// WriteTo writes the snapshot to w: a storepb.SnapshotHeader, then one
// storepb.SnapshotEntry per key, each preceded by its length as a varint
// (the protodelim framing). Writes are buffered; a value is passed to w
// without being copied into an intermediate record. It returns the bytes
// w accepted.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	if s.released {
		return 0, errors.New("store: snapshot written after Release")
	}
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, snapshotBufBytes)

	// The header.
	scratch := make([]byte, 0, 32+MaxKeySize)
	hsize := 1 + protowire.SizeVarint(SnapshotFormatVersion)
	if s.index != 0 {
		hsize += 1 + protowire.SizeVarint(s.index)
	}
	if n := uint64(len(s.entries)); n != 0 {
		hsize += 1 + protowire.SizeVarint(n)
	}
	scratch = protowire.AppendVarint(scratch, uint64(hsize))
	scratch = append(scratch, tagHeaderFormat)
	scratch = protowire.AppendVarint(scratch, SnapshotFormatVersion)
	if s.index != 0 {
		scratch = append(scratch, tagHeaderIndex)
		scratch = protowire.AppendVarint(scratch, s.index)
	}
	if n := uint64(len(s.entries)); n != 0 {
		scratch = append(scratch, tagHeaderCount)
		scratch = protowire.AppendVarint(scratch, n)
	}
	if _, err := bw.Write(scratch); err != nil {
		return cw.n, err
	}

	// The entries. Each is written as prefix, value, version so that the
	// value goes straight from the partition's memory to bw; the fields
	// stay in field-number order, as proto.Marshal writes them.
	for _, r := range s.entries {
		key, value, version := r.key(), r.value(), r.version()
		size := 1 + protowire.SizeBytes(len(key)) + 1 + protowire.SizeVarint(version)
		if len(value) > 0 {
			size += 1 + protowire.SizeBytes(len(value))
		}
		scratch = protowire.AppendVarint(scratch[:0], uint64(size))
		scratch = append(scratch, tagEntryKey)
		scratch = protowire.AppendString(scratch, key)
		if len(value) > 0 {
			scratch = append(scratch, tagEntryValue)
			scratch = protowire.AppendVarint(scratch, uint64(len(value)))
		}
		if _, err := bw.Write(scratch); err != nil {
			return cw.n, err
		}
		if _, err := bw.Write(value); err != nil {
			return cw.n, err
		}
		scratch = append(scratch[:0], tagEntryVersion)
		scratch = protowire.AppendVarint(scratch, version)
		if _, err := bw.Write(scratch); err != nil {
			return cw.n, err
		}
	}
	err := bw.Flush()
	return cw.n, err
}

// Release drops the snapshot's references to the partition's records, so
// that records replaced since the snapshot can be collected. The snapshot
// cannot be written afterwards.
func (s *Snapshot) Release() {
	s.entries = nil
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
	count  uint64
}

// Restore replaces the partition's state with the snapshot read from r, as
// written by Snapshot.WriteTo. It must be called on the apply goroutine.
//
// Restore reads the whole stream and validates every record (sizes,
// versions no later than the snapshot's index, no duplicate keys, the
// entry count, nothing after the last entry) into new maps before it
// swaps them in; on any error the old state, accounting and applied index
// are untouched. Malformed input yields an error wrapping ErrCorrupt;
// errors from r are returned wrapped. Memory use peaks at the old state
// plus the new one.
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
		bytes += rec.size()
	}
	switch _, err := br.ReadByte(); {
	case err == nil:
		return corruptf("snapshot: data after the last of %d entries", hdr.count)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("store: reading snapshot: %w", err)
	}

	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed.Load() {
		return ErrPartitionClosed
	}
	// The applied index moves first: a reader that finds it lowered after reading knows its
	// read may have seen the restored state, which can be older than what it replaced.
	p.applied.Store(hdr.index)
	p.table.Store(t)
	p.count.Store(int64(hdr.count))
	p.acct.add(bytes - p.bytes.Swap(bytes))
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

func decodeHeader(b []byte) (snapshotHeader, error) {
	var h snapshotHeader
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return h, corruptf("snapshot header: %v", err)
		}
		b = b[n:]
		var v uint64
		if num >= 1 && num <= 3 {
			if typ != protowire.VarintType {
				return h, corruptf("snapshot header: field %d has wire type %d", num, typ)
			}
			v, n = protowire.ConsumeVarint(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return h, corruptf("snapshot header: field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case 1:
			h.format = v
		case 2:
			h.index = v
		case 3:
			h.count = v
		}
	}
	if h.format != SnapshotFormatVersion {
		return h, corruptf("snapshot format version %d, want %d", h.format, SnapshotFormatVersion)
	}
	return h, nil
}

// decodeSnapshotEntry decodes and validates one storepb.SnapshotEntry of a
// snapshot taken at index into a record. The record copies the key and
// value out of b, which the caller reuses.
func decodeSnapshotEntry(b []byte, index uint64) (record, error) {
	var (
		key, value []byte
		version    uint64
	)
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return record{}, corruptf("%v", err)
		}
		b = b[n:]
		want := protowire.Type(-1)
		switch num {
		case 1:
			want = protowire.BytesType
			key, n = protowire.ConsumeBytes(b)
		case 2:
			want = protowire.BytesType
			value, n = protowire.ConsumeBytes(b)
		case 3:
			want = protowire.VarintType
			version, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if want >= 0 && typ != want {
			return record{}, corruptf("field %d has wire type %d, want %d", num, typ, want)
		}
		if n < 0 {
			return record{}, corruptf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	switch {
	case len(key) == 0 || len(key) > MaxKeySize:
		return record{}, corruptf("key of %d bytes, want 1..%d", len(key), MaxKeySize)
	case len(value) > MaxValueSize:
		return record{}, corruptf("value of %d bytes exceeds %d", len(value), MaxValueSize)
	case version&0xFFFF == 0 || version>>16 > index:
		// Every version is Version(i, pos) with pos < MaxBatch and
		// i <= the snapshot's index.
		return record{}, corruptf("version %#x impossible at index %d", version, index)
	}
	return newRecord(key, value, version), nil
}
