package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
	"github.com/hashicorp/raft"
)

// Tuning is the clocks and batch sizes of every group of a node. Many groups share one node,
// so heartbeats are kept sparse; see DefaultTuning.
type Tuning struct {
	HeartbeatTimeout   time.Duration // follower without contact this long starts an election
	ElectionTimeout    time.Duration // candidate without a result this long retries
	LeaderLeaseTimeout time.Duration // leader without quorum contact this long steps down
	CommitTimeout      time.Duration // idle wait before a heartbeat carries the commit index
	RPCTimeout         time.Duration // I/O deadline of one Raft RPC
	ApplyTimeout       time.Duration // longest wait for a batch, barrier or leadership check

	SnapshotThreshold uint64        // log entries since the last snapshot that trigger one
	SnapshotInterval  time.Duration // how often the threshold is checked
	TrailingLogs      uint64        // entries kept after a snapshot for slow followers

	MaxBatch           int // commands per log entry
	MaxBatchBytes      int // keys and values per log entry, approximately
	MaxInflightBatches int // batches a group has in raft at once; 1 makes every waiting command share the next entry
}

// Timing is the former name of Tuning, which holds batch sizes as well as clocks.
//
// Deprecated: use Tuning.
type Timing = Tuning

// DefaultTuning returns a tuning for a LAN: elections within a few seconds of a leader's
// loss, heartbeats every 200 ms per follower, snapshots every 8192 entries.
//
// Every group heartbeats on its own, so idle CPU grows with the partition count. Measured
// with go run ./bench -scenario idle on 3 nodes x 16 partitions (2 vCPUs): a 50 ms
// CommitTimeout cost 20.7% of a core, 200 ms 13.7%, and 200 ms with a 2 s heartbeat timeout
// 10.9%. CommitTimeout also bounds how long an idle follower takes to learn of a commit (its
// stale reads lag by at most that), so it stays well under a second.
func DefaultTuning() Tuning {
	return Tuning{
		HeartbeatTimeout:   2000 * time.Millisecond,
		ElectionTimeout:    2000 * time.Millisecond,
		LeaderLeaseTimeout: 1000 * time.Millisecond,
		CommitTimeout:      200 * time.Millisecond,
		RPCTimeout:         10 * time.Second,
		ApplyTimeout:       10 * time.Second,
		SnapshotThreshold:  8192,
		SnapshotInterval:   20 * time.Second,
		TrailingLogs:       4096,
		MaxBatch:           1024,
		MaxBatchBytes:      4 << 20,
		MaxInflightBatches: 1,
	}
}

// Config is what a Manager needs. Every field is required unless marked.
type Config struct {
	NodeID      string
	Incarnation uint64
	Addr        string // host:port of this node
	Partitions  int

	Storage    store.StorageOptions
	Accountant *store.Accountant

	// Network carries every group's Raft traffic: each group registers with it.
	Network *transport.Transport
	// WaitApplied asks the node at addr to wait until its replica of group has applied index.
	// It must return soon after ctx ends: Close cancels the calls in flight and waits for
	// them.
	WaitApplied func(ctx context.Context, addr string, group int, index uint64) error
	// ConfirmTerms (optional) asks the node at addr to answer term checks with its
	// Manager's CheckTerms. Without it every linearizable read round is a heartbeat round.
	// Like WaitApplied, it must return soon after ctx ends.
	ConfirmTerms func(ctx context.Context, addr string, checks []TermCheck) ([]bool, error)

	Tuning Tuning       // zero: DefaultTuning()
	Logger *slog.Logger // nil: discard

	// Observer (optional) learns of snapshots taken and installed, for metrics; nil: none,
	// and no observer is registered with raft.
	Observer Observer
}

// Manager owns the groups this node hosts. Safe for concurrent use.
type Manager struct {
	cfg     Config
	disk    *diskIO                 // shared by the durable replicas; unused without Storage.DataDir
	groups  []atomic.Pointer[Group] // by partition; nil when not hosted. Lock-free for the hot path.
	confirm *termConfirmer          // nil without Config.ConfirmTerms

	mu     sync.Mutex // serialises Open, Drop and Close; guards closed and failed
	closed bool
	// restarts counts the goroutines restarting durable replicas whose disk failed; Close
	// waits for them. restartMu guards restartsClosed and orders Add before Close's Wait.
	restarts       sync.WaitGroup
	restartMu      sync.Mutex
	restartsClosed bool
	stop           chan struct{} // closed by Close
	// failed holds partitions whose replica failed here (fail-stop). They are not reopened
	// in this incarnation: a new replica would carry the failed one's server ID without its
	// term and vote. The node's next start has a new identity.
	failed map[int]bool
}

// NewManager returns a Manager that hosts no group yet.
func NewManager(cfg Config) *Manager {
	if cfg.Tuning == (Tuning{}) {
		cfg.Tuning = DefaultTuning()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, disk: &diskIO{sync: cfg.Storage.Sync}, groups: make([]atomic.Pointer[Group], cfg.Partitions), failed: make(map[int]bool), stop: make(chan struct{})}
	if cfg.ConfirmTerms != nil {
		m.confirm = newTermConfirmer(cfg.ConfirmTerms, cfg.Tuning.HeartbeatTimeout, cfg.Logger)
	}
	return m
}

