// Package store is the in-memory state machine of one GridKV partition and
// the node-wide memory accounting shared by every partition a node hosts.
//
// It knows nothing about Raft or the network: the raftgroup package feeds it
// committed log entries (ApplyEntry, MarkApplied), asks it for snapshots
// (Snapshot, Restore) and serves stale reads straight from it (Get).
//
// # Usage
//
//	acct := store.NewAccountant(opts.MaxMemoryMB)
//	p := store.NewPartition(opts, acct)
//
//	// Leader, before proposing: cheap rejection of writes over the limit.
//	if err := acct.Admit(len(key), len(value)); err != nil { ... }
//	entry := store.AppendBatch(nil, cmds)
//
//	// Apply loop, once the entry is committed at index i:
//	results, err := p.ApplyEntry(i, entry)
//
//	// Any goroutine:
//	value, version, ok := p.Get(key)
//
// # Versions
//
// Command i of the batch committed at log index n gets version
// Version(n, i) = n<<16 | (i+1). Versions are therefore unique and strictly
// increasing in apply order within a partition, identical on every replica,
// and never 0, so 0 can mean "absent" in a compare-and-swap.
//
// # Caveats
//
// Stored entries are immutable: each key's version, key and value live in one
// allocation that a write replaces and never modifies in place. That is what
// lets Snapshot keep one pointer per key instead of copies and lets Get copy
// outside the shard lock.
//
// The memory limit is enforced at admission (Accountant.Admit), not at apply:
// a committed command must apply on every replica identically, so ApplyBatch
// never refuses one, and the node can exceed its limit by whatever was
// admitted concurrently.
package store
