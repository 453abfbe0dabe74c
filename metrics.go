package gridkv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/feellmoose/gridkv/internal/protocol"
	"github.com/feellmoose/gridkv/membership"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/prometheus/client_golang/prometheus"
)

// This file is the node's Prometheus instrumentation (GridKVOptions.Metrics); docs/operations.md
// lists every metric. Two kinds of collector:
//
//   - counters and histograms moved by the operations themselves. Every child (one per label
//     combination) is resolved once when the node starts and kept in an array, so an
//     operation costs a clock read, an atomic add and a histogram observation: no lookup, no
//     allocation, no lock.
//   - a collector evaluated at scrape time (nodeCollector) for everything that is state
//     rather than events: Raft roles, terms and indexes, members, memory. It reads raft's
//     and the accountant's own counters when Prometheus asks, and costs nothing in between.
//
// Without GridKVOptions.Metrics the node has no nodeMetrics at all (kv.metrics is nil) and
// every instrumented spot costs one nil check.
//
// Durability: the WAL's fsyncs (gridkv_wal_fsyncs_total and
// gridkv_wal_fsync_duration_seconds) belong here, fed through a method added to
// raftgroup.Observer and registered only when Storage.DataDir is set.

// opKind is an operation as the metrics name it.
type opKind uint8

const (
	opGet opKind = iota
	opSet
	opDelete
	opCAS
	opCAD
	opList
	numOpKinds
)

var opNames = [numOpKinds]string{"get", "set", "delete", "cas", "cad", "list"}

// opOf is the kind of an operation forwarded to another node.
func opOf(op protocol.OpKind) opKind {
	switch op {
	case protocol.OpGet:
		return opGet
	case protocol.OpSet:
		return opSet
	case protocol.OpDelete:
		return opDelete
	case protocol.OpCompareAndDelete:
		return opCAD
	default:
		return opCAS
	}
}

// opResult is how an operation ended, as the metrics name it.
type opResult uint8

const (
	resOK opResult = iota
	resNotFound
	resConflict
	resMemoryLimit
	resInvalid
	resClosed
	resCanceled
	resTimeout
	resUnavailable
	resError
	numResults
)

var resultNames = [numResults]string{
	"ok", "not_found", "conflict", "memory_limit", "invalid", "closed", "canceled", "timeout", "unavailable", "error",
}

// resultOf classifies an operation's error. The caller's own context comes before
// ErrUnavailable, which wraps it when the context ended while no leader answered.
func resultOf(err error) opResult {
	switch {
	case err == nil:
		return resOK
	case errors.Is(err, ErrKeyNotFound):
		return resNotFound
	case errors.Is(err, ErrVersionMismatch):
		return resConflict
	case errors.Is(err, ErrMemoryLimit):
		return resMemoryLimit
	case errors.Is(err, ErrInvalidKey), errors.Is(err, ErrValueTooLarge):
		return resInvalid
	case errors.Is(err, ErrClosed):
		return resClosed
	case errors.Is(err, context.Canceled):
		return resCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return resTimeout
	case errors.Is(err, ErrUnavailable):
		return resUnavailable
	}
	return resError
}

// latencyBuckets spans a stale read served from memory (microseconds) to a write that waited
// out an election (seconds).
var latencyBuckets = [...]float64{
	5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10,
}

// snapshotBuckets spans a snapshot of a small in-memory partition to the restore of a large one.
var snapshotBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

const (
	snapTake = iota
	snapInstall
)

var snapOps = [2]string{"take", "install"}

// nodeMetrics is one node's instrumentation. A nil *nodeMetrics is valid: every method is
// then a no-op, so call sites need no check of their own.
type nodeMetrics struct {
	source prometheus.Registerer // GridKVOptions.Metrics

	ops       *prometheus.CounterVec
	latency   *latencyHistograms
	forwards  *prometheus.CounterVec
	expiries  prometheus.Counter
	watchers  prometheus.Gauge
	snapshots *prometheus.CounterVec
	snapTimes *prometheus.HistogramVec

	// The children, resolved once: the hot path indexes arrays.
	opCount    [numOpKinds][numResults]prometheus.Counter
	forwarded  [numOpKinds]prometheus.Counter
	snapOK     [2]prometheus.Counter
	snapFailed [2]prometheus.Counter
	snapTime   [2]prometheus.Observer

	// epoch is when the metrics were made: now reads the monotonic clock against it, which
	// costs one clock read where time.Now costs two (wall and monotonic).
	epoch time.Time

	// reg is source wrapped with the node label, and registered what it holds; both are set
	// by register and cleared by unregister, which Close and NewGridKV call one at a time.
	reg        prometheus.Registerer
	registered []prometheus.Collector
}

