package protocol

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
)

// Backend is what a Server runs requests against: this node's replicas. Its methods are called
// from many goroutines at once and may block until ctx ends.
type Backend interface {
	// Read reads key from this node's replica of partition p once read's confirmation (if
	// any) succeeds, and reports the replica's applied index in the result. Without a replica
	// here it returns a *raftgroup.NotLeaderError naming the leader it knows of.
	Read(ctx context.Context, p int, key string, read ReadMode) (store.Result, error)
	// StartWrite hands cmd to this node's replica of partition p, acknowledged at level, and
	// returns without waiting: the Pending's Wait gives the result, whose Err is the
	// command's own outcome. A batch of writes started together can share a log entry.
	StartWrite(ctx context.Context, p int, cmd store.Command, level raftgroup.WriteLevel) raftgroup.Pending
	// WaitApplied waits until this node's replica of partition p has applied index.
	WaitApplied(ctx context.Context, p int, index uint64) error
	// CheckTerms answers a leader's term checks (raftgroup.Manager.CheckTerms).
	CheckTerms(checks []raftgroup.TermCheck) []bool
	// RemovedFromGroup answers, as partition p's leader, whether server ID id is out of the
	// group for good (raftgroup.Group.RemovedFromGroup).
	RemovedFromGroup(p int, id string) (bool, error)
	// List reads a page of partition p from this node's replica once read's confirmation
	// (if any) succeeds (store.Partition.List).
	List(ctx context.Context, p int, page ListPage, read ReadMode) (ListResult, error)
	// Events returns partition p's changes after position after, from this node's replica,
	// waiting until ctx ends for one if there is none yet (store.Partition.Events).
	Events(ctx context.Context, p int, after uint64, prefix string, max int) ([]store.Event, uint64, error)
}

// ReadMode is how a forwarded read is confirmed before the replica answers it.
type ReadMode struct {
	// Stale answers from the replica as it is, with no confirmation.
	Stale bool
	// VouchServer and VouchTerm, when set, are the forwarding node's replica of the partition
	// and its term, counted as a vote by raftgroup.Group.ReadIndexVouched.
	VouchServer string
	VouchTerm   uint64
}

// Registrar is where a Server installs its handlers; *transport.Transport is one.
type Registrar interface {
	Handle(kind uint8, h transport.Handler)
}

// Server answers the requests other nodes' Clients send. It checks every request against what
// this node knows (partition count, key and value limits, the key's partition) before the
// Backend sees it, so a malformed or misrouted request never reaches a replica.
type Server struct {
	backend    Backend
	partitions int
	maxAnswer  int // bytes of entries or events in one answer
	logger     *slog.Logger
}

// NewServer returns a Server for a cluster of partitions partitions whose transport carries
// frames of at most maxFrame bytes; logger may be nil.
func NewServer(backend Backend, partitions, maxFrame int, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{backend: backend, partitions: partitions, maxAnswer: maxFrame / 2, logger: logger}
}

// Register installs the Server's handlers, one per request kind.
func (s *Server) Register(r Registrar) {
	r.Handle(kindOp, s.serveOp)
	r.Handle(kindOpBatch, s.serveOpBatch)
	r.Handle(kindWaitApplied, s.serveWaitApplied)
	r.Handle(kindRemoved, s.serveRemoved)
	r.Handle(kindTermChecks, s.serveTermChecks)
	r.Handle(kindList, s.serveList)
	r.Handle(kindEvents, s.serveEvents)
}

// serveOp runs a forwarded operation against this node's own replica.
func (s *Server) serveOp(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req OpRequest
	if err := decodeOne(b, &req, decodeOpRequest); err != nil {
		return nil, err
	}
	resp := s.answerOp(ctx, &req)
	return encodeOpResponse(&resp), nil
}

// answerOp runs req within the time its caller gave it and returns its answer.
func (s *Server) answerOp(ctx context.Context, req *OpRequest) opResponse {
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	if req.Op == OpGet {
		return s.read(ctx, req)
	}
	return waitWrite(ctx, s.startWrite(ctx, req))
}

// read checks the read req and runs it.
func (s *Server) read(ctx context.Context, req *OpRequest) opResponse {
	if err := s.checkOp(req); err != nil {
		return answer(store.Result{}, err)
	}
	res, err := s.backend.Read(ctx, req.Partition, req.Key, ReadMode{Stale: req.Stale, VouchServer: req.VouchServer, VouchTerm: req.VouchTerm})
	return answer(res, err)
}

// startWrite checks the write req and hands it to the backend, which does not wait for it.
func (s *Server) startWrite(ctx context.Context, req *OpRequest) raftgroup.Pending {
	if err := s.checkOp(req); err != nil {
		return raftgroup.Done(store.Result{}, err)
	}
	cmd := store.Command{Key: req.Key, Value: req.Value, Version: req.Version}
	switch req.Op {
	case OpSet:
		cmd.Op = store.OpSet
	case OpDelete:
		cmd.Op = store.OpDelete
	case OpCAS:
		cmd.Op = store.OpCAS
	case OpCompareAndDelete:
		cmd.Op = store.OpCompareAndDelete
	default:
		return raftgroup.Done(store.Result{}, fmt.Errorf("%w: unknown operation %d", store.ErrInvalidKey, req.Op))
	}
	if err := store.CheckValue(cmd.Value); err != nil {
		return raftgroup.Done(store.Result{}, err)
	}
	if req.TTLMS < 0 {
		return raftgroup.Done(store.Result{}, fmt.Errorf("%w: TTL of %d ms", store.ErrInvalidKey, req.TTLMS))
	}
	if req.TTLMS > 0 && (cmd.Op == store.OpSet || cmd.Op == store.OpCAS) {
		// The deadline runs from now, on the node that proposes the write: the leader, or
		// the request is refused as not led here.
		cmd.ExpiresAt = time.Now().Add(time.Duration(req.TTLMS) * time.Millisecond).UnixNano()
	}
	level := raftgroup.WriteLevel{Ack: raftgroup.Ack(req.Ack), Replicas: req.Replicas}
	return s.backend.StartWrite(ctx, req.Partition, cmd, level)
}

