// Package transport is GridKV's network layer: one listener per node that
// carries gossip, the Raft traffic of every partition group and forwarded
// client requests on a single host:port.
//
// # Wire layout
//
// The node binds TCP and UDP on the same port. UDP datagrams are gossip
// packets and go straight to memberlist. Every inbound TCP connection starts
// with one connection-type byte:
//
//   - gossip: the rest of the connection is a memberlist stream, handed whole
//     to memberlist through [Transport.Gossip].
//   - mux: the dialer names its advertised address, then the connection runs
//     a yamux session. Each yamux stream starts with a stream-kind byte:
//     either a Raft stream (followed by a big-endian uint32 group ID, then
//     hashicorp/raft's own protocol) or a request stream (a sequence of
//     request/response frames, see [Transport.Call]).
//
// A node multiplexes everything it sends to a peer over one mux connection
// and dials another only while every one it has is busy (many streams in
// use: calls in flight, open Raft streams), never more than
// [NetworkOptions.MaxConns]; a connection left without streams in use for
// [NetworkOptions.IdleTimeout] is closed, and dialled again when needed. So
// the TCP connections between two nodes follow the streams in use between
// them, up to MaxConns each way, not the MaxConns setting itself.
//
// # Usage
//
//	t, err := transport.Listen(transport.DefaultNetworkOptions(), "10.0.0.1:7000", logger)
//	...
//	layer := t.RaftLayer(groupID) // hand to raft.NewNetworkTransportWithConfig
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
// NetworkOptions.Faults lets tests drop, delay and cut links between nodes;
// it is nil in production.
package transport
