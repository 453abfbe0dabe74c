package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
	"github.com/hashicorp/raft"
)

// Group is one hosted partition: its Raft instance, state machine, proposal batcher and read
// index loop. All methods are safe for concurrent use.
type Group struct {
	id     int
	m      *Manager
	logger *slog.Logger
	self   raft.ServerID

	part     *store.Partition
	fsm      *fsm
	logs     *appendNotifier
	snaps    snapshotStore
	disk     *diskStores // nil for a replica in memory
	trans    *transport.RaftTransport
	raft     *raft.Raft
	created  time.Time
	proposal chan *proposal
	reads    chan readRequest
	inflight chan struct{}  // one token per batch submitted to raft and not yet resolved
	resolve  chan submitted // batches in log order, for the resolver goroutine

	// readyTerm is the term in which this replica, as leader, completed a barrier: from then
	// on its commit index covers every earlier term's entries and it may serve reads.
	readyTerm atomic.Uint64
	// barrierIndex is the log index of that barrier, stored before readyTerm.
	barrierIndex atomic.Uint64

	snapshotNow chan struct{} // requestSnapshot -> snapshotLoop

	// commitSent is the highest commit index a nudge (see nudgeCommit) carries to followers.
	commitSent atomic.Uint64

	// entries and commands count the log entries this replica proposed as leader and the
	// commands they carried: commands per entry is how well proposals batch.
	entries, commands atomic.Uint64
	// leaderChanges counts the leaders this replica learned of (see countLeaderChanges).
	leaderChanges atomic.Uint64
	// Read counters, see ReadStats.
	confirmedReads, vouchedReads, readRounds, heartbeatRounds atomic.Uint64
	// preferredPeer is the raft.ServerID that last said yes to one of this group's term
	// checks: asked first.
	preferredPeer atomic.Value

	done chan struct{} // closed by shutdown once the Raft instance has stopped
	// ctx is cancelled by shutdown: the calls this group makes to other nodes (WaitApplied
	// questions) derive from it, so none waits out its own timeout after the group stopped.
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	// wg counts every goroutine the group starts (its loops, and one per question to another
	// replica); shutdown waits for them all.
	wg sync.WaitGroup
}

