package watch

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/feellmoose/gridkv/store"
)

// Timings of a mirror's pulls: how long one request for changes waits at the replica, how
// long a direct read for a watcher behind the mirror may take, and the pause after a failure.
const (
	pullWait       = 20 * time.Second
	directLimit    = 10 * time.Second
	pullBackoffMax = 2 * time.Second
)

// mirror is the Source of a partition this node has no replica of: a pump pulls the
// partition's changes from a replica elsewhere (Fetch picks it, and another when it fails)
// into a bounded window. A watcher behind the window is served by a direct read.
type mirror struct {
	p     int
	start uint64 // the position the mirror started at
	fetch Fetch
	cap   int
	ctx   context.Context
	stop  context.CancelFunc

	// mu guards the fields below it.
	mu      sync.Mutex
	floor   uint64        // the window holds every change after floor, up to head
	head    uint64        // position pulled up to
	events  []store.Event // the window, oldest first
	changed chan struct{} // closed when events are added; nil until someone asks
	broken  error         // set when the replica no longer holds what the pump needs
}

func (h *Hub) startMirror(p int, start uint64) *mirror {
	m := &mirror{p: p, start: start, fetch: h.cfg.Fetch, cap: h.cfg.MirrorEvents, floor: start, head: start}
	m.ctx, m.stop = context.WithCancel(h.ctx)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		m.pump(h)
	}()
	return m
}

func (m *mirror) close() { m.stop() }

func (m *mirror) isBroken() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.broken != nil
}

// pump pulls changes until the mirror is closed or breaks.
func (m *mirror) pump(h *Hub) {
	backoff := 10 * time.Millisecond
	for m.ctx.Err() == nil {
		m.mu.Lock()
		after := m.head
		m.mu.Unlock()
		events, next, err := m.fetch(m.ctx, m.p, after, "", readBatch, pullWait)
		switch {
		case errors.Is(err, store.ErrCompacted):
			m.mu.Lock()
			m.broken = err
			m.notifyLocked()
			m.mu.Unlock()
			return
		case err != nil:
			if m.ctx.Err() == nil {
				h.cfg.Logger.Debug("watch: pulling changes", "partition", m.p, "err", err)
			}
			select {
			case <-m.ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, pullBackoffMax)
			continue
		}
		backoff = 10 * time.Millisecond
		m.mu.Lock()
		m.events = append(m.events, events...)
		if over := len(m.events) - m.cap; over > 0 {
			m.floor = m.events[over-1].Version
			m.events = append(m.events[:0], m.events[over:]...)
		}
		m.head = max(m.head, next)
		if len(events) > 0 {
			m.notifyLocked()
		}
		m.mu.Unlock()
	}
}

func (m *mirror) notifyLocked() {
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

func (m *mirror) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.changed
}

func (m *mirror) Position() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.head
}

func (m *mirror) Events(after uint64, prefix string, max int) ([]store.Event, uint64, error) {
	m.mu.Lock()
	if m.broken != nil && after < m.head {
		err := m.broken
		m.mu.Unlock()
		return nil, after, err
	}
	if after < m.floor {
		m.mu.Unlock()
		// Behind the window: read from a replica directly, without waiting.
		ctx, cancel := context.WithTimeout(m.ctx, directLimit)
		defer cancel()
		return m.fetch(ctx, m.p, after, prefix, max, 0)
	}
	defer m.mu.Unlock()
	if after >= m.head {
		return nil, after, nil
	}
	i := sort.Search(len(m.events), func(i int) bool { return m.events[i].Version > after })
	var out []store.Event
	for ; i < len(m.events); i++ {
		if e := &m.events[i]; strings.HasPrefix(e.Key, prefix) {
			if len(out) == max {
				return out, out[len(out)-1].Version, nil
			}
			out = append(out, *e)
		}
	}
	return out, m.head, nil
}
