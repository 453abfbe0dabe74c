package gridkv

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/feellmoose/gridkv/internal/protocol"
	"github.com/feellmoose/gridkv/ring"
	"github.com/feellmoose/gridkv/store"
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

// Backup writes a copy of every key of the cluster to w: key, value, version and deadline.
// The copy of each partition is that partition's state at one position of its log (the
// positions are in BackupInfo.Cursor); different partitions are copied at different moments,
// as there is no order of changes across partitions. Keys whose deadline has passed are left
// out. Backup works from any node, whether or not it hosts replicas, and may run while the
// cluster takes writes; it reads every partition through its leader, as a linearizable List.
//
// A partition is listed a page at a time; the changes made while it is listed are read from
// its history and merged in. If they outrun the history (Storage.HistoryEvents and
// HistoryBytes), the partition is listed again, a few times, before Backup fails with an
// error wrapping ErrCompacted.
//
// Backup holds one partition's keys in memory at a time, and writes the backup as it goes.
// On error, what was written to w is not a usable backup: it has no trailer, which ReadBackup
// and Restore refuse. The format is described in docs/backup.md.
func (kv *GridKV) Backup(ctx context.Context, w io.Writer) error {
	if kv.closed.Load() {
		return ErrClosed
	}
	start := time.Now()
	enc := newBackupEncoder(w)
	enc.header(kv.cfg.partitions, start)
	keys, dataBytes := 0, int64(0)
	for p := range kv.cfg.partitions {
		c, err := kv.copyPartition(ctx, p)
		if err != nil {
			return fmt.Errorf("gridkv: backup of partition %d: %w", p, err)
		}
		enc.section(p, c.position, len(c.entries))
		for _, e := range c.entries {
			enc.record(e)
			dataBytes += int64(len(e.Key) + len(e.Value))
		}
		keys += len(c.entries)
		if enc.err != nil {
			return fmt.Errorf("gridkv: backup: writing partition %d: %w", p, enc.err)
		}
	}
	if err := enc.trailer(kv.cfg.partitions, keys); err != nil {
		return fmt.Errorf("gridkv: backup: writing the trailer: %w", err)
	}
	kv.cfg.logger.Info("backup written", "keys", keys, "data_bytes", dataBytes, "bytes", enc.written, "took", time.Since(start))
	return nil
}

// backupAttempts bounds how often Backup lists a partition whose changes outran its history.
const backupAttempts = 5

// partitionCopy is a partition's state at one position: its keys in byte order.
type partitionCopy struct {
	position uint64
	entries  []store.Entry
}

// copyPartition returns partition p's state at one position of its log, listing it again
// when its changes outran the history kept.
func (kv *GridKV) copyPartition(ctx context.Context, p int) (partitionCopy, error) {
	for attempt := 1; ; attempt++ {
		c, err := kv.copyPartitionOnce(ctx, p)
		switch {
		case err == nil:
			return c, nil
		case !errors.Is(err, ErrCompacted):
			return partitionCopy{}, err
		case attempt == backupAttempts:
			return partitionCopy{}, fmt.Errorf("listed %d times, and each time it changed faster than its history "+
				"(Storage.HistoryEvents, HistoryBytes) keeps while it was listed: %w", attempt, err)
		}
		kv.cfg.logger.Info("backup: a partition changed faster than its history keeps while it was listed; listing it again",
			"partition", p, "attempt", attempt, "err", err)
	}
}

// copyPartitionOnce lists partition p page by page. Each page is read at its own position;
// the partition's state at the last (highest) of them is the listing with the changes made
// since each page was read applied over it. A change is applied to a key when its version is
// above the version the listing holds (0 for a key absent when its page was read): the
// listing already reflects every change of that key up to its page's position, and no
// change after it.
func (kv *GridKV) copyPartitionOnce(ctx context.Context, p int) (partitionCopy, error) {
	var entries []store.Entry
	changes := make(map[string]store.Event) // the last change of each key after the first page
	var upTo uint64                         // the highest position a page was read at
	page := protocol.ListPage{Limit: MaxListLimit}
	for first := true; ; first = false {
		res, err := kv.listPartition(ctx, p, page, false)
		if err != nil {
			return partitionCopy{}, err
		}
		switch {
		case first:
			upTo = res.Position
		case res.Position > upTo:
			// Read the changes as the pages go, so that the history need only hold the
			// changes made while one page was read.
			if err := kv.readChanges(ctx, p, upTo, res.Position, changes); err != nil {
				return partitionCopy{}, err
			}
			upTo = res.Position
		}
		entries = append(entries, res.Entries...)
		if !res.More {
			break
		}
		if len(res.Entries) == 0 {
			return partitionCopy{}, fmt.Errorf("%w: a page with more to come and no entries", ErrUnavailable)
		}
		page.StartAfter = res.Entries[len(res.Entries)-1].Key
	}
	return partitionCopy{position: upTo, entries: applyChanges(entries, changes, time.Now().UnixNano())}, nil
}

