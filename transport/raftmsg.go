package transport

import (
	"fmt"

	"github.com/hashicorp/raft"
)

// appendRaftRequest appends the encoding of args, a request of the given kind.
func appendRaftRequest(b []byte, kind uint8, args any) []byte {
	switch m := args.(type) {
	case *raft.AppendEntriesRequest:
		return appendAppendEntriesRequest(b, m)
	case *raft.RequestVoteRequest:
		return appendRequestVoteRequest(b, m)
	case *raft.RequestPreVoteRequest:
		return appendRequestPreVoteRequest(b, m)
	case *raft.TimeoutNowRequest:
		return appendTimeoutNowRequest(b, m)
	case *raft.InstallSnapshotRequest:
		return appendInstallSnapshotRequest(b, m)
	}
	panic(fmt.Sprintf("transport: raft request %T of kind %d", args, kind)) // a bug in this package
}

// decodeRaftRequest decodes a request of kind. Byte fields alias body.
func decodeRaftRequest(kind uint8, body []byte) (any, error) {
	switch kind {
	case raftAppendEntries:
		m := new(raft.AppendEntriesRequest)
		return m, decodeAppendEntriesRequest(body, m)
	case raftRequestVote:
		m := new(raft.RequestVoteRequest)
		return m, decodeRequestVoteRequest(body, m)
	case raftRequestPreVote:
		m := new(raft.RequestPreVoteRequest)
		return m, decodeRequestPreVoteRequest(body, m)
	case raftTimeoutNow:
		m := new(raft.TimeoutNowRequest)
		return m, decodeTimeoutNowRequest(body, m)
	case raftInstallSnapshot:
		m := new(raft.InstallSnapshotRequest)
		return m, decodeInstallSnapshotRequest(body, m)
	}
	return nil, fmt.Errorf("%w: raft RPC kind %d", errMalformedFrame, kind)
}

// appendRaftResponse appends the encoding of resp, raft's answer to an RPC; false when resp
// is not one of raft's responses.
func appendRaftResponse(b []byte, resp any) ([]byte, bool) {
	switch m := resp.(type) {
	case *raft.AppendEntriesResponse:
		return appendAppendEntriesResponse(b, m), true
	case *raft.RequestVoteResponse:
		return appendRequestVoteResponse(b, m), true
	case *raft.RequestPreVoteResponse:
		return appendRequestPreVoteResponse(b, m), true
	case *raft.TimeoutNowResponse:
		return appendTimeoutNowResponse(b, m), true
	case *raft.InstallSnapshotResponse:
		return appendInstallSnapshotResponse(b, m), true
	}
	return b, false
}

// decodeRaftResponse decodes an answer into resp, the caller's response struct, whose type
// says which answer it is.
func decodeRaftResponse(body []byte, resp any) error {
	switch m := resp.(type) {
	case *raft.AppendEntriesResponse:
		return decodeAppendEntriesResponse(body, m)
	case *raft.RequestVoteResponse:
		return decodeRequestVoteResponse(body, m)
	case *raft.RequestPreVoteResponse:
		return decodeRequestPreVoteResponse(body, m)
	case *raft.TimeoutNowResponse:
		return decodeTimeoutNowResponse(body, m)
	case *raft.InstallSnapshotResponse:
		return decodeInstallSnapshotResponse(body, m)
	}
	return fmt.Errorf("%w: no raft response %T", errMalformedFrame, resp)
}
