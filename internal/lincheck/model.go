// Package lincheck checks GridKV histories for linearizability with porcupine: a per-key model
// of Set/Get/GetEntry/CompareAndSwap, a recorder that clients append operations to, a client
// loop that drives a node with unique values, and a check that fails a test with a
// visualization.
package lincheck

import (
	"fmt"

	"github.com/anishathalye/porcupine"
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

type Kind uint8

const (
	Set Kind = iota + 1
	Get
	GetEntry
	CAS
)

type Input struct {
	Kind    Kind
	Key     string
	Value   string // set, cas
	Version uint64 // cas: the expected version
}

type Output struct {
	Unknown bool   // a write whose outcome is unknown
	Found   bool   // get, getEntry, cas mismatch: the key was present
	Value   string // get, getEntry, cas mismatch: the value read
	Version uint64 // getEntry: version read; cas: new version, or the current one on mismatch
	Swapped bool   // cas: succeeded
}

type State struct {
	present bool
	value   string
	known   bool   // version is the key's version (absent keys: known, 0)
	version uint64 // if known
	floor   uint64 // if !known: the version is greater than floor
}

// bound is a version every later write of the key must exceed.
func (s State) bound() uint64 {
	if s.known {
		return s.version
	}
	return s.floor
}

// versionCanBe reports whether the state's version may be v, and returns the state with the
// version learned.
func (s State) versionCanBe(v uint64) (bool, State) {
	if s.known {
		return s.version == v, s
	}
	if v <= s.floor {
		return false, s
	}
	s.known, s.version, s.floor = true, v, 0
	return true, s
}

func step(state, input, output any) []any {
	s, in, out := state.(State), input.(Input), output.(Output)
	switch in.Kind {
	case Set:
		return []any{State{present: true, value: in.Value, floor: s.bound()}}
	case Get:
		if out.Found != s.present || (out.Found && out.Value != s.value) {
			return nil
		}
		return []any{s}
	case GetEntry:
		if out.Found != s.present {
			return nil
		}
		if !out.Found {
			return []any{s}
		}
		if out.Value != s.value {
			return nil
		}
		if ok, next := s.versionCanBe(out.Version); ok {
			return []any{next}
		}
		return nil
	case CAS:
		applied := func(version uint64, known bool) State {
			if known {
				return State{present: true, value: in.Value, known: true, version: version}
			}
			return State{present: true, value: in.Value, floor: in.Version}
		}
		switch {
		case out.Unknown:
			if !s.present || s.known {
				if s.bound() == in.Version {
					return []any{applied(0, false)}
				}
				return []any{s}
			}
			if in.Version > s.floor {
				return []any{s, applied(0, false)} // it may or may not have matched
			}
			return []any{s}
		case out.Swapped:
			if out.Version <= in.Version {
				return nil
			}
			if !s.present {
				if in.Version != 0 {
					return nil
				}
				return []any{applied(out.Version, true)}
			}
			if ok, _ := s.versionCanBe(in.Version); !ok {
				return nil
			}
			return []any{applied(out.Version, true)}
		default: // mismatch, with the current entry
			if !s.present {
				if out.Found || out.Version != 0 || in.Version == 0 {
					return nil
				}
				return []any{s}
			}
			if !out.Found || out.Value != s.value || out.Version == in.Version {
				return nil
			}
			if ok, next := s.versionCanBe(out.Version); ok {
				return []any{next}
			}
			return nil
		}
	}
	return nil
}

var Model = porcupine.NondeterministicModel{
	Init: func() []any { return []any{State{known: true}} },
	Step: step,
	Equal: func(a, b any) bool {
		return a.(State) == b.(State)
	},
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := make(map[string][]porcupine.Operation)
		var keys []string
		for _, op := range history {
			k := op.Input.(Input).Key
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
		in, out := input.(Input), output.(Output)
		var res string
		switch {
		case out.Unknown:
			res = "?"
		case in.Kind == Set:
			res = "ok"
		case in.Kind == CAS && out.Swapped:
			res = fmt.Sprintf("ok v%d", out.Version)
		case !out.Found:
			res = "absent"
		default:
			res = fmt.Sprintf("%q v%d", out.Value, out.Version)
		}
		switch in.Kind {
		case Set:
			return fmt.Sprintf("set(%s, %q) -> %s", in.Key, in.Value, res)
		case Get:
			return fmt.Sprintf("get(%s) -> %s", in.Key, res)
		case GetEntry:
			return fmt.Sprintf("getEntry(%s) -> %s", in.Key, res)
		default:
			return fmt.Sprintf("cas(%s, v%d, %q) -> %s", in.Key, in.Version, in.Value, res)
		}
	},
	DescribeState: func(state any) string {
		s := state.(State)
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
