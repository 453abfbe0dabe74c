package transport

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// countingFSM records applied entries.
type countingFSM struct {
	mu   sync.Mutex // protects logs
	logs []string
}

func (f *countingFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	f.logs = append(f.logs, string(l.Data))
	f.mu.Unlock()
	return nil
}
func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *countingFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }
func (f *countingFSM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.logs)
}

type nopSnapshot struct{}

func (nopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnapshot) Release()                          {}

// raftNode is one replica of one group.
type raftNode struct {
	raft *raft.Raft
	net  *RaftTransport
	fsm  *countingFSM
}

func (n *raftNode) shutdown(t *testing.T) {
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Errorf("raft shutdown: %v", err)
	}
	_ = n.net.Close()
}

// testIncarnation is the incarnation of every transport in these tests.
const testIncarnation = 1

// serverAddr is tr's server address as the tests' resolver reads it: host:port#incarnation.
func serverAddr(tr *Transport, inc uint64) raft.ServerAddress {
	return raft.ServerAddress(fmt.Sprintf("%s#%x", tr.Addr(), inc))
}

// resolve splits a server address of serverAddr's form.
func resolve(a raft.ServerAddress) (string, uint64, error) {
	s := string(a)
	i := strings.LastIndexByte(s, '#')
	if i < 0 {
		return "", 0, fmt.Errorf("address %q has no incarnation", s)
	}
	inc, err := strconv.ParseUint(s[i+1:], 16, 64)
	return s[:i], inc, err
}

