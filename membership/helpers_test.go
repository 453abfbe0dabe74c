package membership

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logEntry is one captured slog record, attributes flattened to strings.
type logEntry struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// captureHandler records every slog record, so tests can assert on what a
// node logged. Handlers derived with WithAttrs share the record list.
type captureHandler struct {
	mu      *sync.Mutex // protects *entries
	entries *[]logEntry
	attrs   []slog.Attr
}

func newCaptureHandler() *captureHandler {
	return &captureHandler{mu: new(sync.Mutex), entries: new([]logEntry)}
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	e := logEntry{level: r.Level, msg: r.Message, attrs: make(map[string]string)}
	for _, a := range h.attrs {
		e.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		e.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	*h.entries = append(*h.entries, e)
	h.mu.Unlock()
	return nil
}

func (h *captureHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *captureHandler) WithGroup(string) slog.Handler { return h }

// find returns the captured entries for which match is true.
func (h *captureHandler) find(match func(logEntry) bool) []logEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logEntry
	for _, e := range *h.entries {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// freePort returns a loopback port that was free for both TCP and UDP a
// moment ago, for tests that must know a node's address before it starts.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// newTransport binds a memberlist NetTransport on 127.0.0.1:port (0 picks
// one) and returns it with its address.
func newTransport(t *testing.T, port int) (*memberlist.NetTransport, string) {
	t.Helper()
	tr, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"},
		BindPort:  port,
		Logger:    log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatalf("transport on port %d: %v", port, err)
	}
	return tr, net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.GetAutoBindPort()))
}

// testNode is a started Membership plus what tests look at.
type testNode struct {
	*Membership
	addr    string
	logs    *captureHandler
	changes *counter
}

// counter counts OnChange calls.
type counter struct {
	mu sync.Mutex // protects n
	n  int
}

func (c *counter) inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

type nodeOpts struct {
	port        int
	clusterID   string
	seeds       []string
	joinTimeout time.Duration
}

// startNode starts a member on loopback with LocalTiming; Shutdown is
// registered as a cleanup.
func startNode(t *testing.T, id string, o nodeOpts) (*testNode, error) {
	t.Helper()
	tr, addr := newTransport(t, o.port)
	logs := newCaptureHandler()
	changes := &counter{}
	m, err := Start(context.Background(), Config{
		NodeID:      id,
		Addr:        addr,
		Incarnation: uint64(time.Now().UnixNano()),
		ClusterID:   o.clusterID,
		Seeds:       o.seeds,
		Transport:   tr,
		Timing:      LocalTiming(),
		JoinTimeout: o.joinTimeout,
		Logger:      slog.New(logs),
		OnChange:    changes.inc,
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("shutdown %s: %v", id, err)
		}
	})
	return &testNode{Membership: m, addr: addr, logs: logs, changes: changes}, nil
}

func mustStartNode(t *testing.T, id string, o nodeOpts) *testNode {
	t.Helper()
	n, err := startNode(t, id, o)
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return n
}

// waitFor polls cond until it holds or timeout passes.
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

// member returns id's entry in n's view.
func member(n *testNode, id string) (Member, bool) {
	for _, m := range n.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// stateOf describes id's state in n's view, "absent" if unknown.
func stateOf(n *testNode, id string) string {
	if m, ok := member(n, id); ok {
		return m.State.String()
	}
	return "absent"
}

// failureBound is how long a crashed member may take to be declared dead by
// an n-member cluster using timing t: a full probe round to reach it, the
// probe timeout, and the longest suspicion (memberlist's
// SuspicionMaxTimeoutMult = 6 times the minimum), doubled for the race
// detector and a busy 2-core machine.
func failureBound(t Timing, n int) time.Duration {
	round := time.Duration(n) * t.ProbeInterval
	suspicion := 6 * time.Duration(t.SuspicionMult) * t.ProbeInterval
	return 2 * (round + t.ProbeTimeout + suspicion)
}

func describe(ms []Member) string {
	s := ""
	for _, m := range ms {
		s += fmt.Sprintf("%s=%s(%s) ", m.ID, m.State, m.ClusterID)
	}
	return s
}
