package gridkv

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/feellmoose/gridkv/internal/protocol"
	"github.com/feellmoose/gridkv/internal/watch"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/store"
)

// Page is one page of a List.
type Page struct {
	Entries []Entry // in byte order of key
	More    bool    // entries remain after the last one: ask again WithStartAfter(its key)
	// Cursor is the point this page was read at, in every partition: a Watch FromCursor(c)
	// yields every change made after it.
	Cursor Cursor
}

// List returns the entries whose keys start with prefix ("" = every key), in byte order of
// the key, at most WithLimit(n) of them (DefaultListLimit without it), starting after
// WithStartAfter(key). Its consistency follows the rules of Get: linearizable by default,
// every write acknowledged before List began is in it; WithConsistency(Stale) lists from this
// node's replicas where it has them. Keys past their TTL are left out.
//
// A page reads every partition at once. Its Cursor holds the position each partition was read
// at: watch FromCursor(page.Cursor) to follow the listed keys with nothing missed and nothing
// seen twice. A listing of several pages reads each at its own moment; to follow such a
// listing, watch from the first page's Cursor and skip each event whose Version is not above
// the version listed for its key.
func (kv *GridKV) List(ctx context.Context, prefix string, opts ...Option) (_ Page, err error) {
	if m := kv.metrics; m != nil {
		defer m.observeOp(opList, m.now(), &err)
	}
	if len(prefix) > MaxKeySize {
		return Page{}, fmt.Errorf("%w: prefix of %d bytes, the limit is %d", ErrInvalidKey, len(prefix), MaxKeySize)
	}
	o, err := gather(opts)
	if err != nil {
		return Page{}, err
	}
	if kv.closed.Load() {
		return Page{}, ErrClosed
	}
	page := protocol.ListPage{Prefix: prefix, StartAfter: o.startAfter, Limit: o.limit}
	pages, err := kv.listAll(ctx, page, kv.readStale(opts))
	if err != nil {
		return Page{}, err
	}
	entries, more := protocol.MergePages(pages, o.limit)
	out := Page{Entries: make([]Entry, len(entries)), More: more}
	for i, e := range entries {
		out.Entries[i] = Entry{Key: e.Key, Value: e.Value, Version: e.Version, ExpiresAt: unixTime(e.ExpiresAt)}
	}
	positions := make([]uint64, len(pages))
	for p := range pages {
		positions[p] = pages[p].Position
	}
	out.Cursor = newCursor(positions)
	return out, nil
}

// listAll reads page from every partition at once.
func (kv *GridKV) listAll(ctx context.Context, page protocol.ListPage, stale bool) ([]protocol.ListResult, error) {
	pages := make([]protocol.ListResult, kv.cfg.partitions)
	errs := make([]error, kv.cfg.partitions)
	var wg sync.WaitGroup
	for p := range pages {
		wg.Go(func() { pages[p], errs[p] = kv.listPartition(ctx, p, page, stale) })
	}
	wg.Wait()
	return pages, errors.Join(errs...)
}

// listPartition reads one partition's page: from this node's replica for a stale read when
// it can, else at the leader, confirmed as a linearizable Get is.
func (kv *GridKV) listPartition(ctx context.Context, p int, page protocol.ListPage, stale bool) (protocol.ListResult, error) {
	if stale {
		if g := kv.groups.Group(p); g != nil {
			res := localList(g, page)
			if g.StaleReadable() {
				return res, nil
			}
		}
	}
	return route(kv, ctx, p, func(g *raftgroup.Group) (protocol.ListResult, error) {
		if err := g.ReadIndex(ctx); err != nil {
			return protocol.ListResult{}, err
		}
		return localList(g, page), nil
	}, func(addr string) (protocol.ListResult, error) {
		kv.metrics.forward(opList)
		read := protocol.ReadMode{}
		if g := kv.groups.Group(p); g != nil {
			read.VouchServer, read.VouchTerm = g.ServerID(), g.Term()
		}
		return kv.peers.List(ctx, addr, p, page, read)
	})
}

func localList(g *raftgroup.Group, page protocol.ListPage) protocol.ListResult {
	entries, more, position := g.Partition().List(page.Prefix, page.StartAfter, page.Limit, time.Now().UnixNano())
	return protocol.ListResult{Entries: entries, More: more, Position: position}
}

// Event is one change yielded by Watch.
type Event struct {
	Type EventType
	// Entry is the key's state after the change: Value for EventPut only; Version is the
	// change's own (for a delete or an expiry too), unique and increasing within the key's
	// partition.
	Entry  Entry
	Cursor Cursor // resume point just after this event
}

// EventType is the kind of an Event.
type EventType int

