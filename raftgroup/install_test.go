package raftgroup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
	"github.com/hashicorp/raft"
)

// The tests in this file play a group's leader by hand against one real replica (the stores
// newGroup builds, on raft's in-memory transport), to send it what a leader with a stale view
// of it sends: a snapshot older than what it has applied. hashicorp/raft installs such a
// snapshot and replays its log from the entry after it; without replayLog, a gap there panics
// raft's apply loop and with it the process.

const leaderTerm = 5

type fakeLeader struct {
	t     *testing.T
	trans *raft.InmemTransport
	part  *store.Partition // the replica's state
	st    *replicaStores
	raft  *raft.Raft
	// entries[i] is the command at log index i (index 1 is the bootstrap configuration).
	entries map[uint64][]byte
}

var twoVoters = raft.Configuration{Servers: []raft.Server{
	{Suffrage: raft.Voter, ID: "L", Address: "L"},
	{Suffrage: raft.Voter, ID: "F", Address: "F"},
}}

func newFakeLeader(t *testing.T) *fakeLeader {
	t.Helper()
	_, ltrans := raft.NewInmemTransport("L")
	_, ftrans := raft.NewInmemTransport("F")
	ltrans.Connect("F", ftrans)
	ftrans.Connect("L", ltrans)

	part := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	st := newReplicaStores(part)
	rc := raft.DefaultConfig()
	rc.LocalID = "F"
	// Long enough that the replica never campaigns during the test: only the test leads.
	rc.HeartbeatTimeout = time.Minute
	rc.ElectionTimeout = time.Minute
	rc.LeaderLeaseTimeout = time.Second
	rc.SnapshotThreshold = 1 << 40 // snapshots only when the test takes one
	rc.SnapshotInterval = time.Hour
	rc.TrailingLogs = 16
	rc.NoSnapshotRestoreOnStart = true
	rc.Logger = raftLogger(slog.New(slog.DiscardHandler), 0)
	r, err := raft.NewRaft(rc, st.fsm, st.logs, st.stable, st.snaps, ftrans)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.BootstrapCluster(twoVoters).Error(); err != nil {
		t.Fatal(err)
	}
	// The replica's own requests to "L" (none expected) are answered with an error.
	stop := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case rpc := <-ltrans.Consumer():
				rpc.Respond(nil, errors.New("the test leader answers nothing"))
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = r.Shutdown().Error()
		close(stop)
		<-drained
		ltrans.Close()
		ftrans.Close()
		part.Close()
	})
	return &fakeLeader{t: t, trans: ltrans, part: part, st: st, raft: r, entries: map[uint64][]byte{}}
}

func (fl *fakeLeader) header() raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("L"), Addr: []byte("L")}
}

// command returns the entry at index: a Set of one of seven keys, so that states at different
// indexes differ.
func (fl *fakeLeader) command(index uint64) []byte {
	if data, ok := fl.entries[index]; ok {
		return data
	}
	data := store.AppendBatch(nil, []store.Command{set(fmt.Sprintf("k%d", index%7), fmt.Sprintf("v%d", index))})
	fl.entries[index] = data
	return data
}

// appendEntries sends entries from..to (none if from > to) after entry prev, with the leader's
// commit index, and fails the test unless the replica takes them.
func (fl *fakeLeader) appendEntries(prev, from, to, commit uint64) {
	fl.t.Helper()
	prevTerm := uint64(leaderTerm)
	if prev == 1 {
		prevTerm = 1 // the bootstrap configuration
	}
	req := &raft.AppendEntriesRequest{
		RPCHeader:         fl.header(),
		Term:              leaderTerm,
		PrevLogEntry:      prev,
		PrevLogTerm:       prevTerm,
		LeaderCommitIndex: commit,
	}
	for i := from; i <= to; i++ {
		req.Entries = append(req.Entries, &raft.Log{Index: i, Term: leaderTerm, Type: raft.LogCommand, Data: fl.command(i)})
	}
	var resp raft.AppendEntriesResponse
	if err := fl.trans.AppendEntries("F", "F", req, &resp); err != nil {
		fl.t.Fatalf("append %d..%d: %v", from, to, err)
	}
	if !resp.Success {
		fl.t.Fatalf("append %d..%d after %d refused: replica's last log %d", from, to, prev, resp.LastLog)
	}
}

