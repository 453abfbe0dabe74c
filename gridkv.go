package gridkv

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv/internal/protocol"
	"github.com/feellmoose/gridkv/internal/watch"
	"github.com/feellmoose/gridkv/membership"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
)

// GridKV is one node of a GridKV cluster and the handle the application uses. Every method is
// safe for concurrent use.
type GridKV struct {
	cfg         config
	incarnation uint64

	trans   *transport.Transport
	members *membership.Membership
	groups  *raftgroup.Manager
	acct    *store.Accountant

	// hints[p] is the leader of partition p as last reported by a peer or gossip; it saves a
	// hop when this node does not host p's leader.
	hints []atomic.Pointer[leaderHint]
	// view is the latest placement and member table, rebuilt by the convergence loop.
	view atomic.Pointer[clusterView]

	// poke wakes the convergence loop early (membership changed).
	poke chan struct{}

	// peers sends this node's requests to other nodes: forwarded operations, batched per
	// peer, and the calls the groups make.
	peers *protocol.Client
	// hub serves this node's watchers.
	hub *watch.Hub
	// metrics is the node's instrumentation; nil without GridKVOptions.Metrics.
	metrics *nodeMetrics
	// data is the node's open DataDir; nil for a node in memory.
	data *dataDir
	// hosted is which partitions this node hosted at the last convergence tick; only the
	// convergence loop uses it.
	hosted []bool
	// expiring[p] is set while partition p's expiries are being proposed.
	expiring []atomic.Bool
	// bg is cancelled when Close begins: work the node started on its own stops.
	bg       context.Context
	cancelBG context.CancelFunc

	closed    atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // the convergence loop
	handoffs  sync.WaitGroup // leadership hand-offs started by Close
}

type leaderHint struct {
	id   string
	addr string
}

