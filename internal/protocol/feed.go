package protocol

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/store"
)

// Bounds on the config-store requests: what one answer may carry and how long a request for
// changes may wait on the server.
const (
	// MaxListLimit is the most entries one list request asks for.
	MaxListLimit = 10000
	// MaxEvents is the most events one request for changes asks for.
	MaxEvents = 1024
	// MaxEventsWait bounds how long a request for changes waits for one.
	MaxEventsWait = 30 * time.Second
)

// ListPage is what a list request asks of one partition.
type ListPage struct {
	Prefix     string
	StartAfter string
	Limit      int
}

// ListResult is one partition's page.
type ListResult struct {
	Entries []store.Entry
	// More reports that matching keys follow the last entry.
	More bool
	// Position is the partition's position the page was read at (store.Partition.Position).
	Position uint64
}

// MergePages merges the partitions' pages, each in key order, into the first limit entries
// overall. A partition that has more than it returned bounds the merge: no entry past its
// last may be taken, since keys of that partition could come before it.
func MergePages(pages []ListResult, limit int) ([]store.Entry, bool) {
	var all []store.Entry
	bound, bounded := "", false
	more := false
	for _, pg := range pages {
		all = append(all, pg.Entries...)
		if pg.More {
			more = true
			if n := len(pg.Entries); n > 0 && (!bounded || pg.Entries[n-1].Key < bound) {
				bound, bounded = pg.Entries[n-1].Key, true
			}
		}
	}
	slices.SortFunc(all, func(a, b store.Entry) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	if bounded {
		n, _ := slices.BinarySearchFunc(all, bound, func(e store.Entry, k string) int {
			switch {
			case e.Key < k:
				return -1
			case e.Key > k:
				return 1
			}
			return 0
		})
		all = all[:n+1]
	}
	if len(all) > limit {
		all, more = all[:limit], true
	}
	return all, more
}

// listRequest asks for a page of one partition, read like a forwarded Get.
type listRequest struct {
	Partition   int    `msgpack:"p"`
	Prefix      string `msgpack:"x,omitempty"`
	StartAfter  string `msgpack:"sa,omitempty"`
	Limit       int    `msgpack:"l"`
	Stale       bool   `msgpack:"s,omitempty"`
	VouchServer string `msgpack:"vs,omitempty"`
	VouchTerm   uint64 `msgpack:"vt,omitempty"`
	TimeoutMS   int64  `msgpack:"t"`
}

type listResponse struct {
	Code       uint8       `msgpack:"c"`
	Msg        string      `msgpack:"m,omitempty"`
	LeaderID   string      `msgpack:"li,omitempty"`
	LeaderAddr string      `msgpack:"la,omitempty"`
	Entries    []wireEntry `msgpack:"e,omitempty"`
	More       bool        `msgpack:"more,omitempty"`
	Position   uint64      `msgpack:"pos,omitempty"`
}

type wireEntry struct {
	Key       string `msgpack:"k"`
	Value     []byte `msgpack:"v,omitempty"`
	Version   uint64 `msgpack:"ver"`
	ExpiresAt int64  `msgpack:"x,omitempty"`
}

// eventsRequest asks for one partition's changes after a position.
type eventsRequest struct {
	Partition int    `msgpack:"p"`
	After     uint64 `msgpack:"a"`
	Prefix    string `msgpack:"x,omitempty"`
	Max       int    `msgpack:"n"`
	WaitMS    int64  `msgpack:"w"`
}

type eventsResponse struct {
	Code       uint8       `msgpack:"c"`
	Msg        string      `msgpack:"m,omitempty"`
	LeaderID   string      `msgpack:"li,omitempty"`
	LeaderAddr string      `msgpack:"la,omitempty"`
	Events     []wireEvent `msgpack:"e,omitempty"`
	Next       uint64      `msgpack:"next"`
}

type wireEvent struct {
	Type      uint8  `msgpack:"y"`
	Key       string `msgpack:"k"`
	Value     []byte `msgpack:"v,omitempty"`
	Version   uint64 `msgpack:"ver"`
	ExpiresAt int64  `msgpack:"x,omitempty"`
}

// status carries a request's outcome in the fields every config-store answer has.
func status(err error) (code uint8, msg, leaderID, leaderAddr string) {
	var r opResponse
	encodeError(err, &r)
	return r.Code, r.Msg, r.LeaderID, r.LeaderAddr
}

func statusError(p int, code uint8, msg, leaderID, leaderAddr string) error {
	return decodeError(p, &opResponse{Code: code, Msg: msg, LeaderID: leaderID, LeaderAddr: leaderAddr})
}

// checkScope refuses a partition number, prefix or start key no request of this cluster
// could carry.
func (s *Server) checkScope(p int, keys ...string) error {
	if p < 0 || p >= s.partitions {
		return fmt.Errorf("%w: partition %d out of range", store.ErrInvalidKey, p)
	}
	for _, k := range keys {
		if len(k) > store.MaxKeySize {
			return fmt.Errorf("%w: %d bytes, the limit is %d", store.ErrInvalidKey, len(k), store.MaxKeySize)
		}
	}
	return nil
}

func (s *Server) serveList(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req listRequest
	if err := Unmarshal(b, &req); err != nil {
		return nil, err
	}
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	var res ListResult
	err := s.checkScope(req.Partition, req.Prefix, req.StartAfter)
	if err == nil && (req.Limit < 0 || req.Limit > MaxListLimit) {
		err = fmt.Errorf("%w: limit %d outside 0..%d", store.ErrInvalidKey, req.Limit, MaxListLimit)
	}
	if err == nil {
		res, err = s.backend.List(ctx, req.Partition, ListPage{Prefix: req.Prefix, StartAfter: req.StartAfter, Limit: req.Limit},
			ReadMode{Stale: req.Stale, VouchServer: req.VouchServer, VouchTerm: req.VouchTerm})
	}
	resp := listResponse{More: res.More, Position: res.Position}
	resp.Code, resp.Msg, resp.LeaderID, resp.LeaderAddr = status(err)
	// An answer stays well inside a frame: a page cut short says More, and the caller asks
	// again after its last key.
	size := 0
	for _, e := range res.Entries {
		if size += len(e.Key) + len(e.Value) + 32; size > s.maxAnswer && len(resp.Entries) > 0 {
			resp.More = true
			break
		}
		resp.Entries = append(resp.Entries, wireEntry{Key: e.Key, Value: e.Value, Version: e.Version, ExpiresAt: e.ExpiresAt})
	}
	return marshal(&resp)
}

func (s *Server) serveEvents(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req eventsRequest
	if err := Unmarshal(b, &req); err != nil {
		return nil, err
	}
	var (
		events []store.Event
		next   uint64
	)
	err := s.checkScope(req.Partition, req.Prefix)
	if err == nil && (req.Max < 1 || req.Max > MaxEvents) {
		err = fmt.Errorf("%w: %d events asked, 1..%d allowed", store.ErrInvalidKey, req.Max, MaxEvents)
	}
	if err == nil {
		wait := min(max(time.Duration(req.WaitMS)*time.Millisecond, 0), MaxEventsWait)
		wctx, cancel := context.WithTimeout(ctx, wait)
		events, next, err = s.backend.Events(wctx, req.Partition, req.After, req.Prefix, req.Max)
		cancel()
	}
	resp := eventsResponse{Next: next}
	resp.Code, resp.Msg, resp.LeaderID, resp.LeaderAddr = status(err)
	size := 0
	for i, e := range events {
		if size += len(e.Key) + len(e.Value) + 32; size > s.maxAnswer && i > 0 {
			resp.Next = events[i-1].Version // the rest comes with the next request
			break
		}
		resp.Events = append(resp.Events, wireEvent{Type: uint8(e.Type), Key: e.Key, Value: e.Value, Version: e.Version, ExpiresAt: e.ExpiresAt})
	}
	return marshal(&resp)
}

// List asks the node at addr for a page of partition p. A linearizable read (read.Stale
// false) is confirmed by that node as the partition's leader.
func (c *Client) List(ctx context.Context, addr string, p int, page ListPage, read ReadMode) (ListResult, error) {
	req := listRequest{Partition: p, Prefix: page.Prefix, StartAfter: page.StartAfter, Limit: page.Limit,
		Stale: read.Stale, VouchServer: read.VouchServer, VouchTerm: read.VouchTerm}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	}
	b, err := marshal(&req)
	if err != nil {
		return ListResult{}, err
	}
	out, err := c.caller.Call(ctx, addr, kindList, b)
	if err != nil {
		return ListResult{}, callError(p, err)
	}
	var resp listResponse
	if err := Unmarshal(out, &resp); err != nil {
		return ListResult{}, err
	}
	if err := statusError(p, resp.Code, resp.Msg, resp.LeaderID, resp.LeaderAddr); err != nil {
		return ListResult{}, err
	}
	if len(resp.Entries) > page.Limit {
		return ListResult{}, fmt.Errorf("%w: %d entries for a limit of %d", ErrBadMessage, len(resp.Entries), page.Limit)
	}
	res := ListResult{More: resp.More, Position: resp.Position, Entries: make([]store.Entry, len(resp.Entries))}
	for i, e := range resp.Entries {
		if i > 0 && e.Key <= resp.Entries[i-1].Key {
			return ListResult{}, fmt.Errorf("%w: list entries out of order", ErrBadMessage)
		}
		res.Entries[i] = store.Entry{Key: e.Key, Value: e.Value, Version: e.Version, ExpiresAt: e.ExpiresAt}
	}
	return res, nil
}

