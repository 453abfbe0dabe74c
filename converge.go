package gridkv

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/feellmoose/gridkv/membership"
	"github.com/feellmoose/gridkv/raftgroup"
)

// convergeLoop keeps this node's groups converging on the ring's placement for the live
// members: it opens replicas placed here, has the groups this node leads add, promote and
// remove replicas one step at a time, hands leadership to preferred replicas, drops replicas
// no longer placed here, and gossips which partitions this node leads.
func (kv *GridKV) convergeLoop() {
	defer kv.wg.Done()
	var deadSince map[string]time.Time
	tick := time.NewTicker(kv.cfg.timings.ReconcileInterval)
	defer tick.Stop()
	offset := 0
	for {
		deadSince = kv.convergeTick(deadSince, offset)
		kv.peers.Prune()
		kv.rememberPeers()
		offset++
		select {
		case <-kv.done:
			return
		case <-tick.C:
		case <-kv.poke:
		}
	}
}

// rememberPeers keeps a durable node's record of the other live members' addresses current,
// so that started again it can find its cluster without seeds.
func (kv *GridKV) rememberPeers() {
	if kv.data == nil {
		return
	}
	var addrs []string
	for _, m := range kv.members.Members() {
		if m.ID != kv.cfg.nodeID && (m.State == membership.StateAlive || m.State == membership.StateSuspect) {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) == 0 {
		return // alone for now: keep the peers it had
	}
	if err := kv.data.savePeers(addrs); err != nil {
		kv.cfg.logger.Warn("recording the cluster's members in Storage.DataDir", "err", err)
	}
}

func (kv *GridKV) convergeTick(deadSince map[string]time.Time, offset int) map[string]time.Time {
	view, deadSince := buildView(viewInput{
		members:    kv.members.Members(),
		deadSince:  deadSince,
		now:        time.Now(),
		deadGrace:  kv.cfg.timings.DeadGrace,
		partitions: kv.cfg.partitions,
		replicas:   kv.cfg.replicas,
	})
	byID := view.byID
	kv.view.Store(view)
	kv.dropStaleHints(byID)
	if kv.closed.Load() {
		return deadSince
	}

	for p, desired := range view.placement {
		if placedHere(desired, kv.cfg.nodeID) && kv.groups.Group(p) == nil {
			if _, err := kv.groups.Open(p, false); err != nil {
				kv.cfg.logger.Debug("opening replica", "partition", p, "err", err)
			}
		}
	}

	hosted := kv.groups.Hosted()
	changes := 0
	asked := false
	var leads []int
	heartbeat := kv.cfg.timings.Raft.HeartbeatTimeout
	for i := range hosted {
		g := hosted[(i+offset)%len(hosted)]
		p := g.ID()
		desired := view.placement[p]
		switch {
		case g.Stopped():
			kv.groups.Drop(p)
		case g.IsLeader():
			leads = append(leads, p)
			kv.expireDue(g)
			if changes >= kv.cfg.timings.MaxChangesPerTick {
				continue
			}
			balance := len(desired) > 0 && byID[desired[0].NodeID].State == membership.StateAlive
			change, err := g.Reconcile(desired, balance)
			if change != raftgroup.NoChange {
				changes++
				kv.cfg.logger.Debug("placement step", "partition", p, "change", change.String(), "err", err)
			} else if err != nil {
				kv.cfg.logger.Debug("placement", "partition", p, "err", err)
			}
		case !placedHere(desired, kv.cfg.nodeID) && g.Age() > 10*heartbeat && time.Since(g.LastContact()) > 5*heartbeat:
			// Not placed here and no leader talks to it any more. It is dropped only once it
			// is out of the group for good: a replica dropped while the group still counts
			// it would come back empty under the same server ID (when placed here again, or
			// when that leader reaches it) and could vote without the entries it
			// acknowledged. At most one leader is asked per tick.
			switch {
			case g.Retired():
				kv.groups.Drop(p)
			case !asked:
				asked = true
				if kv.leaderSaysRemoved(view, g) {
					kv.groups.Drop(p)
				}
			}
		}
	}
	slices.Sort(leads)
	kv.members.SetLeads(leads)
	kv.noteHosted()
	return deadSince
}

// noteHosted tells the watch hub when the replicas this node hosts changed since the last
// tick: its watchers read a partition from the local replica when there is one.
func (kv *GridKV) noteHosted() {
	hosted := make([]bool, kv.cfg.partitions)
	for _, g := range kv.groups.Hosted() {
		hosted[g.ID()] = true
	}
	if !slices.Equal(hosted, kv.hosted) {
		kv.hosted = hosted
		kv.hub.SourcesChanged()
	}
}

// expireDue has g, which this node leads, propose the expiry of its keys whose deadline has
// passed by this node's clock, at most one round of proposals per group at a time. Replicas
// never expire keys on their own: every expiry is a command in the log.
func (kv *GridKV) expireDue(g *raftgroup.Group) {
	p := g.ID()
	if kv.expiring[p].Load() {
		return
	}
	cmds := g.Partition().Expired(time.Now().UnixNano(), maxExpiriesPerTick)
	if len(cmds) == 0 {
		return
	}
	kv.expiring[p].Store(true)
	kv.wg.Add(1)
	go func() {
		defer kv.wg.Done()
		defer kv.expiring[p].Store(false)
		ctx, cancel := context.WithTimeout(kv.bg, kv.cfg.timings.Raft.ApplyTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, cmd := range cmds {
			wg.Go(func() {
				// The proposals share log entries; a key rewritten meanwhile is left alone.
				res, err := g.Propose(ctx, cmd, raftgroup.WriteLevel{Ack: raftgroup.AckCommit})
				switch {
				case err == nil && res.Err == nil:
					kv.metrics.expired()
				case err != nil && ctx.Err() == nil:
					kv.cfg.logger.Debug("proposing an expiry", "partition", p, "err", err)
				}
			})
		}
		wg.Wait()
	}()
}

// maxExpiriesPerTick bounds the expiries a leader proposes per group and convergence tick.
const maxExpiriesPerTick = 1024

// pokeConvergence runs on membership changes: the convergence loop takes a fresh look at once
// instead of at its next tick. It may run before NewGridKV returns, so it touches nothing but
// the channel.
func (kv *GridKV) pokeConvergence() {
	select {
	case kv.poke <- struct{}{}:
	default:
	}
}

// dropStaleHints forgets leader hints that point at members no longer alive.
func (kv *GridKV) dropStaleHints(byID map[string]membership.Member) {
	for p := range kv.hints {
		if h := kv.hints[p].Load(); h != nil {
			if m, ok := byID[h.id]; !ok || (m.State != membership.StateAlive && m.State != membership.StateSuspect) {
				kv.hints[p].Store(nil)
			}
		}
	}
}

// leaderSaysRemoved asks the leader of g's partition, as gossip names it, whether g's
// replica was removed from the group for good.
func (kv *GridKV) leaderSaysRemoved(view *clusterView, g *raftgroup.Group) bool {
	hint, ok := view.gossipLeaders[g.ID()]
	if !ok || hint.id == kv.cfg.nodeID {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	removed, err := kv.peers.Removed(ctx, hint.addr, g.ID(), g.ServerID())
	if err != nil {
		kv.cfg.logger.Debug("asking whether a replica was removed", "partition", g.ID(), "leader", hint.id, "err", err)
	}
	return removed
}
