package lincheck

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

// History collects operations from many clients. Safe for concurrent use.
type History struct {
	start time.Time

	mu  sync.Mutex // guards ops
	ops []porcupine.Operation

	Unknown, Dropped, Swaps, Mismatches atomic.Int64
}

// NewHistory starts a history; operation times are measured from now.
func NewHistory() *History { return &History{start: time.Now()} }

// Start returns when the history began.
func (h *History) Start() time.Time { return h.start }

func (h *History) now() int64 { return int64(time.Since(h.start)) }

// Add records one operation.
func (h *History) Add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the operations recorded so far.
func (h *History) Ops() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// Client describes one client loop.
type Client struct {
	ID     int
	KV     *gridkv.GridKV
	Keys   int           // keys are "lin-0" .. "lin-(Keys-1)"
	OpTime time.Duration // each operation's context timeout
	Until  time.Time     // stop issuing operations then
	// Stop, if set, is polled before every operation; true ends the loop (the node is going).
	Stop func() bool
}

// Run issues random Set/Get/GetEntry/CompareAndSwap operations with unique values until
// c.Until, recording each in h. A write that fails has an unknown outcome: it is recorded as
// never returning, so porcupine may place it anywhere after its call or nowhere. A failed read
// tells nothing and is dropped.
func (c Client) Run(h *History) {
	rng := rand.New(rand.NewPCG(uint64(c.ID), 42))
	known := make(map[string]uint64) // last version this client saw per key
	for seq := 0; time.Now().Before(c.Until); seq++ {
		if c.Stop != nil && c.Stop() {
			return
		}
		key := fmt.Sprintf("lin-%d", rng.IntN(c.Keys))
		value := fmt.Sprintf("c%d-%d", c.ID, seq)
		in := Input{Key: key, Value: value}
		var out Output
		ctx, cancel := context.WithTimeout(context.Background(), c.OpTime)
		call := h.now()
		var err error
		switch r := rng.IntN(100); {
		case r < 25:
			in.Kind = Set
			err = c.KV.Set(ctx, key, []byte(value))
		case r < 45:
			in.Kind = Get
			var v []byte
			v, err = c.KV.Get(ctx, key)
			out.Found, out.Value = err == nil, string(v)
		case r < 70:
			in.Kind = GetEntry
			var e gridkv.Entry
			e, err = c.KV.GetEntry(ctx, key)
			out.Found, out.Value, out.Version = err == nil, string(e.Value), e.Version
			if err == nil {
				known[key] = e.Version
			}
		default:
			in.Kind = CAS
			in.Version = known[key]
			if rng.IntN(10) == 0 {
				in.Version = 0
			}
			var e gridkv.Entry
			e, err = c.KV.CompareAndSwap(ctx, key, in.Version, []byte(value))
			switch {
			case err == nil:
				out.Swapped, out.Version = true, e.Version
				known[key] = e.Version
				h.Swaps.Add(1)
			case errors.Is(err, gridkv.ErrVersionMismatch):
				out.Found, out.Value, out.Version = e.Version != 0, string(e.Value), e.Version
				known[key] = e.Version
				h.Mismatches.Add(1)
				err = nil
			}
		}
		ret := h.now()
		cancel()
		reading := in.Kind == Get || in.Kind == GetEntry
		switch {
		case reading && errors.Is(err, gridkv.ErrKeyNotFound):
			out.Found, out.Value, out.Version = false, "", 0
		case err != nil && reading:
			h.Dropped.Add(1)
			continue
		case err != nil:
			out = Output{Unknown: true}
			ret = math.MaxInt64
			h.Unknown.Add(1)
		}
		h.Add(porcupine.Operation{ClientId: c.ID, Input: in, Call: call, Output: out, Return: ret})
	}
}

// Check fails t unless ops are linearizable. On failure it writes porcupine's visualization
// to a temporary file and names it. It also checks a copy with one read forged to a value
// nobody wrote, which must be illegal: a check that cannot fail proves nothing.
func Check(t testing.TB, ops []porcupine.Operation, timeout time.Duration) {
	t.Helper()
	model := Model.ToModel()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	t.Logf("porcupine: %d operations: %s in %v", len(ops), res, time.Since(start).Round(time.Millisecond))
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
	forged := slices.Clone(ops)
	for i, op := range forged {
		if in, out := op.Input.(Input), op.Output.(Output); in.Kind == Get && out.Found {
			out.Value = "forged"
			forged[i].Output = out
			if res := porcupine.CheckOperationsTimeout(model, forged, timeout); res != porcupine.Illegal {
				t.Errorf("a history with a forged read checks as %s, want Illegal", res)
			}
			return
		}
	}
}
