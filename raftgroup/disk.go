package raftgroup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"

	"github.com/feellmoose/gridkv/store"
)

// A durable replica (Storage.DataDir set) keeps what raft needs to survive a restart on
// disk; its state machine stays in memory and is rebuilt from the newest snapshot and the
// log after it. One directory per partition under the node's DataDir:
//
//	partitions/0003/wal/                 the log (raft-wal segments) and wal-meta.db, a bbolt
//	                                     file with the term, the vote and the segment list
//	partitions/0003/snapshots/<id>/      raft's FileSnapshotStore: the newest snapshotsKept
//	partitions/0003/refused-snapshots/   snapshots found unreadable or refused by a restore,
//	                                     kept for inspection, never read again
//
// raft-wal is the log store Consul moved to: append-only segment files, one fsync per batch
// raft hands it, and a prefix truncation that deletes whole segment files, so disk use
// follows the retained log. Each partition has its own WAL (and so its own fsyncs): raft-wal
// syncs the segment file it writes, and two logs cannot share one.
const (
	partitionsDir    = "partitions"
	walDir           = "wal"
	refusedDir       = "refused-snapshots"
	snapshotsKept    = 2
	walSegmentSize   = 8 << 20
	partitionDirName = "%04d"
)

// PartitionDir returns the directory of partition p's replica under dataDir.
func PartitionDir(dataDir string, p int) string {
	return filepath.Join(dataDir, partitionsDir, fmt.Sprintf(partitionDirName, p))
}

// PartitionsOnDisk returns the partitions that have a replica directory under dataDir, in
// order. A dataDir without any gives none and no error.
func PartitionsOnDisk(dataDir string) ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(dataDir, partitionsDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), droppedPrefix) {
			// A deletion a crash interrupted: finish it.
			_ = os.RemoveAll(filepath.Join(dataDir, partitionsDir, e.Name()))
			continue
		}
		if !e.IsDir() {
			continue
		}
		p, err := strconv.Atoi(e.Name())
		if err != nil || p < 0 || fmt.Sprintf(partitionDirName, p) != e.Name() {
			return nil, fmt.Errorf("raftgroup: unexpected directory %s in %s", e.Name(), filepath.Join(dataDir, partitionsDir))
		}
		out = append(out, p)
	}
	sort.Ints(out)
	return out, nil
}

// diskIO is what every durable replica of a node shares: the sync mode, the fsync count, and a
// hook tests use to make the disk fail.
type diskIO struct {
	sync   store.SyncMode
	fsyncs atomic.Uint64
	// fault, when set, is asked before every write and sync of a log file; an error it
	// returns is what the file operation returns. Tests set it to act out a full disk.
	fault atomic.Pointer[func(op string) error]
}

func (d *diskIO) check(op string) error {
	if f := d.fault.Load(); f != nil {
		return (*f)(op)
	}
	return nil
}

// diskVFS is raft-wal's file system, with diskIO's sync mode, count and fault hook.
type diskVFS struct {
	*fs.FS
	io *diskIO
}

func (v diskVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	if err := v.io.check("create"); err != nil {
		return nil, err
	}
	f, err := v.FS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return diskFile{WritableFile: f, io: v.io}, nil
}

func (v diskVFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := v.FS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	return diskFile{WritableFile: f, io: v.io}, nil
}

type diskFile struct {
	types.WritableFile
	io *diskIO
}

func (f diskFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.io.check("write"); err != nil {
		return 0, err
	}
	return f.WritableFile.WriteAt(p, off)
}

func (f diskFile) Sync() error {
	if err := f.io.check("sync"); err != nil {
		return err
	}
	if f.io.sync == store.SyncNone {
		return nil
	}
	f.io.fsyncs.Add(1)
	return f.WritableFile.Sync()
}

// diskStores are one durable replica's log, stable and snapshot stores.
type diskStores struct {
	wal   *wal.WAL
	log   *walLog // wal, as the replica's log store
	meta  *metadb.BoltMetaDB
	snaps *fileSnapshots
}

