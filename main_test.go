package gridkv_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// TestMain lets the cluster harness look inside nodes, for its end-of-test replica checks, and
// fails the package's run if any goroutine outlives its tests: Close must stop every goroutine
// the library started. The harness checks each test's goroutines too; this check also covers
// tests without a cluster and goroutines that were running when a test's cluster started.
func TestMain(m *testing.M) {
	cluster.Inspect = cluster.Inspector{
		ServerID: gridkv.LocalServerID,
		Replicas: func(kv *gridkv.GridKV) []cluster.Replica {
			var out []cluster.Replica
			for _, d := range gridkv.ReplicaDigests(kv) {
				out = append(out, cluster.Replica(d))
			}
			return out
		},
	}
	goleak.VerifyTestMain(m)
}
