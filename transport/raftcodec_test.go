package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// raftCodecCase adapts one message's encoder and decoder to the shape shared
// by the table-driven tests and the fuzz target.
type raftCodecCase struct {
	name    string
	samples []any // pointers to messages, together setting every field
	encode  func(b []byte, m any) []byte
	decode  func(b []byte) (any, error) // returns a pointer to a new message
}

func raftCase[M any](name string, enc func([]byte, *M) []byte, dec func([]byte, *M) error, samples ...*M) raftCodecCase {
	c := raftCodecCase{
		name:   name,
		encode: func(b []byte, m any) []byte { return enc(b, m.(*M)) },
		decode: func(b []byte) (any, error) {
			m := new(M)
			err := dec(b, m)
			return m, err
		},
	}
	for _, s := range samples {
		c.samples = append(c.samples, s)
	}
	return c
}

// raftCodecCases returns fresh samples on every call, so a test may modify them.
func raftCodecCases() []raftCodecCase {
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("node-1"), Addr: []byte("10.0.0.1:7000")}
	extreme := raft.RPCHeader{ProtocolVersion: math.MaxInt, ID: bytes.Repeat([]byte{0xff}, 300)}
	leader := []byte("10.0.0.1:7000")
	aer := func(entries []*raft.Log) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 7, Leader: leader, PrevLogEntry: 41,
			PrevLogTerm: 6, Entries: entries, LeaderCommitIndex: 40}
	}
	return []raftCodecCase{
		raftCase("AppendEntriesRequest", appendAppendEntriesRequest, decodeAppendEntriesRequest,
			aer(nil),
			aer(sampleLogs(4, 100)),
			aer(sampleLogs(200, 8)),
			aer(sampleLogs(2, 300_000)),
			&raft.AppendEntriesRequest{RPCHeader: extreme, Term: math.MaxUint64, PrevLogEntry: math.MaxUint64,
				PrevLogTerm: math.MaxUint64, LeaderCommitIndex: math.MaxUint64, Entries: []*raft.Log{
					{Index: math.MaxUint64, Term: math.MaxUint64, Type: maxLogType,
						AppendedAt: time.Unix(0, math.MinInt64)},
					{AppendedAt: time.Unix(0, math.MaxInt64)},
				}},
			&raft.AppendEntriesRequest{}),
		raftCase("AppendEntriesResponse", appendAppendEntriesResponse, decodeAppendEntriesResponse,
			&raft.AppendEntriesResponse{RPCHeader: hdr, Term: 7, LastLog: 1 << 40, Success: true, NoRetryBackoff: true},
			&raft.AppendEntriesResponse{RPCHeader: extreme, Term: math.MaxUint64, NoRetryBackoff: true},
			&raft.AppendEntriesResponse{}),
		raftCase("RequestVoteRequest", appendRequestVoteRequest, decodeRequestVoteRequest,
			&raft.RequestVoteRequest{RPCHeader: hdr, Term: 9, Candidate: leader, LastLogIndex: 100,
				LastLogTerm: 8, LeadershipTransfer: true},
			&raft.RequestVoteRequest{}),
		raftCase("RequestVoteResponse", appendRequestVoteResponse, decodeRequestVoteResponse,
			&raft.RequestVoteResponse{RPCHeader: hdr, Term: 9, Peers: []byte("peers"), Granted: true},
			&raft.RequestVoteResponse{}),
		raftCase("RequestPreVoteRequest", appendRequestPreVoteRequest, decodeRequestPreVoteRequest,
			&raft.RequestPreVoteRequest{RPCHeader: hdr, Term: 10, LastLogIndex: 100, LastLogTerm: 9},
			&raft.RequestPreVoteRequest{}),
		raftCase("RequestPreVoteResponse", appendRequestPreVoteResponse, decodeRequestPreVoteResponse,
			&raft.RequestPreVoteResponse{RPCHeader: hdr, Term: 10, Granted: true},
			&raft.RequestPreVoteResponse{}),
		raftCase("TimeoutNowRequest", appendTimeoutNowRequest, decodeTimeoutNowRequest,
			&raft.TimeoutNowRequest{RPCHeader: hdr},
			&raft.TimeoutNowRequest{}),
		raftCase("TimeoutNowResponse", appendTimeoutNowResponse, decodeTimeoutNowResponse,
			&raft.TimeoutNowResponse{RPCHeader: hdr},
			&raft.TimeoutNowResponse{}),
		raftCase("InstallSnapshotRequest", appendInstallSnapshotRequest, decodeInstallSnapshotRequest,
			&raft.InstallSnapshotRequest{RPCHeader: hdr, SnapshotVersion: raft.SnapshotVersionMax, Term: 11,
				Leader: leader, LastLogIndex: 500, LastLogTerm: 10, Peers: []byte("peers"),
				Configuration: bytes.Repeat([]byte("server;"), 50), ConfigurationIndex: 480, Size: 1 << 33},
			&raft.InstallSnapshotRequest{RPCHeader: extreme, SnapshotVersion: math.MaxInt, Size: math.MinInt64},
			&raft.InstallSnapshotRequest{Size: math.MaxInt64},
			&raft.InstallSnapshotRequest{}),
		raftCase("InstallSnapshotResponse", appendInstallSnapshotResponse, decodeInstallSnapshotResponse,
			&raft.InstallSnapshotResponse{RPCHeader: hdr, Term: 11, Success: true},
			&raft.InstallSnapshotResponse{}),
	}
}

