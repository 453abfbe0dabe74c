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