func newGroup(m *Manager, id int, bootstrap bool) (*Group, error) {
	cfg := m.cfg
	g := &Group{
		id:       id,
		m:        m,
		logger:   cfg.Logger.With("partition", id),
		self:     ServerID(cfg.NodeID, cfg.Incarnation),
		part:     store.NewPartition(cfg.Storage, cfg.Accountant),
		created:  time.Now(),
		proposal: make(chan *proposal, 4096),
		reads:    make(chan readRequest, 4096),
		inflight: make(chan struct{}, cfg.Tuning.MaxInflightBatches),
		resolve:  make(chan submitted, cfg.Tuning.MaxInflightBatches),
		done:     make(chan struct{}),

		snapshotNow: make(chan struct{}, 1),
	}
	var stores *replicaStores
	if cfg.Storage.DataDir != "" {
		disk, err := openDisk(PartitionDir(cfg.Storage.DataDir, id), m.disk, cfg.Logger, id)
		if err != nil {
			g.part.Close()
			return nil, fmt.Errorf("raftgroup: partition %d: %w", id, err)
		}
		g.disk = disk
		disk.log.failed = func(err error) { m.restartReplica(id, g, err) }
		stores = newDiskReplicaStores(g.part, disk)
	} else {
		stores = newReplicaStores(g.part)
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.fsm, g.logs, g.snaps = stores.fsm, stores.logs, stores.snaps
	g.fsm.observer = cfg.Observer
	stores.snaps.setOnResend(g.requestSnapshot)

	local := ServerAddress(cfg.Addr, cfg.Incarnation)
	trans, err := cfg.Network.RaftTransport(transport.RaftConfig{
		Group:       uint32(id),
		Local:       raft.ServerAddress(local),
		Incarnation: cfg.Incarnation,
		Resolve:     SplitAddress,
		Timeout:     cfg.Tuning.RPCTimeout,
	})
	if err != nil {
		g.cancel()
		g.part.Close()
		if g.disk != nil {
			g.disk.close()
		}
		return nil, fmt.Errorf("raftgroup: partition %d: %w", id, err)
	}
	g.trans = trans

	rc := raft.DefaultConfig()
	rc.LocalID = g.self
	rc.HeartbeatTimeout = cfg.Tuning.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Tuning.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Tuning.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Tuning.CommitTimeout
	rc.SnapshotThreshold = cfg.Tuning.SnapshotThreshold
	rc.SnapshotInterval = cfg.Tuning.SnapshotInterval
	rc.TrailingLogs = cfg.Tuning.TrailingLogs
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.ShutdownOnRemove = true
	// raft reports every replication round to the process's go-metrics sink twice, once
	// under a key naming the peer (its older form); the labelled form is enough, and each
	// report costs allocations on the write path.
	rc.NoLegacyTelemetry = true
	// A replica in memory starts empty; a durable one starts from its newest snapshot.
	rc.NoSnapshotRestoreOnStart = g.disk == nil
	rc.Logger = raftLogger(cfg.Logger, id)

	r, err := raft.NewRaft(rc, g.fsm, g.logs, stores.stable, stores.snaps, g.trans)
	if err != nil {
		g.cancel()
		g.trans.Close()
		g.part.Close()
		if g.disk != nil {
			g.disk.close()
		}
		return nil, fmt.Errorf("raftgroup: partition %d: %w", id, err)
	}
	g.raft = r
	g.countLeaderChanges()
	g.fsm.setFailStop(g.logger, func() { _ = r.Shutdown().Error() })
	if bootstrap {
		boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: g.self, Address: local}}}
		if err := r.BootstrapCluster(boot).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			g.shutdown()
			return nil, fmt.Errorf("raftgroup: partition %d: bootstrap: %w", id, err)
		}
	}
	g.wg.Add(4)
	go g.batchLoop()
	go g.resolveLoop()
	go g.readLoop()
	go g.snapshotLoop()
	return g, nil
}

// replicaStores are what one replica's Raft instance runs on: the state machine over its
// partition, the log, stable and snapshot stores, wired so that a snapshot install can never
// leave raft a gap in the log to replay over (see replayLog).
type replicaStores struct {
	fsm    *fsm
	log    *replayLog
	logs   *appendNotifier // log, as raft writes to it
	stable raft.StableStore
	snaps  snapshotStore
}

// snapshotStore is a group's snapshot store: viewSnapshotStore in memory, fileSnapshots on
// disk.
type snapshotStore interface {
	raft.SnapshotStore
	// setOnResend sets what runs when a snapshot is opened to be sent again.
	setOnResend(func())
	// restored settles the install whose restore just ended with err.
	restored(err error)
	// close waits for what the store runs on its own, and starts no more.
	close()
}

func newReplicaStores(part *store.Partition) *replicaStores {
	s := &replicaStores{fsm: newFSM(part), stable: raft.NewInmemStore(), snaps: &viewSnapshotStore{}}
	s.log = newReplayLog(raft.NewInmemStore(), part.AppliedIndex)
	s.logs = newAppendNotifier(s.log)
	s.fsm.setRestoreGuard(s)
	return s
}

// newDiskReplicaStores wires a durable replica: raft-wal is its log and stable store. Its log
// is monotonic (no gaps), so raft clears it after restoring a snapshot, and a snapshot older
// than what the replica applied is refused rather than replayed over (see replayLog).
func newDiskReplicaStores(part *store.Partition, disk *diskStores) *replicaStores {
	s := &replicaStores{fsm: newFSM(part), stable: disk.wal, snaps: disk.snaps}
	s.log = newReplayLog(disk.log, part.AppliedIndex)
	s.log.noReplay = true
	s.log.keepAfter = disk.snaps.oldestSnapshot
	s.logs = newAppendNotifier(s.log)
	s.fsm.setRestoreGuard(s)
	return s
}

