package raftgroup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	kindWait       uint8 = 9
	kindTermChecks uint8 = 10
)

// node is one manager on its own transport.
type node struct {
	id  string
	inc uint64
	tr  *transport.Transport
	m   *Manager

	refuseTermChecks atomic.Bool // answer term checks with an error, as an old version would
	stallTermChecks  atomic.Bool // answer term checks only when the caller gives up
}

func fastTiming() Tuning {
	t := DefaultTuning()
	t.HeartbeatTimeout = 300 * time.Millisecond
	t.ElectionTimeout = 300 * time.Millisecond
	t.LeaderLeaseTimeout = 150 * time.Millisecond
	t.ApplyTimeout = 3 * time.Second
	t.SnapshotThreshold = 64
	t.SnapshotInterval = 200 * time.Millisecond
	t.TrailingLogs = 16
	return t
}

// startNode starts a manager on its own loopback transport; each of adjust may change its
// Config before the manager is made.
func startNode(t *testing.T, id string, inc uint64, addr string, partitions int, adjust ...func(*Config)) *node {
	t.Helper()
	return startNodeOn(t, id, inc, transport.DefaultNetworkOptions(), addr, partitions, adjust...)
}

// startNodeOn is startNode on a transport with the given options.
func startNodeOn(t *testing.T, id string, inc uint64, opts transport.NetworkOptions, addr string, partitions int, adjust ...func(*Config)) *node {
	t.Helper()
	tr, err := transport.Listen(opts, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, inc: inc, tr: tr}
	cfg := Config{
		NodeID:      id,
		Incarnation: inc,
		Addr:        tr.Addr(),
		Partitions:  partitions,
		Storage:     store.DefaultStorageOptions(),
		Accountant:  store.NewAccountant(0),
		Network:     tr,
		WaitApplied: func(ctx context.Context, addr string, group int, index uint64) error {
			var b [16]byte
			binary.BigEndian.PutUint64(b[:8], uint64(group))
			binary.BigEndian.PutUint64(b[8:], index)
			_, err := tr.Call(ctx, addr, kindWait, b[:])
			return err
		},
		ConfirmTerms: func(ctx context.Context, addr string, checks []TermCheck) ([]bool, error) {
			b, err := msgpack.Marshal(checks)
			if err != nil {
				return nil, err
			}
			out, err := tr.Call(ctx, addr, kindTermChecks, b)
			if err != nil {
				return nil, err
			}
			var oks []bool
			return oks, msgpack.Unmarshal(out, &oks)
		},
		Tuning: fastTiming(),
	}
	for _, f := range adjust {
		f(&cfg)
	}
	n.m = NewManager(cfg)
	tr.Handle(kindTermChecks, func(ctx context.Context, from string, req []byte) ([]byte, error) {
		if n.refuseTermChecks.Load() {
			return nil, errors.New("term checks refused")
		}
		if n.stallTermChecks.Load() {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		var checks []TermCheck
		if err := msgpack.Unmarshal(req, &checks); err != nil {
			return nil, err
		}
		return msgpack.Marshal(n.m.CheckTerms(checks))
	})
	tr.Handle(kindWait, func(ctx context.Context, from string, req []byte) ([]byte, error) {
		if len(req) != 16 {
			return nil, errors.New("bad request")
		}
		return nil, n.m.WaitApplied(ctx, int(binary.BigEndian.Uint64(req[:8])), binary.BigEndian.Uint64(req[8:]))
	})
	tr.SetUnknownGroupHandler(func(group uint32) bool {
		_, err := n.m.Open(int(group), false)
		return err == nil
	})
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	n.m.Close()
	n.tr.Close()
}

func (n *node) member() Replica { return Replica{NodeID: n.id, Incarnation: n.inc, Addr: n.tr.Addr()} }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newLeader waits until one of nodes leads partition p and returns its replica.
func newLeader(t *testing.T, nodes []*node, p int) *Group {
	t.Helper()
	var leader *Group
	waitFor(t, 10*time.Second, "a new leader", func() bool {
		for _, n := range nodes {
			if g := n.m.Group(p); g != nil && g.IsLeader() {
				leader = g
				return true
			}
		}
		return false
	})
	return leader
}

// formGroup bootstraps partition p on nodes[0] and reconciles it until every node is a voter,
// in the configuration of every replica. Tests go on to stop the leader: a replica that has
// not yet received the last promotion, while the others committed it, would refuse the
// promoted replica's votes as those of a non-voter (hashicorp/raft checks candidates against
// its own latest configuration), and with the leader gone no one could tell it otherwise.
func formGroup(t *testing.T, p int, nodes []*node) *Group {
	t.Helper()
	g, err := nodes[0].m.Open(p, true)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "bootstrap leader", g.IsLeader)
	var desired []Replica
	for _, n := range nodes {
		desired = append(desired, n.member())
	}
	waitFor(t, 15*time.Second, "all voters", func() bool {
		if _, err := g.Reconcile(desired, false); err != nil {
			t.Logf("reconcile: %v", err)
		}
		for _, n := range nodes {
			r := n.m.Group(p)
			if r == nil {
				return false
			}
			if voters, _, _ := r.voters(nil); voters != len(nodes) {
				return false
			}
		}
		return true
	})
	return g
}

