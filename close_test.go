package gridkv_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/internal/faultnet"
	"github.com/feellmoose/gridkv/transport"
)

// goroutinesIn returns the stacks of the running goroutines that are inside fn.
func goroutinesIn(fn string) []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			found = append(found, g)
		}
	}
	return found
}

// Close hands the leadership of the groups it leads to other voters, waiting at most 2 s. A
// hand-off still running then must not outlive Close: it ends with its group, and Close waits
// for it.
func TestCloseWaitsForLeadershipHandOffs(t *testing.T) {
	c := cluster.Start(t, 2, cluster.Options{
		Partitions:       4,
		SkipReplicaCheck: "a cluster of two that lost one has no quorum left",
		Mutate: func(_ int, o *gridkv.GridKVOptions) {
			// Raft gives up a transfer after an election timeout: longer than the 2 s
			// Close gives hand-offs.
			o.Timings.Raft.HeartbeatTimeout = 5 * time.Second
			o.Timings.Raft.ElectionTimeout = 5 * time.Second
			o.Timings.Raft.LeaderLeaseTimeout = 5 * time.Second
		},
	})
	cluster.WaitFor(t, 30*time.Second, "node-0 leads a partition of two voters", func() bool {
		st := c.Node(0).KV.Status()
		for _, p := range st.Partitions {
			if p.Leader == "node-0" && len(p.Replicas) == 2 {
				return true
			}
		}
		return false
	})
	// Node 0's Raft messages to node 1 now take long enough to hold every hand-off past 2 s.
	c.Net.SetLink(c.Node(0).Addr, c.Node(1).Addr, faultnet.Link{Delay: 3 * time.Second, Classes: []transport.Class{transport.ClassMux}})
	c.Stop(0)
	if left := goroutinesIn("handOffLeadership"); len(left) > 0 {
		t.Fatalf("%d leadership hand-offs outlived Close:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
