package gridkv_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// watchLoad adds the config store to a fault scenario: a writer sets, deletes and writes keys
// with short TTLs under wl/ through whichever node is up, while one watcher per node follows
// the prefix from a listing's Cursor, moving to another node (from its last event's Cursor)
// when its node goes. At the end every watcher's state must equal a final linearizable List,
// with no event of a key seen twice or out of order, and no expired key readable anywhere.
type watchLoad struct {
	c      *cluster.Cluster
	ctx    context.Context
	cancel context.CancelFunc
	stop   atomic.Bool
	wg     sync.WaitGroup

	watchers []*follower

	mu         sync.Mutex // guards violations and resumes
	violations []string
	resumes    int
	writes     atomic.Int64
}

const (
	watchPrefix = "wl/"
	watchMaxTTL = 1500 * time.Millisecond
)

// follower is one watcher's view of wl/.
type follower struct {
	mu     sync.Mutex // guards the fields below
	state  map[string]gridkv.Entry
	last   map[string]uint64 // the version of the last event seen, per key
	cursor gridkv.Cursor
	events int
}

func startWatchLoad(t *testing.T, c *cluster.Cluster) *watchLoad {
	t.Helper()
	w := &watchLoad{c: c}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	t.Cleanup(w.halt)
	page, err := c.Node(0).KV.List(w.ctx, watchPrefix)
	if err != nil {
		t.Fatalf("the initial List: %v", err)
	}
	for i := range c.Live() {
		f := &follower{state: map[string]gridkv.Entry{}, last: map[string]uint64{}, cursor: page.Cursor}
		for _, e := range page.Entries {
			f.state[e.Key] = e
		}
		w.watchers = append(w.watchers, f)
		w.wg.Go(func() { w.follow(f, i) })
	}
	w.wg.Go(w.write)
	return w
}

// halt stops the writer and the watchers and waits for them.
func (w *watchLoad) halt() {
	w.stop.Store(true)
	w.cancel()
	w.wg.Wait()
}

func (w *watchLoad) violation(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.violations) < 20 {
		w.violations = append(w.violations, fmt.Sprintf(format, args...))
	}
}

// liveNode returns a node that is up, starting the search at index i.
func (w *watchLoad) liveNode(i int) *gridkv.GridKV {
	live := w.c.Live()
	if len(live) == 0 {
		return nil
	}
	return live[i%len(live)].KV
}

