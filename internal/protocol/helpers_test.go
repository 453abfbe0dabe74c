package protocol

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testPartitions is the partition count of every test node.
const testPartitions = 4

// memBackend is a Backend over one map: writes apply at once, reads need no confirmation.
// It stands in for a node's replicas, so the protocol is tested without Raft.
type memBackend struct {
	mu      sync.Mutex // guards entries and version
	entries map[string]store.Result
	version uint64
	events  []store.Event
	// onWrite, when set, runs before every write (a test's hook: panics, gates).
	onWrite func(key string)
}

func newMemBackend() *memBackend { return &memBackend{entries: make(map[string]store.Result)} }

func (b *memBackend) Read(ctx context.Context, p int, key string, read ReadMode) (store.Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok {
		return store.Result{Applied: b.version}, store.ErrKeyNotFound
	}
	e.Applied = b.version
	return e, nil
}

func (b *memBackend) StartWrite(ctx context.Context, p int, cmd store.Command, level raftgroup.WriteLevel) raftgroup.Pending {
	return raftgroup.Done(b.write(cmd))
}

func (b *memBackend) write(cmd store.Command) (store.Result, error) {
	if b.onWrite != nil {
		b.onWrite(cmd.Key)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, ok := b.entries[cmd.Key]
	switch cmd.Op {
	case store.OpDelete:
		if !ok {
			return store.Result{}, store.ErrKeyNotFound
		}
		delete(b.entries, cmd.Key)
		b.version++
		return store.Result{Version: b.version}, nil
	case store.OpCAS:
		if cur.Version != cmd.Version {
			return cur, store.ErrVersionMismatch
		}
	}
	b.version++
	b.entries[cmd.Key] = store.Result{Value: append([]byte(nil), cmd.Value...), Version: b.version}
	return store.Result{Version: b.version}, nil
}

func (b *memBackend) get(key string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	return e.Value, ok
}

func (b *memBackend) WaitApplied(ctx context.Context, p int, index uint64) error { return nil }

func (b *memBackend) CheckTerms(checks []raftgroup.TermCheck) []bool {
	return make([]bool, len(checks))
}

func (b *memBackend) RemovedFromGroup(p int, id string) (bool, error) { return id == "gone", nil }

// List lists the keys of partition p in order, as one page.
func (b *memBackend) List(ctx context.Context, p int, page ListPage, read ReadMode) (ListResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var keys []string
	for k := range b.entries {
		if ring.PartitionOf(k, testPartitions) == p && strings.HasPrefix(k, page.Prefix) && k > page.StartAfter {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	res := ListResult{Position: b.version}
	if len(keys) > page.Limit {
		keys, res.More = keys[:page.Limit], true
	}
	for _, k := range keys {
		e := b.entries[k]
		res.Entries = append(res.Entries, store.Entry{Key: k, Value: e.Value, Version: e.Version})
	}
	return res, nil
}

// Events has no history: it answers with the events a test put in b.events.
func (b *memBackend) Events(ctx context.Context, p int, after uint64, prefix string, max int) ([]store.Event, uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []store.Event
	for _, e := range b.events {
		if e.Version > after && strings.HasPrefix(e.Key, prefix) && len(out) < max {
			out = append(out, e)
		}
	}
	return out, b.version, nil
}

// testNode is a transport on loopback with a Server over a memBackend and a Client: it
// forwards to itself.
type testNode struct {
	trans   *transport.Transport
	backend *memBackend
	server  *Server
	client  *Client
}

// startTestNode starts a testNode that closes when t ends.
func startTestNode(t testing.TB) *testNode {
	t.Helper()
	trans, err := transport.Listen(transport.NetworkOptions{}, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{trans: trans, backend: newMemBackend()}
	n.server = NewServer(n.backend, testPartitions, transport.DefaultNetworkOptions().MaxFrameSize, nil)
	n.server.Register(trans)
	n.client = NewClient(trans, transport.DefaultNetworkOptions().MaxFrameSize, nil)
	t.Cleanup(func() {
		n.client.Close()
		_ = trans.Close()
	})
	return n
}

// keyIn returns a key of partition p, so requests reach the backend rather than the
// partition check.
func keyIn(prefix string, p int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("%s-%d", prefix, i); ring.PartitionOf(k, testPartitions) == p {
			return k
		}
	}
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
