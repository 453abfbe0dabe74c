// Package store is the in-memory state machine of one GridKV partition and
// the node-wide memory accounting shared by every partition a node hosts.
//
// It knows nothing about Raft or the network: the raftgroup package feeds it
// committed log entries (ApplyEntry, MarkApplied), asks it for snapshots
// (Snapshot, Restore) and serves stale reads straight from it (Get,
// GetEntry, List, Events).
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
//	e, ok := p.GetEntry(key, time.Now().UnixNano())
//	page, more, position := p.List(prefix, startAfter, 100, time.Now().UnixNano())
//
//	// A watcher, from a listing's position:
//	for {
//		changed := p.Changed()
//		events, next, err := p.Events(position, prefix, 100)
//		... // ErrCompacted: list again
//		position = next
//		if len(events) == 0 { <-changed }
//	}
//
//	// The leader's expiry loop:
//	entry := store.AppendBatch(nil, p.Expired(time.Now().UnixNano(), 256))
//
// # Versions and positions
//
// Command i of the batch committed at log index n gets version
// Version(n, i) = n<<16 | (i+1). Versions are therefore unique and strictly
// increasing in apply order within a partition, identical on every replica,
// and never 0, so 0 can mean "absent" in a compare-and-swap.
//
// Every change is also an Event in the partition's history, with the version
// of the command that made it (a delete's event has the deleting command's
// version, not the deleted one). A position n<<16 | 0xFFFF (Position) lies
// after every version of log index n and before those of n+1: List reports
// the position its page was read at, and Events returns the changes after a
// position, so a listing followed by a watch misses and repeats nothing.
// The history is replicated state (snapshots carry it) and bounded
// (StorageOptions.HistoryEvents, HistoryBytes): a position older than what
// it holds is ErrCompacted.
//
// # Expiry
//
// A write with Command.ExpiresAt gives the key a deadline. No replica
// deletes on its own clock: the leader finds due keys with Expired and
// proposes OpExpire commands, which lose to any write made since. Until one
// applies, GetEntry and List hide the key by the caller's clock, so with
// clocks that disagree by d a key may be hidden up to d early on a fast
// replica, but never reappears once hidden on a replica whose clock only
// moves forward. Get ignores deadlines.
//
// # Caveats
//
// Stored entries are immutable: each key's version, key, value and deadline
// live in one allocation that a write replaces and never modifies in place.
// That is what lets Snapshot, the ordered index and the history keep
// pointers instead of copies and lets Get copy outside the shard lock. It is
// also why Event values and the keys returned by List and Expired share the
// store's memory: callers must not modify an Event's Value.
//
// The memory limit is enforced at admission (Accountant.Admit), not at apply:
// a committed command must apply on every replica identically, so ApplyBatch
// never refuses one, and the node can exceed its limit by whatever was
// admitted concurrently. The history's values (HistoryBytes per partition)
// are outside the limit.
//
// OpExpire, OpCompareAndDelete and Command.ExpiresAt need every node of the
// cluster upgraded first: an older node rejects a batch holding the new ops
// and applies a deadline as permanent. Older nodes cannot read snapshot
// format 2 either; this package still reads format 1.
package store
