package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/feellmoose/gridkv/store"
)

// readBatch is how many changes a notifier or a watcher reads from a source at once.
const readBatch = 256

// ErrClosed is returned by a Watcher whose Hub was closed.
var ErrClosed = errors.New("watch: closed")

// Fetch reads partition p's changes after position after whose key starts with prefix from a
// replica on another node, at most max, waiting up to wait for one; it picks the replica, and another when one fails.
// It returns the changes and the position read up to, or an error wrapping
// store.ErrCompacted when that replica no longer holds the changes after `after`.
type Fetch func(ctx context.Context, p int, after uint64, prefix string, max int, wait time.Duration) ([]store.Event, uint64, error)

// Config is what a Hub needs.
type Config struct {
	Partitions int
	// Local returns this node's replica of partition p, nil when it has none. Called often:
	// it must be cheap.
	Local func(p int) Source
	// Fetch reads a partition this node has no replica of.
	Fetch Fetch
	// MirrorEvents bounds the changes kept of a partition mirrored from another node.
	MirrorEvents int
	Logger       *slog.Logger // nil: discard
}

// Hub serves a node's watchers. Safe for concurrent use.
type Hub struct {
	cfg  Config
	ctx  context.Context // cancelled by Close: ends notifiers, mirrors and fetches
	stop context.CancelFunc
	wg   sync.WaitGroup // notifiers and mirror pumps

	// mu guards parts and closed. Lock order: Hub.mu, then partWatch.mu, then Watcher.mu.
	mu     sync.Mutex
	parts  []*partWatch // by partition; nil when no watcher watches it
	closed bool
}

// partWatch is one watched partition: its watchers by prefix, its notifier, and its mirror
// while this node has no replica of it.
type partWatch struct {
	p        int
	resolved chan struct{} // buffered 1: the partition's source may have changed
	done     chan struct{} // closed when the last watcher leaves

	// mu guards index, mirror and listened.
	mu       sync.Mutex
	index    prefixIndex
	mirror   *mirror
	listened listenable // the local replica whose listener marks this partition's watchers
}

// listenable is a Source that can tell, on its apply goroutine, the key of every change as it
// becomes readable (store.Partition.SetListener), and "" when its whole history was replaced.
// A partition with such a local replica needs no notifier goroutine woken per apply: the
// changes mark the watchers they concern as they apply.
type listenable interface {
	Source
	SetListener(fn func(key string))
}

// listen makes src's listener mark pw's watchers, and stops the previous listened source's.
// The caller holds pw.mu.
func (pw *partWatch) listenLocked(src listenable) {
	if pw.listened == src {
		return
	}
	if pw.listened != nil {
		pw.listened.SetListener(nil)
	}
	src.SetListener(func(key string) {
		pw.mu.Lock()
		defer pw.mu.Unlock()
		if key == "" {
			pw.index.all(func(w *Watcher) { w.mark(pw.p) })
			return
		}
		pw.index.match(key, func(w *Watcher) { w.mark(pw.p) })
	})
	pw.listened = src
}

// unlistenLocked stops the listener pw set, if any. The caller holds pw.mu.
func (pw *partWatch) unlistenLocked() {
	if pw.listened != nil {
		pw.listened.SetListener(nil)
		pw.listened = nil
	}
}

// NewHub returns a Hub with no watchers.
func NewHub(cfg Config) *Hub {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MirrorEvents <= 0 {
		cfg.MirrorEvents = 10000
	}
	h := &Hub{cfg: cfg, parts: make([]*partWatch, cfg.Partitions)}
	h.ctx, h.stop = context.WithCancel(context.Background())
	return h
}

// Close ends every watcher (their Next returns ErrClosed) and waits for the Hub's goroutines.
// Idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.stop()
	h.wg.Wait()
}

// SourcesChanged tells the Hub that this node opened or dropped replicas: each watched
// partition looks again at where its changes come from.
func (h *Hub) SourcesChanged() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, pw := range h.parts {
		if pw != nil {
			select {
			case pw.resolved <- struct{}{}:
			default:
			}
		}
	}
}

