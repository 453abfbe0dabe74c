// Package gridkv is an embedded, replicated, partitioned key-value store.
//
// Every application instance that calls NewGridKV becomes a node. Nodes find each other by
// gossip (hashicorp/memberlist) and together hold one store: the keyspace is split into
// hash partitions, each replicated by its own Raft group (hashicorp/raft) over an in-memory
// sharded map. Any node serves any key, locally or by one forwarded hop to the partition's
// leader.
//
// A [GridKV] is one node; [NewGridKV] starts it from a [GridKVOptions], whose zero fields
// mean documented defaults. [Timings] holds the node's clocks (failure detection, elections,
// placement): [DefaultTimings] suits a LAN, [LocalTimings] nodes that share one machine.
// Get, Set, Delete, GetEntry and CompareAndSwap work on keys; an [Entry] is a key's value
// with its version, which CompareAndSwap compares. Reads and writes take [Option] values:
// [WithConsistency] sets the [Consistency] ([Linearizable] or [Stale]) of one read. [Status]
// is the node's view of the cluster: its members, and each partition's leader and replicas.
// Errors are sentinels ([ErrKeyNotFound], [ErrVersionMismatch], [ErrUnavailable], ...)
// compared with errors.Is.
//
// # Usage
//
// The first node starts a cluster; it names no seeds:
//
//	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
//		LocalNodeID:  "node-1",
//		LocalAddress: "10.0.0.1:7000",
//	})
//	if err != nil { ... }
//	defer kv.Close()
//	if err := kv.WaitReady(ctx); err != nil { ... } // every partition has a leader
//	err = kv.Set(ctx, "user:1001", []byte("Alice"))
//	v, err := kv.Get(ctx, "user:1001")
//
// Every other node joins through SeedAddrs, the addresses of existing members:
//
//	kv2, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
//		LocalNodeID:  "node-2",
//		LocalAddress: "10.0.0.2:7000",
//		SeedAddrs:    []string{"10.0.0.1:7000"},
//	})
//	if err != nil { ... } // e.g. no seed answered within Timings.JoinTimeout
//	defer kv2.Close()
//	_ = kv2.WaitReady(ctx)
//	v, err := kv2.Get(ctx, "user:1001") // "Alice", written through node-1
//
// Give every node the same seed list: a node that restarts then rejoins through any seed
// that is up. A node with seeds never starts a cluster of its own.
//
// # Consistency
//
// With ReadQuorum + WriteQuorum > ReplicaCount (the default), reads are linearizable: the
// partition leader serves them after confirming its leadership. Otherwise reads are stale:
// a stale read is served from this node's own replica of the partition if it has one, with
// no network round trip; otherwise, or when that replica is behind an old snapshot, it goes
// to the partition leader as a linearizable read, so it is never older than what this node
// returned before. WriteQuorum 1 acknowledges a write once the leader has appended it; up to
// a majority, once it commits; above a majority, once that many replicas have applied it.
// WithConsistency overrides the read level of one call.
//
// # Caveats
//
// Data lives in memory only: a node that restarts comes back empty under a new identity and
// is refilled from its partitions' other replicas. A partition whose replicas all stop loses
// its data. Keys are at most MaxKeySize bytes and values at most MaxValueSize bytes.
// Without a ClusterKey a node trusts anything that reaches its address: set one unless the
// node listens on loopback or on a private network where every host is trusted.
package gridkv
