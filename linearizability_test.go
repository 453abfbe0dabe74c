package gridkv_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/feellmoose/gridkv"
)

// The model below describes one key of GridKV as a sequential object, for porcupine.
//
// State: whether the key is present, its value, and its version. Versions make the model
// subtle because Set does not report the version it assigned. So a state's version is either
// known (learned from a GetEntry, a CAS result, or a CAS mismatch, which all report it) or
// unknown. An unknown version is not unconstrained: GridKV assigns versions from the Raft log
// position, so every write to a key gets a version above that of the write before it. The
// state therefore keeps a floor: the unknown version is strictly greater than floor.
//
// Since every value written is unique, a value identifies the one write that produced it and
// hence one fixed version. Learning that version the first time an operation reports it, and
// checking every later report against it, is exact, not a guess.
//
// Steps (a step that the output contradicts is illegal):
//   - set(v): the key becomes v with an unknown version whose floor is the previous version
//     (known) or the previous floor (unknown). Absent keys count as version 0.
//   - get: present and value must match the state.
//   - getEntry: present and value must match; the version must equal a known version, or
//     exceed the floor of an unknown one, which then becomes known.
//   - cas(e, v) reported success with version n: legal iff the key's version equals e (absent:
//     e == 0; unknown: e > floor, and e becomes the learned version) and n > e. The key
//     becomes v at known version n.
//   - cas(e, v) reported mismatch with the current entry: legal iff that entry matches the
//     state (absent: not found and version 0) and e differs from its version.
//   - a write whose outcome is unknown (an error other than a mismatch): porcupine lets it
//     take effect at any point after its call, or, by placing it last, not at all. Where the
//     state decides a CAS, the step is deterministic; when the version is unknown the CAS may
//     have applied (if e > floor) or not, so the step returns both states.
//
// What the model does not check (it is per key): the ordering of versions across keys of one
// partition, and the fact that an unknown version that a failed CAS was compared against is
// not e (no set of excluded values is kept). Both only make it more permissive, never stricter
// than GridKV's contract.

type lzKind uint8

const (
	lzSet lzKind = iota + 1
	lzGet
	lzGetEntry
	lzCAS
)

type lzInput struct {
	kind    lzKind
	key     string
	value   string // set, cas
	version uint64 // cas: the expected version
}

type lzOutput struct {
	unknown bool   // a write whose outcome is unknown
	found   bool   // get, getEntry, cas mismatch: the key was present
	value   string // get, getEntry, cas mismatch: the value read
	version uint64 // getEntry: version read; cas: new version, or the current one on mismatch
	swapped bool   // cas: succeeded
}

type lzState struct {
	present bool
	value   string
	known   bool   // version is the key's version (absent keys: known, 0)
	version uint64 // if known
	floor   uint64 // if !known: the version is greater than floor
}

// bound is a version every later write of the key must exceed.
func (s lzState) bound() uint64 {
	if s.known {
		return s.version
	}
	return s.floor
}

// versionCanBe reports whether the state's version may be v, and returns the state with the
// version learned.
func (s lzState) versionCanBe(v uint64) (bool, lzState) {
	if s.known {
		return s.version == v, s
	}
	if v <= s.floor {
		return false, s
	}
	s.known, s.version, s.floor = true, v, 0
	return true, s
}

