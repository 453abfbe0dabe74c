package store

import (
	"errors"
	"fmt"
	"strconv"
)

// Size limits. They bound what one command may carry, so that a decoder
// can reject oversized input before allocating for it.
const (
	// MaxKeySize is the largest key, in bytes. Keys are 1..MaxKeySize bytes.
	MaxKeySize = 1024
	// MaxValueSize is the largest value, in bytes. Empty values are allowed.
	MaxValueSize = 1 << 20
	// MaxBatch is the most commands one batch (one Raft log entry) may hold:
	// Version reserves 16 bits for the position within the batch, and
	// position 0 is never used so that no version is 0.
	MaxBatch = 1<<16 - 1
)

// Sentinel errors. Compare with errors.Is: most are returned wrapped with
// the numbers that caused them.
var (
	// ErrMemoryLimit means admitting a write would take the node over its
	// memory limit.
	ErrMemoryLimit = errors.New("gridkv: memory limit reached")
	// ErrVersionMismatch is the result of a compare-and-swap whose expected
	// version is not the key's current version.
	ErrVersionMismatch = errors.New("gridkv: version mismatch")
	// ErrKeyNotFound is the result of deleting a key that is absent.
	ErrKeyNotFound = errors.New("gridkv: key not found")
	// ErrCorrupt is wrapped by every failure to decode a batch or a snapshot.
	ErrCorrupt = errors.New("gridkv: corrupt data")
	// ErrInvalidCommand is wrapped by Command.Validate and is the result of
	// a command handed to ApplyBatch that could never have been encoded
	// validly (unknown op, empty or oversized key, oversized value).
	ErrInvalidCommand = errors.New("gridkv: invalid command")
	// ErrPartitionClosed is the result of applying to, or restoring, a
	// partition after Close.
	ErrPartitionClosed = errors.New("gridkv: partition closed")
	// ErrInvalidKey is returned by CheckKey for an empty key or one longer
	// than MaxKeySize.
	ErrInvalidKey = errors.New("gridkv: invalid key")
	// ErrValueTooLarge is returned by CheckValue for a value longer than
	// MaxValueSize.
	ErrValueTooLarge = errors.New("gridkv: value too large")
	// ErrCompacted is wrapped by Partition.Events when the history no
	// longer holds every change after the position asked for.
	ErrCompacted = errors.New("gridkv: compacted")
)

// CheckKey refuses an empty key and one longer than MaxKeySize, with an
// error wrapping ErrInvalidKey.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeySize)
	}
	return nil
}

// CheckValue refuses a value longer than MaxValueSize, with an error
// wrapping ErrValueTooLarge.
func CheckValue(value []byte) error {
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooLarge, len(value), MaxValueSize)
	}
	return nil
}

// Backend selects how a partition lays out its map.
type Backend int

const (
	// BackendMemorySharded, the default, splits a partition's keys over
	// ShardCount maps, each behind its own RWMutex, so that readers on many
	// cores and the apply loop rarely meet on one lock.
	BackendMemorySharded Backend = iota
	// BackendMemory keeps one map behind one RWMutex: no shard array, at
	// the price of readers contending with the apply loop.
	BackendMemory
)

// String returns the backend's name, or "Backend(n)" for an unknown value.
func (b Backend) String() string {
	switch b {
	case BackendMemorySharded:
		return "memory-sharded"
	case BackendMemory:
		return "memory"
	default:
		return fmt.Sprintf("Backend(%d)", int(b))
	}
}

const (
	// DefaultHistoryEvents is the HistoryEvents used when the field is 0.
	DefaultHistoryEvents = 10000
	// DefaultHistoryBytes is the HistoryBytes used when the field is 0.
	DefaultHistoryBytes = 8 << 20
	// DefaultShardCount is the ShardCount used when the field is 0.
	DefaultShardCount = 256
	// MaxShardCount bounds ShardCount; beyond it the per-shard overhead
	// outweighs any reduction in lock contention.
	MaxShardCount = 1 << 16
)

