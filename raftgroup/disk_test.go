package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/feellmoose/gridkv/internal/freeport"
	"github.com/feellmoose/gridkv/store"
)

// durableNode is a node whose manager keeps its groups under dir, at a fixed address and
// incarnation, so that it can be stopped and started again as the same replica.
type durableNode struct {
	id, addr, dir string
	inc           uint64
	*node
}

func durableNodes(t *testing.T, n int) []*durableNode {
	t.Helper()
	var out []*durableNode
	for i := range n {
		addr, err := freeport.Addr()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &durableNode{id: fmt.Sprintf("d%d", i), addr: addr, dir: t.TempDir(), inc: uint64(200 + i)})
	}
	return out
}

func (d *durableNode) start(t *testing.T) {
	t.Helper()
	d.node = startNode(t, d.id, d.inc, d.addr, 1, func(c *Config) { c.Storage.DataDir = d.dir })
}

func nodesOf(ds []*durableNode) []*node {
	var out []*node
	for _, d := range ds {
		out = append(out, d.node)
	}
	return out
}

// propose writes cmd through whichever replica leads, retrying across leader changes.
func propose(t *testing.T, nodes []*node, cmd store.Command) store.Result {
	t.Helper()
	for {
		g := newLeader(t, nodes, 0)
		res, err := g.Propose(context.Background(), cmd, WriteLevel{Ack: AckCommit})
		if err == nil {
			return res
		}
		if !Retryable(err) && !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatal(err)
		}
	}
}

type written struct {
	value   string
	version uint64
}

// writeKeys writes count keys and returns what each holds, with its version.
func writeKeys(t *testing.T, nodes []*node, count int) map[string]written {
	t.Helper()
	want := make(map[string]written)
	for i := range count {
		key, value := fmt.Sprintf("k%03d", i%150), fmt.Sprintf("v%d", i)
		res := propose(t, nodes, store.Command{Op: store.OpSet, Key: key, Value: []byte(value)})
		want[key] = written{value, res.Version}
	}
	return want
}

// checkKeys waits until the replica of partition 0 on every node holds exactly want.
func checkKeys(t *testing.T, nodes []*node, want map[string]written) {
	t.Helper()
	leader := newLeader(t, nodes, 0)
	if err := leader.ReadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.id+" to hold every key", func() bool {
			g := n.m.Group(0)
			if g == nil || g.Partition().Len() != len(want) {
				return false
			}
			for key, w := range want {
				v, ver, ok := g.Partition().Get(key)
				if !ok || string(v) != w.value || ver != w.version {
					return false
				}
			}
			return true
		})
	}
}

// Every replica of a group stops, and starts again from its directory alone (no bootstrap,
// no peer with the data): the group elects a leader and every committed write is there with
// its version. Snapshots were taken and the log truncated along the way, so the restart
// restores a snapshot and replays the log after it.
func TestDurableGroupSurvivesStoppingEveryReplica(t *testing.T) {
	ds := durableNodes(t, 3)
	for _, d := range ds {
		d.start(t)
	}
	nodes := nodesOf(ds)
	formGroup(t, 0, nodes)
	want := writeKeys(t, nodes, 400)
	leader := newLeader(t, nodes, 0)
	waitFor(t, 10*time.Second, "a snapshot and a truncated log", func() bool {
		first, err := leader.logs.FirstIndex()
		return err == nil && first > 1
	})
	var fsyncs uint64
	for _, d := range ds {
		fsyncs += d.m.Fsyncs()
		d.stop()
	}
	if fsyncs == 0 {
		t.Fatal("no fsync counted for 400 durable writes")
	}
	for _, d := range ds {
		d.start(t)
		if _, err := d.m.Open(0, false); err != nil {
			t.Fatal(err)
		}
	}
	nodes = nodesOf(ds)
	checkKeys(t, nodes, want)
	// The restarted group goes on taking writes.
	more := writeKeys(t, nodes, 10)
	for k, w := range more {
		want[k] = w
	}
	checkKeys(t, nodes, want)
	for _, d := range ds {
		snaps, _ := os.ReadDir(filepath.Join(PartitionDir(d.dir, 0), "snapshots"))
		if len(snaps) > snapshotsKept {
			t.Errorf("%s keeps %d snapshots, want at most %d", d.id, len(snaps), snapshotsKept)
		}
	}
}

// soloGroup starts a one-voter durable group on d and writes count keys with snapshots
// along the way; it returns what was written, after stopping the node.
func soloGroup(t *testing.T, d *durableNode, count int) map[string]written {
	t.Helper()
	d.start(t)
	g, err := d.m.Open(0, true)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "bootstrap leader", g.IsLeader)
	nodes := []*node{d.node}
	want := writeKeys(t, nodes, count/2)
	waitFor(t, 10*time.Second, "a snapshot", func() bool { return len(snapshotIDs(t, d.dir)) == 1 })
	for k, w := range writeKeys(t, nodes, count/2) {
		want[k] = w
	}
	waitFor(t, 10*time.Second, "two snapshots", func() bool { return len(snapshotIDs(t, d.dir)) == 2 })
	// One more round past the newest snapshot, so the log has entries after it.
	for k, w := range writeKeys(t, nodes, 20) {
		want[k] = w
	}
	d.stop()
	return want
}

func snapshotIDs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(PartitionDir(dir, 0), "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && filepath.Ext(e.Name()) != ".tmp" {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids) // term-index-time: the newest last within one term
	return ids
}

