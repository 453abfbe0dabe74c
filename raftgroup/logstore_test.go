package raftgroup

import (
	"testing"

	"github.com/hashicorp/raft"
)

// TestAppendNotifierStoresCopies checks that the inner store never holds raft's own *Log (on a
// leader it is part of the Apply future, which would stay alive with it), that an oversized
// Data buffer is trimmed, and that W=1 waiters still fire for the batch they registered.
func TestAppendNotifierStoresCopies(t *testing.T) {
	inner := raft.NewInmemStore()
	a := newAppendNotifier(inner)
	data := make([]byte, 10, 1000)
	data[0] = 7
	var fired uint64
	a.watch(data, func(index uint64) { fired = index })
	l := &raft.Log{Index: 1, Term: 2, Type: raft.LogCommand, Data: data}
	if err := a.StoreLogs([]*raft.Log{l}); err != nil {
		t.Fatal(err)
	}
	if fired != 1 {
		t.Fatalf("waiter fired with index %d, want 1", fired)
	}
	data[0] = 8 // raft's buffer; the stored entry must not change with it
	var got raft.Log
	if err := a.GetLog(1, &got); err != nil {
		t.Fatal(err)
	}
	if got.Term != 2 || got.Type != raft.LogCommand || len(got.Data) != 10 || got.Data[0] != 7 {
		t.Fatalf("stored entry %+v", got)
	}
	if cap(got.Data) >= 1000 {
		t.Fatalf("stored Data keeps the proposer's %d-byte buffer", cap(got.Data))
	}
	l.Term = 9
	if err := a.GetLog(1, &got); err != nil || got.Term != 2 {
		t.Fatalf("the store holds raft's *Log: term %d, %v", got.Term, err)
	}
}
