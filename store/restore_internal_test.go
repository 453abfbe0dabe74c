package store

import (
	"bytes"
	"testing"
)

// A restored put that is still its key's current state shares the key's
// record, so restoring the history costs no second copy of current values.
func TestRestoreSharesCurrentRecords(t *testing.T) {
	p := NewPartition(StorageOptions{}, nil)
	p.ApplyBatch(1, []Command{{Op: OpSet, Key: "a", Value: []byte("1")}, {Op: OpSet, Key: "b", Value: []byte("1")}})
	p.ApplyBatch(2, []Command{{Op: OpSet, Key: "b", Value: []byte("2")}})
	var buf bytes.Buffer
	s := p.Snapshot()
	if _, err := s.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	s.Release()

	q := NewPartition(StorageOptions{}, nil)
	if err := q.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	current := func(key string) record {
		h := keyHash(key)
		return q.table.Load().shardFor(h).get(h, key)
	}
	h := &q.hist
	if h.n != 3 || h.at(0).rec != current("a") || h.at(1).rec == current("b") || h.at(2).rec != current("b") {
		t.Fatalf("history of %d changes does not share exactly the current records", h.n)
	}
}