// applyChanges returns listed (in byte order of key) with changes applied over it, in byte
// order of key, leaving out the keys whose deadline is no later than now.
func applyChanges(listed []store.Entry, changes map[string]store.Event, now int64) []store.Entry {
	var added []store.Entry // keys absent from the listing that a change put
	out := listed[:0]
	for _, e := range listed {
		if c, ok := changes[e.Key]; ok {
			delete(changes, e.Key)
			if c.Version > e.Version {
				if c.Type != store.EventPut {
					continue // deleted or expired since its page was read
				}
				e = store.Entry{Key: c.Key, Value: c.Value, Version: c.Version, ExpiresAt: c.ExpiresAt}
			}
		}
		if e.ExpiresAt == 0 || e.ExpiresAt > now {
			out = append(out, e)
		}
	}
	for _, c := range changes {
		if c.Type == store.EventPut && (c.ExpiresAt == 0 || c.ExpiresAt > now) {
			added = append(added, store.Entry{Key: c.Key, Value: c.Value, Version: c.Version, ExpiresAt: c.ExpiresAt})
		}
	}
	if len(added) == 0 {
		return out
	}
	slices.SortFunc(added, func(a, b store.Entry) int { return strings.Compare(a.Key, b.Key) })
	merged := make([]store.Entry, 0, len(out)+len(added))
	i, j := 0, 0
	for i < len(out) && j < len(added) {
		if out[i].Key < added[j].Key {
			merged, i = append(merged, out[i]), i+1
		} else {
			merged, j = append(merged, added[j]), j+1
		}
	}
	merged = append(merged, out[i:]...)
	return append(merged, added[j:]...)
}

