package watch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/feellmoose/gridkv/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// history is an in-memory Source with a store.Partition's semantics: positions are versions,
// and changes at or before floor are gone.
type history struct {
	mu      sync.Mutex
	events  []store.Event
	pos     uint64
	floor   uint64
	changed chan struct{}
	reads   atomic.Int64
}

func (h *history) add(key string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pos += 10
	h.events = append(h.events, store.Event{Type: store.EventPut, Key: key, Value: []byte(key), Version: h.pos})
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
	return h.pos
}

func (h *history) compact(floor uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.floor = floor
	for len(h.events) > 0 && h.events[0].Version <= floor {
		h.events = h.events[1:]
	}
}

func (h *history) Events(after uint64, prefix string, max int) ([]store.Event, uint64, error) {
	h.reads.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if after < h.floor {
		return nil, after, fmt.Errorf("after %d: %w", after, store.ErrCompacted)
	}
	var out []store.Event
	for _, e := range h.events {
		if e.Version <= after || !strings.HasPrefix(e.Key, prefix) {
			continue
		}
		if len(out) == max {
			return out, out[len(out)-1].Version, nil
		}
		out = append(out, e)
	}
	return out, h.pos, nil
}

func (h *history) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.changed
}

func (h *history) Position() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pos
}

// fetchFrom serves Fetch from histories as if they were on other nodes, failing while down.
type remote struct {
	parts []*history
	down  atomic.Bool
	calls atomic.Int64
}

func (r *remote) fetch(ctx context.Context, p int, after uint64, prefix string, max int, wait time.Duration) ([]store.Event, uint64, error) {
	r.calls.Add(1)
	if r.down.Load() {
		return nil, after, errors.New("replica down")
	}
	h := r.parts[p]
	deadline := time.After(wait)
	for {
		changed := h.Changed()
		events, next, err := h.Events(after, prefix, max)
		if err != nil || len(events) > 0 || wait == 0 {
			return events, next, err
		}
		after = max64(after, next)
		select {
		case <-changed:
		case <-deadline:
			return nil, after, nil
		case <-ctx.Done():
			return nil, after, ctx.Err()
		}
	}
}

func max64(a, b uint64) uint64 { return max(a, b) }

func newHub(t *testing.T, local []*history, r *remote) *Hub {
	h := NewHub(Config{
		Partitions: len(local),
		Local: func(p int) Source {
			if local[p] == nil {
				return nil
			}
			return local[p]
		},
		Fetch:        r.fetch,
		MirrorEvents: 100,
	})
	t.Cleanup(h.Close)
	return h
}