func threeNodes(t *testing.T, partitions int) []*node {
	var nodes []*node
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), uint64(100+i), "127.0.0.1:0", partitions))
	}
	return nodes
}

func TestProposeReplicatesAndVersions(t *testing.T) {
	nodes := threeNodes(t, 2)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	var last uint64
	for i := 0; i < 50; i++ {
		res, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: fmt.Sprintf("k%d", i%5), Value: []byte{byte(i)}}, WriteLevel{Ack: AckCommit})
		if err != nil {
			t.Fatal(err)
		}
		if res.Version <= last {
			t.Fatalf("version %d not above %d", res.Version, last)
		}
		last = res.Version
	}
	// A CAS against a stale version fails inside a batch that commits.
	res, err := g.Propose(ctx, store.Command{Op: store.OpCAS, Key: "k0", Value: []byte("x"), Version: 1}, WriteLevel{})
	if err != nil || !errors.Is(res.Err, store.ErrVersionMismatch) {
		t.Fatalf("stale CAS: res %+v err %v", res, err)
	}
	for _, n := range nodes[1:] {
		fg := n.m.Group(0)
		waitFor(t, 5*time.Second, "follower applied", func() bool {
			return fg != nil && fg.Partition().AppliedIndex() >= g.Partition().AppliedIndex()
		})
		v, ver, ok := fg.Partition().Get("k4")
		lv, lver, _ := g.Partition().Get("k4")
		if !ok || string(v) != string(lv) || ver != lver {
			t.Fatalf("follower %s has %q@%d, leader %q@%d", n.id, v, ver, lv, lver)
		}
	}
}

func TestConcurrentProposalsBatch(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	const writers, each = 32, 50
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				_, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: fmt.Sprintf("w%d-%d", w, i), Value: []byte("v")}, WriteLevel{})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := g.Partition().Len(); got != writers*each {
		t.Fatalf("leader holds %d keys, want %d", got, writers*each)
	}
	// Far fewer log entries than commands: the batcher shares entries.
	if idx := g.raft.LastIndex(); idx >= writers*each {
		t.Fatalf("%d commands took %d log entries: no batching", writers*each, idx)
	}
}

// Commands started one after another by one goroutine, before any is waited for, share log
// entries, and each still gets its own result, whatever order they are waited in. A start on
// a follower answers, from Wait, that it is not the leader.
func TestStartedCommandsShareEntries(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	const n = 200
	before := g.raft.LastIndex()
	pending := make([]Pending, n)
	for i := range pending {
		pending[i] = g.Start(ctx, store.Command{Op: store.OpSet, Key: fmt.Sprintf("s%d", i), Value: []byte{byte(i)}}, WriteLevel{})
	}
	versions := make(map[uint64]bool, n)
	for i := n - 1; i >= 0; i-- {
		res, err := pending[i].Wait(ctx)
		if err != nil || res.Err != nil {
			t.Fatalf("command %d: %v %v", i, err, res.Err)
		}
		if versions[res.Version] {
			t.Fatalf("command %d got version %d twice", i, res.Version)
		}
		versions[res.Version] = true
		if v, ver, ok := g.Partition().Get(fmt.Sprintf("s%d", i)); !ok || ver != res.Version || len(v) != 1 || v[0] != byte(i) {
			t.Fatalf("key s%d holds %v@%d; want [%d]@%d", i, v, ver, i, res.Version)
		}
	}
	if entries := g.raft.LastIndex() - before; entries >= n {
		t.Fatalf("%d started commands took %d log entries: no batching", n, entries)
	}

	for _, nd := range nodes {
		if fg := nd.m.Group(0); fg != nil && fg != g {
			_, err := fg.Start(ctx, store.Command{Op: store.OpSet, Key: "f", Value: []byte("v")}, WriteLevel{}).Wait(ctx)
			var nl *NotLeaderError
			if !errors.As(err, &nl) {
				t.Fatalf("a start on a follower: %v; want a NotLeaderError", err)
			}
			break
		}
	}
}