func raftTransport(t *testing.T, tr *Transport, group uint32) *RaftTransport {
	t.Helper()
	rt, err := tr.RaftTransport(RaftConfig{Group: group, Local: serverAddr(tr, testIncarnation), Incarnation: testIncarnation, Resolve: resolve, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func testRaftConfig(tr *Transport) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(tr.Addr())
	conf.HeartbeatTimeout = 300 * time.Millisecond
	conf.ElectionTimeout = 300 * time.Millisecond
	conf.LeaderLeaseTimeout = 150 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.Logger = hclog.NewNullLogger()
	return conf
}

// newRaftNode starts a raft instance for group over tr.
func newRaftNode(t *testing.T, tr *Transport, group uint32) *raftNode {
	t.Helper()
	rt := raftTransport(t, tr, group)
	fsm := &countingFSM{}
	r, err := raft.NewRaft(testRaftConfig(tr), fsm, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), rt)
	if err != nil {
		t.Fatalf("NewRaft: %v", err)
	}
	return &raftNode{raft: r, net: rt, fsm: fsm}
}

// waitLeader returns the leader among nodes.
func waitLeader(t *testing.T, nodes []*raftNode) *raftNode {
	t.Helper()
	var leader *raftNode
	eventually(t, 15*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

func TestRaftGroupsShareConnections(t *testing.T) {
	t.Run("default", func(t *testing.T) { testRaftGroupsShareConnections(t, testOptions(), 0) })
	// A group's heartbeats and votes go on the link of its slot, so 8 groups use at most 8
	// of 1000 links, and one for every group's log entries. A short IdleTimeout must not cut
	// the links raft heartbeats over, or they would be dialled again. Raft sends a heartbeat
	// every 30-60 ms at testRaftConfig's timings; the 300 ms here leaves room for a heartbeat
	// delayed by a loaded machine (50 ms did not, under -race on 2 cores) while staying far
	// below the 1m default.
	t.Run("MaxConns1000", func(t *testing.T) {
		opts := testOptions()
		opts.MaxConns = 1000
		opts.IdleTimeout = 300 * time.Millisecond
		testRaftGroupsShareConnections(t, opts, 8+1)
	})
}

// testRaftGroupsShareConnections runs raft groups over three transports and
// checks that each node dials at most wantDials connections to each other
// (MaxConns when 0).
func testRaftGroupsShareConnections(t *testing.T, opts NetworkOptions, wantDials int) {
	const groups, entries = 8, 20
	if wantDials == 0 {
		wantDials = opts.MaxConns + 1 // and the link for log entries
	}
	var trs []*Transport
	for range 3 {
		tr, _ := newTestTransport(t, opts)
		trs = append(trs, tr)
	}
	var servers []raft.Server
	for _, tr := range trs {
		servers = append(servers, raft.Server{ID: raft.ServerID(tr.Addr()), Address: serverAddr(tr, testIncarnation)})
	}

	nodes := make([][]*raftNode, groups)
	for g := range groups {
		for _, tr := range trs {
			n := newRaftNode(t, tr, uint32(g))
			if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatalf("bootstrap: %v", err)
			}
			nodes[g] = append(nodes[g], n)
		}
	}
	defer func() {
		for _, group := range nodes {
			for _, n := range group {
				n.shutdown(t)
			}
		}
	}()

	for g := range groups {
		leader := waitLeader(t, nodes[g])
		var futures []raft.ApplyFuture
		for i := range entries {
			futures = append(futures, leader.raft.Apply([]byte(fmt.Sprintf("g%d-%d", g, i)), 5*time.Second))
		}
		for _, f := range futures {
			if err := f.Error(); err != nil {
				t.Fatalf("group %d apply: %v", g, err)
			}
		}
	}
	for g := range groups {
		for i, n := range nodes[g] {
			eventually(t, 10*time.Second, fmt.Sprintf("group %d replica %d to apply", g, i), func() bool {
				return n.fsm.count() >= entries
			})
		}
	}

	if opts.IdleTimeout < time.Second {
		// Let the idle sweep look at the connections a few times while
		// raft keeps heartbeating over them.
		waitSweeps(t, trs[0], 4, 2*opts.IdleTimeout)
	}

	// Connections between each pair stay within 2*wantDials (each side
	// dials at most wantDials), whatever the number of groups.
	for i, a := range trs {
		for j, b := range trs {
			if i >= j {
				continue
			}
			pair := a.linkDials(b.Addr()) + b.linkDials(a.Addr())
			if pair > int64(2*wantDials) {
				t.Errorf("%d TCP connections between node %d and %d, want <= %d", pair, i, j, 2*wantDials)
			}
		}
		if acc := a.acceptedMux.Load(); acc > int64(2*wantDials) {
			t.Errorf("node %d accepted %d links from 2 peers, want <= %d", i, acc, 2*wantDials)
		}
		t.Logf("node %d: dialled %d, accepted %d links for %d groups", i, a.dialedMux.Load(), a.acceptedMux.Load(), groups)
	}
}

func TestRaftUnknownGroupCreatedOnDemand(t *testing.T) {
	opts := testOptions()
	a, _ := newTestTransport(t, opts)
	b, _ := newTestTransport(t, opts)
	const group = 42

	leader := newRaftNode(t, a, group)
	defer leader.shutdown(t)
	self := raft.Server{ID: raft.ServerID(a.Addr()), Address: serverAddr(a, testIncarnation)}
	if err := leader.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{self}}).Error(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, []*raftNode{leader})

	// b hosts nothing; the first Raft message for the group creates it.
	var mu sync.Mutex
	var created *raftNode
	var calls int
	b.SetUnknownGroupHandler(func(g uint32) bool {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if g != group {
			return false
		}
		if created == nil {
			created = newRaftNode(t, b, g)
		}
		return true
	})
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if created != nil {
			created.shutdown(t)
		}
	}()

	if err := leader.raft.AddVoter(raft.ServerID(b.Addr()), serverAddr(b, testIncarnation), 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("AddVoter: %v", err)
	}
	for i := range 10 {
		if err := leader.raft.Apply([]byte(fmt.Sprint(i)), 5*time.Second).Error(); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	eventually(t, 10*time.Second, "the on-demand replica to apply", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return created != nil && created.fsm.count() >= 10
	})
}

// TestRaftWrongIncarnationRefused: an RPC addressed to another incarnation of a node (its
// earlier life, say) is answered with an error and never reaches the group's raft.
func TestRaftWrongIncarnationRefused(t *testing.T) {
	a, _ := newTestTransport(t, testOptions())
	b, _ := newTestTransport(t, testOptions())
	ra := raftTransport(t, a, 7)
	defer ra.Close()
	rb := raftTransport(t, b, 7)
	defer rb.Close()

	var resp raft.RequestVoteResponse
	err := ra.RequestVote("b", serverAddr(b, testIncarnation+1), &raft.RequestVoteRequest{Term: 3, LastLogIndex: 1}, &resp)
	if err == nil || !strings.Contains(err.Error(), "incarnation") {
		t.Fatalf("vote to an old incarnation: %v, want a refusal naming the incarnation", err)
	}
	select {
	case rpc := <-rb.Consumer():
		t.Fatalf("refused RPC reached raft: %#v", rpc.Command)
	default:
	}

	// The right incarnation gets through, and the answer comes back decoded.
	go func() {
		rpc := <-rb.Consumer()
		req := rpc.Command.(*raft.RequestVoteRequest)
		rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
	}()
	if err := ra.RequestVote("b", serverAddr(b, testIncarnation), &raft.RequestVoteRequest{Term: 3}, &resp); err != nil {
		t.Fatal(err)
	}
	if !resp.Granted || resp.Term != 3 {
		t.Fatalf("vote answer %+v", resp)
	}

	// A group with no registration is refused, and raft's error comes back as one.
	var ae raft.AppendEntriesResponse
	ra8 := raftTransport(t, a, 8)
	defer ra8.Close()
	if err := ra8.AppendEntries("b", serverAddr(b, testIncarnation), &raft.AppendEntriesRequest{Term: 1}, &ae); err == nil || !strings.Contains(err.Error(), "no replica") {
		t.Fatalf("RPC for a group b does not host: %v, want a refusal", err)
	}
	go func() {
		rpc := <-rb.Consumer()
		rpc.Respond(nil, fmt.Errorf("no thanks"))
	}()
	if err := ra.AppendEntries("b", serverAddr(b, testIncarnation), &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 4}, &ae); err == nil || !strings.Contains(err.Error(), "no thanks") {
		t.Fatalf("raft's error came back as %v", err)
	}
}

