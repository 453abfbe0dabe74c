package gridkv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/feellmoose/gridkv/ring"
)

// ErrInvalidBackup is returned by ReadBackup and Restore for a stream that is not a whole,
// intact backup of a format this GridKV reads: the error says what is wrong and where.
var ErrInvalidBackup = errors.New("gridkv: invalid backup")

// BackupFormat is the version of the backup format Backup writes. ReadBackup and Restore
// read this version and refuse any other.
const BackupFormat = 1

// BackupInfo describes a backup, as ReadBackup reads it.
type BackupInfo struct {
	Format     int       // the format version, BackupFormat
	Partitions int       // the partition count of the cluster it was taken from
	TakenAt    time.Time // when Backup began, by the clock of the node that took it
	// Cursor holds, for every partition, the position its copy is of: the backup holds each
	// partition's state after every change up to that position and none after it. A Watch
	// FromCursor(Cursor) on the cluster the backup was taken from yields the changes since.
	Cursor Cursor
	Keys   int // how many keys the backup holds
}

// The format (docs/backup.md): a header, then for every partition in order a section header
// and its keys in byte order, then a trailer. Integers are unsigned varints (encoding/binary)
// unless said otherwise.
//
//	header:  "GRIDKVBK" | format | partitions | taken at (unix ns)
//	section: 'P' | partition | position | keys
//	key:     key length | key | value length | value | version | expires at (unix ns, 0: never)
//	trailer: 'T' | sections | keys | xxhash64 of every byte before it (8 bytes, big endian)
const (
	backupMagic = "GRIDKVBK"
	sectionTag  = 'P'
	trailerTag  = 'T'
)

// ReadBackup reads a backup from r to its end and checks it whole: the header, every key
// (its length, its partition, its order), the trailer's counts and checksum, and that
// nothing follows. It calls fn, if not nil, with each key as it is read, in the order of the
// backup (partition by partition, each in byte order of key); fn owns the entry's value. If
// fn returns an error, ReadBackup stops and returns it.
//
// A backup is known whole only once its trailer is read: fn sees keys before a later part of
// the stream may turn out cut short or corrupt. An error wrapping ErrInvalidBackup says what
// is wrong and at which byte; a read error of r is returned as such. ReadBackup(r, nil) checks
// a backup without a cluster, holding one key at a time.
func ReadBackup(r io.Reader, fn func(Entry) error) (BackupInfo, error) {
	d := &backupDecoder{r: r, buf: make([]byte, 64<<10), sum: xxhash.New(), part: -1}
	return d.read(fn)
}

// backupDecoder reads a backup from r through buf, hashing the bytes it consumes.
type backupDecoder struct {
	r      io.Reader
	buf    []byte
	hashed int   // buf[hashed:off] are consumed but not hashed yet
	off, n int   // buf[off:n] are read but not consumed
	base   int64 // the stream offset of buf[0]
	sum    *xxhash.Digest
	atEOF  bool   // r said io.EOF
	rerr   error  // r's error other than io.EOF
	part   int    // the partition whose section is being read, -1 outside sections
	key    uint64 // the key being read in that section
}

// invalid returns an error wrapping ErrInvalidBackup that says where the stream went wrong.
func (d *backupDecoder) invalid(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d%s: %w", ErrInvalidBackup, d.base+int64(d.off), d.where(), fmt.Errorf(format, args...))
}

func (d *backupDecoder) where() string {
	if d.part < 0 {
		return ""
	}
	return fmt.Sprintf(" (partition %d, key %d)", d.part, d.key)
}

// hashConsumed feeds the bytes consumed so far to the checksum.
func (d *backupDecoder) hashConsumed() {
	_, _ = d.sum.Write(d.buf[d.hashed:d.off])
	d.hashed = d.off
}

// fill reads until at least one byte is buffered.
func (d *backupDecoder) fill() error {
	if d.off < d.n {
		return nil
	}
	d.hashConsumed()
	d.base += int64(d.n)
	d.off, d.n, d.hashed = 0, 0, 0
	for empty := 0; d.n == 0; empty++ {
		switch {
		case empty == 100:
			d.rerr = io.ErrNoProgress
			fallthrough
		case d.rerr != nil:
			return fmt.Errorf("gridkv: reading backup at byte %d: %w", d.base, d.rerr)
		case d.atEOF:
			return d.invalid("the stream ends early, cut short: %w", io.ErrUnexpectedEOF)
		}
		n, err := d.r.Read(d.buf)
		d.n = n
		if err == io.EOF {
			d.atEOF = true
		} else if err != nil {
			d.rerr = err
		}
	}
	return nil
}

func (d *backupDecoder) byte() (byte, error) {
	if err := d.fill(); err != nil {
		return 0, err
	}
	b := d.buf[d.off]
	d.off++
	return b, nil
}

func (d *backupDecoder) uvarint(what string) (uint64, error) {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		b, err := d.byte()
		if err != nil {
			return 0, err
		}
		if shift == 63 && b > 1 || shift > 63 {
			return 0, d.invalid("%s: a varint overflows 64 bits", what)
		}
		v |= uint64(b&0x7F) << shift
		if b < 0x80 {
			if b == 0 && shift > 0 {
				return 0, d.invalid("%s: a varint is not in its shortest form", what)
			}
			return v, nil
		}
	}
}

// bytes reads the next n bytes into a new slice. The caller has bounded n.
func (d *backupDecoder) bytes(n int) ([]byte, error) {
	out := make([]byte, n)
	for got := 0; got < n; {
		if err := d.fill(); err != nil {
			return nil, err
		}
		c := copy(out[got:], d.buf[d.off:d.n])
		d.off += c
		got += c
	}
	return out, nil
}

