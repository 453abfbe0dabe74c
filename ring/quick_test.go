package ring

import (
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"
	"testing/quick"
)

// plainRendezvous is the naive oracle: every partition takes its top
// replicas by score, with no regard for load. It is what Place degenerates
// to without bounds, so its placements show what the bounds buy.
func plainRendezvous(partitions, replicas int, members []string) [][]string {
	ids := uniqueSorted(members)
	pl := newPlanner(partitions, min(replicas, len(ids)), ids)
	out := make([][]string, partitions)
	for p := range out {
		order := make([]int, len(ids))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			sa, sb := pl.score(p, a), pl.score(p, b)
			if sa > sb {
				return -1
			}
			if sa < sb {
				return 1
			}
			return 0
		})
		for _, m := range order[:pl.perPartition] {
			out[p] = append(out[p], ids[m])
		}
	}
	return out
}

// TestPlaceBalancesBetterThanPlainRendezvous compares Place with the
// oracle over the sweep: Place's worst node must never be worse than the
// oracle's, and the two should agree on most assignments, since the bounds
// only override the hash where it would overload a node.
func TestPlaceBalancesBetterThanPlainRendezvous(t *testing.T) {
	var placeWorst, oracleWorst float64
	agree, total := 0, 0
	for _, partitions := range sweptPartitions {
		for n := 3; n <= 20; n++ {
			members := nodeIDs(n)
			placed := Place(partitions, sweptReplicas, members)
			oracle := plainRendezvous(partitions, sweptReplicas, members)
			mean := float64(partitions*sweptReplicas) / float64(n)
			skew := func(placement [][]string) float64 {
				replicas, _ := loads(placement)
				lo, hi := spread(replicas, members)
				return max(float64(hi)/mean, mean/float64(max(lo, 1)))
			}
			ps, os := skew(placed), skew(oracle)
			if ps > os {
				t.Errorf("P=%d n=%d: Place skew %.2f worse than plain rendezvous %.2f", partitions, n, ps, os)
			}
			placeWorst, oracleWorst = max(placeWorst, ps), max(oracleWorst, os)
			for p := range placed {
				for _, id := range placed[p] {
					if slices.Contains(oracle[p], id) {
						agree++
					}
					total++
				}
			}
		}
	}
	t.Logf("worst replica skew: Place %.2f, plain rendezvous %.2f; Place agrees with plain rendezvous on %.1f%% of assignments",
		placeWorst, oracleWorst, 100*float64(agree)/float64(total))
	if float64(agree) < 0.7*float64(total) {
		t.Errorf("Place follows the hash on only %d of %d assignments", agree, total)
	}
}

// randomCluster is a testing/quick generator for arbitrary placements:
// random node IDs (with duplicates now and then), partition and replica
// counts.
type randomCluster struct {
	partitions, replicas int
	members              []string
}

func (randomCluster) Generate(r *rand.Rand, _ int) reflect.Value {
	c := randomCluster{partitions: 1 + r.Intn(300), replicas: 1 + r.Intn(5)}
	for range r.Intn(30) {
		c.members = append(c.members, fmt.Sprintf("%x", r.Uint64()))
	}
	if len(c.members) > 0 && r.Intn(4) == 0 {
		c.members = append(c.members, c.members[0])
	}
	return reflect.ValueOf(c)
}

// TestPlaceInvariantsQuick checks, over random clusters, everything Place
// promises regardless of configuration: list shape, distinct members, order
// independence, and the load bounds where the cluster is big enough to
// meet them.
func TestPlaceInvariantsQuick(t *testing.T) {
	check := func(c randomCluster) bool {
		placement := Place(c.partitions, c.replicas, c.members)
		ids := uniqueSorted(c.members)
		checkLists(t, placement, c.partitions, c.replicas, ids)
		reversed := slices.Clone(c.members)
		slices.Reverse(reversed)
		if !slices.EqualFunc(placement, Place(c.partitions, c.replicas, reversed), slices.Equal) {
			t.Logf("order dependence for %+v", c)
			return false
		}
		n := len(ids)
		if n == 0 {
			return true
		}
		replicaLoad, leaderLoad := loads(placement)
		total := c.partitions * min(c.replicas, n)
		mean := float64(total) / float64(n)
		lo, hi := spread(replicaLoad, ids)
		if float64(hi) > max(float64(ceilDiv(total, n)), 1.25*mean)+1e-9 ||
			float64(lo) < min(float64(total/n), mean/1.25)-1e-9 {
			t.Logf("replica loads [%d, %d], mean %.2f for %+v", lo, hi, mean, c)
			return false
		}
		if _, hi := spread(leaderLoad, ids); hi > ceilDiv(c.partitions, n)+1 {
			t.Logf("%d leaders on one node for %+v", hi, c)
			return false
		}
		return true
	}
	cfg := &quick.Config{MaxCount: 300, Rand: rand.New(rand.NewSource(7))}
	if err := quick.Check(check, cfg); err != nil {
		t.Fatal(err)
	}
}