// stateAt returns a partition holding the state after applying entries 2..index.
func (fl *fakeLeader) stateAt(index uint64) *store.Partition {
	fl.t.Helper()
	p := store.NewPartition(store.DefaultStorageOptions(), store.NewAccountant(0))
	fl.t.Cleanup(p.Close)
	f := newFSM(p)
	logs := []*raft.Log{{Index: 1, Term: 1, Type: raft.LogConfiguration}}
	for i := uint64(2); i <= index; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: leaderTerm, Type: raft.LogCommand, Data: fl.command(i)})
	}
	f.ApplyBatch(logs)
	return p
}

// installSnapshot sends the state at index as a snapshot and returns the replica's verdict.
func (fl *fakeLeader) installSnapshot(index uint64) error {
	fl.t.Helper()
	var buf bytes.Buffer
	if _, err := fl.stateAt(index).Snapshot().WriteTo(&buf); err != nil {
		fl.t.Fatal(err)
	}
	req := &raft.InstallSnapshotRequest{
		RPCHeader:          fl.header(),
		SnapshotVersion:    raft.SnapshotVersionMax,
		Term:               leaderTerm,
		Leader:             []byte("L"),
		LastLogIndex:       index,
		LastLogTerm:        leaderTerm,
		Configuration:      raft.EncodeConfiguration(twoVoters),
		ConfigurationIndex: 1,
		Size:               int64(buf.Len()),
	}
	var resp raft.InstallSnapshotResponse
	if err := fl.trans.InstallSnapshot("F", "F", req, &resp, &buf); err != nil {
		return err
	}
	if !resp.Success {
		return errors.New("install not successful")
	}
	return nil
}

func (fl *fakeLeader) waitApplied(index uint64) {
	fl.t.Helper()
	waitFor(fl.t, 5*time.Second, fmt.Sprintf("the replica to apply %d", index), func() bool {
		return fl.part.AppliedIndex() >= index
	})
}

// requireState fails the test unless the replica holds exactly the state after entry index.
func (fl *fakeLeader) requireState(index uint64) {
	fl.t.Helper()
	want := fl.stateAt(index)
	if fl.part.AppliedIndex() != index {
		fl.t.Fatalf("replica applied %d, want %d", fl.part.AppliedIndex(), index)
	}
	for k := 0; k < 7; k++ {
		key := fmt.Sprintf("k%d", k)
		got, gotVer, _ := fl.part.Get(key)
		exp, expVer, _ := want.Get(key)
		if !bytes.Equal(got, exp) || gotVer != expVer {
			fl.t.Fatalf("%s = %q@%d, want %q@%d (state after %d)", key, got, gotVer, exp, expVer, index)
		}
	}
}

func (fl *fakeLeader) firstIndex() uint64 {
	fl.t.Helper()
	first, err := fl.st.log.FirstIndex()
	if err != nil {
		fl.t.Fatal(err)
	}
	return first
}

// A snapshot older than what the replica applied, whose replay would start in the part of the
// log the replica already compacted, is refused: the replica keeps its state and its own
// snapshot, and takes the leader's next entries as if nothing had been sent.
func TestOldSnapshotOverACompactedLogIsRefused(t *testing.T) {
	fl := newFakeLeader(t)
	fl.appendEntries(1, 2, 101, 101)
	fl.waitApplied(101)
	if err := fl.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if first := fl.firstIndex(); first != 86 {
		t.Fatalf("after a snapshot at 101 with 16 trailing entries the log starts at %d, want 86", first)
	}

	err := fl.installSnapshot(50)
	if err == nil {
		t.Fatal("a snapshot at 50 was installed over a log that starts at 86")
	}
	t.Logf("install refused: %v", err)
	fl.requireState(101)
	metas, _ := fl.st.snaps.List()
	if len(metas) != 1 || metas[0].Index != 101 {
		t.Fatalf("after the refusal the snapshot store lists %d snapshots (first at %d), want the replica's own at 101", len(metas), metas[0].Index)
	}

	fl.appendEntries(101, 102, 110, 110)
	fl.waitApplied(110)
	fl.requireState(110)
	if fl.raft.State() == raft.Shutdown {
		t.Fatal("the replica shut down")
	}
}

