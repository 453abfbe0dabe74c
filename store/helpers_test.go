package store_test

import (
	"fmt"
	"maps"
	"math"
	"strings"
	"testing"

	"github.com/feellmoose/gridkv/store"
)

// backends lists the layouts every semantic test runs against.
var backends = []struct {
	name string
	opts store.StorageOptions
}{
	{"sharded", store.StorageOptions{}},
	{"sharded4", store.StorageOptions{ShardCount: 4}},
	{"memory", store.StorageOptions{Backend: store.BackendMemory}},
}

func forEachBackend(t *testing.T, fn func(t *testing.T, opts store.StorageOptions)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.opts) })
	}
}

// set applies one Set as the batch at index and returns its version.
func set(t testing.TB, p *store.Partition, index uint64, key, value string) uint64 {
	t.Helper()
	res := p.ApplyBatch(index, []store.Command{{Op: store.OpSet, Key: key, Value: []byte(value)}})
	if res[0].Err != nil {
		t.Fatalf("Set %q: %v", key, res[0].Err)
	}
	return res[0].Version
}

// kv is one key's state in a dump.
type kv struct {
	value   string
	version uint64
}

// dump copies a partition's whole state, for comparisons.
func dump(p *store.Partition) map[string]kv {
	m := make(map[string]kv)
	p.Range(func(k string, v []byte, version uint64) bool {
		m[k] = kv{string(v), version}
		return true
	})
	return m
}

// apply applies cmds as the batch at index and returns the results.
func apply(p *store.Partition, index uint64, cmds ...store.Command) []store.Result {
	return p.ApplyBatch(index, cmds)
}

// state is everything Restore must either replace whole or leave alone.
type state struct {
	keys    map[string]kv
	applied uint64
	bytes   int64
	length  int
	used    int64
	ordered string // every entry by List, with deadlines
	expired string // Expired at the end of time
	history string // HistoryStart and every event after it
}

func stateOf(p *store.Partition, a *store.Accountant) state {
	entries, more, _ := p.List("", "", math.MaxInt, 0)
	start := p.HistoryStart()
	events, _, err := p.Events(start, "", 0)
	return state{
		dump(p), p.AppliedIndex(), p.Bytes(), p.Len(), a.Used(),
		fmt.Sprint(entries, more),
		fmt.Sprint(p.Expired(math.MaxInt64, math.MaxInt)),
		fmt.Sprintf("%#x %v %v", start, events, err),
	}
}

func (s state) equal(o state) bool {
	return maps.Equal(s.keys, o.keys) && s.applied == o.applied && s.bytes == o.bytes &&
		s.length == o.length && s.used == o.used && s.ordered == o.ordered &&
		s.expired == o.expired && s.history == o.history
}

// allEvents returns every event after after, failing the test on an error.
func allEvents(t testing.TB, p *store.Partition, after uint64) []store.Event {
	t.Helper()
	events, _, err := p.Events(after, "", 0)
	if err != nil {
		t.Fatalf("Events(%#x): %v", after, err)
	}
	return events
}

func containsStr(s, sub string) bool { return strings.Contains(s, sub) }
