// Package protocol is the node-to-node request protocol of GridKV: the messages one node sends
// another over the transport, their codec, the Client that sends them and the Server that
// answers them.
//
// The requests are client operations forwarded to the node that can serve them (singly or in
// batches, one batcher per peer), a leader's term checks for linearizable reads, a leader
// asking a replica to report once it applied an index, and a replica asking its group's
// leader whether it was removed for good. Raft's own traffic and gossip do not pass here.
//
// Messages are msgpack maps keyed by short tags. Forwarded operations and their answers, the
// hot path, go through a hand-written codec that writes the same bytes msgpack's reflection
// writes and reads every encoding of a value reflection accepts, so nodes of either kind
// interoperate; the rarer messages use reflection behind Check, which refuses any declared
// length the message cannot hold. Every decoding failure wraps ErrBadMessage.
package protocol
