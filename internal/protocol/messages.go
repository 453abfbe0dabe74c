package protocol

import (
	"errors"
	"fmt"

	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/store"
	"github.com/vmihailenco/msgpack/v5"
)

// Request kinds carried by the transport between nodes. A kind's number never changes
// meaning: nodes of different versions meet during a rolling upgrade.
const (
	kindOp          uint8 = 1 // a client operation forwarded to a partition's leader or replica
	kindWaitApplied uint8 = 2 // a leader asking a replica to report once it applied an index
	kindRemoved     uint8 = 3 // a replica asking its group's leader whether it was removed for good
	kindOpBatch     uint8 = 4 // several kindOp requests in one msgpack array, answered in order
	kindTermChecks  uint8 = 5 // a leader's term checks for linearizable reads (raftgroup.TermCheck)
	kindList        uint8 = 6 // a page of one partition's keys, in order
	kindEvents      uint8 = 7 // one partition's changes after a position, waiting for some
)

// OpKind is the operation of a forwarded request.
type OpKind uint8

// The operations a node forwards.
const (
	OpGet OpKind = iota + 1
	OpSet
	OpDelete
	OpCAS
	OpCompareAndDelete
)

// OpFor returns the forwarded operation that carries a store command of kind op.
func OpFor(op store.Op) OpKind {
	switch op {
	case store.OpSet:
		return OpSet
	case store.OpDelete:
		return OpDelete
	case store.OpCompareAndDelete:
		return OpCompareAndDelete
	default:
		return OpCAS
	}
}

// OpRequest is a client operation forwarded to another node. That node serves it from its own
// replica only and answers codeNotLeader rather than forwarding again, so a request makes at
// most one hop per attempt.
type OpRequest struct {
	Partition int    `msgpack:"p"`
	Op        OpKind `msgpack:"o"`
	Key       string `msgpack:"k"`
	Value     []byte `msgpack:"v,omitempty"`
	Version   uint64 `msgpack:"ver,omitempty"`
	Stale     bool   `msgpack:"s,omitempty"` // answer from the receiving replica, no read index; no caller sends it at present
	// Linearizable reads: the sender's replica of Partition (its server ID) and its term,
	// read after the read began; raftgroup.Group.ReadIndexVouched counts it as a vote.
	VouchServer string `msgpack:"vs,omitempty"`
	VouchTerm   uint64 `msgpack:"vt,omitempty"`
	Ack         int    `msgpack:"a,omitempty"`
	Replicas    int    `msgpack:"r,omitempty"`
	// TTLMS is WithTTL's duration in milliseconds: the leader sets the deadline when it
	// proposes the write.
	TTLMS     int64 `msgpack:"ttl,omitempty"`
	TimeoutMS int64 `msgpack:"t"`
}

// Response codes of an opResponse; each maps to one error on the caller's side.
const (
	codeOK uint8 = iota
	codeNotLeader
	codeKeyNotFound
	codeVersionMismatch
	codeMemoryLimit
	codeOutcomeUnknown
	codeClosed
	codeInvalid
	codeFailed
	codeCompacted // a watch position older than the history kept
)

// opResponse is the answer to one OpRequest.
type opResponse struct {
	Code       uint8  `msgpack:"c"`
	Msg        string `msgpack:"m,omitempty"`
	LeaderID   string `msgpack:"li,omitempty"`
	LeaderAddr string `msgpack:"la,omitempty"`
	Value      []byte `msgpack:"v,omitempty"`
	Version    uint64 `msgpack:"ver,omitempty"`
	Applied    uint64 `msgpack:"ai,omitempty"` // reads: the serving replica's applied index
	ExpiresAt  int64  `msgpack:"x,omitempty"`  // reads: the key's deadline in unix nanoseconds; 0: none
}

type waitAppliedRequest struct {
	Partition int    `msgpack:"p"`
	Index     uint64 `msgpack:"i"`
	TimeoutMS int64  `msgpack:"t"`
}

