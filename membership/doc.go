// Package membership runs a node's gossip membership: joining through seeds,
// gossiping node metadata (ID, address, incarnation, cluster ID, the
// partitions it leads) and tracking every member's state (alive, suspect,
// dead, left). It is built on hashicorp/memberlist and decides nothing about
// placement.
//
// # Usage
//
// The node that creates a cluster starts without seeds (and with the new
// cluster's ID); every other node starts with the addresses of existing
// members and learns the cluster ID from them:
//
//	m, err := membership.Start(ctx, membership.Config{
//		NodeID:    "n2",
//		Addr:      "10.0.0.2:7946",
//		Seeds:     []string{"10.0.0.1:7946"},
//		Transport: tr, // a memberlist.NodeAwareTransport over the node's port
//		OnChange:  rebalance,
//	})
//	...
//	for _, mem := range m.Members() { ... }
//	m.SetLeads(ledPartitions)
//	...
//	m.Leave(time.Second) // graceful: others see StateLeft
//	m.Shutdown()
//
// # Caveats
//
// Clusters never merge: a push/pull join or an alive message from a node
// whose metadata carries another non-empty cluster ID is refused and logged
// at Warn on both sides.
//
// memberlist (v0.7.0) exposes no member state: events carry no suspicion,
// Node.State is never filled in, Members() omits dead and left nodes. Every
// ProbeInterval (and right after a member is gone) this package therefore
// runs a push/pull with its own node, reads the true states from the peer
// list handed to the merge delegate and declines the merge. So a suspicion
// shorter than ProbeInterval can go unseen, a departed member is reported
// dead for a moment before a graceful leave shows as left, and the transport
// must be able to dial this node's own address.
//
// A node restarted with the same NodeID and address before the others have
// declared its predecessor dead answers their probes for it, so they keep
// the predecessor alive (with its old metadata) until the new process joins
// and refutes it. Give a restarted node a seed, or wait out the failure
// detection.
//
// memberlist owns Config.Transport: Shutdown, and Start when it fails after
// creating the memberlist, shut the transport down.
package membership
