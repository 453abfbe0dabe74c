package transport

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// The Raft RPC codec: a hand-written binary encoding of raft's request and
// response messages for the Raft transport. A message is its fields in the
// order raft's struct declares them, each written as
//
//   - uint64: an unsigned varint;
//   - ProtocolVersion, SnapshotVersion (int): an unsigned varint, refused
//     above math.MaxInt, so a negative version (raft never sends one) is
//     refused by the receiver;
//   - int64 (InstallSnapshotRequest.Size): a zigzag varint;
//   - bool: one byte, 0 or 1;
//   - []byte: its length as an unsigned varint, then the bytes;
//   - RPCHeader: ProtocolVersion, ID, Addr;
//   - []*raft.Log: the count as an unsigned varint, then each log's Index,
//     Term, Type (one byte, a known raft.LogType), Data, Extensions and
//     AppendedAt (a zigzag varint of its UnixNano, 0 for the zero time).
//
// There is no tag, version or length of the whole message: the frame around
// it carries those. The decoders check every length and count against the
// bytes left before allocating, so a peer's message can cost at most
// O(its size) memory, and a slice in a decoded message aliases the input.

// minLogSize is the fewest bytes one log entry encodes to: a byte each for
// Index, Term, Type, the lengths of Data and Extensions, and AppendedAt. It
// bounds the entry count a message of a given size can declare.
const minLogSize = 6

// maxLogOverhead is the most bytes a log entry encodes to besides its Data
// and Extensions: five varints and the type byte. With it an
// AppendEntriesRequest grows its buffer once, not once per doubling.
const maxLogOverhead = 5*binary.MaxVarintLen64 + 1

// maxLogType is the highest raft.LogType this codec accepts. A raft upgrade
// that adds log types must raise it, or those logs are refused as malformed.
const maxLogType = raft.LogConfiguration

func appendAppendEntriesRequest(b []byte, m *raft.AppendEntriesRequest) []byte {
	size := 9*binary.MaxVarintLen64 + len(m.ID) + len(m.Addr) + len(m.Leader)
	for _, l := range m.Entries {
		size += maxLogOverhead + len(l.Data) + len(l.Extensions)
	}
	w := raftWriter{slices.Grow(b, size)}
	w.header(&m.RPCHeader)
	w.u64(m.Term)
	w.bytes(m.Leader)
	w.u64(m.PrevLogEntry)
	w.u64(m.PrevLogTerm)
	w.u64(uint64(len(m.Entries)))
	for _, l := range m.Entries {
		w.u64(l.Index)
		w.u64(l.Term)
		w.b = append(w.b, byte(l.Type))
		w.bytes(l.Data)
		w.bytes(l.Extensions)
		w.time(l.AppendedAt)
	}
	w.u64(m.LeaderCommitIndex)
	return w.b
}

func decodeAppendEntriesRequest(b []byte, m *raft.AppendEntriesRequest) error {
	r := raftReader{b: b}
	*m = raft.AppendEntriesRequest{
		RPCHeader:         r.header(),
		Term:              r.u64(),
		Leader:            r.bytes(),
		PrevLogEntry:      r.u64(),
		PrevLogTerm:       r.u64(),
		Entries:           r.logs(),
		LeaderCommitIndex: r.u64(),
	}
	return r.finish("AppendEntriesRequest")
}

func appendAppendEntriesResponse(b []byte, m *raft.AppendEntriesResponse) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	w.u64(m.Term)
	w.u64(m.LastLog)
	w.bool(m.Success)
	w.bool(m.NoRetryBackoff)
	return w.b
}

func decodeAppendEntriesResponse(b []byte, m *raft.AppendEntriesResponse) error {
	r := raftReader{b: b}
	*m = raft.AppendEntriesResponse{
		RPCHeader:      r.header(),
		Term:           r.u64(),
		LastLog:        r.u64(),
		Success:        r.bool(),
		NoRetryBackoff: r.bool(),
	}
	return r.finish("AppendEntriesResponse")
}

func appendRequestVoteRequest(b []byte, m *raft.RequestVoteRequest) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	w.u64(m.Term)
	w.bytes(m.Candidate)
	w.u64(m.LastLogIndex)
	w.u64(m.LastLogTerm)
	w.bool(m.LeadershipTransfer)
	return w.b
}