func TestFollowerAnswersNotLeaderWithHint(t *testing.T) {
	nodes := threeNodes(t, 1)
	formGroup(t, 0, nodes)
	f := nodes[1].m.Group(0)
	waitFor(t, 5*time.Second, "follower knows leader", func() bool { id, _ := f.Leader(); return id != "" })
	_, err := f.Propose(context.Background(), store.Command{Op: store.OpSet, Key: "k", Value: []byte("v")}, WriteLevel{})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != "n0" || nl.LeaderAddr != nodes[0].tr.Addr() {
		t.Fatalf("got %v, want NotLeaderError naming n0 at %s", err, nodes[0].tr.Addr())
	}
	if !Retryable(err) {
		t.Fatal("NotLeaderError must be retryable")
	}
	if err := f.ReadIndex(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower ReadIndex: %v, want ErrNotLeader", err)
	}
}

// A leader that loses its leadership while confirming a read has decided nothing, so the read
// may run again elsewhere; a write it was committing may or may not have been committed.
func TestLostLeadershipRetriesReadsOnly(t *testing.T) {
	n := startNode(t, "n0", 1, "127.0.0.1:0", 1)
	g, err := n.m.Open(0, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.mapRaftError(raft.ErrLeadershipLost, false); !Retryable(err) {
		t.Errorf("read that lost leadership: %v, want a retryable error", err)
	}
	err = g.mapRaftError(raft.ErrLeadershipLost, true)
	if Retryable(err) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("write that lost leadership: %v, want ErrOutcomeUnknown and not retryable", err)
	}
}

func TestReadIndexSeesCommittedWrites(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	for i := 0; i < 20; i++ {
		writeThenRead(t, g, fmt.Sprintf("k%d", i))
	}
}

// writeThenRead writes key = key through leader g, runs a read index, and checks the local
// partition then holds the write.
func writeThenRead(t *testing.T, g *Group, key string) {
	t.Helper()
	ctx := context.Background()
	if _, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: key, Value: []byte(key)}, WriteLevel{}); err != nil {
		t.Fatal(err)
	}
	if err := g.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _, ok := g.Partition().Get(key); !ok || string(v) != key {
		t.Fatalf("after ReadIndex, %s = %q, %v", key, v, ok)
	}
}

func TestWriteLevels(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	res, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: "a", Value: []byte("1")}, WriteLevel{Ack: AckAppend})
	if err != nil || res.Version == 0 {
		t.Fatalf("W=1 set: %+v %v", res, err)
	}
	res, err = g.Propose(ctx, store.Command{Op: store.OpSet, Key: "b", Value: []byte("2")}, WriteLevel{Ack: AckApplied, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Acknowledged at W=3: every replica has applied it already, no waiting.
	for _, n := range nodes {
		if _, ver, ok := n.m.Group(0).Partition().Get("b"); !ok || ver != res.Version {
			t.Fatalf("%s lacks b@%d right after a W=3 ack", n.id, res.Version)
		}
	}
}

// TestAppliedWriteDoesNotWaitForCommitTimeout: a write acknowledged once every replica has
// applied it, arriving with nothing after it in the log, returns without waiting for raft's
// next empty append (CommitTimeout, a minute here) to tell the followers it committed.
func TestAppliedWriteDoesNotWaitForCommitTimeout(t *testing.T) {
	slowCommit := func(c *Config) { c.Tuning.CommitTimeout = time.Minute }
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), uint64(100+i), "127.0.0.1:0", 1, slowCommit))
	}
	g := formGroup(t, 0, nodes)
	if err := g.ReadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		// Well under the CommitTimeout: without a nudge the followers would not apply in time.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		key := fmt.Sprintf("k%d", i)
		res, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: key, Value: []byte("v")}, WriteLevel{Ack: AckApplied, Replicas: 3})
		cancel()
		if err != nil {
			t.Fatalf("W=3 write %d: %v", i, err)
		}
		for _, n := range nodes {
			if _, ver, ok := n.m.Group(0).Partition().Get(key); !ok || ver != res.Version {
				t.Fatalf("%s lacks %s@%d right after a W=3 ack", n.id, key, res.Version)
			}
		}
	}
	// The entry that told the followers is the last in the log: a linearizable read must not
	// wait for the state machine to apply something past it.
	requireReadsAfterIdleTail(t, g)
}