// NewGridKV starts a node: it binds LocalAddress, joins the cluster through SeedAddrs (or
// creates a new cluster without them), and starts hosting the partitions placed on it. It
// returns once the node has joined; use WaitReady to wait until every partition has a leader.
func NewGridKV(opts *GridKVOptions) (*GridKV, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	kv := &GridKV{
		incarnation: newIncarnation(),
		acct:        store.NewAccountant(cfg.storage.MaxMemoryMB),
		metrics:     newNodeMetrics(opts.Metrics),
		done:        make(chan struct{}),
		poke:        make(chan struct{}, 1),
	}
	kv.bg, kv.cancelBG = context.WithCancel(context.Background())
	log := cfg.logger.With("node", cfg.nodeID)

	// A node started again on its DataDir is the node it was: same incarnation (so the same
	// Raft server IDs), same cluster, same settings.
	var restart *identity
	if dir := cfg.storage.DataDir; dir != "" {
		if kv.data, err = openDataDir(dir, cfg.nodeID); err != nil {
			return nil, err
		}
		if restart = kv.data.found; restart != nil {
			kv.incarnation, _ = restart.incarnation()
			if err := cfg.adoptCluster(restart.Partitions, restart.Replicas); err != nil {
				kv.data.close()
				return nil, fmt.Errorf("%w (the cluster of Storage.DataDir %q)", err, dir)
			}
		}
	}

	if addr := cfg.unprotectedExposure(); addr != "" {
		log.Warn("gridkv: listening on a non-loopback address without a ClusterKey: anyone who can reach it can join the cluster and read or write its data",
			"addr", addr)
	}
	kv.trans, err = transport.Listen(cfg.network, cfg.addr, log)
	if err != nil {
		kv.data.close()
		return nil, fmt.Errorf("gridkv: listen on %s: %w", cfg.network.BindAddr, err)
	}
	kv.peers = protocol.NewClient(kv.trans, cfg.network.MaxFrameSize, kv.forgetLeader)

	// Only a node without seeds and without state creates a cluster. A node with state
	// rejoins its own, seeds or not.
	bootstrap := len(cfg.seeds) == 0 && restart == nil
	clusterID := ""
	var peers []string
	switch {
	case restart != nil:
		clusterID, peers = restart.ClusterID, restart.Peers
	case bootstrap:
		clusterID = membership.NewClusterSettingsID(cfg.partitions, cfg.replicas)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timings.JoinTimeout+5*time.Second)
	defer cancel()
	kv.members, err = membership.Start(ctx, membership.Config{
		NodeID:      cfg.nodeID,
		Addr:        kv.trans.Addr(),
		Incarnation: kv.incarnation,
		ClusterID:   clusterID,
		Seeds:       cfg.seeds,
		Rejoin:      restart != nil,
		Peers:       peers,
		Transport:   kv.trans.Gossip(),
		Timing:      cfg.timings.Gossip,
		JoinTimeout: cfg.timings.JoinTimeout,
		SecretKey:   cfg.network.ClusterKey,
		Logger:      log,
		OnChange:    kv.pokeConvergence,
	})
	if err != nil {
		kv.peers.Close()
		kv.trans.Close()
		kv.data.close()
		return nil, fmt.Errorf("gridkv: joining the cluster: %w", err)
	}
	if partitions, replicas, ok := membership.ClusterSettings(kv.members.ClusterID()); ok && !bootstrap {
		if err := cfg.adoptCluster(partitions, replicas); err != nil {
			// Nothing is hosted yet: leave at once, and the cluster replaces nothing.
			if lerr := kv.members.Leave(time.Second); lerr != nil {
				log.Debug("leave", "err", lerr)
			}
			kv.shutdown()
			return nil, err
		}
	}
	if kv.data != nil && restart == nil {
		// Written before any replica's directory exists: a directory with replicas always
		// says whose they are.
		if err := kv.data.save(identity{
			Format: identityFormat, ClusterID: kv.members.ClusterID(), NodeID: cfg.nodeID,
			Incarnation: strconv.FormatUint(kv.incarnation, 16), Partitions: cfg.partitions, Replicas: cfg.replicas,
		}); err != nil {
			kv.shutdown()
			return nil, err
		}
	}
	kv.cfg = cfg
	kv.hints = make([]atomic.Pointer[leaderHint], cfg.partitions)
	kv.expiring = make([]atomic.Bool, cfg.partitions)
	kv.groups = raftgroup.NewManager(raftgroup.Config{
		NodeID:       cfg.nodeID,
		Incarnation:  kv.incarnation,
		Addr:         cfg.addr,
		Partitions:   cfg.partitions,
		Storage:      cfg.storage,
		Accountant:   kv.acct,
		Network:      kv.trans,
		WaitApplied:  kv.peers.WaitApplied,
		ConfirmTerms: kv.peers.TermChecks,
		Tuning:       cfg.timings.Raft,
		Logger:       log,
		Observer:     kv.metrics.raftObserver(),
	})
	kv.hub = watch.NewHub(watch.Config{
		Partitions:   cfg.partitions,
		Local:        kv.localSource,
		Fetch:        kv.fetchEvents,
		MirrorEvents: cfg.storage.HistoryEvents,
		Logger:       log,
	})
	protocol.NewServer(replicas{kv}, cfg.partitions, cfg.network.MaxFrameSize, log).Register(kv.trans)
	kv.trans.SetUnknownGroupHandler(kv.openOnDemand)

	switch {
	case restart != nil:
		// Every replica this node kept comes back as the member it was; raft's own
		// configuration, in its log and snapshots, says of which group.
		onDisk, err := raftgroup.PartitionsOnDisk(cfg.storage.DataDir)
		if err == nil {
			for _, p := range onDisk {
				if p >= cfg.partitions {
					err = fmt.Errorf("a replica of partition %d, beyond the cluster's %d", p, cfg.partitions)
					break
				}
				if _, err = kv.groups.Open(p, false); err != nil {
					break
				}
			}
		}
		if err != nil {
			kv.shutdown()
			return nil, fmt.Errorf("gridkv: reopening the replicas in Storage.DataDir %q: %w", cfg.storage.DataDir, err)
		}
		log.Info("restarted from disk", "cluster", kv.members.ClusterID(), "data_dir", cfg.storage.DataDir,
			"replicas", len(onDisk), "incarnation", strconv.FormatUint(kv.incarnation, 16))
	case bootstrap:
		for p := 0; p < cfg.partitions; p++ {
			if _, err := kv.groups.Open(p, true); err != nil {
				kv.shutdown()
				return nil, fmt.Errorf("gridkv: starting partition %d: %w", p, err)
			}
		}
		log.Info("created a new cluster", "cluster", kv.members.ClusterID(), "partitions", cfg.partitions)
	default:
		log.Info("joined the cluster", "cluster", kv.members.ClusterID(), "seeds", cfg.seeds,
			"partitions", cfg.partitions, "replicas", cfg.replicas)
	}
	if err := kv.metrics.register(kv); err != nil {
		_ = kv.Close() // leaves the cluster it just joined
		return nil, err
	}
	kv.wg.Add(1)
	go kv.convergeLoop()
	return kv, nil
}