func (s *replicaStores) admit(index uint64) error { return s.log.admitRestore(index) }

func (s *replicaStores) done(err error) {
	s.log.restoreDone()
	s.snaps.restored(err)
}

// requestSnapshot asks snapshotLoop for a snapshot; it never blocks.
func (g *Group) requestSnapshot() {
	select {
	case g.snapshotNow <- struct{}{}:
	default:
	}
}

// snapshotLoop takes the snapshots requestSnapshot asks for, at most one a second. A leader
// opens its latest snapshot again when a follower did not take it; a follower refuses a
// snapshot older than what it applied when its log cannot replay from there (see replayLog),
// and would go on refusing it until this replica's next scheduled snapshot, which on an idle
// partition may never come.
func (g *Group) snapshotLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.snapshotNow:
		case <-g.done:
			return
		}
		err := g.await(g.raft.Snapshot())
		switch {
		case err == nil:
			g.logger.Debug("took a snapshot for a follower that did not take the previous one")
		case !errors.Is(err, raft.ErrNothingNewToSnapshot) && !errors.Is(err, raft.ErrRaftShutdown):
			g.logger.Warn("snapshot for a follower", "err", err)
		}
		select {
		case <-time.After(time.Second):
		case <-g.done:
			return
		}
	}
}

// ID returns the partition number.
func (g *Group) ID() int { return g.id }

// Partition returns the group's local state machine, for stale reads and inspection.
func (g *Group) Partition() *store.Partition { return g.part }

// IsLeader reports whether this replica currently believes it leads the group.
func (g *Group) IsLeader() bool { return g.raft.State() == raft.Leader }

// Stopped reports whether the group's Raft instance has stopped (for example after this
// replica was removed from the configuration) or is stopping after its state machine failed.
// The second is not left to raft's state alone: a message of a newer term handled just as raft
// shuts down can set the state back to Follower after Shutdown set it.
func (g *Group) Stopped() bool { return g.raft.State() == raft.Shutdown || g.fsm.failed.Load() }

// StaleReadable reports whether the local state may answer a stale read: false while a
// snapshot restore has taken it behind what it applied before, or while it is behind a floor
// set by RaiseStaleFloor (see fsm.highWater), so that stale reads through one node never go
// back in time.
func (g *Group) StaleReadable() bool { return !g.fsm.rewound() }

// RaiseStaleFloor keeps StaleReadable false until this replica has applied index: once its
// node has answered a read from another replica's state at index, a local answer from older
// state would go back in time.
func (g *Group) RaiseStaleFloor(index uint64) { g.fsm.raiseFloor(index) }

// Failed reports whether the replica's state machine failed (a panic during apply or
// restore): it stopped so as not to diverge, and must not come back under this identity.
func (g *Group) Failed() bool { return g.fsm.failed.Load() }

// LastContact returns the last time this replica heard from a leader (zero for a leader).
func (g *Group) LastContact() time.Time { return g.raft.LastContact() }

// Age returns how long ago this group was created on this node.
func (g *Group) Age() time.Duration { return time.Since(g.created) }

// Leader returns the node ID and host:port of the leader this replica knows of.
func (g *Group) Leader() (nodeID, addr string) {
	a, id := g.raft.LeaderWithID()
	if id == "" {
		return "", ""
	}
	nodeID, _ = NodeOf(id)
	hostPort, _, err := SplitAddress(a)
	if err != nil {
		return nodeID, ""
	}
	return nodeID, hostPort
}

// notLeader builds the error a caller gets when this replica cannot serve as leader.
func (g *Group) notLeader() error {
	id, addr := g.Leader()
	if id == g.m.cfg.NodeID {
		id, addr = "", ""
	}
	return &NotLeaderError{Group: g.id, LeaderID: id, LeaderAddr: addr}
}

// Configuration returns the group's latest Raft configuration as this replica knows it.
func (g *Group) Configuration() (raft.Configuration, error) {
	cfg, _, err := g.configuration()
	return cfg, err
}

