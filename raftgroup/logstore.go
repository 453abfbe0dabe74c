package raftgroup

import (
	"bytes"
	"sync"
	"unsafe"

	"github.com/hashicorp/raft"
)

// appendNotifier wraps the group's log store so writes acknowledged at W=1 can return as soon
// as the leader has appended their entry, before it commits. Raft hands StoreLogs the very
// Data slice passed to Apply, so the address of its first byte identifies the batch.
//
// It also hands the inner store copies of the entries, never raft's own: on the leader each
// *raft.Log raft stores is a field of the Apply future, and an in-memory store that kept that
// pointer would keep the whole future alive with it (its channel, and its response: the
// batch's []store.Result) until the entry is compacted, several hundred bytes per entry. Data
// whose buffer is much larger than the entry is copied to a buffer of its size.
type appendNotifier struct {
	raft.LogStore

	mu      sync.Mutex                   // guards waiting
	waiting map[*byte]func(index uint64) // batch data -> callback run once appended
}

func newAppendNotifier(inner raft.LogStore) *appendNotifier {
	return &appendNotifier{LogStore: inner, waiting: make(map[*byte]func(uint64))}
}

// watch registers fn to run with the entry's index once data has been appended.
func (a *appendNotifier) watch(data []byte, fn func(index uint64)) {
	a.mu.Lock()
	a.waiting[unsafe.SliceData(data)] = fn
	a.mu.Unlock()
}

// forget drops a registration whose entry was never appended.
func (a *appendNotifier) forget(data []byte) {
	a.mu.Lock()
	delete(a.waiting, unsafe.SliceData(data))
	a.mu.Unlock()
}

func (a *appendNotifier) StoreLog(l *raft.Log) error {
	return a.StoreLogs([]*raft.Log{l})
}

func (a *appendNotifier) StoreLogs(logs []*raft.Log) error {
	// One allocation for the copies: entries are stored and compacted in index order, so a
	// block is freed soon after its last entry.
	copies := make([]raft.Log, len(logs))
	kept := make([]*raft.Log, len(logs))
	for i, l := range logs {
		copies[i] = *l
		if spare := cap(l.Data) - len(l.Data); spare > len(l.Data)/8 {
			// The proposer's buffer was sized before encoding; keep only what the entry uses.
			copies[i].Data = bytes.Clone(l.Data)
		}
		kept[i] = &copies[i]
	}
	if err := a.LogStore.StoreLogs(kept); err != nil {
		return err
	}
	a.mu.Lock()
	if len(a.waiting) == 0 {
		a.mu.Unlock()
		return nil
	}
	var fire []func()
	for _, l := range logs {
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		key := unsafe.SliceData(l.Data)
		if fn, ok := a.waiting[key]; ok {
			delete(a.waiting, key)
			index := l.Index
			fire = append(fire, func() { fn(index) })
		}
	}
	a.mu.Unlock()
	for _, f := range fire {
		f()
	}
	return nil
}