// source returns where partition p's changes are read now: the local replica, or else the
// mirror, started at position start if there is none.
func (h *Hub) source(pw *partWatch, start uint64) Source {
	if src := h.cfg.Local(pw.p); src != nil {
		return src
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.mirror == nil || pw.mirror.isBroken() {
		if pw.mirror != nil {
			pw.mirror.close()
			select { // the notifier is waiting on the broken one
			case pw.resolved <- struct{}{}:
			default:
			}
		}
		pw.mirror = h.startMirror(pw.p, start)
	}
	return pw.mirror
}

// Watch starts a watcher of the keys starting with prefix, from positions (one per
// partition). The watcher reads nothing until Next.
func (h *Hub) Watch(prefix string, positions []uint64) (*Watcher, error) {
	if len(positions) != h.cfg.Partitions {
		return nil, fmt.Errorf("watch: %d positions for %d partitions", len(positions), h.cfg.Partitions)
	}
	w := &Watcher{hub: h, prefix: prefix, pos: append([]uint64(nil), positions...), wake: make(chan struct{}, 1)}
	w.pending = make([]bool, h.cfg.Partitions)
	for p := range w.pending {
		w.pending[p] = true // the first Next reads every partition from its position
	}
	w.anyPending = true
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	for p := range h.parts {
		pw := h.parts[p]
		if pw == nil {
			pw = &partWatch{p: p, resolved: make(chan struct{}, 1), done: make(chan struct{})}
			h.parts[p] = pw
			// The notifier starts where its source stands now, before this watcher's first
			// Next reads: every change after this point wakes the watcher, every change
			// before it is in that first read.
			src := h.source(pw, positions[p])
			start := src.Position()
			if m, ok := src.(*mirror); ok {
				start = m.start
			}
			if l, ok := src.(listenable); ok {
				pw.mu.Lock()
				pw.listenLocked(l)
				pw.mu.Unlock()
			}
			h.wg.Add(1)
			go h.notify(pw, src, start)
		}
		pw.mu.Lock()
		pw.index.add(w)
		pw.mu.Unlock()
	}
	return w, nil
}

// leave removes w from every partition, stopping the notifiers no watcher needs any more.
func (h *Hub) leave(w *Watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, pw := range h.parts {
		if pw == nil {
			continue
		}
		pw.mu.Lock()
		pw.index.remove(w)
		empty := pw.index.empty()
		pw.mu.Unlock()
		if empty {
			close(pw.done)
			h.parts[p] = nil
		}
	}
}

// notify reads partition pw.p's changes after position last as they come and wakes the
// watchers they concern.
func (h *Hub) notify(pw *partWatch, src Source, last uint64) {
	defer h.wg.Done()
	defer func() {
		pw.mu.Lock()
		pw.unlistenLocked()
		if pw.mirror != nil {
			pw.mirror.close()
		}
		pw.mu.Unlock()
	}()
	for {
		if l, ok := src.(listenable); ok {
			// The local replica's listener marks the watchers; this goroutine only waits
			// for the source to change.
			pw.mu.Lock()
			pw.listenLocked(l)
			pw.mu.Unlock()
			select {
			case <-pw.resolved:
				last = max(last, src.Position())
				src = h.resolve(pw, last)
				continue
			case <-pw.done:
				return
			case <-h.ctx.Done():
				return
			}
		}
		pw.mu.Lock()
		pw.unlistenLocked()
		pw.mu.Unlock()
		changed := src.Changed()
		if m, ok := src.(*mirror); ok && m.isBroken() {
			// The replica no longer holds what the mirror needed: its watchers learn it
			// when they read, and the notifier waits for a new source.
			changed = nil
		}
		events, next, err := src.Events(last, "", readBatch)
		switch {
		case err != nil:
			// The notifier fell behind the history, or a mirror broke: every watcher reads
			// for itself and learns where it stands.
			pw.mu.Lock()
			pw.index.all(func(w *Watcher) { w.mark(pw.p) })
			pw.mu.Unlock()
			last = src.Position()
		default:
			pw.mu.Lock()
			for i := range events {
				pw.index.match(events[i].Key, func(w *Watcher) { w.mark(pw.p) })
			}
			pw.mu.Unlock()
			last = max(last, next)
			if len(events) == readBatch {
				continue
			}
		}
		select {
		case <-changed:
		case <-pw.resolved:
			src = h.resolve(pw, last)
		case <-pw.done:
			return
		case <-h.ctx.Done():
			return
		}
	}
}

// resolve looks again at where pw's changes come from, and has its watchers read again:
// positions are the partition's own, whichever replica serves them, but the new source may be
// ahead of the old.
func (h *Hub) resolve(pw *partWatch, last uint64) Source {
	src := h.source(pw, last)
	pw.mu.Lock()
	pw.index.all(func(w *Watcher) { w.mark(pw.p) })
	pw.mu.Unlock()
	return src
}

// Change is one change of one partition, as a Watcher returns it.
type Change struct {
	Partition int
	store.Event
}

// Watcher follows the changes of the keys under one prefix, from its own position in every
// partition. Next must not be called concurrently with itself or Close.
type Watcher struct {
	hub    *Hub
	prefix string
	pos    []uint64 // by partition: the last change returned, or the start
	wake   chan struct{}

	// mu guards pending and anyPending, which the notifiers set.
	mu         sync.Mutex
	pending    []bool // partitions with changes for this watcher, or to look at
	anyPending bool
	closed     bool
}

func (w *Watcher) mark(p int) {
	w.mu.Lock()
	w.pending[p] = true
	w.anyPending = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// takePending returns the partitions to read, clearing the set.
func (w *Watcher) takePending(dst []int) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.anyPending {
		return dst
	}
	for p, ok := range w.pending {
		if ok {
			dst = append(dst, p)
			w.pending[p] = false
		}
	}
	w.anyPending = false
	return dst
}

// Position returns the watcher's position in partition p: the version of the last change it
// returned there, or where it started.
func (w *Watcher) Position(p int) uint64 { return w.pos[p] }

// Positions appends the watcher's positions, one per partition, to dst.
func (w *Watcher) Positions(dst []uint64) []uint64 { return append(dst, w.pos...) }

// Next returns the next changes, waiting until there are some, ctx ends (its error) or the
// Hub closes (ErrClosed). The changes of one partition come in version order. An error
// wrapping store.ErrCompacted means this watcher fell behind what the history keeps, or
// started before it.
func (w *Watcher) Next(ctx context.Context, dst []Change) ([]Change, error) {
	var parts []int
	for {
		parts = w.takePending(parts[:0])
		for _, p := range parts {
			n := len(dst)
			var err error
			if dst, err = w.read(p, dst); err != nil {
				return dst, err
			}
			if len(dst)-n == readBatch {
				w.mark(p) // more may follow: read on at the next call
			}
		}
		if len(dst) > 0 {
			return dst, nil
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return dst, ctx.Err()
		case <-w.hub.ctx.Done():
			return dst, ErrClosed
		}
	}
}

// read appends partition p's changes after the watcher's position there.
func (w *Watcher) read(p int, dst []Change) ([]Change, error) {
	h := w.hub
	h.mu.Lock()
	pw := h.parts[p]
	h.mu.Unlock()
	if pw == nil {
		return dst, ErrClosed
	}
	src := h.source(pw, w.pos[p])
	events, next, err := src.Events(w.pos[p], w.prefix, readBatch)
	if _, local := src.(*mirror); errors.Is(err, store.ErrCompacted) && !local {
		// This node's replica may be new, its history starting at the snapshot it was
		// built from, while another replica still holds the changes the watcher needs.
		ctx, cancel := context.WithTimeout(h.ctx, directLimit)
		if fetched, fnext, ferr := h.cfg.Fetch(ctx, p, w.pos[p], w.prefix, readBatch, 0); ferr == nil {
			events, next, err = fetched, fnext, nil
		}
		cancel() // no other replica has them either, or none answered: the compaction stands
	}
	if err != nil {
		return dst, fmt.Errorf("partition %d: %w", p, err)
	}
	for _, e := range events {
		dst = append(dst, Change{Partition: p, Event: e})
		w.pos[p] = e.Version
	}
	// A source behind this watcher (a follower that has not applied what the watcher's
	// cursor saw) never moves it back.
	w.pos[p] = max(w.pos[p], next)
	return dst, nil
}

// Close stops the watcher. Idempotent.
func (w *Watcher) Close() {
	w.mu.Lock()
	closed := w.closed
	w.closed = true
	w.mu.Unlock()
	if !closed {
		w.hub.leave(w)
	}
}