// corrupt flips a byte in the middle of snapshot id's data.
func corrupt(t *testing.T, dir, id string) {
	t.Helper()
	path := filepath.Join(PartitionDir(dir, 0), "snapshots", id, "state.bin")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A newest snapshot that fails its checksum is refused at start: it is moved aside and the
// replica starts from the older one and the log kept back to it, with every write there.
func TestCorruptSnapshotFallsBackToTheOlderOne(t *testing.T) {
	d := durableNodes(t, 1)[0]
	want := soloGroup(t, d, 300)
	ids := snapshotIDs(t, d.dir)
	corrupt(t, d.dir, ids[len(ids)-1])

	d.start(t)
	if _, err := d.m.Open(0, false); err != nil {
		t.Fatal(err)
	}
	checkKeys(t, []*node{d.node}, want)
	refused, _ := os.ReadDir(filepath.Join(PartitionDir(d.dir, 0), refusedDir))
	if len(refused) != 1 {
		t.Fatalf("%d snapshots moved aside, want 1", len(refused))
	}
}

// With every snapshot bad and a log that no longer reaches back to entry 1, the replica
// cannot be rebuilt: Open fails with ErrUnrecoverable and deletes nothing.
func TestUnrecoverableReplicaFailsToOpen(t *testing.T) {
	d := durableNodes(t, 1)[0]
	soloGroup(t, d, 300)
	for _, id := range snapshotIDs(t, d.dir) {
		corrupt(t, d.dir, id)
	}
	d.start(t)
	_, err := d.m.Open(0, false)
	if !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("Open = %v, want ErrUnrecoverable", err)
	}
	segments, _ := os.ReadDir(filepath.Join(PartitionDir(d.dir, 0), walDir))
	if len(segments) == 0 {
		t.Fatal("the log was deleted")
	}
}

// A crash in the middle of a log write leaves a torn frame after the last complete one.
// raft-wal finds it when it opens the tail segment and writes over it: the replica starts,
// holds every write, and takes new ones.
func TestTornLogTailIsTruncated(t *testing.T) {
	d := durableNodes(t, 1)[0]
	want := soloGroup(t, d, 300)
	tail := lastSegment(t, d.dir)
	b, err := os.ReadFile(tail)
	if err != nil {
		t.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	end = (end + 7) &^ 7 // frames are 8-byte aligned
	// A frame header announcing a 200-byte entry whose bytes never made it, then garbage.
	torn := []byte{1, 0, 0, 0, 200, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef}
	f, err := os.OpenFile(tail, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(torn, int64(end)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	d.start(t)
	if _, err := d.m.Open(0, false); err != nil {
		t.Fatal(err)
	}
	nodes := []*node{d.node}
	checkKeys(t, nodes, want)
	for k, w := range writeKeys(t, nodes, 30) {
		want[k] = w
	}
	checkKeys(t, nodes, want)
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(PartitionDir(dir, 0), walDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".wal" {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		t.Fatal("no segment files")
	}
	sort.Strings(names)
	return filepath.Join(PartitionDir(dir, 0), walDir, names[len(names)-1])
}

// With every replica's disk full, writes fail with an error, nothing panics, and nothing
// acknowledged is lost; once space returns, writes succeed again.
func TestFullDiskFailsWritesAndRecovers(t *testing.T) {
	ds := durableNodes(t, 3)
	for _, d := range ds {
		d.start(t)
	}
	nodes := nodesOf(ds)
	formGroup(t, 0, nodes)
	want := writeKeys(t, nodes, 50)

	full := func(op string) error {
		if op == "write" || op == "create" {
			return syscall.ENOSPC
		}
		return nil
	}
	for _, d := range ds {
		d.m.disk.fault.Store(&full)
	}
	g := newLeader(t, nodes, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: "k000", Value: []byte("lost?")}, WriteLevel{Ack: AckCommit})
	cancel()
	if err == nil {
		t.Fatal("a write succeeded on full disks")
	}
	t.Logf("write on full disks: %v", err)

	for _, d := range ds {
		d.m.disk.fault.Store(nil)
	}
	// The failed write's key is written again, so its outcome does not matter below.
	for k, w := range writeKeys(t, nodes, 20) {
		want[k] = w
	}
	checkKeys(t, nodes, want)
}

// A log whose tail raft deleted (a follower dropping entries that never committed) opens
// again and reads and appends on. raft-wal v0.4.0 left such a tail segment unreadable and the
// replica's next start panicked (hashicorp/raft-wal#31).
func TestLogWithDeletedSuffixReopens(t *testing.T) {
	dir := t.TempDir()
	open := func() *diskStores {
		d, err := openDisk(dir, &diskIO{}, slog.New(slog.DiscardHandler), 0)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	entries := func(from, to uint64) []*raft.Log {
		var out []*raft.Log
		for i := from; i <= to; i++ {
			out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
		}
		return out
	}
	d := open()
	if err := d.log.StoreLogs(entries(1, 10)); err != nil {
		t.Fatal(err)
	}
	if err := d.log.DeleteRange(6, 10); err != nil {
		t.Fatal(err)
	}
	d.close()
	for round := range 2 {
		d = open()
		var e raft.Log
		if err := d.log.GetLog(5, &e); err != nil || e.Data[0] != 5 {
			t.Fatalf("round %d: entry 5 after reopening: %v %v", round, e, err)
		}
		last, _ := d.log.LastIndex()
		if err := d.log.StoreLogs(entries(last+1, last+3)); err != nil {
			t.Fatalf("round %d: appending after reopening: %v", round, err)
		}
		if err := d.log.DeleteRange(last+2, last+3); err != nil {
			t.Fatal(err)
		}
		d.close()
	}
}