const (
	EventPut    EventType = iota + 1 // Set, or a CompareAndSwap that wrote
	EventDelete                      // Delete, or a CompareAndDelete that removed the key
	EventExpire                      // the key's TTL ran out
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	case EventExpire:
		return "expire"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Watch yields every change to keys starting with prefix after the starting point: after
// FromCursor(c), else from the moment Watch is called. The changes of one key arrive in
// version order, each exactly once, through leader changes, node failures and the watcher's
// own node serving no replica of the partition. Changes of different partitions are not
// ordered with each other. The sequence ends after yielding a non-nil error: ctx's error,
// ErrClosed, or ErrCompacted when the cluster no longer keeps the changes after the starting
// point, or when the consumer fell that far behind (List again and watch from its Cursor).
// Breaking out of the loop releases everything the watch holds.
func (kv *GridKV) Watch(ctx context.Context, prefix string, opts ...Option) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		positions, err := kv.watchStart(ctx, prefix, opts)
		if err != nil {
			yield(Event{}, err)
			return
		}
		w, err := kv.hub.Watch(prefix, positions)
		if err != nil {
			yield(Event{}, kv.watchError(err))
			return
		}
		defer w.Close()
		kv.metrics.watchOpened()
		defer kv.metrics.watchClosed()
		var changes []watch.Change
		for {
			changes, err = w.Next(ctx, changes[:0])
			for _, c := range changes {
				positions[c.Partition] = c.Version
				ev := Event{Type: EventType(c.Type), Cursor: newCursor(positions), Entry: Entry{
					Key: c.Key, Version: c.Version, ExpiresAt: unixTime(c.ExpiresAt),
				}}
				if c.Type == store.EventPut {
					ev.Entry.Value = append([]byte{}, c.Value...) // the event's value is shared; the caller's is its own
				}
				if !yield(ev, nil) {
					return
				}
			}
			if err != nil {
				yield(Event{}, kv.watchError(err))
				return
			}
		}
	}
}

// watchStart checks a Watch's arguments and returns its starting positions.
func (kv *GridKV) watchStart(ctx context.Context, prefix string, opts []Option) ([]uint64, error) {
	if len(prefix) > MaxKeySize {
		return nil, fmt.Errorf("%w: prefix of %d bytes, the limit is %d", ErrInvalidKey, len(prefix), MaxKeySize)
	}
	o, err := gather(opts)
	if err != nil {
		return nil, err
	}
	if kv.closed.Load() {
		return nil, ErrClosed
	}
	if !o.cursor.IsZero() {
		return o.cursor.positionsFor(kv.cfg.partitions)
	}
	// From now: where a linearizable read of every partition stands, so that every write
	// acknowledged before Watch was called is before the start.
	pages, err := kv.listAll(ctx, protocol.ListPage{Prefix: prefix, Limit: 0}, false)
	if err != nil {
		return nil, err
	}
	positions := make([]uint64, len(pages))
	for p := range pages {
		positions[p] = pages[p].Position
	}
	return positions, nil
}

// watchError gives a watch's end its public form.
func (kv *GridKV) watchError(err error) error {
	switch {
	case errors.Is(err, watch.ErrClosed):
		return ErrClosed
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrCompacted),
		errors.Is(err, ErrUnavailable), errors.Is(err, ErrInvalidCursor), errors.Is(err, ErrInvalidKey):
		return err
	}
	return fmt.Errorf("%w: watch: %w", ErrUnavailable, err)
}

// localSource is this node's replica of p as a watch source, nil without one.
func (kv *GridKV) localSource(p int) watch.Source {
	if g := kv.groups.Group(p); g != nil && !g.Stopped() {
		return g.Partition()
	}
	return nil
}

// fetchEvents reads partition p's changes from a replica on another node: the leader as this
// node knows it first, then the others the placement names. A replica that no longer holds
// them (a new one, restored from a recent snapshot) is not the last word while another may.
func (kv *GridKV) fetchEvents(ctx context.Context, p int, after uint64, prefix string, max int, wait time.Duration) ([]store.Event, uint64, error) {
	var addrs []string
	if id, addr := kv.leaderOf(p); id != "" && id != kv.cfg.nodeID && addr != "" {
		addrs = append(addrs, addr)
	}
	if v := kv.view.Load(); v != nil {
		for _, r := range v.placement[p] {
			if r.NodeID != kv.cfg.nodeID && !slices.Contains(addrs, r.Addr) {
				addrs = append(addrs, r.Addr)
			}
		}
	}
	if len(addrs) == 0 {
		return nil, after, fmt.Errorf("%w: partition %d: no replica known", ErrUnavailable, p)
	}
	var lastErr error
	for i, addr := range addrs {
		w := wait
		if i > 0 {
			w = 0 // only the first is asked to wait: the others stand in after a failure
		}
		events, next, err := kv.peers.Events(ctx, addr, p, after, prefix, max, w)
		if err == nil {
			return events, next, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, after, lastErr
}
