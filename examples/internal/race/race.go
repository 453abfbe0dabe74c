// Package race tells the examples' tests whether the race detector is on, and gives them
// timings that hold up under it.
package race

import (
	"time"

	"github.com/feellmoose/gridkv"
)

// Timings returns t with Raft timeouts long enough for race-enabled nodes sharing a small,
// busy machine when the race detector is on, else t unchanged. With LocalTimings' 250 ms
// leader lease, scheduling stalls alone depose leaders over and over there: a six-node
// cluster was seen with 15 of 16 partitions leaderless after 90 s of election rounds.
func Timings(t gridkv.Timings) gridkv.Timings {
	if !Enabled {
		return t
	}
	t.Raft.HeartbeatTimeout = 2 * time.Second
	t.Raft.ElectionTimeout = 2 * time.Second
	t.Raft.LeaderLeaseTimeout = time.Second
	return t
}