func (d *backupDecoder) read(fn func(Entry) error) (BackupInfo, error) {
	var info BackupInfo
	magic, err := d.bytes(len(backupMagic))
	if err != nil {
		return info, err
	}
	if string(magic) != backupMagic {
		return info, d.invalid("not a GridKV backup: it starts with %q, not %q", magic, backupMagic)
	}
	format, err := d.uvarint("format")
	if err != nil {
		return info, err
	}
	if format != BackupFormat {
		return info, d.invalid("format version %d; this GridKV reads version %d", format, BackupFormat)
	}
	partitions, err := d.uvarint("partitions")
	if err != nil {
		return info, err
	}
	if partitions < 1 || partitions > MaxPartitions {
		return info, d.invalid("%d partitions, not in 1..%d", partitions, MaxPartitions)
	}
	takenAt, err := d.uvarint("taken at")
	if err != nil {
		return info, err
	}
	if takenAt > math.MaxInt64 {
		return info, d.invalid("taken at %d ns, past the year 2262", takenAt)
	}
	info.Format, info.Partitions, info.TakenAt = int(format), int(partitions), time.Unix(0, int64(takenAt))
	positions := make([]uint64, 0, partitions)
	for {
		tag, err := d.byte()
		if err != nil {
			return info, err
		}
		if tag == trailerTag {
			break
		}
		if tag != sectionTag {
			return info, d.invalid("byte %#x where a partition section or the trailer begins", tag)
		}
		p, position, err := d.sectionHeader(len(positions), info.Partitions)
		if err != nil {
			return info, err
		}
		positions = append(positions, position)
		keys, err := d.uvarint("key count")
		if err != nil {
			return info, err
		}
		prev := ""
		d.part = p
		for d.key = 0; d.key < keys; d.key++ {
			e, err := d.record(p, info.Partitions, position, prev)
			if err != nil {
				return info, err
			}
			prev = e.Key
			info.Keys++
			if fn != nil {
				if err := fn(e); err != nil {
					return info, err
				}
			}
		}
		d.part = -1
	}
	sections, err := d.uvarint("section count")
	if err != nil {
		return info, err
	}
	keys, err := d.uvarint("key count")
	if err != nil {
		return info, err
	}
	switch {
	case len(positions) != info.Partitions:
		return info, d.invalid("%d partition sections for %d partitions", len(positions), info.Partitions)
	case sections != uint64(len(positions)):
		return info, d.invalid("the trailer counts %d sections, the backup holds %d", sections, len(positions))
	case keys != uint64(info.Keys):
		return info, d.invalid("the trailer counts %d keys, the backup holds %d", keys, info.Keys)
	}
	d.hashConsumed()
	want := d.sum.Sum64()
	sum, err := d.bytes(8)
	if err != nil {
		return info, err
	}
	if got := binary.BigEndian.Uint64(sum); got != want {
		return info, d.invalid("checksum %#016x; the bytes before it hash to %#016x: the backup is corrupt", got, want)
	}
	if _, err := d.byte(); err == nil {
		return info, d.invalid("bytes follow the trailer")
	} else if !d.atEOF || d.rerr != nil {
		return info, err // a read error, not the end
	}
	info.Cursor = newCursor(positions)
	return info, nil
}

// sectionHeader reads a section's partition and position after its tag: the partition must
// be the one expected next.
func (d *backupDecoder) sectionHeader(want, partitions int) (int, uint64, error) {
	p, err := d.uvarint("partition")
	if err != nil {
		return 0, 0, err
	}
	if p != uint64(want) {
		return 0, 0, d.invalid("a section of partition %d where partition %d of %d comes", p, want, partitions)
	}
	position, err := d.uvarint("position")
	return int(p), position, err
}

// record reads one key of partition p, whose section is of position position and whose
// previous key was prev ("" for none).
func (d *backupDecoder) record(p, partitions int, position uint64, prev string) (Entry, error) {
	kl, err := d.uvarint("key length")
	if err != nil {
		return Entry{}, err
	}
	if kl < 1 || kl > MaxKeySize {
		return Entry{}, d.invalid("a key of %d bytes, not in 1..%d", kl, MaxKeySize)
	}
	key, err := d.bytes(int(kl))
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Key: string(key)}
	if e.Key <= prev {
		return Entry{}, d.invalid("key %.40q follows %.40q: keys must be in increasing byte order", e.Key, prev)
	}
	if q := ring.PartitionOf(e.Key, partitions); q != p {
		return Entry{}, d.invalid("key %.40q is of partition %d, in the section of partition %d", e.Key, q, p)
	}
	vl, err := d.uvarint("value length")
	if err != nil {
		return Entry{}, err
	}
	if vl > MaxValueSize {
		return Entry{}, d.invalid("key %.40q has a value of %d bytes, over %d", e.Key, vl, MaxValueSize)
	}
	if e.Value, err = d.bytes(int(vl)); err != nil {
		return Entry{}, err
	}
	if e.Version, err = d.uvarint("version"); err != nil {
		return Entry{}, err
	}
	if e.Version == 0 || e.Version > position {
		return Entry{}, d.invalid("key %.40q at version %#x, not in 1..%#x, the section's position", e.Key, e.Version, position)
	}
	expiresAt, err := d.uvarint("expires at")
	if err != nil {
		return Entry{}, err
	}
	if expiresAt > math.MaxInt64 {
		return Entry{}, d.invalid("key %.40q expires at %d ns, past the year 2262", e.Key, expiresAt)
	}
	e.ExpiresAt = unixTime(int64(expiresAt))
	return e, nil
}