// waitWrite waits for a started write and returns its answer, the command's own outcome
// folded into the error.
func waitWrite(ctx context.Context, pd raftgroup.Pending) opResponse {
	res, err := pd.Wait(ctx)
	if err == nil {
		err = res.Err
	}
	return answer(res, err)
}

// checkOp checks what every operation names: its partition and key.
func (s *Server) checkOp(req *OpRequest) error {
	if req.Partition < 0 || req.Partition >= s.partitions {
		return fmt.Errorf("%w: partition %d out of range", store.ErrInvalidKey, req.Partition)
	}
	if err := store.CheckKey(req.Key); err != nil {
		return err
	}
	if ring.PartitionOf(req.Key, s.partitions) != req.Partition {
		return fmt.Errorf("%w: key is not in partition %d", store.ErrInvalidKey, req.Partition)
	}
	return nil
}

// recoveredRead is read answering a panic as a failure: the transport recovers its handlers'
// panics, not those of goroutines they start.
func (s *Server) recoveredRead(ctx context.Context, from string, req *OpRequest) (resp opResponse) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("protocol: forwarded read panicked", "peer", from, "panic", r)
			resp = opResponse{Code: codeFailed, Msg: fmt.Sprintf("panic: %v", r)}
		}
	}()
	return s.read(ctx, req)
}

func answer(res store.Result, err error) opResponse {
	resp := opResponse{Value: res.Value, Version: res.Version, Applied: res.Applied, ExpiresAt: res.ExpiresAt}
	encodeError(err, &resp)
	return resp
}

// serveOpBatch runs a batch of forwarded operations, each as serveOp would, and answers them
// in order. The writes are all started before any is waited for, so that those to one
// partition share a log entry; each read gets a goroutine (a read's confirmation blocks).
// The batch runs within the latest of its operations' deadlines: an operation whose caller
// gave up earlier still runs, and its answer is dropped by that caller.
func (s *Server) serveOpBatch(ctx context.Context, from string, b []byte) ([]byte, error) {
	// Each read gets a goroutine: a peer may not ask for any number of them.
	reqs, err := decodeArray(b, forwardBatchOps, decodeOpRequest)
	if err != nil {
		return nil, err
	}
	var timeoutMS int64
	for i := range reqs {
		if reqs[i].TimeoutMS <= 0 {
			timeoutMS = 0
			break
		}
		timeoutMS = max(timeoutMS, reqs[i].TimeoutMS)
	}
	if timeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutMS)*time.Millisecond)
		defer cancel()
	}
	resps := make([]opResponse, len(reqs))
	writes := make([]raftgroup.Pending, len(reqs))
	var reads sync.WaitGroup
	inline := -1 // one read runs on this goroutine, once everything else is under way
	for i := range reqs {
		switch {
		case reqs[i].Op != OpGet:
			writes[i] = s.startWrite(ctx, &reqs[i])
		case inline < 0:
			inline = i
		default:
			reads.Go(func() { resps[i] = s.recoveredRead(ctx, from, &reqs[i]) })
		}
	}
	if inline >= 0 {
		resps[inline] = s.recoveredRead(ctx, from, &reqs[inline])
	}
	for i := range reqs {
		if reqs[i].Op != OpGet {
			resps[i] = waitWrite(ctx, writes[i])
		}
	}
	reads.Wait()
	size := 5
	for i := range resps {
		size += opResponseSize(&resps[i])
	}
	out := appendArrayLen(make([]byte, 0, size), len(resps))
	for i := range resps {
		out = appendOpResponse(out, &resps[i])
	}
	return out, nil
}

func (s *Server) serveWaitApplied(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req waitAppliedRequest
	if err := Unmarshal(b, &req); err != nil {
		return nil, err
	}
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	return nil, s.backend.WaitApplied(ctx, req.Partition, req.Index)
}

func (s *Server) serveTermChecks(ctx context.Context, from string, b []byte) ([]byte, error) {
	var checks []raftgroup.TermCheck
	if err := Unmarshal(b, &checks); err != nil {
		return nil, err
	}
	if len(checks) > raftgroup.MaxTermChecks {
		return nil, fmt.Errorf("%w: %d term checks in one request, at most %d", ErrBadMessage, len(checks), raftgroup.MaxTermChecks)
	}
	return marshal(s.backend.CheckTerms(checks))
}

func (s *Server) serveRemoved(ctx context.Context, from string, b []byte) ([]byte, error) {
	var req removedRequest
	if err := Unmarshal(b, &req); err != nil {
		return nil, err
	}
	removed, err := s.backend.RemovedFromGroup(req.Partition, req.ServerID)
	if err != nil {
		return nil, err
	}
	return marshal(&removedResponse{Removed: removed})
}
