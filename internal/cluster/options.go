package cluster

import (
	"crypto/tls"
	"time"

	"github.com/feellmoose/gridkv"
)

// DefaultPartitions is the partition count a harness node gets unless Options say otherwise:
// small enough that a three-node cluster converges in a few seconds under the race detector.
const DefaultPartitions = 16

// LibraryPartitions, as Options.Partitions, leaves every node's Partitions zero, so GridKV
// picks its own default (gridkv.DefaultPartitions): for tests of the library as a user gets it.
const LibraryPartitions = -1

// Options say how Start starts a cluster's nodes and what it checks at the end. The zero value
// starts nodes with LocalTimings, DefaultPartitions and no security, waits until every node is
// ready, and runs every end-of-test check.
type Options struct {
	// Wait is how far Start waits before it returns; zero: WaitReady.
	Wait Wait

	// Timings returns the timings every node starts from; nil: gridkv.LocalTimings. Use
	// FaultTimings for scenarios that crash, cut or pause nodes.
	Timings func() gridkv.Timings

	// Partitions is every node's partition count; 0: DefaultPartitions; LibraryPartitions:
	// GridKV's own default.
	Partitions int

	// ClusterKey, if set, is every node's ClusterKey.
	ClusterKey []byte
	// TLS, if set, returns the TLS config of the node with the given ID (with its own
	// certificate); it is called each time a node starts.
	TLS func(id string) *tls.Config
	// RecordLogs gives every node its own testlog.Recorder as logger, in Node.Log, for tests
	// that check what a node logged.
	RecordLogs bool

	// Mutate, if set, changes node i's options last, after every field above was applied.
	// The index counts every node the cluster started, AddAt's included.
	Mutate func(i int, o *gridkv.GridKVOptions)

	// SkipReplicaCheck, if not empty, says why this test's replicas need not agree when it
	// ends (it leaves a partition without a quorum, say): the end-of-test check that heals,
	// writes and compares replicas is skipped.
	SkipReplicaCheck string
	// SkipLeakCheck, if not empty, says why goroutines may outlive this test's nodes: the
	// test's goroutine leak check is skipped (TestMain's still runs).
	SkipLeakCheck string
}

// Wait is how far Start waits for the nodes it started. Each level includes the ones before.
type Wait int

const (
	// WaitReady waits until every node's WaitReady returned: it has joined, and it knows a
	// leader for every partition.
	WaitReady Wait = iota
	// WaitFormed waits until Formed: every node sees all alive and every partition fully
	// replicated.
	WaitFormed
	// WaitBalanced waits until Formed and Balanced. Status lists non-voters still catching up
	// as replicas, so Formed alone does not mean a partition survives losing a node; balanced
	// leaders mean convergence has moved on from adding replicas to transferring leaders.
	WaitBalanced
)

// startTimeout bounds each of Start's waits.
const startTimeout = 60 * time.Second

// FaultTimings is LocalTimings with a short DeadGrace, so that crashed nodes are replaced
// within a scenario, and Raft timeouts twice as long: up to five race-enabled nodes share two
// cores in CI, and with LocalTimings' 250 ms leader lease, scheduling stalls alone depose
// leaders over and over.
func FaultTimings() gridkv.Timings {
	t := gridkv.LocalTimings()
	t.DeadGrace = time.Second
	t.Raft.HeartbeatTimeout = time.Second
	t.Raft.ElectionTimeout = time.Second
	t.Raft.LeaderLeaseTimeout = 500 * time.Millisecond
	return t
}