// A snapshot older than what the replica applied, whose replay the log can run, is installed;
// the entries of the replay are pinned until applied again, so a compaction that races with
// the install (raft runs it on another goroutine) cannot remove them.
func TestOldSnapshotPinsItsReplay(t *testing.T) {
	fl := newFakeLeader(t)
	fl.appendEntries(1, 2, 101, 101)
	fl.waitApplied(101)
	if err := fl.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	fl.appendEntries(101, 102, 120, 101) // a tail the leader has not committed yet

	if err := fl.installSnapshot(90); err != nil {
		t.Fatalf("a snapshot at 90 over a log that still holds 91: %v", err)
	}
	fl.requireState(90) // set back, until the log replays
	first := fl.firstIndex()
	if first > 91 {
		t.Fatalf("the install compacted the log to %d, past the replay's first entry", first)
	}
	// What a compaction after a snapshot at 120 would delete, with 16 trailing entries.
	if err := fl.st.logs.DeleteRange(first, 104); err != nil {
		t.Fatal(err)
	}
	if got := fl.firstIndex(); got > 91 {
		t.Fatalf("a compaction during the replay removed entries up to %d", got-1)
	}

	fl.appendEntries(120, 121, 120, 120) // commits the tail: raft replays 91..120
	fl.waitApplied(120)
	fl.requireState(120)

	// Replayed: the pin is gone and compaction works as before.
	if err := fl.st.logs.DeleteRange(fl.firstIndex(), 104); err != nil {
		t.Fatal(err)
	}
	if got := fl.firstIndex(); got != 105 {
		t.Fatalf("after the replay a compaction to 104 left the log starting at %d", got)
	}
}

// A restore that fails after it was admitted releases its pin.
func TestFailedRestoreReleasesItsPin(t *testing.T) {
	logs := raft.NewInmemStore()
	applied := uint64(9)
	l := newReplayLog(logs, func() uint64 { return applied })
	for i := uint64(1); i <= 12; i++ {
		if err := l.StoreLog(&raft.Log{Index: i, Term: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.admitRestore(5); err != nil {
		t.Fatal(err)
	}
	// While the restore runs, the state (and so the applied index) is still the old one.
	if err := l.DeleteRange(1, 8); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.FirstIndex(); first != 6 {
		t.Fatalf("a compaction during an admitted restore left the log at %d, want 6", first)
	}
	l.restoreDone() // failed: applied is still 9
	if err := l.DeleteRange(6, 8); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.FirstIndex(); first != 9 {
		t.Fatalf("after a failed restore a compaction to 8 left the log at %d, want 9", first)
	}
	// A conflict's deletion of uncommitted entries is never held back.
	if err := l.admitRestore(9); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteRange(11, 12); err != nil {
		t.Fatal(err)
	}
	if last, _ := l.LastIndex(); last != 10 {
		t.Fatalf("deleting 11..12 left the log ending at %d", last)
	}
}

// A group asked for a snapshot (its store saw one sent twice) takes one covering what it has
// applied, so the resend carries state at least as new as what a refusing follower holds.
func TestRequestedSnapshotIsTaken(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	for i := 0; i < 5; i++ {
		if _, err := g.Propose(context.Background(), set(fmt.Sprintf("k%d", i), "v"), WriteLevel{}); err != nil {
			t.Fatal(err)
		}
	}
	applied := g.Partition().AppliedIndex()
	g.requestSnapshot()
	waitFor(t, 5*time.Second, "the requested snapshot", func() bool {
		last, _ := strconv.ParseUint(g.raft.Stats()["last_snapshot_index"], 10, 64)
		return last >= applied
	})
}