// write changes keys under wl/ until stopped: Sets, Sets with a TTL, Deletes.
func (w *watchLoad) write() {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))
	for i := 0; !w.stop.Load(); i++ {
		kv := w.liveNode(rng.IntN(8))
		if kv == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		key := fmt.Sprint(watchPrefix, rng.IntN(12))
		ctx, cancel := context.WithTimeout(w.ctx, time.Second)
		var err error
		switch r := rng.IntN(10); {
		case r < 5:
			err = kv.Set(ctx, key, []byte(fmt.Sprint("v", i)))
		case r < 8:
			ttl := 300*time.Millisecond + time.Duration(rng.Int64N(int64(watchMaxTTL-300*time.Millisecond)))
			err = kv.Set(ctx, key, []byte(fmt.Sprint("t", i)), gridkv.WithTTL(ttl))
		default:
			err = kv.Delete(ctx, key)
		}
		cancel()
		if err == nil {
			w.writes.Add(1)
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
}

// follow watches wl/ from f's cursor through node i, and through another node whenever the
// one it watches through fails.
func (w *watchLoad) follow(f *follower, i int) {
	for n := i; w.ctx.Err() == nil; n++ {
		kv := w.liveNode(n)
		if kv == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		f.mu.Lock()
		from := f.cursor
		f.mu.Unlock()
		for ev, err := range kv.Watch(w.ctx, watchPrefix, gridkv.FromCursor(from)) {
			if err != nil {
				if errors.Is(err, gridkv.ErrCompacted) {
					w.violation("a watcher fell behind the history: %v", err)
				}
				break
			}
			w.apply(f, ev)
		}
		if w.ctx.Err() == nil {
			w.mu.Lock()
			w.resumes++
			w.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (w *watchLoad) apply(f *follower, ev gridkv.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := ev.Entry.Key
	if last := f.last[key]; ev.Entry.Version <= last {
		w.violation("%s of %s at version %d after version %d: seen twice or out of order", ev.Type, key, ev.Entry.Version, last)
	}
	f.last[key] = ev.Entry.Version
	f.cursor = ev.Cursor
	f.events++
	switch ev.Type {
	case gridkv.EventPut:
		f.state[key] = ev.Entry
	case gridkv.EventDelete, gridkv.EventExpire:
		delete(f.state, key)
	}
}

// check stops the writer, waits past every TTL, and requires each watcher's state to equal a
// final List and no node to return an expired key. Call it after healing.
func (w *watchLoad) check(t *testing.T) {
	t.Helper()
	w.stop.Store(true)
	time.Sleep(watchMaxTTL + 200*time.Millisecond) // every deadline has passed
	deadline := time.Now().Add(60 * time.Second)
	for round := 0; ; round++ {
		why := w.compare(round)
		if why == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watchers' states never matched the final listing: %s\n%s", why, cluster.StacksNote(t))
		}
		time.Sleep(500 * time.Millisecond)
	}
	w.halt()
	now := time.Now()
	for _, n := range w.c.Live() {
		for _, lvl := range []gridkv.Consistency{gridkv.Linearizable, gridkv.Stale} {
			page, err := n.KV.List(context.Background(), watchPrefix, gridkv.WithConsistency(lvl))
			if err != nil {
				t.Fatalf("List through %s: %v", n.ID, err)
			}
			for _, e := range page.Entries {
				if !e.ExpiresAt.IsZero() && e.ExpiresAt.Before(now) {
					t.Errorf("%s listed %s, expired at %v", n.ID, e.Key, e.ExpiresAt)
				}
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	events := 0
	for _, f := range w.watchers {
		events += f.events
	}
	t.Logf("config store under faults: %d writes, %d events to %d watchers, %d resumes", w.writes.Load(), events, len(w.watchers), w.resumes)
	for _, v := range w.violations {
		t.Error(v)
	}
	if w.writes.Load() < 50 {
		t.Errorf("only %d writes under wl/: too few to mean anything", w.writes.Load())
	}
}

// compare takes a final listing, then writes a marker in every partition and waits until
// every watcher has seen them all (so it has seen every change before them), and returns how
// a watcher's state differs from the listing, or "".
func (w *watchLoad) compare(round int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := w.liveNode(0)
	page, err := kv.List(ctx, watchPrefix, gridkv.WithLimit(gridkv.MaxListLimit))
	if err != nil {
		return fmt.Sprintf("final List: %v", err)
	}
	want := map[string]gridkv.Entry{}
	for _, e := range page.Entries {
		if !strings.HasPrefix(e.Key, watchPrefix+"~") {
			want[e.Key] = e
		}
	}
	partitions := len(kv.Status().Partitions)
	marker := fmt.Sprint("round-", round)
	for p := range partitions {
		if err := kv.Set(ctx, w.c.KeyIn(watchPrefix+"~marker", p), []byte(marker)); err != nil {
			return fmt.Sprintf("writing markers: %v", err)
		}
	}
	for i, f := range w.watchers {
		for {
			f.mu.Lock()
			seen := 0
			for k, e := range f.state {
				if strings.HasPrefix(k, watchPrefix+"~") && string(e.Value) == marker {
					seen++
				}
			}
			f.mu.Unlock()
			if seen == partitions {
				break
			}
			if ctx.Err() != nil {
				return fmt.Sprintf("watcher %d saw %d of %d markers of %s", i, seen, partitions, marker)
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.mu.Lock()
		diff := stateDiff(f.state, want)
		f.mu.Unlock()
		if diff != "" {
			return fmt.Sprintf("watcher %d: %s", i, diff)
		}
	}
	return ""
}

func stateDiff(got, want map[string]gridkv.Entry) string {
	for k, e := range want {
		g, ok := got[k]
		if !ok || g.Version != e.Version || string(g.Value) != string(e.Value) {
			return fmt.Sprintf("%s is %q@%d in the listing, %q@%d (present: %v) in the watcher's state", k, e.Value, e.Version, g.Value, g.Version, ok)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok && !strings.HasPrefix(k, watchPrefix+"~") {
			return fmt.Sprintf("%s (%q@%d) is in the watcher's state, not in the listing", k, g.Value, g.Version)
		}
	}
	return ""
}
