package transport

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fuzzTarget is one transport, with a Raft group and a handler registered, that fuzz inputs
// are fed to as the bytes of an inbound link. Closed when f's tests end.
type fuzzTarget struct {
	tr *Transport
	rt *RaftTransport
}

func linkFuzzTarget(f *testing.F) fuzzTarget {
	opts := testOptions()
	opts.ReadTimeout = 50 * time.Millisecond
	tr, err := Listen(opts, "127.0.0.1:0", nil)
	if err != nil {
		f.Fatal(err)
	}
	tr.Handle(kindEcho, echo)
	rt, err := tr.RaftTransport(RaftConfig{Group: 1, Local: "self#1", Incarnation: 1, Resolve: resolve, Timeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	rt.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil) })
	// Raft's part: answer every RPC handed over, as raft would, in order.
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case rpc := <-rt.Consumer():
				if r, ok := rpc.Command.(*raft.InstallSnapshotRequest); ok && rpc.Reader != nil {
					_, _ = io.CopyN(io.Discard, rpc.Reader, r.Size)
				}
				rpc.Respond(nil, errors.New("fuzz"))
			case <-stop:
				return
			}
		}
	}()
	f.Cleanup(func() {
		close(stop)
		<-stopped
		_ = rt.Close()
		_ = tr.Close()
	})
	return fuzzTarget{tr: tr, rt: rt}
}

// FuzzLinkInbound feeds arbitrary bytes to a live transport as an inbound link's frames: it
// must answer or close, never panic, and never leave the link's goroutines running.
func FuzzLinkInbound(f *testing.F) {
	ae := appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 1, Entries: []*raft.Log{{Index: 2, Term: 2, Data: []byte("x")}}})
	hb := appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("a")}, Term: 2})
	vote := appendRequestVoteRequest(nil, &raft.RequestVoteRequest{Term: 3, LastLogIndex: 4})
	f.Add(rawFrame(frameCallReq, kindEcho, 0, 1, uint64(time.Second), []byte("hello")))
	f.Add(rawFrame(frameRaftReq, raftAppendEntries, 1, 1, 1, ae))
	f.Add(rawFrame(frameRaftReq, raftAppendEntries, 1, 2, 1, hb))
	f.Add(append(rawFrame(frameRaftReq, raftRequestVote, 1, 3, 1, vote), rawFrame(frameRaftReq, raftRequestVote, 1, 4, 2, vote)...))
	f.Add(rawFrame(frameRaftReq, raftInstallSnapshot, 1, 5, 1, appendInstallSnapshotRequest(nil, &raft.InstallSnapshotRequest{Term: 1, Size: 3})))
	f.Add(rawFrame(frameRaftReq, raftTimeoutNow, 9, 6, 1, nil))
	f.Add(rawFrame(frameCallResp, statusOK, 0, 1, 0, nil))
	ft := linkFuzzTarget(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		l := newLink(ft.tr, server, "fuzz:1")
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.readLoop(true)
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }() // the answers
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = client.Write(data)
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("link still reading 5s after its peer closed")
		}
	})
}