// walLog is the WAL as a log store that reports a failed write. raft-wal's segment writer
// is not left usable by one: the entries it was appending stay in its in-memory index
// though they never reached the file, and every later append fails its order check. What
// is on disk is consistent (the torn batch has no commit frame and is dropped when the
// file is opened again), so the replica is restarted from its directory; see
// Manager.restartReplica.
type walLog struct {
	*wal.WAL
	once   sync.Once
	failed func(error) // set by the group before raft starts; called once
}

func (l *walLog) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

func (l *walLog) StoreLogs(logs []*raft.Log) error {
	err := l.WAL.StoreLogs(logs)
	if err != nil && !errors.Is(err, wal.ErrClosed) && l.failed != nil {
		l.once.Do(func() { l.failed(err) })
	}
	return err
}

// openDisk opens (or creates) the stores of the replica whose directory is dir. Unreadable
// snapshots are moved aside; a replica left with no usable snapshot while its log no longer
// starts at the first entry cannot rebuild its state, and fails to open (see vetSnapshots).
func openDisk(dir string, dio *diskIO, logger *slog.Logger, group int) (*diskStores, error) {
	walPath := filepath.Join(dir, walDir)
	if err := os.MkdirAll(walPath, 0o700); err != nil {
		return nil, err
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walPath,
		wal.WithMetaStore(meta),
		wal.WithSegmentFiler(segment.NewFiler(walPath, diskVFS{FS: fs.New(), io: dio})),
		wal.WithSegmentSize(walSegmentSize),
		wal.WithLogger(raftLogger(logger, group)))
	if err != nil {
		_ = meta.Close() // wal.Open leaves its meta store open when it fails
		return nil, fmt.Errorf("opening the log in %s: %w", walPath, err)
	}
	d := &diskStores{wal: w, log: &walLog{WAL: w}, meta: meta}
	removeTempSnapshots(dir)
	fss, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsKept, raftLogger(logger, group))
	if err != nil {
		d.close()
		return nil, fmt.Errorf("opening the snapshots in %s: %w", dir, err)
	}
	d.snaps = &fileSnapshots{FileSnapshotStore: fss, dir: dir, logger: logger.With("partition", group)}
	if err := d.vetSnapshots(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// vetSnapshots checks every retained snapshot's checksum (FileSnapshotStore.Open verifies it)
// and moves the ones that fail aside, so raft starts from the newest good one and never sends
// a bad one to a follower. The log is kept back to the oldest retained snapshot (see
// replayLog.keepAfter), so the next older snapshot can stand in for a bad newest one.
//
// Raft starts from the newest good snapshot and applies the log after it. If the log does not
// reach back to that snapshot (or, with no snapshot left, to entry 1), raft would find entries
// missing when it applies, and it panics there. Emptying the log to fetch everything from the
// peers is not safe either: a voter that forgets entries it acknowledged can help elect a
// leader without them. So that case is an error, and the node does not start.
func (d *diskStores) vetSnapshots() error {
	metas, err := d.snaps.FileSnapshotStore.List()
	if err != nil {
		return err
	}
	var base uint64 // the newest good snapshot's index; 0: none
	for _, m := range metas {
		_, rc, err := d.snaps.FileSnapshotStore.Open(m.ID)
		if err == nil {
			rc.Close()
			base = max(base, m.Index)
			continue
		}
		d.snaps.logger.Warn("refusing a snapshot that fails its check; starting from an older one",
			"snapshot", m.ID, "index", m.Index, "err", err)
		if err := d.snaps.moveAside(m.ID); err != nil {
			return err
		}
	}
	first, err := d.wal.FirstIndex()
	if err != nil {
		return err
	}
	if first > base+1 {
		return fmt.Errorf("%w: in %s the newest usable snapshot is at entry %d and the log starts at entry %d; its state cannot be rebuilt from this disk (see docs/durability.md, \"Bad disks\")",
			ErrUnrecoverable, d.snaps.dir, base, first)
	}
	return nil
}

// oldestSnapshot returns the index of the oldest retained snapshot, or 0.
func (s *fileSnapshots) oldestSnapshot() uint64 {
	metas, err := s.FileSnapshotStore.List()
	if err != nil || len(metas) == 0 {
		return 0
	}
	return metas[len(metas)-1].Index
}

func (d *diskStores) close() {
	if d.wal != nil {
		_ = d.wal.Close()
	}
	// raft-wal's Close leaves its meta store (and the bbolt file lock) open.
	_ = d.meta.Close()
}

// fileSnapshots is raft's FileSnapshotStore with what a group needs of its snapshot store: a
// hook when a snapshot is sent again, and a snapshot whose restore was refused moved aside.
type fileSnapshots struct {
	*raft.FileSnapshotStore
	dir    string // the replica's directory
	logger *slog.Logger

	mu        sync.Mutex // guards installed, lastSent, onResend
	installed string     // ID of the snapshot an install wrote, until its restore ends
	lastSent  string     // ID of the snapshot last opened
	onResend  func()
}

func (s *fileSnapshots) Create(version raft.SnapshotVersion, index, term uint64,
	configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &fileSink{SnapshotSink: sink, store: s}, nil
}

// Open is FileSnapshotStore.Open; opening the same snapshot twice in a row runs onResend (see
// viewSnapshotStore.onResend).
func (s *fileSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	again := s.lastSent == id
	s.lastSent = id
	resend := s.onResend
	s.mu.Unlock()
	if again && resend != nil {
		resend()
	}
	return s.FileSnapshotStore.Open(id)
}

func (s *fileSnapshots) setOnResend(fn func()) {
	s.mu.Lock()
	s.onResend = fn
	s.mu.Unlock()
}

// restored settles an install whose restore just ended: a refused one is moved aside, so the
// store lists what the state machine holds.
func (s *fileSnapshots) restored(err error) {
	s.mu.Lock()
	id := s.installed
	s.installed = ""
	s.mu.Unlock()
	if err == nil || id == "" {
		return
	}
	if merr := s.moveAside(id); merr != nil {
		s.logger.Warn("moving a refused snapshot aside", "snapshot", id, "err", merr)
	}
}

func (s *fileSnapshots) close() {}

// moveAside moves snapshot id out of the store into refused-snapshots/.
func (s *fileSnapshots) moveAside(id string) error {
	to := filepath.Join(s.dir, refusedDir)
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	name := id + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	return os.Rename(filepath.Join(s.dir, "snapshots", id), filepath.Join(to, name))
}

// fileSink is a FileSnapshotStore sink that remembers whether the state machine wrote it
// (a local snapshot) or raft did (an install from the leader).
type fileSink struct {
	raft.SnapshotSink
	store *fileSnapshots
	local bool
}

func (k *fileSink) Close() error {
	if err := k.SnapshotSink.Close(); err != nil {
		return err
	}
	if !k.local {
		k.store.mu.Lock()
		k.store.installed = k.ID()
		k.store.mu.Unlock()
	}
	return nil
}

// removeReplicaDir deletes a dropped replica's directory. A replica that is no longer a member
// of its group has nothing on disk anyone needs. The directory is renamed first, so a crash
// halfway through the deletion leaves nothing PartitionsOnDisk would take for a replica.
func removeReplicaDir(dir string) error {
	doomed := filepath.Join(filepath.Dir(dir), droppedPrefix+filepath.Base(dir)+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(dir, doomed); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	return os.RemoveAll(doomed)
}

// droppedPrefix marks a replica directory being deleted.
const droppedPrefix = ".dropped-"

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// removeTempSnapshots deletes snapshots a crash left half written.
func removeTempSnapshots(dir string) {
	entries, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
	for _, e := range entries {
		if e.IsDir() && strings.HasSuffix(e.Name(), ".tmp") {
			_ = os.RemoveAll(filepath.Join(dir, "snapshots", e.Name()))
		}
	}
}