func decodeRequestVoteRequest(b []byte, m *raft.RequestVoteRequest) error {
	r := raftReader{b: b}
	*m = raft.RequestVoteRequest{
		RPCHeader:          r.header(),
		Term:               r.u64(),
		Candidate:          r.bytes(),
		LastLogIndex:       r.u64(),
		LastLogTerm:        r.u64(),
		LeadershipTransfer: r.bool(),
	}
	return r.finish("RequestVoteRequest")
}

func appendRequestVoteResponse(b []byte, m *raft.RequestVoteResponse) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	w.u64(m.Term)
	w.bytes(m.Peers)
	w.bool(m.Granted)
	return w.b
}

func decodeRequestVoteResponse(b []byte, m *raft.RequestVoteResponse) error {
	r := raftReader{b: b}
	*m = raft.RequestVoteResponse{
		RPCHeader: r.header(),
		Term:      r.u64(),
		Peers:     r.bytes(),
		Granted:   r.bool(),
	}
	return r.finish("RequestVoteResponse")
}

func appendRequestPreVoteRequest(b []byte, m *raft.RequestPreVoteRequest) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	w.u64(m.Term)
	w.u64(m.LastLogIndex)
	w.u64(m.LastLogTerm)
	return w.b
}

func decodeRequestPreVoteRequest(b []byte, m *raft.RequestPreVoteRequest) error {
	r := raftReader{b: b}
	*m = raft.RequestPreVoteRequest{
		RPCHeader:    r.header(),
		Term:         r.u64(),
		LastLogIndex: r.u64(),
		LastLogTerm:  r.u64(),
	}
	return r.finish("RequestPreVoteRequest")
}

func appendRequestPreVoteResponse(b []byte, m *raft.RequestPreVoteResponse) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	w.u64(m.Term)
	w.bool(m.Granted)
	return w.b
}

func decodeRequestPreVoteResponse(b []byte, m *raft.RequestPreVoteResponse) error {
	r := raftReader{b: b}
	*m = raft.RequestPreVoteResponse{
		RPCHeader: r.header(),
		Term:      r.u64(),
		Granted:   r.bool(),
	}
	return r.finish("RequestPreVoteResponse")
}

func appendTimeoutNowRequest(b []byte, m *raft.TimeoutNowRequest) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	return w.b
}

func decodeTimeoutNowRequest(b []byte, m *raft.TimeoutNowRequest) error {
	r := raftReader{b: b}
	*m = raft.TimeoutNowRequest{RPCHeader: r.header()}
	return r.finish("TimeoutNowRequest")
}

func appendTimeoutNowResponse(b []byte, m *raft.TimeoutNowResponse) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	return w.b
}

func decodeTimeoutNowResponse(b []byte, m *raft.TimeoutNowResponse) error {
	r := raftReader{b: b}
	*m = raft.TimeoutNowResponse{RPCHeader: r.header()}
	return r.finish("TimeoutNowResponse")
}

func appendInstallSnapshotRequest(b []byte, m *raft.InstallSnapshotRequest) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	w.u64(uint64(m.SnapshotVersion))
	w.u64(m.Term)
	w.bytes(m.Leader)
	w.u64(m.LastLogIndex)
	w.u64(m.LastLogTerm)
	w.bytes(m.Peers)
	w.bytes(m.Configuration)
	w.u64(m.ConfigurationIndex)
	w.i64(m.Size)
	return w.b
}

func decodeInstallSnapshotRequest(b []byte, m *raft.InstallSnapshotRequest) error {
	r := raftReader{b: b}
	*m = raft.InstallSnapshotRequest{
		RPCHeader:          r.header(),
		SnapshotVersion:    raft.SnapshotVersion(r.int()),
		Term:               r.u64(),
		Leader:             r.bytes(),
		LastLogIndex:       r.u64(),
		LastLogTerm:        r.u64(),
		Peers:              r.bytes(),
		Configuration:      r.bytes(),
		ConfigurationIndex: r.u64(),
		Size:               r.i64(),
	}
	return r.finish("InstallSnapshotRequest")
}