func lzStep(state, input, output any) []any {
	s, in, out := state.(lzState), input.(lzInput), output.(lzOutput)
	switch in.kind {
	case lzSet:
		return []any{lzState{present: true, value: in.value, floor: s.bound()}}
	case lzGet:
		if out.found != s.present || (out.found && out.value != s.value) {
			return nil
		}
		return []any{s}
	case lzGetEntry:
		if out.found != s.present {
			return nil
		}
		if !out.found {
			return []any{s}
		}
		if out.value != s.value {
			return nil
		}
		if ok, next := s.versionCanBe(out.version); ok {
			return []any{next}
		}
		return nil
	case lzCAS:
		applied := func(version uint64, known bool) lzState {
			if known {
				return lzState{present: true, value: in.value, known: true, version: version}
			}
			return lzState{present: true, value: in.value, floor: in.version}
		}
		switch {
		case out.unknown:
			if !s.present || s.known {
				if s.bound() == in.version {
					return []any{applied(0, false)}
				}
				return []any{s}
			}
			if in.version > s.floor {
				return []any{s, applied(0, false)} // it may or may not have matched
			}
			return []any{s}
		case out.swapped:
			if out.version <= in.version {
				return nil
			}
			if !s.present {
				if in.version != 0 {
					return nil
				}
				return []any{applied(out.version, true)}
			}
			if ok, _ := s.versionCanBe(in.version); !ok {
				return nil
			}
			return []any{applied(out.version, true)}
		default: // mismatch, with the current entry
			if !s.present {
				if out.found || out.version != 0 || in.version == 0 {
					return nil
				}
				return []any{s}
			}
			if !out.found || out.value != s.value || out.version == in.version {
				return nil
			}
			if ok, next := s.versionCanBe(out.version); ok {
				return []any{next}
			}
			return nil
		}
	}
	return nil
}

var kvModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{lzState{known: true}} },
	Step: lzStep,
	Equal: func(a, b any) bool {
		return a.(lzState) == b.(lzState)
	},
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := make(map[string][]porcupine.Operation)
		var keys []string
		for _, op := range history {
			k := op.Input.(lzInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(lzInput), output.(lzOutput)
		var res string
		switch {
		case out.unknown:
			res = "?"
		case in.kind == lzSet:
			res = "ok"
		case in.kind == lzCAS && out.swapped:
			res = fmt.Sprintf("ok v%d", out.version)
		case !out.found:
			res = "absent"
		default:
			res = fmt.Sprintf("%q v%d", out.value, out.version)
		}
		switch in.kind {
		case lzSet:
			return fmt.Sprintf("set(%s, %q) -> %s", in.key, in.value, res)
		case lzGet:
			return fmt.Sprintf("get(%s) -> %s", in.key, res)
		case lzGetEntry:
			return fmt.Sprintf("getEntry(%s) -> %s", in.key, res)
		default:
			return fmt.Sprintf("cas(%s, v%d, %q) -> %s", in.key, in.version, in.value, res)
		}
	},
	DescribeState: func(state any) string {
		s := state.(lzState)
		switch {
		case !s.present:
			return "absent"
		case s.known:
			return fmt.Sprintf("%q v%d", s.value, s.version)
		default:
			return fmt.Sprintf("%q v>%d", s.value, s.floor)
		}
	},
}