// WaitReady returns nil once this node has joined (when it has seeds) and every partition has
// a known leader, or ctx's error.
func (kv *GridKV) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if kv.closed.Load() {
			return ErrClosed
		}
		ready := true
		for p := 0; p < kv.cfg.partitions && ready; p++ {
			id, _ := kv.leaderOf(p)
			ready = id != ""
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-kv.done:
			return ErrClosed
		case <-tick.C:
		}
	}
}

// Close leaves the cluster and stops everything the instance started. Idempotent; later calls
// on the instance return ErrClosed.
func (kv *GridKV) Close() error {
	kv.closeOnce.Do(func() {
		kv.metrics.unregister()
		kv.closed.Store(true)
		close(kv.done)
		kv.cancelBG()
		kv.peers.Close()
		kv.wg.Wait()
		kv.handOffLeadership()
		// A node in memory leaves for good: its replicas are replaced at once. A durable
		// node stops to come back with its data, as the same member of every group: it
		// does not leave, and is replaced only if it stays away past DeadGrace.
		if kv.data == nil {
			if err := kv.members.Leave(time.Second); err != nil {
				kv.cfg.logger.Debug("leave", "err", err)
			}
			kv.awaitRemoval(5 * time.Second)
		}
		kv.closeErr = kv.shutdown()
		// A hand-off still waiting on raft ended when its group stopped.
		kv.handoffs.Wait()
	})
	return kv.closeErr
}

// shutdown stops groups, gossip and the transport, in that order: groups still talk over the
// transport while they stop.
func (kv *GridKV) shutdown() error {
	kv.cancelBG()
	if kv.hub != nil {
		kv.hub.Close()
	}
	kv.peers.Close()
	if kv.groups != nil {
		kv.groups.Close()
	}
	var first error
	if err := kv.members.Shutdown(); err != nil {
		first = err
	}
	if err := kv.trans.Close(); err != nil && first == nil {
		first = err
	}
	kv.data.close()
	return first
}

// handOffLeadership moves the leadership of every group this node leads to another voter, so
// the cluster does not wait an election timeout for each. Best effort: it waits at most 2 s,
// and Close waits for the hand-offs still running once the groups have stopped.
func (kv *GridKV) handOffLeadership() {
	var wg sync.WaitGroup
	for _, g := range kv.groups.Hosted() {
		if !g.IsLeader() {
			continue
		}
		wg.Add(1)
		kv.handoffs.Add(1)
		go func() {
			defer kv.handoffs.Done()
			defer wg.Done()
			g.TransferLeadership()
		}()
	}
	waitTimeout(&wg, 2*time.Second)
}

// awaitRemoval waits, up to limit, until no group would lose its quorum when this node
// stops: leaders remove a member that left at once, and a group of one or two voters that
// still counts this node would otherwise stop committing, its own repair included.
func (kv *GridKV) awaitRemoval(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		atRisk := 0
		for _, g := range kv.groups.Hosted() {
			voters, self, err := g.VoterCount()
			if err == nil && self && voters <= 2 && voters > 1 {
				atRisk++
			}
		}
		if atRisk == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	kv.cfg.logger.Warn("closing while some partitions still count this node among two voters")
}

// waitTimeout waits for wg, at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	}
}

// openOnDemand creates this node's replica of a group when a leader contacts it first (the
// leader added it before this node's convergence loop opened it).
func (kv *GridKV) openOnDemand(group uint32) bool {
	if kv.closed.Load() || int(group) >= kv.cfg.partitions {
		return false
	}
	_, err := kv.groups.Open(int(group), false)
	return err == nil
}

func newIncarnation() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return binary.BigEndian.Uint64(b[:]) | 1
}