// removedRequest asks the leader of Partition whether ServerID is out of the group for good.
type removedRequest struct {
	Partition int    `msgpack:"p"`
	ServerID  string `msgpack:"s"`
}

type removedResponse struct {
	Removed bool `msgpack:"r"`
}

var (
	// ErrBadMessage marks a message from the network that does not decode: truncated,
	// malformed, or declaring more than it holds. The handler that got it refuses it, and the
	// transport answers with an error; nothing of it reaches a replica.
	ErrBadMessage = errors.New("protocol: bad message")
	// ErrClosed is returned by a Client after Close, and by a Backend whose node is closing:
	// the request did not run there.
	ErrClosed = errors.New("protocol: closed")
	// errRemote is an error a peer reported that has no sentinel of its own.
	errRemote = errors.New("protocol: peer failed the request")
)

// encodeError turns a local result error into a response code.
func encodeError(err error, resp *opResponse) {
	if err == nil {
		resp.Code = codeOK // here, not in encodeFailure's switch: its errors.As target escapes
		return
	}
	encodeFailure(err, resp)
}

func encodeFailure(err error, resp *opResponse) {
	var nl *raftgroup.NotLeaderError
	switch {
	case errors.As(err, &nl):
		resp.Code, resp.LeaderID, resp.LeaderAddr = codeNotLeader, nl.LeaderID, nl.LeaderAddr
	case errors.Is(err, store.ErrKeyNotFound):
		resp.Code = codeKeyNotFound
	case errors.Is(err, store.ErrVersionMismatch):
		resp.Code = codeVersionMismatch
	case errors.Is(err, store.ErrMemoryLimit):
		resp.Code = codeMemoryLimit
	case errors.Is(err, raftgroup.ErrOutcomeUnknown):
		resp.Code = codeOutcomeUnknown
	case errors.Is(err, raftgroup.ErrClosed), errors.Is(err, ErrClosed):
		resp.Code = codeClosed
	case errors.Is(err, store.ErrInvalidKey), errors.Is(err, store.ErrValueTooLarge):
		resp.Code = codeInvalid
	case errors.Is(err, store.ErrCompacted):
		resp.Code = codeCompacted
	default:
		resp.Code = codeFailed
	}
	resp.Msg = err.Error()
}

// decodeError turns a response code back into an error carrying the same sentinel.
func decodeError(p int, resp *opResponse) error {
	switch resp.Code {
	case codeOK:
		return nil
	case codeNotLeader:
		return &raftgroup.NotLeaderError{Group: p, LeaderID: resp.LeaderID, LeaderAddr: resp.LeaderAddr}
	case codeKeyNotFound:
		return store.ErrKeyNotFound
	case codeVersionMismatch:
		return store.ErrVersionMismatch
	case codeMemoryLimit:
		return fmt.Errorf("%w (at the leader: %s)", store.ErrMemoryLimit, resp.Msg)
	case codeOutcomeUnknown:
		return fmt.Errorf("%w: %s", raftgroup.ErrOutcomeUnknown, resp.Msg)
	case codeClosed:
		// The peer is shutting down; the request did not run there. Another node may serve it.
		return &raftgroup.NotLeaderError{Group: p}
	case codeInvalid:
		return fmt.Errorf("%w: %s", store.ErrInvalidKey, resp.Msg)
	case codeCompacted:
		return fmt.Errorf("%w: %s", store.ErrCompacted, resp.Msg)
	default:
		return fmt.Errorf("%w: %s", errRemote, resp.Msg)
	}
}

func marshal(v any) ([]byte, error) { return msgpack.Marshal(v) }

// Unmarshal decodes a msgpack message from the network into v through msgpack's reflection.
// The message is walked first: msgpack allocates whatever length a string, binary or
// collection declares, so an 8-byte message declaring a 4 GiB value would otherwise cost
// 4 GiB. Every declared length must fit in what remains. Errors wrap ErrBadMessage.
func Unmarshal(b []byte, v any) error {
	if err := Check(b); err != nil {
		return fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	if err := msgpack.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return nil
}