// readChanges records in changes the last change of each key of partition p after position
// after and up to position upTo.
func (kv *GridKV) readChanges(ctx context.Context, p int, after, upTo uint64, changes map[string]store.Event) error {
	backoff := time.Millisecond
	for after < upTo {
		events, next, err := kv.changesAfter(ctx, p, after)
		if errors.Is(err, ErrCompacted) {
			return err
		}
		progressed := false
		for _, ev := range events {
			if ev.Version > upTo {
				return nil
			}
			changes[ev.Key] = ev
			after, progressed = ev.Version, true
		}
		if err == nil && next > after {
			after, progressed = min(next, upTo), true
		}
		if progressed {
			backoff = time.Millisecond
			continue
		}
		// No replica within reach has applied as far yet, or none answered: every position
		// up to upTo was applied by the leader a page was read from, so the others follow.
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: reading its changes: %w (last: %v)", ErrUnavailable, ctx.Err(), err)
		case <-kv.done:
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
	return nil
}

// changesAfter reads partition p's changes after position after, where a watch of p would:
// from this node's replica if it has one that has applied past after, else from a replica
// elsewhere. It returns the changes and the position read up to.
func (kv *GridKV) changesAfter(ctx context.Context, p int, after uint64) ([]store.Event, uint64, error) {
	var localErr error
	if src := kv.localSource(p); src != nil {
		events, next, err := src.Events(after, "", protocol.MaxEvents)
		if err == nil && (len(events) > 0 || next > after) {
			return events, next, nil
		}
		localErr = err // behind, or a new replica whose history starts later
	}
	events, next, err := kv.fetchEvents(ctx, p, after, "", protocol.MaxEvents, 0)
	if err != nil && errors.Is(localErr, ErrCompacted) {
		return nil, after, localErr
	}
	return events, next, err
}

// Restore writes every key of a backup, read from r, into the cluster: the call that loads a
// backup into a new cluster, whatever its partition count. Each key is written with Set, with
// its value and, for a key with a deadline, WithTTL of the time that remains until it (keys
// whose deadline has passed are skipped), 256 writes at a time. Versions are not kept: each
// key gets the version its write takes in this cluster's log. Restore into a cluster that
// holds keys overwrites those the backup holds and leaves the others.
//
// Restore checks the stream as it reads it (ReadBackup) and writes keys as they come, so it
// holds only the keys being written (at most about 64 MiB of values). The checksum that
// covers the whole backup is in its trailer: a stream that is cut short or corrupt is found
// out at the latest there, and Restore then returns an error wrapping ErrInvalidBackup, after
// some keys were written: the cluster holds part of the backup. To check a backup before
// writing anything, read it once with ReadBackup(r, nil). A write that fails with
// ErrUnavailable (a leader changed, say) is tried again a few times; Restore stops when ctx
// ends (a read of r already blocked returns first) or at a write that still fails, and
// returns the error with the number of keys written.
func (kv *GridKV) Restore(ctx context.Context, r io.Reader) error {
	if kv.closed.Load() {
		return ErrClosed
	}
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	entries := make(chan Entry, restoreWriters)
	// A key holds restoreUnits(value) tokens from when it is read until it is written.
	tokens := make(chan struct{}, restoreBytes/restoreUnit)
	var written, expired atomic.Int64
	var wg sync.WaitGroup
	for range restoreWriters {
		wg.Go(func() {
			for e := range entries {
				if ctx.Err() == nil { // else drain: the reader stops at its next key
					switch ok, err := kv.restoreKey(ctx, e); {
					case err != nil:
						cancel(fmt.Errorf("writing %q: %w", e.Key, err))
					case ok:
						written.Add(1)
					default:
						expired.Add(1)
					}
				}
				for range restoreUnits(e.Value) {
					<-tokens
				}
			}
		})
	}
	info, readErr := ReadBackup(r, func(e Entry) error {
		for range restoreUnits(e.Value) {
			select {
			case tokens <- struct{}{}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		select {
		case entries <- e:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(entries)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("gridkv: restore stopped with %d keys written: %w", written.Load(), err)
	}
	if readErr != nil {
		return fmt.Errorf("gridkv: restore: %w; the cluster holds part of the backup (%d keys written)", readErr, written.Load())
	}
	kv.cfg.logger.Info("backup restored", "keys", written.Load(), "skipped_expired", expired.Load(),
		"taken_at", info.TakenAt, "took", time.Since(start))
	return nil
}

// restoreAttempts bounds the writes of one key that fail with ErrUnavailable: a leader lost
// while committing leaves the outcome unknown, and writing the same value again is harmless.
const restoreAttempts = 5

// restoreKey writes e, WithTTL of the time left until its deadline; false if none is left.
func (kv *GridKV) restoreKey(ctx context.Context, e Entry) (bool, error) {
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var opts []Option
		if !e.ExpiresAt.IsZero() {
			ttl := time.Until(e.ExpiresAt)
			if ttl <= 0 {
				return false, nil
			}
			opts = append(opts, WithTTL(ttl))
		}
		err := kv.Set(ctx, e.Key, e.Value, opts...)
		if err == nil || !errors.Is(err, ErrUnavailable) || attempt == restoreAttempts || ctx.Err() != nil {
			return err == nil, err
		}
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// Restore has up to restoreWriters writes in flight, enough to fill the batches the leaders
// propose (on two cores, 256 load 100k keys three times as fast as 64), and holds at most
// about restoreBytes of values read and not yet written, counted in units of restoreUnit.
const (
	restoreWriters = 256
	restoreBytes   = 64 << 20
	restoreUnit    = 64 << 10
)

// restoreUnits is how many units of restoreBytes a key with value holds.
func restoreUnits(value []byte) int { return 1 + len(value)/restoreUnit }

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

// backupEncoder writes a backup, hashing what it writes. The first error sticks.
type backupEncoder struct {
	w       *bufio.Writer // writes to the caller's writer and to sum
	sum     *xxhash.Digest
	tmp     [binary.MaxVarintLen64]byte
	written int64
	err     error
}

// countingWriter counts what it passes on.
type countingWriter struct {
	w io.Writer
	n *int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	*c.n += int64(n)
	return n, err
}

func newBackupEncoder(w io.Writer) *backupEncoder {
	e := &backupEncoder{sum: xxhash.New()}
	e.w = bufio.NewWriterSize(io.MultiWriter(countingWriter{w: w, n: &e.written}, e.sum), 64<<10)
	return e
}

func (e *backupEncoder) bytes(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *backupEncoder) uvarint(v uint64) { e.bytes(binary.AppendUvarint(e.tmp[:0], v)) }

func (e *backupEncoder) header(partitions int, takenAt time.Time) {
	e.bytes([]byte(backupMagic))
	e.uvarint(BackupFormat)
	e.uvarint(uint64(partitions))
	e.uvarint(uint64(takenAt.UnixNano()))
}

func (e *backupEncoder) section(p int, position uint64, keys int) {
	e.bytes([]byte{sectionTag})
	e.uvarint(uint64(p))
	e.uvarint(position)
	e.uvarint(uint64(keys))
}

func (e *backupEncoder) record(r store.Entry) {
	e.uvarint(uint64(len(r.Key)))
	if e.err == nil {
		_, e.err = e.w.WriteString(r.Key)
	}
	e.uvarint(uint64(len(r.Value)))
	e.bytes(r.Value)
	e.uvarint(r.Version)
	e.uvarint(uint64(r.ExpiresAt))
}

func (e *backupEncoder) trailer(sections, keys int) error {
	e.bytes([]byte{trailerTag})
	e.uvarint(uint64(sections))
	e.uvarint(uint64(keys))
	if e.err == nil {
		e.err = e.w.Flush() // every byte before the checksum is in sum
	}
	e.bytes(binary.BigEndian.AppendUint64(e.tmp[:0], e.sum.Sum64()))
	if e.err == nil {
		e.err = e.w.Flush()
	}
	return e.err
}

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
