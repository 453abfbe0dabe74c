package raftgroup

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/feellmoose/gridkv/store"
)

// minRaftTimeout is the smallest heartbeat, election, lease and snapshot-interval setting raft
// accepts (raft.ValidateConfig).
const minRaftTimeout = 5 * time.Millisecond

// Validate reports the first field of t that raft would refuse, or that GridKV cannot use,
// naming the field and its value. Every node runs it at start: raft itself checks only when a
// replica starts, which on a joining node is long after NewGridKV returned.
func (t Tuning) Validate() error {
	for _, f := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"HeartbeatTimeout", t.HeartbeatTimeout, minRaftTimeout},
		{"ElectionTimeout", t.ElectionTimeout, minRaftTimeout},
		{"LeaderLeaseTimeout", t.LeaderLeaseTimeout, minRaftTimeout},
		{"CommitTimeout", t.CommitTimeout, time.Millisecond},
		{"SnapshotInterval", t.SnapshotInterval, minRaftTimeout},
		{"RPCTimeout", t.RPCTimeout, time.Millisecond},
		{"ApplyTimeout", t.ApplyTimeout, time.Millisecond},
	} {
		if f.v < f.min {
			return fmt.Errorf("%s %v must be at least %v", f.name, f.v, f.min)
		}
	}
	if t.LeaderLeaseTimeout > t.HeartbeatTimeout {
		return fmt.Errorf("LeaderLeaseTimeout %v must not exceed HeartbeatTimeout %v", t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	}
	if t.ElectionTimeout < t.HeartbeatTimeout {
		return fmt.Errorf("ElectionTimeout %v must be at least HeartbeatTimeout %v", t.ElectionTimeout, t.HeartbeatTimeout)
	}
	if t.MaxBatch < 1 || t.MaxBatch > store.MaxBatch {
		return fmt.Errorf("MaxBatch %d must be in 1..%d", t.MaxBatch, store.MaxBatch)
	}
	if t.MaxBatchBytes < 1 {
		return fmt.Errorf("MaxBatchBytes %d must be positive", t.MaxBatchBytes)
	}
	if t.MaxInflightBatches < 1 {
		return fmt.Errorf("MaxInflightBatches %d must be at least 1", t.MaxInflightBatches)
	}
	// raft's own check, in case a later raft version refuses more than the relations above.
	rc := raft.DefaultConfig()
	rc.LocalID = "validate"
	rc.HeartbeatTimeout = t.HeartbeatTimeout
	rc.ElectionTimeout = t.ElectionTimeout
	rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	rc.CommitTimeout = t.CommitTimeout
	rc.SnapshotInterval = t.SnapshotInterval
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft refuses these timings: %w", err)
	}
	return nil
}