func appendInstallSnapshotResponse(b []byte, m *raft.InstallSnapshotResponse) []byte {
	w := raftWriter{b}
	w.header(&m.RPCHeader)
	w.u64(m.Term)
	w.bool(m.Success)
	return w.b
}

func decodeInstallSnapshotResponse(b []byte, m *raft.InstallSnapshotResponse) error {
	r := raftReader{b: b}
	*m = raft.InstallSnapshotResponse{
		RPCHeader: r.header(),
		Term:      r.u64(),
		Success:   r.bool(),
	}
	return r.finish("InstallSnapshotResponse")
}

// raftWriter appends the encodings of fields to b.
type raftWriter struct{ b []byte }

func (w *raftWriter) u64(v uint64) { w.b = binary.AppendUvarint(w.b, v) }

func (w *raftWriter) i64(v int64) { w.b = binary.AppendVarint(w.b, v) }

func (w *raftWriter) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

func (w *raftWriter) bytes(p []byte) {
	w.u64(uint64(len(p)))
	w.b = append(w.b, p...)
}

// time writes t as nanoseconds since the Unix epoch, and the zero time as 0
// so that it decodes as the zero time again. The epoch itself therefore
// decodes as the zero time; no leader's clock stamps a log with it.
func (w *raftWriter) time(t time.Time) {
	if t.IsZero() {
		w.i64(0)
	} else {
		w.i64(t.UnixNano())
	}
}

func (w *raftWriter) header(h *raft.RPCHeader) {
	w.u64(uint64(h.ProtocolVersion))
	w.bytes(h.ID)
	w.bytes(h.Addr)
}

// raftReader reads fields from b. The first error is kept in err and ends
// the reading: every later read returns a zero value, so a decoder reads all
// its fields and checks err once, in finish.
type raftReader struct {
	b   []byte
	err error
}

func (r *raftReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errMalformedFrame, fmt.Sprintf(format, args...))
	}
	r.b = nil
}

// finish reports the first error, or one for bytes left after the message.
func (r *raftReader) finish(msg string) error {
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("decode %s: %w", msg, r.err)
	}
	return nil
}

func (r *raftReader) u64() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("truncated or overlong varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *raftReader) i64() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("truncated or overlong varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// int reads an unsigned varint that must fit an int.
func (r *raftReader) int() int {
	v := r.u64()
	if v > math.MaxInt {
		r.fail("%d does not fit an int", v)
		return 0
	}
	return int(v)
}

func (r *raftReader) byte() byte {
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *raftReader) bool() bool {
	switch v := r.byte(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		r.fail("bool byte %d", v)
		return false
	}
}

// bytes returns the next length-prefixed byte slice as a sub-slice of the
// input, nil if it is empty. Its capacity ends where it does, so appending
// to it cannot overwrite the fields after it.
func (r *raftReader) bytes() []byte {
	n := r.u64()
	if n > uint64(len(r.b)) {
		r.fail("length %d exceeds the %d bytes left", n, len(r.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *raftReader) time() time.Time {
	ns := r.i64()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (r *raftReader) header() raft.RPCHeader {
	return raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersion(r.int()),
		ID:              r.bytes(),
		Addr:            r.bytes(),
	}
}

// logs reads a count and that many log entries. The entries share one
// backing array, so a batch costs two allocations however long it is.
func (r *raftReader) logs() []*raft.Log {
	n := r.u64()
	if n > uint64(len(r.b)/minLogSize) {
		r.fail("%d log entries cannot fit in the %d bytes left", n, len(r.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	slab := make([]raft.Log, n)
	logs := make([]*raft.Log, n)
	for i := range slab {
		l := &slab[i]
		l.Index = r.u64()
		l.Term = r.u64()
		if t := raft.LogType(r.byte()); t <= maxLogType {
			l.Type = t
		} else {
			r.fail("log type %d", t)
		}
		l.Data = r.bytes()
		l.Extensions = r.bytes()
		l.AppendedAt = r.time()
		if r.err != nil {
			return nil
		}
		logs[i] = l
	}
	return logs
}