// sampleLogs returns n logs of dataSize bytes of Data that between them use
// every log type, with and without Extensions and AppendedAt.
func sampleLogs(n, dataSize int) []*raft.Log {
	now := time.Now()
	logs := make([]*raft.Log, n)
	for i := range logs {
		l := &raft.Log{
			Index: uint64(1000 + i),
			Term:  7,
			Type:  raft.LogType(i % int(maxLogType+1)),
			Data:  bytes.Repeat([]byte{byte(i + 1)}, dataSize),
		}
		if i%2 == 0 {
			l.Extensions = []byte("ext")
		}
		if i%3 != 2 {
			l.AppendedAt = now.Add(time.Duration(i) * time.Microsecond)
		}
		logs[i] = l
	}
	return logs
}

// normaliseAppendedAt rewrites each log's AppendedAt as the decoder builds
// it: the same instant, without monotonic reading, in the local zone.
func normaliseAppendedAt(m any) {
	req, ok := m.(*raft.AppendEntriesRequest)
	if !ok {
		return
	}
	for _, l := range req.Entries {
		if !l.AppendedAt.IsZero() {
			l.AppendedAt = time.Unix(0, l.AppendedAt.UnixNano())
		}
	}
}

func TestRaftCodecRoundTrip(t *testing.T) {
	for _, c := range raftCodecCases() {
		for i, want := range c.samples {
			t.Run(fmt.Sprintf("%s/%d", c.name, i), func(t *testing.T) {
				prefix := []byte("prefix")
				b := c.encode(bytes.Clone(prefix), want)
				if !bytes.HasPrefix(b, prefix) {
					t.Fatalf("encoding did not append to its input")
				}
				got, err := c.decode(b[len(prefix):])
				if err != nil {
					t.Fatal(err)
				}
				normaliseAppendedAt(want)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
				}
			})
		}
	}
}

func TestRaftCodecEmptySlicesDecodeAsNil(t *testing.T) {
	empty := []byte{}
	in := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ID: empty, Addr: empty},
		Leader:    empty,
		Entries:   []*raft.Log{{Data: empty, Extensions: empty}},
	}
	var out raft.AppendEntriesRequest
	if err := decodeAppendEntriesRequest(appendAppendEntriesRequest(nil, in), &out); err != nil {
		t.Fatal(err)
	}
	l := out.Entries[0]
	if out.ID != nil || out.Addr != nil || out.Leader != nil || l.Data != nil || l.Extensions != nil {
		t.Fatalf("empty slices decoded as non-nil: %+v, entry %+v", out, l)
	}
	if !l.AppendedAt.IsZero() {
		t.Fatalf("zero AppendedAt decoded as %v", l.AppendedAt)
	}
}

