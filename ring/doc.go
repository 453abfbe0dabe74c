// Package ring is GridKV's placement math: which partition a key belongs to,
// and which nodes replicate each partition for a given member set.
//
// Everything here is a pure function of its arguments. There is no I/O, no
// clock and no randomness beyond fixed hash functions, so every node that sees
// the same member list computes the same placement without talking to anyone.
//
// # Usage
//
//	p := ring.PartitionOf(key, partitions)
//	replicas := ring.Place(partitions, replicaCount, liveMemberIDs)[p]
//	preferredLeader := replicas[0]
//
// # Caveats
//
// PartitionOf decides where stored data lives: its hash and reduction must
// never change once a cluster has data, or keys would be looked up in the
// wrong partition. The same holds, less strictly, for Place: a change to its
// scores or tie-breaking only moves replicas (the cluster converges), but
// nodes running different versions would disagree about the desired
// placement while they coexist.
package ring
