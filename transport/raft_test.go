package transport

import (
	"fmt"
	"io"
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
	net  *raft.NetworkTransport
	fsm  *countingFSM
}

func (n *raftNode) shutdown(t *testing.T) {
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Errorf("raft shutdown: %v", err)
	}
	_ = n.net.Close()
}

// newRaftNode starts a raft instance for group over tr.
func newRaftNode(t *testing.T, tr *Transport, group uint32, layer raft.StreamLayer) *raftNode {
	t.Helper()
	if layer == nil {
		layer = tr.RaftLayer(group)
	}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 2,
		Timeout: 2 * time.Second,
		Logger:  hclog.NewNullLogger(),
	})
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(tr.Addr())
	conf.HeartbeatTimeout = 300 * time.Millisecond
	conf.ElectionTimeout = 300 * time.Millisecond
	conf.LeaderLeaseTimeout = 150 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.Logger = hclog.NewNullLogger()
	fsm := &countingFSM{}
	r, err := raft.NewRaft(conf, fsm, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), nt)
	if err != nil {
		t.Fatalf("NewRaft: %v", err)
	}
	return &raftNode{raft: r, net: nt, fsm: fsm}
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
	// A high MaxConns is only a bound: 8 groups' streams fit on one
	// connection each way. A short IdleTimeout must not cut connections
	// raft's streams are open on, or they would be dialled again.
	t.Run("MaxConns1000", func(t *testing.T) {
		opts := testOptions()
		opts.MaxConns = 1000
		opts.IdleTimeout = 50 * time.Millisecond
		testRaftGroupsShareConnections(t, opts, 1)
	})
}

// testRaftGroupsShareConnections runs raft groups over three transports and
// checks that each node dials at most wantDials connections to each other
// (MaxConns when 0).
func testRaftGroupsShareConnections(t *testing.T, opts NetworkOptions, wantDials int) {
	const groups, entries = 8, 20
	if wantDials == 0 {
		wantDials = opts.MaxConns
	}
	var trs []*Transport
	for range 3 {
		tr, _ := newTestTransport(t, opts)
		trs = append(trs, tr)
	}
	var servers []raft.Server
	for _, tr := range trs {
		servers = append(servers, raft.Server{ID: raft.ServerID(tr.Addr()), Address: raft.ServerAddress(tr.Addr())})
	}

	nodes := make([][]*raftNode, groups)
	for g := range groups {
		for _, tr := range trs {
			n := newRaftNode(t, tr, uint32(g), nil)
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
			pair := a.peer(b.Addr()).dials.Load() + b.peer(a.Addr()).dials.Load()
			if pair > int64(2*wantDials) {
				t.Errorf("%d TCP connections between node %d and %d, want <= %d", pair, i, j, 2*wantDials)
			}
		}
		if acc := a.acceptedMux.Load(); acc > int64(2*wantDials) {
			t.Errorf("node %d accepted %d mux connections from 2 peers, want <= %d", i, acc, 2*wantDials)
		}
		t.Logf("node %d: dialled %d, accepted %d mux connections for %d groups", i, a.dialedMux.Load(), a.acceptedMux.Load(), groups)
	}
}

func TestRaftUnknownGroupCreatedOnDemand(t *testing.T) {
	opts := testOptions()
	a, _ := newTestTransport(t, opts)
	b, _ := newTestTransport(t, opts)
	const group = 42

	leader := newRaftNode(t, a, group, nil)
	defer leader.shutdown(t)
	self := raft.Server{ID: raft.ServerID(a.Addr()), Address: raft.ServerAddress(a.Addr())}
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
			created = newRaftNode(t, b, g, nil)
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

	if err := leader.raft.AddVoter(raft.ServerID(b.Addr()), raft.ServerAddress(b.Addr()), 0, 5*time.Second).Error(); err != nil {
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

func TestRaftLayerStreamsAndRefusal(t *testing.T) {
	a, _ := newTestTransport(t, testOptions())
	b, _ := newTestTransport(t, testOptions())

	la := a.RaftLayer(7)
	if la.Addr().String() != a.Addr() {
		t.Fatalf("layer Addr = %v, want %s", la.Addr(), a.Addr())
	}

	// No handler: a stream for an unregistered group is closed.
	c, err := la.Dial(raft.ServerAddress(b.Addr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("refused stream read: %v, want EOF", err)
	}
	_ = c.Close()

	// Handler says no: same.
	b.SetUnknownGroupHandler(func(uint32) bool { return false })
	c, err = la.Dial(raft.ServerAddress(b.Addr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("refused stream read: %v, want EOF", err)
	}
	_ = c.Close()

	// Handler registers the layer: the stream is delivered to it.
	layers := make(chan raft.StreamLayer, 1)
	b.SetUnknownGroupHandler(func(g uint32) bool {
		layers <- b.RaftLayer(g)
		return true
	})
	c, err = la.Dial(raft.ServerAddress(b.Addr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	lb := <-layers
	sc, err := lb.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("accepted stream read %q, %v", buf, err)
	}
	_ = sc.Close()

	// Closing the layer unregisters it and unblocks Accept.
	_ = lb.Close()
	if _, err := lb.Accept(); err != ErrClosed {
		t.Fatalf("Accept after Close: %v", err)
	}
	b.groupsMu.RLock()
	_, still := b.groups[7]
	b.groupsMu.RUnlock()
	if still {
		t.Fatal("closed layer still registered")
	}
	_ = la.Close()
	if _, err := la.Dial(raft.ServerAddress(b.Addr()), time.Second); err != ErrClosed {
		t.Fatalf("Dial on closed layer: %v", err)
	}
}