func TestRaftCodecTruncationsAndTrailingBytes(t *testing.T) {
	for _, c := range raftCodecCases() {
		for i, m := range c.samples {
			b := c.encode(nil, m)
			for n := range len(b) {
				if _, err := c.decode(b[:n]); !errors.Is(err, errMalformedFrame) {
					t.Fatalf("%s/%d cut to %d of %d bytes: err %v", c.name, i, n, len(b), err)
				}
			}
			if _, err := c.decode(append(b, 0)); !errors.Is(err, errMalformedFrame) {
				t.Fatalf("%s/%d with a trailing byte: err %v", c.name, i, err)
			}
		}
	}
}

func TestRaftCodecRejectsBadValues(t *testing.T) {
	header := func(version uint64) []byte { return append(binary.AppendUvarint(nil, version), 0, 0) }
	withType := func(typ raft.LogType) []byte {
		return appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{Entries: []*raft.Log{{Type: typ}}})
	}
	resp := appendAppendEntriesResponse(nil, &raft.AppendEntriesResponse{Success: true})
	badBool := bytes.Clone(resp)
	badBool[len(badBool)-2] = 2

	var ae raft.AppendEntriesRequest
	var aer raft.AppendEntriesResponse
	var tn raft.TimeoutNowRequest
	var snap raft.InstallSnapshotRequest
	if err := decodeTimeoutNowRequest(header(math.MaxInt), &tn); err != nil {
		t.Fatalf("protocol version MaxInt: %v", err)
	}
	if err := decodeAppendEntriesRequest(withType(maxLogType), &ae); err != nil {
		t.Fatalf("log type %d: %v", maxLogType, err)
	}
	for name, err := range map[string]error{
		"protocol version above MaxInt": decodeTimeoutNowRequest(header(math.MaxInt+1), &tn),
		"snapshot version above MaxInt": decodeInstallSnapshotRequest(
			binary.AppendUvarint(header(1), math.MaxUint64), &snap),
		"overlong varint":          decodeTimeoutNowRequest(append(bytes.Repeat([]byte{0x80}, 10), 1, 0, 0), &tn),
		"bool byte 2":              decodeAppendEntriesResponse(badBool, &aer),
		"unknown log type":         decodeAppendEntriesRequest(withType(maxLogType+1), &ae),
		"log type 255":             decodeAppendEntriesRequest(withType(255), &ae),
		"length beyond the end":    decodeTimeoutNowRequest(append(header(1)[:1], 5, 'a', 'b', 0), &tn),
		"length of 2^63":           decodeTimeoutNowRequest(binary.AppendUvarint(header(1)[:1], 1<<63), &tn),
		"empty input":              decodeAppendEntriesResponse(nil, &aer),
		"empty TimeoutNowResponse": decodeTimeoutNowResponse(nil, new(raft.TimeoutNowResponse)),
	} {
		if !errors.Is(err, errMalformedFrame) {
			t.Errorf("%s: err %v, want errMalformedFrame", name, err)
		}
	}
}

// appendEntriesWithCount encodes an AppendEntriesRequest whose entries are
// count as declared, followed by entries that are raw bytes.
func appendEntriesWithCount(count uint64, entries []byte) []byte {
	// ProtocolVersion, ID, Addr, Term, Leader, PrevLogEntry, PrevLogTerm.
	b := []byte{0, 0, 0, 0, 0, 0, 0}
	b = binary.AppendUvarint(b, count)
	b = append(b, entries...)
	return append(b, 0) // LeaderCommitIndex
}

func TestRaftCodecEntryCountBound(t *testing.T) {
	// Entries of minLogSize zero bytes each are valid: the bound admits
	// exactly as many as the bytes can hold, and not one more.
	const n = 50
	entries := make([]byte, n*minLogSize)
	var m raft.AppendEntriesRequest
	if err := decodeAppendEntriesRequest(appendEntriesWithCount(n, entries), &m); err != nil {
		t.Fatalf("%d minimal entries: %v", n, err)
	}
	if len(m.Entries) != n {
		t.Fatalf("decoded %d entries, want %d", len(m.Entries), n)
	}
	if err := decodeAppendEntriesRequest(appendEntriesWithCount(n+1, entries), &m); !errors.Is(err, errMalformedFrame) {
		t.Fatalf("%d entries declared, %d present: err %v", n+1, n, err)
	}
}

