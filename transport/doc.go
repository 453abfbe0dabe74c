// Package transport is GridKV's network layer: one listener per node that
// carries gossip, the Raft traffic of every partition group and forwarded
// client requests on a single host:port.
//
// # Wire layout
//
// The node binds TCP and UDP on the same port. UDP datagrams are gossip
// packets and go straight to memberlist. Every inbound TCP connection starts
// with one connection-type byte (then, with a ClusterKey, the key handshake,
// and the dialer's advertised address):
//
//   - gossip ('G'): the rest of the connection is a memberlist stream,
//     handed whole to memberlist through [Transport.Gossip].
//   - link ('L'): the rest is frames (see link.go). A link carries the Raft
//     RPCs of every group and the requests of [Transport.Call], many in
//     flight at once, each frame naming its request; the accepting side
//     answers on the same connection.
//   - snapshot ('S'): one Raft InstallSnapshot, its data streamed behind the
//     request under TCP's flow control, then the answer.
//
// A node dials at most [NetworkOptions.MaxConns]+1 links to each peer, however
// many groups and calls it has: one carries the AppendEntries of every group,
// the others the calls (taking turns) and the rest of the Raft traffic (a
// group's always on the same one), so that heartbeats, votes and requests
// never queue behind log entries. Each link costs two goroutines, a reader
// and a writer; a frame sent while the link is idle goes out at once from
// the sender's goroutine, and frames queued while a write is on the wire
// leave together in the next one, so the messages of many groups share
// system calls. A dialled link that sent nothing for
// [NetworkOptions.IdleTimeout] is closed, and dialled again when needed.
//
// # Raft
//
// [Transport.RaftTransport] registers one group and returns its
// raft.Transport, with AppendEntries pipelining, pre-vote and a heartbeat
// fast path (a heartbeat is answered on the link's reader, not queued
// behind the group's log writes). Raft messages use a hand codec
// (raftcodec.go) whose decoders check every length against the bytes that
// arrived before allocating. Every Raft request names the incarnation of
// the node it is for; a node refuses requests meant for an earlier life of
// itself. A request for a group the node does not host calls the
// unknown-group handler (see [Transport.SetUnknownGroupHandler]).
//
// # Usage
//
//	t, err := transport.Listen(transport.DefaultNetworkOptions(), "10.0.0.1:7000", logger)
//	...
//	rt, err := t.RaftTransport(transport.RaftConfig{Group: 3, ...}) // hand to raft.NewRaft
//	mlConfig.Transport = t.Gossip()
//	t.Handle(kindGet, handleGet)
//	resp, err := t.Call(ctx, "10.0.0.2:7000", kindGet, req)
//	...
//	t.Close()
//
// # Caveats
//
// Without NetworkOptions.ClusterKey peers are not authenticated: the address
// a peer claims in the connection set-up is taken at its word. With a key,
// every TCP connection passes a challenge-response on it first (see auth.go);
// with NetworkOptions.TLS it is also encrypted. Gossip UDP packets are
// encrypted by memberlist's keyring, not here.
//
// The link protocol replaced a yamux-based one; nodes of the two cannot talk
// to each other (a cluster upgrading across it is restarted whole).
//
// NetworkOptions.Faults lets tests drop, delay and cut links between nodes;
// it is nil in production.
package transport