// TestRaftPipelineAnswersInOrder: answers to pipelined AppendEntries reach raft in the
// order the requests were sent, whatever order they arrive in, and a failed link fails
// every request still in flight.
func TestRaftPipelineAnswersInOrder(t *testing.T) {
	a, _ := newTestTransport(t, testOptions())
	b, _ := newTestTransport(t, testOptions())
	ra := raftTransport(t, a, 3)
	defer ra.Close()
	rb := raftTransport(t, b, 3)
	defer rb.Close()

	pl, err := ra.AppendEntriesPipeline("b", serverAddr(b, testIncarnation))
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	const n = 5
	for i := range n {
		args := &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: uint64(10 + i), Entries: []*raft.Log{{Index: uint64(11 + i), Term: 2, Data: []byte("x")}}}
		if _, err := pl.AppendEntries(args, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
	}
	// Raft on b takes the requests and never answers; the answers are given here, in
	// reverse order (raft never does; the pipeline must not depend on it).
	for range n {
		<-rb.Consumer()
	}
	p := pl.(*pipeline)
	p.mu.Lock()
	sent := append([]*appendFuture(nil), p.sent...)
	p.mu.Unlock()
	for i := n - 1; i >= 0; i-- {
		sent[i].resp.Success = true
		sent[i].complete(nil) // as the link would for an answer arriving now
		if w := p.l.take(sent[i].id); w != nil {
			putWaiter(w)
		}
	}
	for i := range n {
		select {
		case f := <-pl.Consumer():
			if got := f.Request().PrevLogEntry; got != uint64(10+i) {
				t.Fatalf("answer %d is for PrevLogEntry %d, want %d", i, got, 10+i)
			}
			f.Response()
		case <-time.After(5 * time.Second):
			t.Fatalf("answer %d not delivered", i)
		}
	}

	// A request in flight when its link fails comes back failed, not never.
	args := &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 99}
	if _, err := pl.AppendEntries(args, new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	<-rb.Consumer()
	p.l.close(fmt.Errorf("test cut"))
	select {
	case f := <-pl.Consumer():
		if f.Error() == nil || f.Response().Success {
			t.Fatalf("request on a failed link: err %v, success %v", f.Error(), f.Response().Success)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request on a failed link never came back")
	}
}

// raft's reader of a pipeline's answers stops at the first failed or refused one, while its
// sender may be waiting for room in the window, which only that reader makes. The pipeline
// must then fail the sender's calls instead of blocking them: raft's sender would wait for
// ever, replication to that follower would stop, and the heartbeats (sent apart) would keep
// the leader in office.
func TestRaftPipelineEndsWithRaftsReader(t *testing.T) {
	a, _ := newTestTransport(t, testOptions())
	b, _ := newTestTransport(t, testOptions())
	ra := raftTransport(t, a, 4)
	defer ra.Close()
	rb := raftTransport(t, b, 4)
	defer rb.Close()

	pl, err := ra.AppendEntriesPipeline("b", serverAddr(b, testIncarnation))
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	p := pl.(*pipeline)
	for i := range pipelineWindow {
		args := &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: uint64(10 + i)}
		if _, err := pl.AppendEntries(args, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
	}
	// The first answer refuses the entries (a log mismatch); the rest are still out.
	p.mu.Lock()
	first := p.sent[0]
	p.mu.Unlock()
	if w := p.l.take(first.id); w != nil {
		putWaiter(w)
	}
	first.resp.Term = 2
	first.complete(nil)
	f := <-pl.Consumer() // raft reads it, and stops reading
	if f.Response().Success {
		t.Fatal("the refused answer came back successful")
	}

	sendErr := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 2 && err == nil; i++ { // the window has room for one
			_, err = pl.AppendEntries(&raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 99}, new(raft.AppendEntriesResponse))
		}
		sendErr <- err
	}()
	select {
	case err := <-sendErr:
		if !errors.Is(err, errPipelineEnded) {
			t.Fatalf("send after raft stopped reading: %v, want errPipelineEnded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a send after raft stopped reading answers blocked")
	}
}

