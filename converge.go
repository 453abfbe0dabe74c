package gridkv

import (
	"context"
	"slices"
	"time"

	"github.com/feellmoose/gridkv/membership"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
)

// clusterView is one consistent picture of the cluster, rebuilt by the placement loop and
// read lock-free by requests.
type clusterView struct {
	members       []membership.Member
	placement     [][]raftgroup.Member // desired replicas per partition, preferred leader first
	gossipLeaders map[int]leaderHint   // from the leader tables members gossip
}

// placementLoop keeps this node's groups converging on the ring's placement for the live
// members: it opens replicas placed here, has the groups this node leads add, promote and
// remove replicas one step at a time, hands leadership to preferred replicas, drops replicas
// no longer placed here, and gossips which partitions this node leads.
func (kv *GridKV) placementLoop() {
	defer kv.wg.Done()
	deadSince := make(map[string]time.Time)
	tick := time.NewTicker(kv.cfg.timings.ReconcileInterval)
	defer tick.Stop()
	offset := 0
	for {
		kv.placementTick(deadSince, offset)
		kv.peers.Prune()
		offset++
		select {
		case <-kv.done:
			return
		case <-tick.C:
		case <-kv.poke:
		}
	}
}

func (kv *GridKV) placementTick(deadSince map[string]time.Time, offset int) {
	now := time.Now()
	members := kv.members.Members()
	byID := make(map[string]membership.Member, len(members))
	var live []string
	for _, m := range members {
		byID[m.ID] = m
		switch m.State {
		case membership.StateAlive, membership.StateSuspect:
			delete(deadSince, m.ID)
			live = append(live, m.ID)
		case membership.StateDead:
			if _, ok := deadSince[m.ID]; !ok {
				deadSince[m.ID] = now
			}
			if now.Sub(deadSince[m.ID]) < kv.cfg.timings.DeadGrace {
				live = append(live, m.ID)
			}
		}
	}
	view := &clusterView{
		members:       members,
		placement:     make([][]raftgroup.Member, kv.cfg.partitions),
		gossipLeaders: make(map[int]leaderHint),
	}
	for p, ids := range ring.Place(kv.cfg.partitions, kv.cfg.replicas, live) {
		for _, id := range ids {
			m := byID[id]
			view.placement[p] = append(view.placement[p], raftgroup.Member{NodeID: id, Incarnation: m.Incarnation, Addr: m.Addr})
		}
	}
	for _, m := range members {
		if m.State != membership.StateAlive {
			continue
		}
		for _, p := range m.Leads {
			if p >= 0 && p < kv.cfg.partitions {
				view.gossipLeaders[p] = leaderHint{id: m.ID, addr: m.Addr}
			}
		}
	}
	kv.view.Store(view)
	kv.dropStaleHints(byID)
	if kv.closed.Load() {
		return
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
		case g.Shutdown():
			kv.groups.Drop(p)
		case g.IsLeader():
			leads = append(leads, p)
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
}

func placedHere(desired []raftgroup.Member, nodeID string) bool {
	for _, m := range desired {
		if m.NodeID == nodeID {
			return true
		}
	}
	return false
}

// pokePlacement runs on membership changes: the placement loop takes a fresh look at once
// instead of at its next tick. It may run before NewGridKV returns, so it touches nothing but
// the channel.
func (kv *GridKV) pokePlacement() {
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
