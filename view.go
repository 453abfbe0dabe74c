package gridkv

import (
	"time"

	"github.com/feellmoose/gridkv/membership"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/ring"
)

// clusterView is one consistent picture of the cluster, rebuilt by the convergence loop and
// read lock-free by requests.
type clusterView struct {
	members       []membership.Member
	byID          map[string]membership.Member
	placement     [][]raftgroup.Replica // desired replicas per partition, preferred leader first
	gossipLeaders map[int]leaderHint    // from the leader tables members gossip
}

// viewInput is what a clusterView is built from: the members as gossip reports them, since
// when each dead one has been dead, and the clock and settings that decide what counts.
type viewInput struct {
	members    []membership.Member
	deadSince  map[string]time.Time // member ID -> first seen dead; members not dead are absent
	now        time.Time
	deadGrace  time.Duration
	partitions int
	replicas   int
}

// buildView decides which members hold replicas and who leads what, with no I/O and no
// clock of its own. A member alive or suspect holds replicas. A dead one keeps its place
// until it has been dead for deadGrace, so a node that flaps causes no churn. A member that
// left gracefully holds none: it said it is gone. Gossiped leader tables count only from
// members alive now. It returns the view and the dead-since table for the next build.
func buildView(in viewInput) (*clusterView, map[string]time.Time) {
	view := &clusterView{
		members:       in.members,
		byID:          make(map[string]membership.Member, len(in.members)),
		placement:     make([][]raftgroup.Replica, in.partitions),
		gossipLeaders: make(map[int]leaderHint),
	}
	deadSince := make(map[string]time.Time)
	var live []string
	for _, m := range in.members {
		view.byID[m.ID] = m
		switch m.State {
		case membership.StateAlive, membership.StateSuspect:
			live = append(live, m.ID)
		case membership.StateDead:
			since, ok := in.deadSince[m.ID]
			if !ok {
				since = in.now
			}
			deadSince[m.ID] = since
			if in.now.Sub(since) < in.deadGrace {
				live = append(live, m.ID)
			}
		}
	}
	for p, ids := range ring.Place(in.partitions, in.replicas, live) {
		for _, id := range ids {
			m := view.byID[id]
			view.placement[p] = append(view.placement[p], raftgroup.Replica{NodeID: id, Incarnation: m.Incarnation, Addr: m.Addr})
		}
	}
	for _, m := range in.members {
		if m.State != membership.StateAlive {
			continue
		}
		for _, p := range m.Leads {
			if p >= 0 && p < in.partitions {
				view.gossipLeaders[p] = leaderHint{id: m.ID, addr: m.Addr}
			}
		}
	}
	return view, deadSince
}

// placedHere reports whether nodeID is among the desired replicas.
func placedHere(desired []raftgroup.Replica, nodeID string) bool {
	for _, m := range desired {
		if m.NodeID == nodeID {
			return true
		}
	}
	return false
}