// requireReadsAfterIdleTail waits until everything in the leader g's log is committed, with
// nothing written since, and checks that a linearizable read is served at once. g must have
// served a read in its term already: the first read of a term appends an entry of its own.
func requireReadsAfterIdleTail(t *testing.T, g *Group) {
	t.Helper()
	waitFor(t, 10*time.Second, "the log's tail committed", func() bool { return g.raft.CommitIndex() == g.raft.LastIndex() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.ReadIndex(ctx); err != nil {
		t.Fatalf("linearizable read on an idle group whose last entry is %d: %v", g.raft.LastIndex(), err)
	}
}

func TestNewLeaderAfterLeaderStops(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	res, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: "kept", Value: []byte("v")}, WriteLevel{})
	if err != nil {
		t.Fatal(err)
	}
	nodes[0].stop()
	leader := newLeader(t, nodes[1:], 0)
	if err := leader.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ver, ok := leader.Partition().Get("kept"); !ok || ver != res.Version {
		t.Fatalf("acknowledged write lost after failover: ok=%v ver=%d want %d", ok, ver, res.Version)
	}
}

func TestSnapshotsBoundTheLog(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	for i := 0; i < 400; i++ {
		cmd := store.Command{Op: store.OpSet, Key: fmt.Sprintf("k%d", i%10), Value: []byte("v")}
		for {
			_, err := g.Propose(ctx, cmd, WriteLevel{})
			if err == nil {
				break
			}
			// A starved CI machine can depose the leader mid-run; a Set may be sent again.
			if !Retryable(err) && !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatal(err)
			}
			g = newLeader(t, nodes, 0)
		}
	}
	waitFor(t, 10*time.Second, "log truncated after a snapshot", func() bool {
		first, err := g.logs.FirstIndex()
		return err == nil && first > 1
	})
}