// newNodeMetrics builds a node's collectors without registering them; nil without a
// registerer.
func newNodeMetrics(reg prometheus.Registerer) *nodeMetrics {
	if reg == nil {
		return nil
	}
	m := &nodeMetrics{
		source: reg,
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridkv_operations_total",
			Help: "Operations this node's API served, by operation and result.",
		}, []string{"op", "result"}),
		latency: newLatencyHistograms(),
		epoch:   time.Now(),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridkv_forwarded_requests_total",
			Help: "Requests this node sent to the partition leader on another node, retries included, by operation.",
		}, []string{"op"}),
		expiries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gridkv_expiries_total",
			Help: "Keys whose TTL ran out and whose expiry this node, as partition leader, proposed and applied.",
		}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gridkv_watchers",
			Help: "Watches open on this node.",
		}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridkv_snapshots_total",
			Help: "Raft snapshots this node's replicas took of their state (op=take) or restored from their leader (op=install), by result.",
		}, []string{"op", "result"}),
		snapTimes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gridkv_snapshot_duration_seconds",
			Help:    "Duration of the snapshots counted ok in gridkv_snapshots_total: capture to stored (take), or restore (install).",
			Buckets: snapshotBuckets,
		}, []string{"op"}),
	}
	for k := range numOpKinds {
		for r := range numResults {
			m.opCount[k][r] = m.ops.WithLabelValues(opNames[k], resultNames[r])
		}
		m.forwarded[k] = m.forwards.WithLabelValues(opNames[k])
	}
	for i, op := range snapOps {
		m.snapOK[i] = m.snapshots.WithLabelValues(op, "ok")
		m.snapFailed[i] = m.snapshots.WithLabelValues(op, "failed")
		m.snapTime[i] = m.snapTimes.WithLabelValues(op)
	}
	return m
}

