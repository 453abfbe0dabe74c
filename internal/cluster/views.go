package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/ring"
)

// The predicates below look at the live nodes' own reports; they are conditions for WaitFor.
// Those that can say why they are false keep the reason for Describe, so that a WaitFor that
// times out names it.

// Formed reports whether every live node sees every live node alive, and every partition
// with a leader and min(live nodes, ReplicaCount) replicas.
func (c *Cluster) Formed() bool {
	live := c.Live()
	partitions, replicas := c.settings()
	want := min(len(live), replicas)
	for _, n := range live {
		st := n.KV.Status()
		if alive := AliveMembers(n.KV); alive != len(live) {
			return c.explain("formed", fmt.Sprintf("%s sees %d alive members, want %d", n.ID, alive, len(live)))
		}
		if len(st.Partitions) != partitions {
			return c.explain("formed", fmt.Sprintf("%s has %d partitions, want %d", n.ID, len(st.Partitions), partitions))
		}
		for _, p := range st.Partitions {
			if p.Leader == "" || len(p.Replicas) != want {
				return c.explain("formed", fmt.Sprintf("%s: partition %d has leader %q and replicas %v, want %d", n.ID, p.ID, p.Leader, p.Replicas, want))
			}
		}
	}
	return c.explain("formed", "")
}

// AliveMembers returns how many members kv sees alive, itself included.
func AliveMembers(kv *gridkv.GridKV) int {
	n := 0
	for _, m := range kv.Status().Members {
		if m.State == "alive" {
			n++
		}
	}
	return n
}

// Leaders returns, per partition, the Status entry of the live node that reports itself as the
// partition's leader (its Replicas come from that leader's own Raft configuration), and false
// if some partition has no such node.
func (c *Cluster) Leaders() ([]gridkv.PartitionStatus, bool) {
	partitions, _ := c.settings()
	out := make([]gridkv.PartitionStatus, partitions)
	found := make([]bool, partitions)
	for _, n := range c.Live() {
		for _, p := range n.KV.Status().Partitions {
			if p.Leader == n.ID && p.ID < partitions {
				out[p.ID], found[p.ID] = p, true
			}
		}
	}
	return out, !slices.Contains(found, false)
}

// LeaderCounts returns how many partitions each live node leads, by the nodes' own reports.
func (c *Cluster) LeaderCounts() map[string]int {
	counts := make(map[string]int)
	for _, n := range c.Live() {
		counts[n.ID] = 0
		for _, p := range n.KV.Status().Partitions {
			if p.Leader == n.ID {
				counts[n.ID]++
			}
		}
	}
	return counts
}

// MostLeader returns the index of the live node leading the most partitions.
func (c *Cluster) MostLeader() int {
	counts := c.LeaderCounts()
	best := ""
	for _, n := range c.Live() {
		if best == "" || counts[n.ID] > counts[best] {
			best = n.ID
		}
	}
	return c.Index(best)
}

// Balanced reports whether every partition has a leader that knows itself as such, and every
// live node leads at least one partition and none more than ceil(partitions/nodes)+2.
func (c *Cluster) Balanced() bool {
	if _, ok := c.Leaders(); !ok {
		return c.explain("balanced", "some partition has no leader that knows itself as such")
	}
	partitions, _ := c.settings()
	counts := c.LeaderCounts()
	limit := (partitions+len(counts)-1)/len(counts) + 2
	for id, n := range counts {
		if n < 1 || n > limit {
			return c.explain("balanced", fmt.Sprintf("%s leads %d partitions, want 1..%d (%v)", id, n, limit, counts))
		}
	}
	return c.explain("balanced", "")
}

// LedBy reports whether every partition has a leader, by its own report, among the given node
// indexes.
func (c *Cluster) LedBy(among []int) bool {
	partitions, _ := c.settings()
	led := make([]bool, partitions)
	for _, i := range among {
		n := c.Node(i)
		for _, p := range n.KV.Status().Partitions {
			if p.Leader == n.ID && p.ID < partitions {
				led[p.ID] = true
			}
		}
	}
	if p := slices.Index(led, false); p >= 0 {
		return c.explain("led by", fmt.Sprintf("partition %d has no leader among nodes %v", p, among))
	}
	return c.explain("led by", "")
}

