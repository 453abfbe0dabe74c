// Package raftgroup runs the Raft groups of one GridKV node: one hashicorp/raft instance per
// hosted partition, each over a store.Partition state machine.
//
// A Group batches client commands into Raft log entries (many commands per entry), serves
// linearizable reads through a read index shared by every read waiting at the same moment,
// and changes its own membership one step at a time. The Manager owns every Group of a node.
//
// Raft server identities carry the node's incarnation: a node that restarts without its
// state comes back as a new server, and traffic addressed to its old identity is refused at
// the stream layer, so a replica that lost its term and vote never votes under its old name.
package raftgroup