// Events asks the node at addr for partition p's changes after position after whose key
// starts with prefix, at most max, waiting up to wait for one. It returns them with the
// position read up to.
func (c *Client) Events(ctx context.Context, addr string, p int, after uint64, prefix string, max int, wait time.Duration) ([]store.Event, uint64, error) {
	req := eventsRequest{Partition: p, After: after, Prefix: prefix, Max: max, WaitMS: wait.Milliseconds()}
	b, err := marshal(&req)
	if err != nil {
		return nil, 0, err
	}
	out, err := c.caller.Call(ctx, addr, kindEvents, b)
	if err != nil {
		return nil, 0, callError(p, err)
	}
	var resp eventsResponse
	if err := Unmarshal(out, &resp); err != nil {
		return nil, 0, err
	}
	if err := statusError(p, resp.Code, resp.Msg, resp.LeaderID, resp.LeaderAddr); err != nil {
		return nil, 0, err
	}
	if len(resp.Events) > max {
		return nil, 0, fmt.Errorf("%w: %d events for a maximum of %d", ErrBadMessage, len(resp.Events), max)
	}
	events := make([]store.Event, len(resp.Events))
	last := after
	for i, e := range resp.Events {
		if e.Version <= last || e.Type < uint8(store.EventPut) || e.Type > uint8(store.EventExpire) {
			return nil, 0, fmt.Errorf("%w: event %d out of order or of unknown type %d", ErrBadMessage, i, e.Type)
		}
		last = e.Version
		events[i] = store.Event{Type: store.EventType(e.Type), Key: e.Key, Value: e.Value, Version: e.Version, ExpiresAt: e.ExpiresAt}
	}
	if resp.Next < last {
		return nil, 0, fmt.Errorf("%w: next position %d before the last event %d", ErrBadMessage, resp.Next, last)
	}
	return events, resp.Next, nil
}

// callError is the error of a read-only call that failed with err: it ran nowhere that
// matters, so it may be asked again, of the leader or another replica.
func callError(p int, err error) error {
	return fmt.Errorf("%w: %w", &raftgroup.NotLeaderError{Group: p}, err)
}
