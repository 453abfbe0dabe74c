package store_test

import (
	"maps"
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

// state is everything Restore must either replace whole or leave alone.
type state struct {
	keys    map[string]kv
	applied uint64
	bytes   int64
	length  int
	used    int64
}

func stateOf(p *store.Partition, a *store.Accountant) state {
	return state{dump(p), p.AppliedIndex(), p.Bytes(), p.Len(), a.Used()}
}

func (s state) equal(o state) bool {
	return maps.Equal(s.keys, o.keys) && s.applied == o.applied && s.bytes == o.bytes &&
		s.length == o.length && s.used == o.used
}

func containsStr(s, sub string) bool { return strings.Contains(s, sub) }
