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
// A node opens at most [NetworkOptions.MaxConns] mux connections to each peer
// and multiplexes everything over them, so the number of TCP connections
// between two nodes does not grow with the number of Raft groups.
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
