package gridkv

// Status is this node's view of the cluster.
type Status struct {
	NodeID     string
	Members    []Member
	Partitions []PartitionStatus
}

// Member is a node as gossip reports it.
type Member struct {
	ID      string
	Address string
	State   string // "alive", "suspect", "dead" or "left"
}

// PartitionStatus describes one partition. For a partition this node hosts, Leader and
// Replicas come from its own Raft group; for one it does not host, from gossip and the
// placement, and may lag behind. Replicas lists voters only: a new replica still catching
// up appears once it has been promoted.
type PartitionStatus struct {
	ID       int
	Leader   string   // node ID of the leader as this node knows it; "" if unknown
	Replicas []string // node IDs of the voters in the group's Raft configuration, as this node knows it
}

// Status returns this node's view of the cluster.
func (kv *GridKV) Status() Status {
	st := Status{NodeID: kv.cfg.nodeID}
	if kv.closed.Load() {
		return st
	}
	for _, m := range kv.members.Members() {
		st.Members = append(st.Members, Member{ID: m.ID, Address: m.Addr, State: m.State.String()})
	}
	view := kv.view.Load()
	for p := 0; p < kv.cfg.partitions; p++ {
		ps := PartitionStatus{ID: p}
		ps.Leader, _ = kv.leaderOf(p)
		if g := kv.groups.Group(p); g != nil {
			// A learner still catching up holds no vote yet, and is not listed.
			ps.Replicas, _ = g.Voters()
		} else if view != nil {
			for _, m := range view.placement[p] {
				ps.Replicas = append(ps.Replicas, m.NodeID)
			}
		}
		st.Partitions = append(st.Partitions, ps)
	}
	return st
}