// next collects changes until n have come or the timeout passes.
func next(t *testing.T, w *Watcher, n int, timeout time.Duration) ([]Change, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got []Change
	for len(got) < n {
		more, err := w.Next(ctx, nil)
		got = append(got, more...)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

func keys(cs []Change) []string {
	var ks []string
	for _, c := range cs {
		ks = append(ks, fmt.Sprintf("%d:%s", c.Partition, c.Key))
	}
	return ks
}

// A watcher gets the changes under its prefix after its positions, each once and in order
// within a partition, from local replicas.
func TestWatcherFromPositions(t *testing.T) {
	parts := []*history{{}, {}}
	parts[0].add("a/1")
	start0 := parts[0].add("b/1")
	parts[1].add("a/2")
	h := newHub(t, parts, &remote{})
	w, err := h.Watch("a/", []uint64{start0, 0})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := next(t, w, 1, 5*time.Second)
	if err != nil || strings.Join(keys(got), " ") != "1:a/2" {
		t.Fatalf("first changes %v, %v; want 1:a/2 (a/1 is before the start)", keys(got), err)
	}
	parts[0].add("b/2")
	parts[0].add("a/3")
	parts[1].add("a/4")
	got, err = next(t, w, 2, 5*time.Second)
	if err != nil || len(got) != 2 {
		t.Fatalf("later changes %v, %v; want a/3 and a/4", keys(got), err)
	}
	if w.Position(0) != parts[0].Position() || w.Position(1) != parts[1].Position() {
		t.Errorf("positions %d, %d; want %d, %d", w.Position(0), w.Position(1), parts[0].Position(), parts[1].Position())
	}
}

// Watchers whose prefix no change matches are never woken: an idle watcher costs nothing.
func TestIdleWatchersAreNotWoken(t *testing.T) {
	parts := []*history{{}}
	h := newHub(t, parts, &remote{})
	var idle []*Watcher
	for range 1000 {
		w, err := h.Watch("idle/", []uint64{0})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		idle = append(idle, w)
	}
	for _, w := range idle { // the first Next of each reads its start and finds nothing
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		if got, _ := w.Next(ctx, nil); len(got) != 0 {
			t.Fatalf("an idle watcher got %v", keys(got))
		}
		cancel()
	}
	hot, err := h.Watch("hot/", []uint64{0})
	if err != nil {
		t.Fatal(err)
	}
	defer hot.Close()
	before := parts[0].reads.Load()
	for i := range 200 {
		parts[0].add(fmt.Sprint("hot/", i))
	}
	if got, err := next(t, hot, 200, 10*time.Second); err != nil {
		t.Fatalf("the hot watcher got %d of 200: %v", len(got), err)
	}
	for i, w := range idle {
		select {
		case <-w.wake:
			t.Fatalf("idle watcher %d was woken by changes it does not watch", i)
		default:
		}
	}
	// The notifier and the hot watcher read; the idle ones do not.
	if reads := parts[0].reads.Load() - before; reads > 400 {
		t.Errorf("%d reads for 200 changes and one interested watcher", reads)
	}
}

// A watcher that starts before what the history keeps, or falls behind it, gets
// ErrCompacted: never a silent skip.
func TestWatcherCompacted(t *testing.T) {
	parts := []*history{{}}
	for i := range 5 {
		parts[0].add(fmt.Sprint("k", i))
	}
	parts[0].compact(30)
	h := newHub(t, parts, &remote{parts: parts}) // the other replicas are no better off
	w, err := h.Watch("", []uint64{10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := next(t, w, 1, 5*time.Second); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("a watcher from before the history: %v; want ErrCompacted", err)
	}

	slow, err := h.Watch("", []uint64{30})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	parts[0].add("later")
	parts[0].compact(parts[0].Position())
	if got, err := next(t, slow, 3, 5*time.Second); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("a watcher the history left behind got %v, %v; want ErrCompacted", keys(got), err)
	}
}

// A partition this node has no replica of is mirrored from another node: the watcher gets
// its changes, and a replica that fails for a while only delays them.
func TestWatcherThroughMirror(t *testing.T) {
	remoteParts := []*history{{}}
	r := &remote{parts: remoteParts}
	h := newHub(t, []*history{nil}, r)
	remoteParts[0].add("early")
	w, err := h.Watch("", []uint64{0})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := next(t, w, 1, 5*time.Second)
	if err != nil || keys(got)[0] != "0:early" {
		t.Fatalf("got %v, %v; want early", keys(got), err)
	}
	r.down.Store(true)
	remoteParts[0].add("while-down")
	time.Sleep(50 * time.Millisecond) // let the pump fail at least once
	r.down.Store(false)
	remoteParts[0].add("after")
	got, err = next(t, w, 2, 10*time.Second)
	if err != nil || strings.Join(keys(got), " ") != "0:while-down 0:after" {
		t.Fatalf("got %v, %v; want while-down then after, each once", keys(got), err)
	}
}

// A watcher behind the mirror's window is served by a direct read from the replica.
func TestWatcherBehindMirror(t *testing.T) {
	remoteParts := []*history{{}}
	r := &remote{parts: remoteParts}
	h := newHub(t, []*history{nil}, r)
	first, err := h.Watch("", []uint64{0})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for i := range 150 { // more than the mirror's window of 100
		remoteParts[0].add(fmt.Sprint("k", i))
	}
	if got, err := next(t, first, 150, 10*time.Second); err != nil {
		t.Fatalf("first watcher: %d changes, %v", len(got), err)
	}
	late, err := h.Watch("", []uint64{0})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	got, err := next(t, late, 150, 10*time.Second)
	if err != nil || len(got) != 150 || got[0].Key != "k0" || got[149].Key != "k149" {
		t.Fatalf("late watcher got %d changes, %v", len(got), err)
	}
}

// Closing the hub ends every watcher with ErrClosed and stops every goroutine.
func TestHubClose(t *testing.T) {
	h := NewHub(Config{Partitions: 1, Local: func(int) Source { return nil }, Fetch: (&remote{parts: []*history{{}}}).fetch})
	w, err := h.Watch("", []uint64{0})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background(), nil)
		done <- err
	}()
	h.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v; want ErrClosed", err)
	}
	w.Close()
	if _, err := h.Watch("", []uint64{0}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
}

