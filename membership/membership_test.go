package membership

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startCluster starts a creating node and n-1 nodes joining through it.
func startCluster(t *testing.T, clusterID string, ids ...string) []*testNode {
	t.Helper()
	first := mustStartNode(t, ids[0], nodeOpts{clusterID: clusterID})
	nodes := []*testNode{first}
	for _, id := range ids[1:] {
		nodes = append(nodes, mustStartNode(t, id, nodeOpts{seeds: []string{first.addr}, joinTimeout: 10 * time.Second}))
	}
	waitFor(t, 10*time.Second, "every node to see every other alive", func() bool {
		for _, n := range nodes {
			ms := n.Members()
			if len(ms) != len(ids) {
				return false
			}
			for _, m := range ms {
				if m.State != StateAlive || m.ClusterID != clusterID {
					return false
				}
			}
		}
		return true
	})
	return nodes
}

func TestThreeNodesJoinAndGossipLeads(t *testing.T) {
	nodes := startCluster(t, "cluster-x", "a", "b", "c")
	for _, n := range nodes {
		if got := n.ClusterID(); got != "cluster-x" {
			t.Errorf("%s: ClusterID() = %q, want cluster-x", n.Local().ID, got)
		}
		if ids := memberIDs(n.Members()); !slices.Equal(ids, []string{"a", "b", "c"}) {
			t.Errorf("%s: Members() IDs = %v, want sorted a b c", n.Local().ID, ids)
		}
	}

	// A burst of updates: only the last value must win everywhere.
	nodes[0].SetLeads([]int{5})
	nodes[0].SetLeads([]int{1, 3, 3, 1023})
	nodes[1].SetLeads([]int{0, 2})
	nodes[2].SetLeads(nil)
	want := map[string][]int{"a": {1, 3, 1023}, "b": {0, 2}, "c": nil}
	waitFor(t, 10*time.Second, "lead sets to reach every node", func() bool {
		for _, n := range nodes {
			for _, m := range n.Members() {
				if !slices.Equal(m.Leads, want[m.ID]) {
					return false
				}
			}
		}
		return true
	})
	if got := nodes[0].Local().Leads; !slices.Equal(got, want["a"]) {
		t.Errorf("Local().Leads = %v, want %v", got, want["a"])
	}
	for _, n := range nodes {
		if n.changes.get() == 0 {
			t.Errorf("%s: OnChange never called", n.Local().ID)
		}
	}
	// Members() hands out copies.
	ms := nodes[1].Members()
	for i := range ms {
		if len(ms[i].Leads) > 0 {
			ms[i].Leads[0] = 999
		}
	}
	if m, _ := member(nodes[1], "a"); m.Leads[0] != 1 {
		t.Errorf("modifying Members() result changed the member list: %v", m.Leads)
	}
}