// TestModelRejectsViolations makes sure the model is not vacuous: histories that break
// linearizability in the ways GridKV could are illegal, and their sound variants legal.
func TestModelRejectsViolations(t *testing.T) {
	t.Parallel()
	op := func(client int, call, ret int64, in lzInput, out lzOutput) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	}
	set := func(v string) lzInput { return lzInput{kind: lzSet, key: "k", value: v} }
	get := lzInput{kind: lzGet, key: "k"}
	entry := lzInput{kind: lzGetEntry, key: "k"}
	cas := func(e uint64, v string) lzInput { return lzInput{kind: lzCAS, key: "k", version: e, value: v} }
	found := func(v string, ver uint64) lzOutput { return lzOutput{found: true, value: v, version: ver} }
	never := int64(math.MaxInt64)
	model := kvModel.ToModel()

	cases := []struct {
		name  string
		legal bool
		ops   []porcupine.Operation
	}{
		{"stale read after a completed write", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(0, 2, 3, set("b"), lzOutput{}),
			op(1, 4, 5, get, found("a", 0)),
		}},
		{"read of a value never written", false, []porcupine.Operation{
			op(1, 0, 1, get, found("x", 0)),
		}},
		{"version changes without a write", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(1, 2, 3, entry, found("a", 5)),
			op(1, 4, 5, entry, found("a", 6)),
		}},
		{"version does not increase", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(1, 2, 3, entry, found("a", 5)),
			op(0, 4, 5, set("b"), lzOutput{}),
			op(1, 6, 7, entry, found("b", 5)),
		}},
		{"CAS succeeds against a superseded version", false, []porcupine.Operation{
			op(0, 0, 1, cas(0, "a"), lzOutput{swapped: true, version: 3}),
			op(0, 2, 3, cas(3, "b"), lzOutput{swapped: true, version: 4}),
			op(1, 4, 5, cas(3, "c"), lzOutput{swapped: true, version: 5}),
		}},
		{"CAS 0 succeeds on a present key", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(1, 2, 3, cas(0, "b"), lzOutput{swapped: true, version: 9}),
		}},
		{"CAS mismatch at the matching version", false, []porcupine.Operation{
			op(0, 0, 1, cas(0, "a"), lzOutput{swapped: true, version: 3}),
			op(1, 2, 3, cas(3, "b"), found("a", 3)),
		}},
		{"lost acknowledged write", false, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(1, 2, 3, get, lzOutput{}),
		}},
		{"sequential set, getEntry, cas, get", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(0, 2, 3, entry, found("a", 7)),
			op(0, 4, 5, cas(7, "b"), lzOutput{swapped: true, version: 9}),
			op(1, 6, 7, cas(7, "c"), found("b", 9)),
			op(1, 8, 9, get, found("b", 0)),
		}},
		{"concurrent write may be read either way", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(0, 2, 10, set("b"), lzOutput{}),
			op(1, 3, 4, get, found("b", 0)),
			op(2, 5, 6, get, found("b", 0)),
		}},
		{"unknown write may take effect late", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(0, 2, never, set("b"), lzOutput{unknown: true}),
			op(1, 3, 4, get, found("a", 0)),
			op(1, 5, 6, get, found("b", 0)),
		}},
		{"unknown write may never take effect", true, []porcupine.Operation{
			op(0, 2, never, set("b"), lzOutput{unknown: true}),
			op(1, 3, 4, get, lzOutput{}),
		}},
		{"unknown CAS against an unknown version", true, []porcupine.Operation{
			op(0, 0, 1, set("a"), lzOutput{}),
			op(1, 2, never, cas(5, "b"), lzOutput{unknown: true}),
			op(0, 3, 4, entry, found("b", 8)),
		}},
		{"unknown CAS with a wrong known version has no effect", false, []porcupine.Operation{
			op(0, 0, 1, cas(0, "a"), lzOutput{swapped: true, version: 3}),
			op(1, 2, never, cas(2, "b"), lzOutput{unknown: true}),
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

// history collects operations from many clients.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

func TestLinearizability(t *testing.T) {
	const (
		clients  = 12
		keys     = 16
		duration = 12 * time.Second
		closeAt  = 4 * time.Second
		opTime   = 3 * time.Second
	)
	c := startCluster(t, 3)
	settle(t, c)
	nodes := c.Live()

	// Close the node leading the most partitions: the most elections, the most in-flight
	// operations cut off.
	counts := leaderCounts(c)
	victim := 0
	for i, n := range nodes {
		if counts[n.ID] > counts[nodes[victim].ID] {
			victim = i
		}
	}
	var victimClosing atomic.Bool

	h := &history{start: time.Now()}
	end := h.start.Add(duration)
	var unknown, dropped, mismatches, swaps atomic.Int64
	var wg sync.WaitGroup
	for cl := 0; cl < clients; cl++ {
		node := cl % len(nodes)
		kv := nodes[node].KV
		rng := rand.New(rand.NewPCG(uint64(cl), 42))
		wg.Add(1)
		go func() {
			defer wg.Done()
			known := make(map[string]uint64) // last version this client saw per key
			for seq := 0; time.Now().Before(end); seq++ {
				if node == victim && victimClosing.Load() {
					return
				}
				key := fmt.Sprintf("lin-%d", rng.IntN(keys))
				value := fmt.Sprintf("c%d-%d", cl, seq)
				in := lzInput{key: key, value: value}
				var out lzOutput
				ctx, cancel := context.WithTimeout(context.Background(), opTime)
				call := h.now()
				var err error
				switch r := rng.IntN(100); {
				case r < 25:
					in.kind = lzSet
					err = kv.Set(ctx, key, []byte(value))
				case r < 45:
					in.kind = lzGet
					var v []byte
					v, err = kv.Get(ctx, key)
					out.found, out.value = err == nil, string(v)
				case r < 70:
					in.kind = lzGetEntry
					var e gridkv.Entry
					e, err = kv.GetEntry(ctx, key)
					out.found, out.value, out.version = err == nil, string(e.Value), e.Version
					if err == nil {
						known[key] = e.Version
					}
				default:
					in.kind = lzCAS
					in.version = known[key]
					if rng.IntN(10) == 0 {
						in.version = 0
					}
					var e gridkv.Entry
					e, err = kv.CompareAndSwap(ctx, key, in.version, []byte(value))
					switch {
					case err == nil:
						out.swapped, out.version = true, e.Version
						known[key] = e.Version
						swaps.Add(1)
					case errors.Is(err, gridkv.ErrVersionMismatch):
						out.found, out.value, out.version = e.Version != 0, string(e.Value), e.Version
						known[key] = e.Version
						mismatches.Add(1)
						err = nil
					}
				}
				ret := h.now()
				cancel()
				reading := in.kind == lzGet || in.kind == lzGetEntry
				switch {
				case reading && errors.Is(err, gridkv.ErrKeyNotFound):
					out.found, out.value, out.version = false, "", 0
				case err != nil && reading:
					dropped.Add(1) // a failed read tells nothing
					continue
				case err != nil:
					out = lzOutput{unknown: true}
					ret = math.MaxInt64 // it may take effect at any time after its call
					unknown.Add(1)
				}
				h.add(porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: ret})
			}
		}()
	}

	time.Sleep(time.Until(h.start.Add(closeAt)))
	t.Logf("closing %s (leads %d partitions; leaders %v)", nodes[victim].ID, counts[nodes[victim].ID], counts)
	victimClosing.Store(true)
	closeStart := time.Now()
	c.Stop(c.Index(nodes[victim].ID))
	t.Logf("Close took %v", time.Since(closeStart).Round(time.Millisecond))
	wg.Wait()

	ops := h.ops
	t.Logf("history: %d operations (%d unknown outcome, %d failed reads dropped, %d CAS swapped, %d CAS mismatched)",
		len(ops), unknown.Load(), dropped.Load(), swaps.Load(), mismatches.Load())
	if len(ops) < 500 {
		t.Fatalf("only %d operations in %v: too few for the check to mean anything", len(ops), duration)
	}
	if swaps.Load() < 20 || mismatches.Load() < 1 {
		t.Errorf("CAS outcomes too one-sided to test anything: %d swapped, %d mismatched", swaps.Load(), mismatches.Load())
	}

	checkStart := time.Now()
	model := kvModel.ToModel()
	res, info := porcupine.CheckOperationsVerbose(model, ops, 60*time.Second)
	t.Logf("porcupine: %s in %v", res, time.Since(checkStart).Round(time.Millisecond))
	if res != porcupine.Ok {
		f, err := os.CreateTemp("", "gridkv-linearizability-*.html")
		if err != nil {
			t.Fatalf("history is %s; writing the visualization: %v", res, err)
		}
		path := f.Name()
		f.Close()
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			t.Fatalf("history is %s; writing the visualization to %s: %v", res, path, err)
		}
		t.Fatalf("history is %s (Illegal: not linearizable; Unknown: the check timed out); visualization: %s", res, path)
	}

	// The same history with one read changed to a value nobody wrote must be illegal: a check
	// that cannot fail proves nothing.
	forged := slices.Clone(ops)
	for i, op := range forged {
		if in, out := op.Input.(lzInput), op.Output.(lzOutput); in.kind == lzGet && out.found {
			out.value = "forged"
			forged[i].Output = out
			break
		}
	}
	if res := porcupine.CheckOperationsTimeout(model, forged, 60*time.Second); res != porcupine.Illegal {
		t.Errorf("a history with a forged read checks as %s, want Illegal", res)
	}
}
