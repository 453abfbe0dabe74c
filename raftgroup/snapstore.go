package raftgroup

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/feellmoose/gridkv/store"
	"github.com/hashicorp/raft"
)

// viewSnapshotStore keeps a group's latest snapshot. A snapshot this replica takes itself is
// kept as the state machine's point-in-time view (entry headers sharing the partition's
// immutable values), not as serialized bytes: holding a serialized copy of every partition
// would double the memory the data takes. It is serialized only when a follower needs it. A
// snapshot installed from the leader arrives as bytes and is kept as such until the next
// local snapshot replaces it.
//
// Raft only ever needs the latest snapshot of an in-memory group, so older ones are dropped,
// with one exception: an installed snapshot replaces the latest one only provisionally, until
// its restore succeeds. A refused restore (see replayLog) must leave the store as raft's own
// bookkeeping still sees it; otherwise this replica, as a later leader, would send a snapshot
// older than the one its log was compacted against, and every follower it sent it to would
// need another.
type viewSnapshotStore struct {
	mu         sync.Mutex // guards latest, installing, previous, nextID, lastSent, closed
	latest     *heldSnapshot
	installing *heldSnapshot // an installed snapshot whose restore has not ended yet
	previous   *heldSnapshot // what installing replaced
	nextID     uint64
	lastSent   string // ID of the snapshot last opened
	closed     bool   // set by close: Open serializes no more views

	// writers counts the goroutines that serialize a view into an opened snapshot's pipe;
	// close waits for them. Added to only under mu while closed is false.
	writers sync.WaitGroup

	// onResend, if set, runs (on the caller's goroutine, without the lock) when a snapshot is
	// opened to be sent again. A leader sends a snapshot again when the follower did not take
	// it; if the follower refused it as older than its own state, only a newer one will do,
	// so the owner takes one. It must not block.
	onResend func()
}

type heldSnapshot struct {
	meta raft.SnapshotMeta
	view *store.Snapshot // a local snapshot; read-only once held
	data []byte          // an installed snapshot
}

var _ raft.SnapshotStore = (*viewSnapshotStore)(nil)

func (s *viewSnapshotStore) Create(version raft.SnapshotVersion, index, term uint64,
	configuration raft.Configuration, configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	s.mu.Lock()
	s.nextID++
	id := fmt.Sprintf("%d-%d-%d", term, index, s.nextID)
	s.mu.Unlock()
	return &viewSink{store: s, held: &heldSnapshot{meta: raft.SnapshotMeta{
		Version:            version,
		ID:                 id,
		Index:              index,
		Term:               term,
		Configuration:      configuration,
		ConfigurationIndex: configurationIndex,
	}}}, nil
}

func (s *viewSnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil {
		return nil, nil
	}
	meta := s.latest.meta
	return []*raft.SnapshotMeta{&meta}, nil
}

// Open returns the snapshot's bytes. A held view is serialized twice: once to learn its exact
// size (raft sends the size ahead of the data and the follower checks it), then as the stream.
func (s *viewSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	held := s.latest
	found := held != nil && held.meta.ID == id
	again := found && s.lastSent == id
	if found {
		s.lastSent = id
	}
	resend := s.onResend
	s.mu.Unlock()
	if !found {
		return nil, nil, fmt.Errorf("raftgroup: snapshot %s not found", id)
	}
	if again && resend != nil {
		resend()
	}
	meta := held.meta
	if held.view == nil {
		// An installed snapshot: opened to be restored, or, if this replica leads now, sent.
		meta.Size = int64(len(held.data))
		return &meta, io.NopCloser(bytes.NewReader(held.data)), nil
	}
	size, err := held.view.WriteTo(io.Discard)
	if err != nil {
		return nil, nil, err
	}
	meta.Size = size
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("raftgroup: snapshot %s: %w", id, ErrClosed)
	}
	s.writers.Add(1)
	s.mu.Unlock()
	pr, pw := io.Pipe()
	go func() {
		defer s.writers.Done()
		_, err := held.view.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	return &meta, pr, nil
}

func (s *viewSnapshotStore) setOnResend(fn func()) {
	s.mu.Lock()
	s.onResend = fn
	s.mu.Unlock()
}

// close waits for the snapshots being written out to end, and opens no more. Raft closes
// every snapshot it opened by the time its shutdown completes, which ends their writers.
func (s *viewSnapshotStore) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.writers.Wait()
}

// viewSink receives one snapshot: a view handed over by the state machine (attach), or bytes.
type viewSink struct {
	store  *viewSnapshotStore
	held   *heldSnapshot
	buf    bytes.Buffer
	closed bool
}

// attach makes the sink keep view instead of bytes. The sink owns view from then on.
func (k *viewSink) attach(view *store.Snapshot) { k.held.view = view }

func (k *viewSink) Write(p []byte) (int, error) { return k.buf.Write(p) }

func (k *viewSink) ID() string { return k.held.meta.ID }

func (k *viewSink) Cancel() error {
	k.closed = true
	return nil
}

func (k *viewSink) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	if k.held.view == nil {
		k.held.data = k.buf.Bytes()
		k.held.meta.Size = int64(len(k.held.data))
	}
	k.store.mu.Lock()
	if k.held.view == nil {
		// An install: what it replaces is kept until its restore is known.
		k.store.installing, k.store.previous = k.held, k.store.latest
	} else {
		k.store.installing, k.store.previous = nil, nil
	}
	k.store.latest = k.held
	k.store.mu.Unlock()
	return nil
}

// restored settles the install whose restore just ended: a failed restore puts back the
// snapshot the install replaced, a successful one lets it go. Raft restores only snapshots
// it installs, one at a time, each right after closing its sink.
func (s *viewSnapshotStore) restored(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.installing == nil {
		return
	}
	if err != nil && s.latest == s.installing {
		s.latest = s.previous
	}
	s.installing, s.previous = nil, nil
}