func TestRaftCodecRefusesHugeCountsWithoutAllocating(t *testing.T) {
	inputs := map[string][]byte{
		"entry count 2^60":    appendEntriesWithCount(1<<60, make([]byte, 12)),
		"entry count MaxUint": appendEntriesWithCount(math.MaxUint64, nil),
		"leader length 2^62":  binary.AppendUvarint([]byte{3, 0, 0, 7}, 1<<62),
	}
	for name, b := range inputs {
		var m raft.AppendEntriesRequest
		if err := decodeAppendEntriesRequest(b, &m); !errors.Is(err, errMalformedFrame) {
			t.Fatalf("%s: err %v", name, err)
		}
		// Only the error itself is allocated (a few hundred bytes, more
		// under the race detector), never room for what was declared.
		if got := allocatedBytesPerRun(100, func() { _ = decodeAppendEntriesRequest(b, &m) }); got > 4096 {
			t.Errorf("%s: refusing it allocated %d bytes a time", name, got)
		}
	}
}

// allocatedBytesPerRun returns the average bytes fn allocates on the heap
// over runs calls.
func allocatedBytesPerRun(runs int, fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		fn()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

func TestRaftCodecEntriesShareOneAllocation(t *testing.T) {
	b := appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{Term: 1, Entries: sampleLogs(64, 100)})
	var m raft.AppendEntriesRequest
	allocs := testing.AllocsPerRun(100, func() {
		if err := decodeAppendEntriesRequest(b, &m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 2 {
		t.Fatalf("decoding 64 entries made %v allocations, want 2 (the logs and their pointers)", allocs)
	}
}

func TestRaftCodecDecodedSlicesAliasInput(t *testing.T) {
	b := appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{
		Entries: []*raft.Log{{Data: []byte("data"), Extensions: []byte("ext")}},
	})
	var m raft.AppendEntriesRequest
	if err := decodeAppendEntriesRequest(b, &m); err != nil {
		t.Fatal(err)
	}
	l := m.Entries[0]
	i := bytes.Index(b, []byte("data"))
	b[i] = 'D'
	if string(l.Data) != "Data" {
		t.Fatalf("Data does not alias the input: %q", l.Data)
	}
	// The capacity stops at the slice's end, so appending to Data copies
	// instead of overwriting the Extensions' length and bytes.
	_ = append(l.Data, "xxxx"...)
	if string(l.Extensions) != "ext" {
		t.Fatalf("appending to Data overwrote Extensions: %q", l.Extensions)
	}
}

// BenchmarkRaftCodecAppendEntries encodes and decodes an AppendEntriesRequest
// of 4 entries of 100 bytes, with this codec and with the msgpack codec raft's
// NetworkTransport uses (a reused encoder and decoder, as on its connections).
func BenchmarkRaftCodecAppendEntries(b *testing.B) {
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("node-1"), Addr: []byte("10.0.0.1:7000")},
		Term:      7, Leader: []byte("10.0.0.1:7000"), PrevLogEntry: 1000, PrevLogTerm: 7,
		Entries: sampleLogs(4, 100), LeaderCommitIndex: 999,
	}
	for _, l := range req.Entries {
		l.AppendedAt = time.Now()
	}
	b.Run("codec=gridkv", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = appendAppendEntriesRequest(buf[:0], req)
			var out raft.AppendEntriesRequest
			if err := decodeAppendEntriesRequest(buf, &out); err != nil || len(out.Entries) != 4 {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(buf)), "bytes/msg")
	})
	b.Run("codec=msgpack", func(b *testing.B) {
		b.ReportAllocs()
		encHandle := &codec.MsgpackHandle{}
		encHandle.TimeNotBuiltin = true // raft's default (MsgpackUseNewTimeFormat false)
		var buf []byte
		enc := codec.NewEncoderBytes(&buf, encHandle)
		dec := codec.NewDecoderBytes(nil, &codec.MsgpackHandle{})
		for b.Loop() {
			buf = buf[:0]
			enc.ResetBytes(&buf)
			if err := enc.Encode(req); err != nil {
				b.Fatal(err)
			}
			dec.ResetBytes(buf)
			var out raft.AppendEntriesRequest
			if err := dec.Decode(&out); err != nil || len(out.Entries) != 4 {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(buf)), "bytes/msg")
	})
}