// Group returns the hosted group of partition p, or nil.
func (m *Manager) Group(p int) *Group {
	if p < 0 || p >= len(m.groups) {
		return nil
	}
	return m.groups[p].Load()
}

// Open starts this node's replica of partition p if it is not running. With bootstrap, a new
// group is bootstrapped with this node as its only voter (only the first node of a cluster
// does that); otherwise the replica waits to be added by the group's leader.
func (m *Manager) Open(p int, bootstrap bool) (*Group, error) {
	if p < 0 || p >= len(m.groups) {
		return nil, fmt.Errorf("raftgroup: partition %d out of range [0, %d)", p, len(m.groups))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if g := m.groups[p].Load(); g != nil {
		return g, nil
	}
	if m.failed[p] {
		return nil, fmt.Errorf("raftgroup: partition %d: %w", p, errStateMachineFailed)
	}
	g, err := newGroup(m, p, bootstrap)
	if err != nil {
		return nil, err
	}
	m.groups[p].Store(g)
	m.cfg.Logger.Debug("replica opened", "partition", p, "bootstrap", bootstrap)
	return g, nil
}

// Drop stops this node's replica of partition p and frees its memory.
func (m *Manager) Drop(p int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.Group(p)
	if g == nil {
		return
	}
	m.groups[p].Store(nil)
	failed := g.Failed()
	if failed {
		m.failed[p] = true
	}
	g.shutdown()
	if dir := m.cfg.Storage.DataDir; dir != "" && !failed {
		// A failed replica's files are kept for inspection; the node does not reopen it.
		if err := removeReplicaDir(PartitionDir(dir, p)); err != nil {
			m.cfg.Logger.Warn("deleting a dropped replica's directory", "partition", p, "err", err)
		}
	}
	m.cfg.Logger.Debug("replica dropped", "partition", p)
}

// restartReplica stops g, a durable replica of partition p whose log write failed (a full
// disk, an I/O error), and opens it again from its directory a second later, retrying every
// second until it opens or the manager closes. The writes of that batch failed with the
// error raft got; what the replica had synced is on disk, and once open again it catches up
// from its peers. It is called on raft's goroutine and takes none of the manager's locks
// there: Drop and Close hold m.mu while they wait for raft to stop.
func (m *Manager) restartReplica(p int, g *Group, cause error) {
	m.restartMu.Lock()
	defer m.restartMu.Unlock()
	if m.restartsClosed {
		return
	}
	m.restarts.Add(1)
	go func() {
		defer m.restarts.Done()
		m.cfg.Logger.Warn("a replica's log write failed; restarting it from disk", "partition", p, "err", cause)
		m.mu.Lock()
		if m.groups[p].Load() == g {
			m.groups[p].Store(nil)
		}
		m.mu.Unlock()
		g.shutdown()
		for {
			select {
			case <-m.stop:
				return
			case <-time.After(time.Second):
			}
			_, err := m.Open(p, false)
			if err == nil || errors.Is(err, ErrClosed) {
				m.cfg.Logger.Info("replica restarted from disk", "partition", p, "err", err)
				return
			}
			m.cfg.Logger.Warn("reopening a replica from disk", "partition", p, "err", err)
		}
	}()
}

// Fsyncs returns how many times the node's durable replicas have forced their logs to disk.
func (m *Manager) Fsyncs() uint64 { return m.disk.fsyncs.Load() }

// Durable reports whether the groups keep their state under Storage.DataDir.
func (m *Manager) Durable() bool { return m.cfg.Storage.DataDir != "" }

// Hosted returns the groups this node runs.
func (m *Manager) Hosted() []*Group {
	var out []*Group
	for i := range m.groups {
		if g := m.groups[i].Load(); g != nil {
			out = append(out, g)
		}
	}
	return out
}

// WaitApplied waits until this node's replica of partition p has applied index. It serves the
// leader's question for writes acknowledged by more replicas than a majority, and the
// catch-up check before a new replica becomes a voter.
func (m *Manager) WaitApplied(ctx context.Context, p int, index uint64) error {
	g := m.Group(p)
	if g == nil {
		return fmt.Errorf("raftgroup: partition %d is not hosted here", p)
	}
	return g.waitApplied(ctx, index)
}

// Close stops every group and returns once every goroutine the manager and its groups
// started has ended. Idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	groups := m.Hosted()
	for i := range m.groups {
		m.groups[i].Store(nil)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.shutdown()
		}()
	}
	wg.Wait()
	m.restartMu.Lock()
	if !m.restartsClosed {
		m.restartsClosed = true
		close(m.stop)
	}
	m.restartMu.Unlock()
	m.restarts.Wait()
	if m.confirm != nil {
		m.confirm.close()
	}
	return nil
}

// Retryable reports whether err says the request never entered a log, so it may be sent
// again (to the leader it names, if any).
func Retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout)
}
