package gridkv

import (
	"errors"

	"github.com/feellmoose/gridkv/store"
)

// Sentinel errors. Compare with errors.Is: errors returned by GridKV wrap them with detail.
var (
	// ErrKeyNotFound is returned by Get and GetEntry for a missing key. Delete of a missing
	// key succeeds: deleting is idempotent, so a retried Delete never reports a false error.
	ErrKeyNotFound = store.ErrKeyNotFound
	// ErrVersionMismatch is returned by CompareAndSwap when the key's version differs.
	ErrVersionMismatch = store.ErrVersionMismatch
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("gridkv: closed")
	// ErrInvalidKey is returned for an empty key or one longer than MaxKeySize bytes.
	ErrInvalidKey = store.ErrInvalidKey
	// ErrValueTooLarge is returned for a value longer than MaxValueSize bytes.
	ErrValueTooLarge = store.ErrValueTooLarge
	// ErrMemoryLimit is returned when a write would take the partition leader's node past
	// Storage.MaxMemoryMB. It is checked before the write enters the log.
	ErrMemoryLimit = store.ErrMemoryLimit
	// ErrUnavailable is returned when no leader or quorum could be reached before the
	// context ended; it wraps the cause. A write that fails this way may or may not have
	// taken effect.
	ErrUnavailable = errors.New("gridkv: unavailable")
	// ErrClusterMismatch is returned by NewGridKV when the node's Partitions or ReplicaCount
	// differ from those of the cluster it joined; the error names both values. The node
	// leaves again, and the cluster goes on as before.
	ErrClusterMismatch = errors.New("gridkv: settings differ from the cluster's")
	// ErrCompacted ends a Watch whose starting point, or whose consumer, fell behind the
	// changes the cluster keeps (Storage.HistoryEvents and HistoryBytes per partition): List
	// again and watch from the new page's Cursor.
	ErrCompacted = store.ErrCompacted
)

// Limits on keys and values.
const (
	MaxKeySize   = store.MaxKeySize   // bytes
	MaxValueSize = store.MaxValueSize // bytes
)