func memberIDs(ms []Member) []string {
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestCrashedNodeBecomesSuspectThenDead(t *testing.T) {
	nodes := startCluster(t, "cluster-x", "a", "b", "c")
	crashed := nodes[2]
	start := time.Now()
	if err := crashed.Shutdown(); err != nil {
		t.Fatal(err)
	}
	bound := failureBound(LocalTiming(), 3)
	// Watch both survivors at once and record every state they report.
	seen := map[*testNode][]string{}
	deadline := start.Add(bound)
	for {
		done := true
		for _, n := range nodes[:2] {
			s := stateOf(n, "c")
			if h := seen[n]; len(h) == 0 || h[len(h)-1] != s {
				seen[n] = append(seen[n], s)
			}
			if s != "dead" {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("crashed node not dead everywhere within %v: a saw %v, b saw %v", bound, seen[nodes[0]], seen[nodes[1]])
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("c declared dead after %v (bound %v); a saw %v, b saw %v", time.Since(start), bound, seen[nodes[0]], seen[nodes[1]])
	sawSuspect := false
	for _, n := range nodes[:2] {
		if slices.Contains(seen[n], "suspect") {
			sawSuspect = true
		}
	}
	if !sawSuspect {
		t.Errorf("no survivor reported c as suspect before dead: a saw %v, b saw %v", seen[nodes[0]], seen[nodes[1]])
	}
	// Dead members stay listed (until DeadReclaim) with their metadata.
	if m, ok := member(nodes[0], "c"); !ok || m.ClusterID != "cluster-x" || m.Addr != crashed.addr {
		t.Errorf("dead member entry = %+v, %v", m, ok)
	}
}

func TestLeaveShowsLeft(t *testing.T) {
	nodes := startCluster(t, "cluster-x", "a", "b")
	if err := nodes[1].Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if s := nodes[1].Local().State; s != StateLeft {
		t.Errorf("leaving node's Local().State = %v, want left", s)
	}
	waitFor(t, 5*time.Second, "a to see b left", func() bool { return stateOf(nodes[0], "b") == "left" })
	if err := nodes[1].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := nodes[1].Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown = %v, want ErrShutdown", err)
	}
	// Left must not decay into dead through failure detection.
	time.Sleep(failureBound(LocalTiming(), 2) / 4)
	if s := stateOf(nodes[0], "b"); s != "left" {
		t.Errorf("b is %s on a after shutdown, want left", s)
	}
}

// A node restarted under the same ID and address but creating a new cluster
// must not be taken for the old member by the old cluster, nor take the old
// cluster in.
func TestRestartedNodeOfAnotherClusterIsRefused(t *testing.T) {
	nodes := startCluster(t, "cluster-x", "a", "b")
	a, b := nodes[0], nodes[1]
	port := portOf(t, a.addr)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, failureBound(LocalTiming(), 2), "b to see a dead", func() bool { return stateOf(b, "a") == "dead" })

	a2 := mustStartNode(t, "a", nodeOpts{port: port, clusterID: "cluster-y"})
	if a2.addr != a.addr {
		t.Fatalf("restarted node at %s, want %s", a2.addr, a.addr)
	}
	// Bring them in contact both ways: a join is the only way two members
	// that do not know each other talk.
	if _, err := a2.list.Join([]string{b.addr}); err == nil {
		t.Errorf("a' joined b across clusters")
	}
	if _, err := b.list.Join([]string{a2.addr}); err == nil {
		t.Errorf("b joined a' across clusters")
	}
	time.Sleep(5 * LocalTiming().ProbeInterval) // let any gossip that slipped through land

	if m, ok := member(b, "a"); !ok || m.State != StateDead || m.ClusterID != "cluster-x" {
		t.Errorf("b sees a as %+v (present %v), want the old cluster-x member, dead; all: %s", m, ok, describe(b.Members()))
	}
	if ids := memberIDs(a2.Members()); !slices.Equal(ids, []string{"a"}) {
		t.Errorf("a' sees %s, want only itself", describe(a2.Members()))
	}
	if st := a2.Local(); st.State != StateAlive || st.ClusterID != "cluster-y" {
		t.Errorf("a' Local() = %+v", st)
	}
	for _, side := range []struct {
		name          string
		n             *testNode
		local, remote string
	}{
		{"b", b, "cluster-x", "cluster-y"},
		{"a'", a2, "cluster-y", "cluster-x"},
	} {
		refusals := side.n.logs.find(func(e logEntry) bool {
			return e.msg == "refusing member from another cluster" &&
				e.attrs["local_cluster"] == side.local && e.attrs["remote_cluster"] == side.remote
		})
		if len(refusals) == 0 {
			t.Errorf("%s logged no refusal naming %s and %s", side.name, side.local, side.remote)
		}
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestJoinFailsAfterTimeoutNamingSeed(t *testing.T) {
	seed := "127.0.0.1:" + strconv.Itoa(freePort(t))
	const timeout = 1500 * time.Millisecond
	start := time.Now()
	_, err := startNode(t, "lonely", nodeOpts{seeds: []string{seed}, joinTimeout: timeout})
	elapsed := time.Since(start)
	if !errors.Is(err, ErrJoinFailed) {
		t.Fatalf("Start = %v, want ErrJoinFailed", err)
	}
	if !strings.Contains(err.Error(), seed) {
		t.Errorf("error %q does not name the seed %s", err, seed)
	}
	if elapsed < timeout || elapsed > timeout+5*time.Second {
		t.Errorf("Start failed after %v, want about %v", elapsed, timeout)
	}
	t.Logf("error: %v", err)
}

func TestJoinRetriesUntilSeedComesUp(t *testing.T) {
	port := freePort(t)
	seedAddr := "127.0.0.1:" + strconv.Itoa(port)
	seedUp := make(chan *testNode, 1)
	startErr := make(chan error, 1)
	go func() {
		time.Sleep(time.Second)
		n, err := startNode(t, "seed", nodeOpts{port: port, clusterID: "late"})
		startErr <- err
		seedUp <- n
	}()
	start := time.Now()
	joiner, err := startNode(t, "joiner", nodeOpts{seeds: []string{seedAddr}, joinTimeout: 15 * time.Second})
	if err := <-startErr; err != nil {
		t.Fatalf("seed: %v", err)
	}
	seed := <-seedUp
	if err != nil {
		t.Fatalf("joiner Start: %v", err)
	}
	if elapsed := time.Since(start); elapsed < time.Second {
		t.Errorf("joined after %v, before the seed was up", elapsed)
	}
	if got := joiner.ClusterID(); got != "late" {
		t.Errorf("joiner ClusterID = %q, want late", got)
	}
	waitFor(t, 5*time.Second, "seed to see joiner with its cluster ID", func() bool {
		m, ok := member(seed, "joiner")
		return ok && m.State == StateAlive && m.ClusterID == "late"
	})
}

func TestCtxCancelStopsJoin(t *testing.T) {
	seed := "127.0.0.1:" + strconv.Itoa(freePort(t))
	tr, addr := newTransport(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Start(ctx, Config{NodeID: "x", Addr: addr, Seeds: []string{seed}, Transport: tr, Timing: LocalTiming()})
	if !errors.Is(err, ErrJoinFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want ErrJoinFailed wrapping DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Start returned after %v, long after cancellation", elapsed)
	}
}

func TestCreatorWithoutClusterIDGetsOne(t *testing.T) {
	n := mustStartNode(t, "solo", nodeOpts{seeds: nil})
	if n.ClusterID() == "" {
		t.Fatal("creating node has no cluster ID")
	}
}

func TestSeedsOnlySelfCreates(t *testing.T) {
	port := freePort(t)
	self := "127.0.0.1:" + strconv.Itoa(port)
	n := mustStartNode(t, "self", nodeOpts{port: port, seeds: []string{self}, clusterID: "c"})
	if n.ClusterID() != "c" || len(n.Members()) != 1 {
		t.Errorf("got cluster %q, members %s", n.ClusterID(), describe(n.Members()))
	}
}

func TestConfigValidation(t *testing.T) {
	tr, addr := newTransport(t, 0)
	defer tr.Shutdown()
	long := strings.Repeat("n", 400)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no id", Config{Addr: addr, Transport: tr}, "NodeID"},
		{"bad addr", Config{NodeID: "x", Addr: "nope", Transport: tr}, "nope"},
		{"no transport", Config{NodeID: "x", Addr: addr}, "Transport"},
		{"timeouts", Config{NodeID: "x", Addr: addr, Transport: tr, Timing: Timing{ProbeInterval: time.Millisecond * 100}}, "ProbeTimeout"},
		{"meta too big", Config{NodeID: long, Addr: addr, Transport: tr}, "bytes"},
	} {
		_, err := Start(context.Background(), tc.cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Start = %v, want ErrInvalidConfig naming %q", tc.name, err, tc.want)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{StateAlive: "alive", StateSuspect: "suspect", StateDead: "dead", StateLeft: "left", State(9): "state(9)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
