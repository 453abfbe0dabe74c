// Package gridkv is an embedded, replicated, partitioned key-value store.
//
// Every application instance that calls NewGridKV becomes a node. Nodes find each other by
// gossip (hashicorp/memberlist) and together hold one store: the keyspace is split into
// hash partitions, each replicated by its own Raft group (hashicorp/raft) over an in-memory
// sharded map. Any node serves any key, locally or by one forwarded hop to the partition's
// leader.
//
// # Usage
//
//	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
//		LocalNodeID:  "node-1",
//		LocalAddress: "127.0.0.1:8001",
//	})
//	if err != nil { ... }
//	defer kv.Close()
//	_ = kv.WaitReady(ctx)
//	err = kv.Set(ctx, "user:1001", []byte("Alice"))
//	v, err := kv.Get(ctx, "user:1001")
//
// Other nodes join with SeedAddrs naming existing members. Give every node the same seed
// list: a node that restarts then rejoins through any seed that is up.
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
package gridkv