func TestOldIncarnationIsRefused(t *testing.T) {
	a := startNode(t, "a", 1, "127.0.0.1:0", 1)
	b := startNode(t, "b", 2, "127.0.0.1:0", 1)
	cfg := func(tr *transport.Transport, inc uint64) transport.RaftConfig {
		return transport.RaftConfig{Group: 7, Local: ServerAddress(tr.Addr(), inc), Incarnation: inc, Resolve: SplitAddress, Timeout: time.Second}
	}
	ra, err := a.tr.RaftTransport(cfg(a.tr, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := b.tr.RaftTransport(cfg(b.tr, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	// Address b's previous life (incarnation 1): b must refuse.
	var resp raft.RequestVoteResponse
	err = ra.RequestVote("b", ServerAddress(b.tr.Addr(), 1), &raft.RequestVoteRequest{Term: 9}, &resp)
	if err == nil || !strings.Contains(err.Error(), "incarnation") {
		t.Fatalf("vote to an old incarnation: %v, want a refusal", err)
	}
	select {
	case rpc := <-rb.Consumer():
		t.Fatalf("refused RPC reached raft: %#v", rpc.Command)
	default:
	}
}

func TestIDs(t *testing.T) {
	id := ServerID("node/with/slash", 0xabc)
	if n, inc := NodeOf(id); n != "node/with/slash" || inc != 0xabc {
		t.Fatalf("NodeOf(%q) = %q, %x", id, n, inc)
	}
	addr := ServerAddress("127.0.0.1:7000", 0x1f)
	if hp, inc, err := SplitAddress(addr); err != nil || hp != "127.0.0.1:7000" || inc != 0x1f {
		t.Fatalf("SplitAddress(%q) = %q, %x, %v", addr, hp, inc, err)
	}
	if _, _, err := SplitAddress("127.0.0.1:7000"); err == nil {
		t.Fatal("address without incarnation accepted")
	}
}

// voterIDs returns the group's voters, sorted, and its non-voters.
func voterIDs(t *testing.T, g *Group) (voters, learners []string) {
	t.Helper()
	cfg, err := g.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		} else {
			learners = append(learners, string(s.ID))
		}
	}
	slices.Sort(voters)
	return voters, learners
}

// A replica being replaced keeps its vote until its replacement votes: a group never shrinks
// below its replica count while a new replica catches up, and one that never catches up
// leaves the voters as they were.
func TestReplacementKeepsVotersUntilNewReplicaVotes(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	want := func(ns ...*node) []string {
		var ids []string
		for _, n := range ns {
			ids = append(ids, string(n.member().serverID()))
		}
		slices.Sort(ids)
		return ids
	}

	// A replica on a node that never answers: it is added as a learner and never promoted,
	// so the replica it would replace must keep voting.
	dead := Replica{NodeID: "gone", Incarnation: 1, Addr: "127.0.0.1:1"}
	for i := 0; i < 10; i++ {
		if _, err := g.Reconcile([]Replica{nodes[0].member(), nodes[1].member(), dead}, false); err != nil {
			t.Logf("reconcile: %v", err)
		}
		if voters, _ := voterIDs(t, g); !slices.Equal(voters, want(nodes...)) {
			t.Fatalf("step %d: voters %v while the replacement cannot catch up, want %v", i, voters, want(nodes...))
		}
	}

	// A live replacement: voters go 3 -> 4 -> 3, never below three.
	n3 := startNode(t, "n3", 103, "127.0.0.1:0", 1)
	desired := []Replica{nodes[0].member(), nodes[1].member(), n3.member()}
	waitFor(t, 20*time.Second, "the replacement voting and the old replica gone", func() bool {
		if _, err := g.Reconcile(desired, false); err != nil {
			t.Logf("reconcile: %v", err)
		}
		voters, learners := voterIDs(t, g)
		if len(voters) < 3 {
			t.Fatalf("voters shrank to %v", voters)
		}
		return slices.Equal(voters, want(nodes[0], nodes[1], n3)) && len(learners) == 0
	})
}

// A replica leaves for good only through a committed configuration without it: the leader
// says so for a removed replica and not for a member, and a follower never calls itself
// retired while its own configuration lists it.
func TestRemovedFromGroup(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	gone := nodes[2].m.Group(0)
	if gone.Retired() {
		t.Fatal("a voter calls itself retired")
	}
	if removed, err := g.RemovedFromGroup(gone.ServerID()); err != nil || removed {
		t.Fatalf("RemovedFromGroup(voter) = %v, %v; want false", removed, err)
	}
	var nl *NotLeaderError
	if _, err := gone.RemovedFromGroup(gone.ServerID()); !errors.As(err, &nl) {
		t.Fatalf("RemovedFromGroup on a follower: %v, want NotLeaderError", err)
	}

	desired := []Replica{nodes[0].member(), nodes[1].member()}
	waitFor(t, 10*time.Second, "the leader to report the replica removed", func() bool {
		if _, err := g.Reconcile(desired, false); err != nil {
			t.Logf("reconcile: %v", err)
		}
		removed, err := g.RemovedFromGroup(gone.ServerID())
		return err == nil && removed
	})
	if removed, err := g.RemovedFromGroup(nodes[1].m.Group(0).ServerID()); err != nil || removed {
		t.Fatalf("RemovedFromGroup(remaining voter) = %v, %v; want false", removed, err)
	}
	if g.Retired() {
		t.Fatal("the leader calls itself retired")
	}
	// The removed replica may or may not have learnt that its removal committed; if it
	// says it is retired, its configuration must indeed lack it.
	if gone.Retired() {
		cfg, err := gone.Configuration()
		if err == nil {
			for _, s := range cfg.Servers {
				if string(s.ID) == gone.ServerID() {
					t.Fatalf("retired, yet its configuration lists it: %v", cfg.Servers)
				}
			}
		}
	}
}

// A replica removed from a group and kept (its node never dropped it) can be added back: it
// catches up from where it stopped and becomes a voter again.
func TestRemovedReplicaRejoins(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	ctx := context.Background()
	propose := func(i int) {
		t.Helper()
		if _, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: fmt.Sprintf("k%d", i), Value: []byte("v")}, WriteLevel{}); err != nil {
			t.Fatal(err)
		}
	}
	propose(0)
	two := []Replica{nodes[0].member(), nodes[1].member()}
	waitFor(t, 10*time.Second, "the third replica removed", func() bool {
		_, _ = g.Reconcile(two, false)
		removed, err := g.RemovedFromGroup(nodes[2].m.Group(0).ServerID())
		return err == nil && removed
	})
	for i := 1; i < 20; i++ {
		propose(i)
	}
	all := []Replica{nodes[0].member(), nodes[1].member(), nodes[2].member()}
	waitFor(t, 20*time.Second, "the removed replica voting again", func() bool {
		if _, err := g.Reconcile(all, false); err != nil {
			t.Logf("reconcile: %v", err)
		}
		voters, learners := voterIDs(t, g)
		t.Logf("voters %v learners %v", voters, learners)
		return len(voters) == 3
	})
}