// ReplicasAgree reports whether, for every partition, exactly one live node leads it, its
// configuration has min(live nodes, ReplicaCount) voters, every voter is a live replica, and
// all of them have applied the same index and hold the same data. It needs Inspect.
func (c *Cluster) ReplicasAgree() bool {
	mustInspect()
	live := c.Live()
	partitions, replicas := c.settings()
	byServer := make(map[string]Replica)
	leaders := make(map[int][]Replica)
	for _, n := range live {
		for _, d := range Inspect.Replicas(n.KV) {
			byServer[fmt.Sprint(d.Partition, "@", d.ServerID)] = d
			if d.Leader {
				leaders[d.Partition] = append(leaders[d.Partition], d)
			}
		}
	}
	for p := 0; p < partitions; p++ {
		if len(leaders[p]) != 1 {
			return c.explain("replicas agree", fmt.Sprintf("partition %d has %d leaders", p, len(leaders[p])))
		}
		ld := leaders[p][0]
		if len(ld.Voters) != min(len(live), replicas) {
			return c.explain("replicas agree", fmt.Sprintf("partition %d has voters %v", p, ld.Voters))
		}
		for _, v := range ld.Voters {
			d, ok := byServer[fmt.Sprint(p, "@", v)]
			switch {
			case !ok:
				return c.explain("replicas agree", fmt.Sprintf("partition %d: voter %s is not a live replica", p, v))
			case d.Applied != ld.Applied:
				return c.explain("replicas agree", fmt.Sprintf("partition %d: %s applied %d, leader %d", p, v, d.Applied, ld.Applied))
			case d.Sum != ld.Sum || d.Keys != ld.Keys:
				return c.explain("replicas agree", fmt.Sprintf("partition %d: %s holds %d keys (sum %x) at index %d, leader %s %d keys (sum %x)",
					p, v, d.Keys, d.Sum, d.Applied, ld.ServerID, ld.Keys, ld.Sum))
			}
		}
	}
	return c.explain("replicas agree", "")
}

// IdentitiesLive reports whether every partition has exactly one leader and its voters, as
// that leader reports them, are min(live nodes, ReplicaCount) current server IDs of live
// nodes: a replaced identity is gone everywhere. It needs Inspect.
func (c *Cluster) IdentitiesLive() bool {
	mustInspect()
	live := c.Live()
	partitions, replicas := c.settings()
	current := make(map[string]bool)
	for _, n := range live {
		current[Inspect.ServerID(n.KV)] = true
	}
	want := min(len(current), replicas)
	leaders := make(map[int][]string)
	for _, n := range live {
		for _, d := range Inspect.Replicas(n.KV) {
			if !d.Leader {
				continue
			}
			leaders[d.Partition] = append(leaders[d.Partition], n.ID)
			if len(d.Voters) != want {
				return c.explain("identities live", fmt.Sprintf("partition %d led by %s has voters %v, want %d", d.Partition, n.ID, d.Voters, want))
			}
			for _, v := range d.Voters {
				if !current[v] {
					return c.explain("identities live", fmt.Sprintf("partition %d led by %s has voters %v; %s is not live", d.Partition, n.ID, d.Voters, v))
				}
			}
		}
	}
	for p := range partitions {
		if len(leaders[p]) != 1 {
			return c.explain("identities live", fmt.Sprintf("partition %d has leaders %v", p, leaders[p]))
		}
	}
	return c.explain("identities live", "")
}

// KeyIn returns a key, starting with prefix, that falls into the cluster's partition p.
func (c *Cluster) KeyIn(prefix string, p int) string {
	partitions, _ := c.settings()
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if ring.PartitionOf(k, partitions) == p {
			return k
		}
	}
}

// explain keeps why predicate what is false ("": it is true) for Describe, and reports
// whether it is true.
func (c *Cluster) explain(what, why string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reasons == nil {
		c.reasons = make(map[string]string)
	}
	c.reasons[what] = why
	return why == ""
}

// Describe renders every live node's Status, and why each predicate last returned false, for
// failure messages.
func (c *Cluster) Describe() string {
	var b strings.Builder
	for _, n := range c.Live() {
		st := n.KV.Status()
		fmt.Fprintf(&b, "status of %s (%s):\n", n.ID, n.Addr)
		for _, m := range st.Members {
			fmt.Fprintf(&b, "  member %s %s %s\n", m.ID, m.Address, m.State)
		}
		for _, p := range st.Partitions {
			fmt.Fprintf(&b, "  partition %2d leader=%q replicas=%v\n", p.ID, p.Leader, p.Replicas)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, what := range slices.Sorted(maps.Keys(c.reasons)) {
		if why := c.reasons[what]; why != "" {
			fmt.Fprintf(&b, "%s? not yet: %s\n", what, why)
		}
	}
	return b.String()
}