// A follower that never answers fills the window; the next send fails after the RPC timeout
// (raft then drops the pipeline) instead of waiting for ever.
func TestRaftPipelineFullWindowTimesOut(t *testing.T) {
	a, _ := newTestTransport(t, testOptions())
	b, _ := newTestTransport(t, testOptions())
	ra := raftTransport(t, a, 5)
	defer ra.Close()
	rb := raftTransport(t, b, 5) // its consumer is never read: nothing is answered
	defer rb.Close()

	pl, err := ra.AppendEntriesPipeline("b", serverAddr(b, testIncarnation))
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	for i := range pipelineWindow {
		if _, err := pl.AppendEntries(&raft.AppendEntriesRequest{Term: 2, PrevLogEntry: uint64(i)}, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
	}
	sendErr := make(chan error, 1)
	go func() {
		_, err := pl.AppendEntries(&raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 99}, new(raft.AppendEntriesResponse))
		sendErr <- err
	}()
	select {
	case err := <-sendErr:
		if err == nil || !strings.Contains(err.Error(), "unanswered") {
			t.Fatalf("send into a full window of unanswered requests: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a send into a full window of unanswered requests blocked past the RPC timeout")
	}
}

// snapFSM is a state machine whose snapshot is its whole state, so that an installed
// snapshot can be checked.
type snapFSM struct {
	mu   sync.Mutex
	data []byte
}

func (f *snapFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	f.data = append(f.data, l.Data...)
	f.mu.Unlock()
	return nil
}

func (f *snapFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytesSnapshot(append([]byte(nil), f.data...)), nil
}

func (f *snapFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	f.mu.Lock()
	f.data = b
	f.mu.Unlock()
	return err
}

func (f *snapFSM) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.data)
}

type bytesSnapshot []byte

func (s bytesSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}
func (bytesSnapshot) Release() {}

// TestRaftSnapshotInstall: a replica added after the log was compacted gets the leader's
// snapshot, several megabytes streamed on a connection of its own, and then the entries
// after it.
func TestRaftSnapshotInstall(t *testing.T) {
	a, _ := newTestTransport(t, testOptions())
	b, _ := newTestTransport(t, testOptions())
	const group = 5
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}

	// Slower clocks than the other tests: two nodes copying megabytes under -race on a
	// small machine must not miss a 150 ms lease.
	slow := func(c *raft.Config) *raft.Config {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		return c
	}
	conf := slow(testRaftConfig(a))
	conf.LocalID = "a"
	conf.TrailingLogs = 1
	conf.SnapshotThreshold = 1 << 30
	fa := &snapFSM{}
	rta := raftTransport(t, a, group)
	ra, err := raft.NewRaft(conf, fa, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), rta)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ra.Shutdown().Error() }()
	if err := ra.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "a", Address: serverAddr(a, testIncarnation)}}}).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a to lead", func() bool { return ra.State() == raft.Leader })
	const before = 64 // 4 MiB of state before the snapshot
	for range before {
		if err := ra.Apply(chunk, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ra.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}

	fb := &snapFSM{}
	confB := slow(testRaftConfig(b))
	confB.LocalID = "b"
	rtb := raftTransport(t, b, group)
	rb, err := raft.NewRaft(confB, fb, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), rtb)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rb.Shutdown().Error() }()
	if err := ra.AddVoter("b", serverAddr(b, testIncarnation), 0, 10*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if err := ra.Apply(chunk[:10], 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	want := before*len(chunk) + 10
	eventually(t, 20*time.Second, "b to install the snapshot and apply what follows", func() bool { return fb.len() == want })
	fa.mu.Lock()
	fb.mu.Lock()
	same := string(fa.data) == string(fb.data)
	fb.mu.Unlock()
	fa.mu.Unlock()
	if !same {
		t.Fatal("b's state differs from a's")
	}
}
