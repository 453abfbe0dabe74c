package lincheck

import (
	"math"
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModelRejectsViolations makes sure the model is not vacuous: histories that break
// linearizability in the ways GridKV could are illegal, and their sound variants legal.
func TestModelRejectsViolations(t *testing.T) {
	t.Parallel()
	op := func(client int, call, ret int64, in Input, out Output) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	}
	set := func(v string) Input { return Input{Kind: Set, Key: "k", Value: v} }
	get := Input{Kind: Get, Key: "k"}
	entry := Input{Kind: GetEntry, Key: "k"}
	cas := func(e uint64, v string) Input { return Input{Kind: CAS, Key: "k", Version: e, Value: v} }
	found := func(v string, ver uint64) Output { return Output{Found: true, Value: v, Version: ver} }
	never := int64(math.MaxInt64)
	model := Model.ToModel()

	cases := []struct {
		name  string
		legal bool
		ops   []porcupine.Operation
	}{
		{"stale read after a completed write", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(0, 2, 3, set("b"), Output{}),
			op(1, 4, 5, get, found("a", 0)),
		}},
		{"read of a value never written", false, []porcupine.Operation{
			op(1, 0, 1, get, found("x", 0)),
		}},
		{"version changes without a write", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(1, 2, 3, entry, found("a", 5)),
			op(1, 4, 5, entry, found("a", 6)),
		}},
		{"version does not increase", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(1, 2, 3, entry, found("a", 5)),
			op(0, 4, 5, set("b"), Output{}),
			op(1, 6, 7, entry, found("b", 5)),
		}},
		{"CAS succeeds against a superseded version", false, []porcupine.Operation{
			op(0, 0, 1, cas(0, "a"), Output{Swapped: true, Version: 3}),
			op(0, 2, 3, cas(3, "b"), Output{Swapped: true, Version: 4}),
			op(1, 4, 5, cas(3, "c"), Output{Swapped: true, Version: 5}),
		}},
		{"CAS 0 succeeds on a present key", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(1, 2, 3, cas(0, "b"), Output{Swapped: true, Version: 9}),
		}},
		{"CAS mismatch at the matching version", false, []porcupine.Operation{
			op(0, 0, 1, cas(0, "a"), Output{Swapped: true, Version: 3}),
			op(1, 2, 3, cas(3, "b"), found("a", 3)),
		}},
		{"lost acknowledged write", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(1, 2, 3, get, Output{}),
		}},
		{"sequential set, getEntry, cas, get", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(0, 2, 3, entry, found("a", 7)),
			op(0, 4, 5, cas(7, "b"), Output{Swapped: true, Version: 9}),
			op(1, 6, 7, cas(7, "c"), found("b", 9)),
			op(1, 8, 9, get, found("b", 0)),
		}},
		{"concurrent write may be read either way", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(0, 2, 10, set("b"), Output{}),
			op(1, 3, 4, get, found("b", 0)),
			op(2, 5, 6, get, found("b", 0)),
		}},
		{"unknown write may take effect late", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(0, 2, never, set("b"), Output{Unknown: true}),
			op(1, 3, 4, get, found("a", 0)),
			op(1, 5, 6, get, found("b", 0)),
		}},
		{"unknown write may never take effect", true, []porcupine.Operation{
			op(0, 2, never, set("b"), Output{Unknown: true}),
			op(1, 3, 4, get, Output{}),
		}},
		{"unknown CAS against an unknown version", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), Output{}),
			op(1, 2, never, cas(5, "b"), Output{Unknown: true}),
			op(0, 3, 4, entry, found("b", 8)),
		}},
		{"unknown CAS with a wrong known version has no effect", false, []porcupine.Operation{
			op(0, 0, 1, cas(0, "a"), Output{Swapped: true, Version: 3}),
			op(1, 2, never, cas(2, "b"), Output{Unknown: true}),
			op(0, 3, 4, get, found("b", 0)),
		}},
	}
	for _, tc := range cases {
		got := porcupine.CheckOperations(model, tc.ops)
		if got != tc.legal {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.legal)
		}
	}
}
