package raftgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
	"github.com/hashicorp/raft"
)

func filledPartition(t *testing.T, n int) *store.Partition {
	t.Helper()
	p := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	var cmds []store.Command
	for i := 0; i < n; i++ {
		cmds = append(cmds, store.Command{Op: store.OpSet, Key: fmt.Sprintf("k%d", i), Value: []byte(fmt.Sprintf("v%d", i))})
	}
	p.ApplyBatch(7, cmds)
	return p
}

func samePartitions(t *testing.T, a, b *store.Partition) {
	t.Helper()
	if a.Len() != b.Len() {
		t.Fatalf("lengths %d and %d", a.Len(), b.Len())
	}
	a.Range(func(key string, value []byte, version uint64) bool {
		v, ver, ok := b.Get(key)
		if !ok || string(v) != string(value) || ver != version {
			t.Fatalf("%s: %q@%d vs %q@%d (%v)", key, value, version, v, ver, ok)
		}
		return true
	})
}

// A held view streams the same state a byte snapshot would, with the exact size in its meta.
func TestViewSnapshotStoreRoundTrip(t *testing.T) {
	src := filledPartition(t, 500)
	for _, viaView := range []bool{true, false} {
		s := &viewSnapshotStore{}
		sink, err := s.Create(raft.SnapshotVersionMax, 7, 2, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if viaView {
			sink.(*viewSink).attach(src.Snapshot())
		} else if _, err := src.Snapshot().WriteTo(sink); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		metas, err := s.List()
		if err != nil || len(metas) != 1 || metas[0].Index != 7 {
			t.Fatalf("List = %v, %v", metas, err)
		}
		meta, rc, err := s.Open(metas[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != meta.Size {
			t.Fatalf("view=%v: meta.Size %d, stream %d bytes", viaView, meta.Size, len(data))
		}
		dst := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
		if err := dst.Restore(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		samePartitions(t, src, dst)
	}
}

// holdView stores p's current view as the replica's own snapshot at index.
func holdView(s *viewSnapshotStore, index uint64, p *store.Partition) {
	sink, _ := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	sink.(*viewSink).attach(p.Snapshot())
	sink.Close()
}

// Later applies do not change a held view, and a newer snapshot replaces it.
func TestViewSnapshotStoreKeepsLatest(t *testing.T) {
	p := filledPartition(t, 10)
	s := &viewSnapshotStore{}
	holdView(s, 7, p)
	p.ApplyBatch(8, []store.Command{{Op: store.OpSet, Key: "k0", Value: []byte("changed")}})
	metas, _ := s.List()
	_, rc, err := s.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	dst := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	if err := dst.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := dst.Get("k0"); string(v) != "v0" {
		t.Fatalf("held view changed by a later apply: k0 = %q", v)
	}
	holdView(s, 8, p)
	if _, _, err := s.Open(metas[0].ID); err == nil {
		t.Fatal("a replaced snapshot can still be opened")
	}
	cancelled, _ := s.Create(raft.SnapshotVersionMax, 9, 1, raft.Configuration{}, 1, nil)
	cancelled.Cancel()
	if metas, _ := s.List(); metas[0].Index != 8 {
		t.Fatalf("a cancelled snapshot replaced the latest: index %d", metas[0].Index)
	}
}

// An installed snapshot replaces the latest one only once its restore succeeds: a refused
// restore leaves the store as it was.
func TestViewSnapshotStoreSettlesInstalls(t *testing.T) {
	p := filledPartition(t, 10)
	s := &viewSnapshotStore{}
	holdView(s, 20, p)
	install := func(index uint64) {
		sink, _ := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
		if _, err := p.Snapshot().WriteTo(sink); err != nil {
			t.Fatal(err)
		}
		sink.Close()
	}
	latest := func() uint64 {
		metas, _ := s.List()
		if len(metas) != 1 {
			t.Fatalf("the store lists %d snapshots", len(metas))
		}
		return metas[0].Index
	}

	install(12)
	s.restored(errors.New("refused"))
	if got := latest(); got != 20 {
		t.Fatalf("after a refused install the latest snapshot is at %d, want 20", got)
	}
	install(15)
	s.restored(nil)
	if got := latest(); got != 15 {
		t.Fatalf("after a restored install the latest snapshot is at %d, want 15", got)
	}
	s.restored(errors.New("late")) // nothing pending: no change
	if got := latest(); got != 15 {
		t.Fatalf("a second verdict changed the latest snapshot to %d", got)
	}
}

// Opening the same snapshot again (a leader resending it) asks the owner for a newer one.
func TestViewSnapshotStoreResendAsksForANewer(t *testing.T) {
	p := filledPartition(t, 10)
	asked := 0
	s := &viewSnapshotStore{onResend: func() { asked++ }}
	holdView(s, 7, p)
	metas, _ := s.List()
	for i, want := range []int{0, 1, 2} {
		_, rc, err := s.Open(metas[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		if asked != want {
			t.Fatalf("after opening the snapshot %d times the owner was asked %d times, want %d", i+1, asked, want)
		}
	}
}

// A replica added after the leader truncated its log is brought up by installing the leader's
// snapshot, streamed from the held view.
func TestLateReplicaInstallsSnapshot(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes[:2])
	ctx := t.Context()
	for i := 0; i < 300; i++ {
		if _, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: fmt.Sprintf("k%d", i), Value: []byte(fmt.Sprintf("v%d", i))}, WriteLevel{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "leader log truncated by a snapshot", func() bool {
		first, err := g.logs.FirstIndex()
		return err == nil && first > 1
	})
	waitFor(t, 15*time.Second, "third replica added", func() bool {
		g.Reconcile([]Replica{nodes[0].member(), nodes[1].member(), nodes[2].member()}, false)
		voters, _, err := g.VoterCount()
		return err == nil && voters == 3
	})
	late := nodes[2].m.Group(0)
	waitFor(t, 10*time.Second, "late replica caught up", func() bool {
		return late != nil && late.Partition().AppliedIndex() >= g.Partition().AppliedIndex()
	})
	samePartitions(t, g.Partition(), late.Partition())
}

// close waits for the goroutine writing an opened view until its reader is closed (as raft
// closes every snapshot it opened before its shutdown completes), and opens no more.
func TestViewSnapshotStoreCloseWaitsForWriters(t *testing.T) {
	p := filledPartition(t, 10000) // more than the pipe takes before its reader reads
	defer p.Close()
	s := &viewSnapshotStore{}
	holdView(s, 7, p)
	metas, _ := s.List()
	_, rc, err := s.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		s.close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("close returned while a snapshot's writer was still running")
	case <-time.After(100 * time.Millisecond):
	}
	rc.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close still waiting after the snapshot's reader closed")
	}
	if _, _, err := s.Open(metas[0].ID); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after close: %v, want ErrClosed", err)
	}
}