// configuration also returns the log index of the configuration, which membership changes
// name so that two changes never race.
func (g *Group) configuration() (raft.Configuration, uint64, error) {
	f := g.raft.GetConfiguration()
	if err := g.await(f); err != nil {
		return raft.Configuration{}, 0, err
	}
	return f.Configuration(), f.Index(), nil
}

// waitApplied returns once this replica's state machine has applied index.
func (g *Group) waitApplied(ctx context.Context, index uint64) error {
	return g.fsm.waitApplied(ctx, g.done, index)
}

// shutdown stops the Raft instance and every goroutine of the group, failing waiting calls,
// and gives the partition's memory back. Idempotent.
func (g *Group) shutdown() {
	g.closeOnce.Do(func() {
		if err := g.raft.Shutdown().Error(); err != nil {
			g.logger.Warn("raft shutdown", "err", err)
		}
		g.fsm.waitStopped()
		g.snaps.close()
		close(g.done)
		g.cancel()
		g.wg.Wait()
		g.trans.Close()
		if g.disk != nil {
			g.disk.close()
		}
		g.part.Close()
	})
}

// await returns a raft future's error, or ErrRaftShutdown once the group's Raft instance has
// stopped.
//
// A raft future waits only for its answer, and raft does not answer every future it took: an
// Apply still queued, or a batch still on its way to the state machine, when raft shuts down
// is dropped, and Error then blocks for ever (hashicorp/raft #498). The group's shutdown waits
// for its goroutines, so one of them stuck on such a future would hang Close. Raft's futures
// also end their wait on their exported ShutdownCh field, which raft sets on only a few of its
// own; await sets it to g.done, closed once the instance has stopped. A future raft did answer
// may then still read as ErrRaftShutdown, which callers map to ErrClosed: the group is closing.
func (g *Group) await(f raft.Future) error {
	bindShutdown(f, g.done)
	return f.Error()
}

// bindShutdown sets f's ShutdownCh to ch and reports whether f has one (a future raft answered
// at once, such as an enqueue error, has none and needs none). TestAwaitCoversEveryFuture
// checks that every kind of future this package waits on has the field.
func bindShutdown(f raft.Future, ch chan struct{}) bool {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	index := shutdownField(v.Type())
	if index == nil {
		return false
	}
	v.Elem().FieldByIndex(index).Set(reflect.ValueOf(ch))
	return true
}

// shutdownFields caches, per future type (a pointer to a struct), the index path of its
// settable ShutdownCh field, nil when it has none. Looking the field up by name costs about
// 0.5 µs and five allocations, on every batch.
var shutdownFields sync.Map // reflect.Type -> []int

func shutdownField(t reflect.Type) []int {
	if index, ok := shutdownFields.Load(t); ok {
		return index.([]int)
	}
	var index []int
	if t.Elem().Kind() == reflect.Struct {
		if sf, ok := t.Elem().FieldByName("ShutdownCh"); ok && sf.IsExported() && sf.Type == reflect.TypeFor[chan struct{}]() {
			index = sf.Index
		}
	}
	shutdownFields.Store(t, index)
	return index
}

// mapRaftError turns an error from a raft future into this package's errors. appended says
// whether the command may have reached the log.
func (g *Group) mapRaftError(err error, appended bool) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return g.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("raftgroup: partition %d: %w", g.id, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case !appended && errors.Is(err, raft.ErrLeadershipLost):
		// A read's barrier or leadership check lost to a new leader: nothing was decided,
		// so the read may run again on the new leader.
		return g.notLeader()
	case appended:
		return fmt.Errorf("raftgroup: partition %d: %w: %v", g.id, ErrOutcomeUnknown, err)
	default:
		return fmt.Errorf("raftgroup: partition %d: %w", g.id, err)
	}
}

// TransferLeadership hands this replica's leadership to the most up-to-date voter and waits
// for the hand-off. Used before a graceful stop.
func (g *Group) TransferLeadership() error {
	return g.await(g.raft.LeadershipTransfer())
}