// A watcher that this node's replica cannot serve (a new replica, its history starting at
// the snapshot it came from) is served by a replica elsewhere that still has the changes.
func TestWatcherFallsBackToAnotherReplica(t *testing.T) {
	full := &history{}
	for i := range 5 {
		full.add(fmt.Sprint("k", i))
	}
	fresh := &history{}
	for i := range 5 {
		fresh.add(fmt.Sprint("k", i))
	}
	fresh.compact(40)
	h := newHub(t, []*history{fresh}, &remote{parts: []*history{full}})
	w, err := h.Watch("", []uint64{10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := next(t, w, 4, 5*time.Second)
	if err != nil || strings.Join(keys(got), " ") != "0:k1 0:k2 0:k3 0:k4" {
		t.Fatalf("got %v, %v; want k1..k4 from the replica that has them", keys(got), err)
	}
}

// When no other replica can be asked (a single node), a compacted local history ends the
// watcher with ErrCompacted, not with the failure to ask.
func TestWatcherCompactedWithoutOtherReplicas(t *testing.T) {
	parts := []*history{{}}
	for i := range 5 {
		parts[0].add(fmt.Sprint("k", i))
	}
	parts[0].compact(30)
	r := &remote{parts: parts}
	r.down.Store(true)
	h := newHub(t, parts, r)
	w, err := h.Watch("", []uint64{10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := next(t, w, 1, 5*time.Second); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("got %v; want ErrCompacted", err)
	}
}

// listened is a history that, like store.Partition, tells a listener the key of every change.
type listened struct {
	*history
	mu sync.Mutex
	fn func(key string)
}

func (l *listened) SetListener(fn func(key string)) {
	l.mu.Lock()
	l.fn = fn
	l.mu.Unlock()
}

func (l *listened) add(key string) {
	l.history.add(key)
	l.mu.Lock()
	fn := l.fn
	l.mu.Unlock()
	if fn != nil {
		fn(key)
	}
}

// With a local replica that tells its changes as they apply, no goroutine reads the history
// per change: the watchers a change concerns are marked at once, and only they read.
func TestListenedReplicaWakesOnlyConcernedWatchers(t *testing.T) {
	src := &listened{history: &history{}}
	h := NewHub(Config{Partitions: 1, Local: func(int) Source { return src }, Fetch: (&remote{}).fetch})
	t.Cleanup(h.Close)
	var idle []*Watcher
	for range 100 {
		w, err := h.Watch("idle/", []uint64{0})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		idle = append(idle, w)
	}
	hot, err := h.Watch("hot/", []uint64{0})
	if err != nil {
		t.Fatal(err)
	}
	defer hot.Close()
	for _, w := range append(idle, hot) { // each first Next reads its start and finds nothing
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		w.Next(ctx, nil)
		cancel()
	}
	before := src.reads.Load()
	for i := range 50 {
		src.add(fmt.Sprint("hot/", i))
	}
	if got, err := next(t, hot, 50, 5*time.Second); err != nil {
		t.Fatalf("the hot watcher got %d of 50: %v", len(got), err)
	}
	for i, w := range idle {
		select {
		case <-w.wake:
			t.Fatalf("idle watcher %d was woken", i)
		default:
		}
	}
	if reads := src.reads.Load() - before; reads > 50 {
		t.Errorf("%d reads of the history for 50 changes: only the hot watcher should read", reads)
	}
	src.mu.Lock()
	listening := src.fn != nil
	src.mu.Unlock()
	if !listening {
		t.Fatal("the hub does not listen to a replica that can be listened to")
	}
}