// StorageOptions configures the storage of a node's partitions. The zero
// value is valid and means the defaults.
type StorageOptions struct {
	// Backend selects the map layout. Zero is BackendMemorySharded.
	Backend Backend
	// MaxMemoryMB is the node-wide limit, in MiB, on the bytes accounted
	// by EntrySize for all partitions the node hosts; it is meant for
	// NewAccountant. 0 means no limit; negative values are invalid.
	MaxMemoryMB int
	// ShardCount is the number of shards of each partition with
	// BackendMemorySharded (ignored otherwise). It must be a power of two
	// no larger than MaxShardCount; 0 means DefaultShardCount.
	ShardCount int
	// HistoryEvents bounds the changes each partition keeps for watchers
	// (Partition.Events); the oldest go first. 0 means
	// DefaultHistoryEvents; negative values are invalid.
	HistoryEvents int
	// HistoryBytes bounds the key and value bytes of the changes each
	// partition keeps, counting every kept change whether or not its value
	// is still the key's current one (a current value's memory is shared,
	// so the real cost is at most this). The newest change is kept even if
	// it alone is larger. These bytes are not part of the memory account
	// (MaxMemoryMB). 0 means DefaultHistoryBytes; negative values are
	// invalid.
	HistoryBytes int

	// DataDir: "" keeps memory only (a restarted node comes back empty under a new
	// identity). Set, the node keeps its Raft logs, votes and snapshots under DataDir;
	// started again with the same LocalNodeID and DataDir it recovers its data and its place
	// in every group, and a whole cluster stopped at once (or killed) comes back with every
	// acknowledged write. The state machine itself stays in memory. See docs/durability.md.
	DataDir string
	// Sync says when a write reaches stable storage with a DataDir (ignored without one).
	// Zero is SyncAlways.
	Sync SyncMode
}

// SyncMode says when a replica's log writes are forced to stable storage (fsync).
type SyncMode int

const (
	// SyncAlways fsyncs every batch of log entries before the replica reports it stored:
	// a write is acknowledged only once it is on stable storage on the replicas that make
	// its quorum. One fsync covers every entry raft hands the log at once (group commit).
	SyncAlways SyncMode = iota
	// SyncNone never fsyncs log entries; the operating system writes them back in its own
	// time. A crashed process loses nothing (its writes are in the kernel's page cache); a
	// machine that loses power or panics can lose the writes of its last seconds, and a
	// cluster whose quorum of replicas lost power together can lose acknowledged writes.
	// Votes and terms are still fsynced.
	SyncNone
)

// String returns the mode's name.
func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncNone:
		return "none"
	}
	return "SyncMode(" + strconv.Itoa(int(m)) + ")"
}

// DefaultStorageOptions returns the defaults: sharded backend with
// DefaultShardCount shards, no memory limit, and a history of
// DefaultHistoryEvents changes or DefaultHistoryBytes per partition.
func DefaultStorageOptions() StorageOptions {
	return StorageOptions{}.WithDefaults()
}

// WithDefaults returns o with zero fields replaced by their defaults.
func (o StorageOptions) WithDefaults() StorageOptions {
	if o.ShardCount == 0 {
		o.ShardCount = DefaultShardCount
	}
	if o.HistoryEvents == 0 {
		o.HistoryEvents = DefaultHistoryEvents
	}
	if o.HistoryBytes == 0 {
		o.HistoryBytes = DefaultHistoryBytes
	}
	return o
}

// Validate reports the first invalid field of o. Zero fields are valid
// (they mean the default), so Validate may be called before or after
// WithDefaults.
func (o StorageOptions) Validate() error {
	switch o.Backend {
	case BackendMemorySharded, BackendMemory:
	default:
		return fmt.Errorf("store: Backend %d is unknown", int(o.Backend))
	}
	if o.MaxMemoryMB < 0 {
		return fmt.Errorf("store: MaxMemoryMB %d is negative", o.MaxMemoryMB)
	}
	if o.HistoryEvents < 0 {
		return fmt.Errorf("store: HistoryEvents %d is negative", o.HistoryEvents)
	}
	if o.HistoryBytes < 0 {
		return fmt.Errorf("store: HistoryBytes %d is negative", o.HistoryBytes)
	}
	if o.Sync != SyncAlways && o.Sync != SyncNone {
		return fmt.Errorf("store: Sync %v is unknown", o.Sync)
	}
	if o.Backend == BackendMemorySharded {
		n := o.ShardCount
		switch {
		case n < 0:
			return fmt.Errorf("store: ShardCount %d is negative", n)
		case n > MaxShardCount:
			return fmt.Errorf("store: ShardCount %d exceeds %d", n, MaxShardCount)
		case n&(n-1) != 0:
			return fmt.Errorf("store: ShardCount %d is not a power of two", n)
		}
	}
	return nil
}

// shardCount returns the number of shards NewPartition uses for o,
// correcting invalid values instead of failing: NewPartition has no error
// to return, and a partition that works with a different shard count is
// better than a crashed node. Callers are expected to Validate first.
func (o StorageOptions) shardCount() int {
	if o.Backend == BackendMemory {
		return 1
	}
	n := o.ShardCount
	switch {
	case n <= 0:
		return DefaultShardCount
	case n >= MaxShardCount:
		return MaxShardCount
	}
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// historyBounds returns the history bounds NewPartition uses for o: the
// defaults for zero, and also for negative values, which Validate rejects.
func (o StorageOptions) historyBounds() (events int, bytes int64) {
	events, bytes = o.HistoryEvents, int64(o.HistoryBytes)
	if events <= 0 {
		events = DefaultHistoryEvents
	}
	if bytes <= 0 {
		bytes = DefaultHistoryBytes
	}
	return events, bytes
}