// register registers every collector of kv's node, each series labelled node=LocalNodeID, so
// that several nodes of one process can share a registry. On failure it unregisters what it
// registered.
func (m *nodeMetrics) register(kv *GridKV) error {
	if m == nil {
		return nil
	}
	m.reg = prometheus.WrapRegistererWith(prometheus.Labels{"node": kv.cfg.nodeID}, m.source)
	for _, c := range []prometheus.Collector{
		m.ops, m.latency, m.forwards, m.expiries, m.watchers, m.snapshots, m.snapTimes, newNodeCollector(kv),
	} {
		if err := m.reg.Register(c); err != nil {
			m.unregister()
			return fmt.Errorf("gridkv: registering metrics of node %q: %w", kv.cfg.nodeID, err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

// unregister removes every collector register registered. Idempotent.
func (m *nodeMetrics) unregister() {
	if m == nil {
		return
	}
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

// now is the monotonic clock in nanoseconds since m was made.
func (m *nodeMetrics) now() int64 { return int64(time.Since(m.epoch)) }

// observeOp counts an operation that started at start (a reading of now) and ended with
// *err. It takes err by pointer so that the API methods can defer it on their named result.
func (m *nodeMetrics) observeOp(op opKind, start int64, err *error) {
	end := m.now()
	m.latency.observe(op, max(end-start, 0), end)
	m.opCount[op][resultOf(*err)].Inc()
}

// forward counts one request sent to another node's leader.
func (m *nodeMetrics) forward(op opKind) {
	if m != nil {
		m.forwarded[op].Inc()
	}
}

// expired counts one expiry applied.
func (m *nodeMetrics) expired() {
	if m != nil {
		m.expiries.Inc()
	}
}

// watchOpened and watchClosed track the open watches.
func (m *nodeMetrics) watchOpened() {
	if m != nil {
		m.watchers.Inc()
	}
}

func (m *nodeMetrics) watchClosed() {
	if m != nil {
		m.watchers.Dec()
	}
}

// raftObserver is m as the groups' observer: a nil interface, not a nil pointer in one, when
// there are no metrics, so that raftgroup skips its observation entirely.
func (m *nodeMetrics) raftObserver() raftgroup.Observer {
	if m == nil {
		return nil
	}
	return m
}

func (m *nodeMetrics) SnapshotTaken(d time.Duration, err error) { m.snapshot(snapTake, d, err) }

func (m *nodeMetrics) SnapshotInstalled(d time.Duration, err error) { m.snapshot(snapInstall, d, err) }

func (m *nodeMetrics) snapshot(op int, d time.Duration, err error) {
	if err != nil {
		m.snapFailed[op].Inc()
		return
	}
	m.snapOK[op].Inc()
	m.snapTime[op].Observe(d.Seconds())
}

// nodeCollector reads a node's state when Prometheus scrapes: Raft's state of every hosted
// partition, the members by state, memory against its limit. Nothing of it is kept between
// scrapes.
type nodeCollector struct {
	kv         *GridKV
	partitions []string // partition labels, by partition

	partitionCount, leaderless                   *prometheus.Desc
	role, term, commit, applied, lastLog, leader *prometheus.Desc
	lastContact                                  *prometheus.Desc
	members, memUsed, memLimit, fsyncs           *prometheus.Desc
}

func newNodeCollector(kv *GridKV) *nodeCollector {
	part := []string{"partition"}
	c := &nodeCollector{
		kv:             kv,
		partitionCount: prometheus.NewDesc("gridkv_partitions", "Partitions of the cluster, fixed when it was created.", nil, nil),
		leaderless:     prometheus.NewDesc("gridkv_partitions_leaderless", "Partitions for which this node knows no leader: requests to them wait or fail.", nil, nil),
		role:           prometheus.NewDesc("gridkv_partition_role", "1 for the Raft role this node's replica of the partition has, 0 for the others.", []string{"partition", "role"}, nil),
		term:           prometheus.NewDesc("gridkv_partition_term", "Current Raft term of this node's replica of the partition.", part, nil),
		commit:         prometheus.NewDesc("gridkv_partition_commit_index", "Raft commit index of this node's replica of the partition.", part, nil),
		applied:        prometheus.NewDesc("gridkv_partition_applied_index", "Last Raft log index this node's replica of the partition applied.", part, nil),
		lastLog:        prometheus.NewDesc("gridkv_partition_last_log_index", "Last index in the Raft log of this node's replica of the partition.", part, nil),
		leader:         prometheus.NewDesc("gridkv_partition_leader_changes_total", "Leaders this node's replica of the partition learned of since the replica opened.", part, nil),
		lastContact:    prometheus.NewDesc("gridkv_partition_last_contact_seconds", "Seconds since a follower replica last heard from its leader.", part, nil),
		members:        prometheus.NewDesc("gridkv_members", "Cluster members as this node's gossip sees them, by state.", []string{"state"}, nil),
		memUsed:        prometheus.NewDesc("gridkv_memory_used_bytes", "Bytes of keys and values this node's replicas hold, as the memory accountant counts them.", nil, nil),
		memLimit:       prometheus.NewDesc("gridkv_memory_limit_bytes", "Storage.MaxMemoryMB in bytes; 0 when there is no limit.", nil, nil),
		fsyncs:         prometheus.NewDesc("gridkv_wal_fsyncs_total", "Times this node's durable replicas forced their Raft logs to disk (Storage.DataDir with SyncAlways); one covers a whole batch of entries.", nil, nil),
	}
	c.partitions = make([]string, kv.cfg.partitions)
	for p := range c.partitions {
		c.partitions[p] = strconv.Itoa(p)
	}
	return c
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.partitionCount, c.leaderless, c.role, c.term, c.commit, c.applied, c.lastLog, c.leader,
		c.lastContact, c.members, c.memUsed, c.memLimit, c.fsyncs,
	} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	kv := c.kv
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.partitionCount, float64(kv.cfg.partitions))
	if kv.groups.Durable() {
		ch <- prometheus.MustNewConstMetric(c.fsyncs, prometheus.CounterValue, float64(kv.groups.Fsyncs()))
	}
	leaderless := 0
	for p := range kv.cfg.partitions {
		if id, _ := kv.leaderOf(p); id == "" {
			leaderless++
		}
	}
	gauge(c.leaderless, float64(leaderless))

	now := time.Now()
	for _, g := range kv.groups.Hosted() {
		p := c.partitions[g.ID()]
		st := g.RaftStats()
		for _, role := range raftgroup.Roles {
			v := 0.0
			if role == st.Role {
				v = 1
			}
			gauge(c.role, v, p, role)
		}
		gauge(c.term, float64(st.Term), p)
		gauge(c.commit, float64(st.CommitIndex), p)
		gauge(c.applied, float64(st.AppliedIndex), p)
		gauge(c.lastLog, float64(st.LastLogIndex), p)
		ch <- prometheus.MustNewConstMetric(c.leader, prometheus.CounterValue, float64(st.LeaderChanges), p)
		if st.Role == "follower" && !st.LastContact.IsZero() {
			gauge(c.lastContact, now.Sub(st.LastContact).Seconds(), p)
		}
	}

	var states [4]int
	for _, m := range kv.members.Members() {
		if int(m.State) >= 0 && int(m.State) < len(states) {
			states[m.State]++
		}
	}
	for s, n := range states {
		gauge(c.members, float64(n), membership.State(s).String())
	}

	gauge(c.memUsed, float64(kv.acct.Used()))
	gauge(c.memLimit, float64(kv.acct.Limit()))
}