// A learner added before a leadership change is promoted by the new leader even when nothing
// is written: the new leader's last entry is a no-op, which state machines never see.
func TestLearnerPromotedAfterLeaderChangeOnIdleGroup(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	n3 := startNode(t, "n3", 103, "127.0.0.1:0", 1)
	desired := []Replica{nodes[0].member(), nodes[1].member(), nodes[2].member(), n3.member()}
	if ch, err := g.Reconcile(desired, false); ch != AddedLearner || err != nil {
		t.Fatalf("Reconcile = %v, %v; want a learner added", ch, err)
	}
	if err := g.TransferLeadership(); err != nil {
		t.Fatal(err)
	}
	leader := newLeader(t, nodes[1:], 0)
	waitFor(t, 10*time.Second, "the learner promoted", func() bool {
		if _, err := leader.Reconcile(desired, false); err != nil {
			t.Logf("reconcile: %v", err)
		}
		voters, _ := voterIDs(t, leader)
		return len(voters) == 4
	})
}

// A replica whose node has answered a read from a newer replica stays off stale reads until
// it has applied as much.
func TestStaleFloor(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	follower := nodes[1].m.Group(0)
	ctx := context.Background()
	res, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: "k", Value: []byte("v")}, WriteLevel{})
	if err != nil {
		t.Fatal(err)
	}
	index := res.Version >> 16
	waitFor(t, 5*time.Second, "the follower to apply the write", func() bool {
		return follower.Partition().AppliedIndex() >= index
	})
	if !follower.StaleReadable() {
		t.Fatal("a caught-up follower is not stale-readable")
	}
	follower.RaiseStaleFloor(index + 2)
	if follower.StaleReadable() {
		t.Fatal("stale-readable below its floor")
	}
	for i := range 3 {
		if _, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: fmt.Sprintf("k%d", i), Value: []byte("v")}, WriteLevel{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the follower to reach its floor", follower.StaleReadable)
	if follower.Partition().AppliedIndex() < index+2 {
		t.Fatalf("stale-readable at applied index %d, below the floor %d", follower.Partition().AppliedIndex(), index+2)
	}
}

// Voters lists the voters' node IDs in configuration order and leaves learners out.
func TestVoters(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	want := []string{"n0", "n1", "n2"} // bootstrapped on n0, the others added in desired order
	if got, err := g.Voters(); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Voters() = %v, %v; want %v", got, err, want)
	}
	// A learner that never catches up (its node does not answer) is not a voter.
	dead := Replica{NodeID: "gone", Incarnation: 1, Addr: "127.0.0.1:1"}
	desired := []Replica{nodes[0].member(), nodes[1].member(), nodes[2].member(), dead}
	if ch, err := g.Reconcile(desired, false); ch != AddedLearner || err != nil {
		t.Fatalf("Reconcile = %v, %v; want a learner added", ch, err)
	}
	if _, learners := voterIDs(t, g); len(learners) != 1 {
		t.Fatalf("learners %v, want the one just added", learners)
	}
	if got, err := g.Voters(); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Voters() with a learner = %v, %v; want %v", got, err, want)
	}
}
