package ring

import (
	"math"
	"math/bits"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Place returns, for each partition 0..partitions-1, its ordered replica
// list: min(replicas, number of distinct members) distinct member IDs. The
// first entry is the partition's preferred leader; the rest follow in
// descending score order, which carries no meaning beyond determinism.
//
// The result depends only on the set of members, not on their order or on
// duplicates, so every node computes the same placement from the same
// gossip view. No members, or replicas < 1, gives every partition an empty
// list; partitions < 1 gives an empty result.
//
// Placement is rendezvous (highest random weight) hashing with bounded
// loads: every member holds between mean/1.25 and 1.25*mean replicas
// (floor/ceil of the mean where integers allow nothing tighter), and at
// most ceil(partitions/members)+1 preferred leaderships (and, where its
// replicas allow, at least floor(partitions/members)-1). Rendezvous scores
// decide who gets what within those bounds, so a join or leave mostly moves
// only the assignments that must move. The cost is dominated by one radix
// sort of all P*M (partition, member) scores; the repair steps that
// enforce the bounds touch O(P*replicas) pairs per unit they fix, and few
// units need fixing (1024 partitions on 50 members take about 4 ms).
func Place(partitions, replicas int, members []string) [][]string {
	if partitions < 1 {
		return [][]string{}
	}
	out := make([][]string, partitions)
	ids := uniqueSorted(members)
	perPartition := min(replicas, len(ids))
	if perPartition < 1 {
		return out
	}

	pl := newPlanner(partitions, perPartition, ids)
	pl.assignReplicas()
	pl.chooseLeaders()

	// One backing array for every list: Place runs on every membership
	// change for every partition, and one allocation is cheaper than P.
	backing := make([]string, partitions*perPartition)
	for p := range out {
		list := backing[p*perPartition : (p+1)*perPartition : (p+1)*perPartition]
		for j, m := range pl.ordered(p) {
			list[j] = ids[m]
		}
		out[p] = list
	}
	return out
}

// uniqueSorted returns the distinct member IDs in ascending order. Sorting
// is what makes Place independent of the order gossip reports members in:
// member indexes below, and with them every tie-break, follow this order.
func uniqueSorted(members []string) []string {
	ids := slices.Clone(members)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// planner holds the working state of one Place call. Members are referred
// to by their index in the sorted ID list.
type planner struct {
	partitions   int
	perPartition int // replicas per partition, min(replicas, members)
	members      int

	memberHash []uint64 // xxhash of each member ID

	// slots[p*perPartition : (p+1)*perPartition] holds partition p's
	// members, the first filled[p] of them valid.
	slots  []int32
	filled []int32
	load   []int32 // replicas per member

	leader     []int32 // preferred leader per partition, -1 while unset
	leaderLoad []int32 // preferred leaderships per member
}

// newPlanner allocates the state for one Place call and hashes every member
// ID once, since each ID takes part in P scores.
func newPlanner(partitions, perPartition int, ids []string) *planner {
	pl := &planner{
		partitions:   partitions,
		perPartition: perPartition,
		members:      len(ids),
		memberHash:   make([]uint64, len(ids)),
		slots:        make([]int32, partitions*perPartition),
		filled:       make([]int32, partitions),
		load:         make([]int32, len(ids)),
		leader:       make([]int32, partitions),
		leaderLoad:   make([]int32, len(ids)),
	}
	for i, id := range ids {
		pl.memberHash[i] = xxhash.Sum64String(id)
	}
	for p := range pl.leader {
		pl.leader[p] = -1
	}
	return pl
}

// score is the rendezvous weight of member m for partition p. Hashing the
// member ID once and mixing in the partition number with the splitmix64
// finalizer keeps the P*M scores cheap while staying a fixed function of
// (member ID, partition), which is all rendezvous hashing needs.
func (pl *planner) score(p, m int) uint64 {
	x := pl.memberHash[m] ^ (uint64(p)+1)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// quota bounds how many items a member may hold: at least lo, at most hi.
type quota struct {
	lo, hi int32
}

// balanceSlack is how far from the mean a member's replica count may
// stray: at most (1+balanceSlack) times the mean and at least the mean
// divided by it. A strict floor/ceil bound would balance better but makes
// every join or leave cascade through many partitions; this much slack
// lets most reassignment chains stop at the first member with room.
const balanceSlack = 0.25

// replicaQuota bounds each member's share of items: within balanceSlack of
// the mean, but never tighter than floor/ceil of it, which integer counts
// sometimes force (16 partitions on 17 members has mean 2.8).
func replicaQuota(items, members int) quota {
	mean := float64(items) / float64(members)
	lo := min(items/members, int(math.Ceil(mean/(1+balanceSlack)-1e-9)))
	hi := max((items+members-1)/members, int(math.Floor(mean*(1+balanceSlack)+1e-9)))
	return quota{lo: int32(lo), hi: int32(hi)}
}

// leaderQuota bounds preferred leaderships to one unit beyond floor/ceil
// of the mean on either side. The extra unit roughly halves the leaders
// that change on a join or leave (each change is a leadership transfer)
// against a strict bound, and one leader more or less per node is a small
// write-load skew.
func leaderQuota(partitions, members int) quota {
	return quota{
		lo: int32(max(partitions/members-1, 0)),
		hi: int32((partitions+members-1)/members + 1),
	}
}

// sortedPairs returns keys for the given (partition, member) pairs in
// ascending score order; callers walk it from the end. A key is the score
// with its low bits replaced by the pair's index, so one integer sort
// orders them and equal truncated scores still break ties
// deterministically.
func sortedPairs(count int, scoreOf func(i int) uint64) (keys []uint64, mask uint64) {
	indexBits := bits.Len(uint(count))
	mask = 1<<indexBits - 1
	keys = make([]uint64, count)
	for i := range keys {
		keys[i] = scoreOf(i)&^mask | uint64(i)
	}
	radixSort(keys)
	return keys, mask
}

// radixSort sorts keys ascending. A comparison sort of the P*M scores was
// over 80% of Place's time at 1024 partitions and 50 members; eight
// counting passes over bytes are several times faster at that size.
func radixSort(keys []uint64) {
	if len(keys) < 512 {
		slices.Sort(keys)
		return
	}
	buf := make([]uint64, len(keys))
	src, dst := keys, buf
	for shift := uint(0); shift < 64; shift += 8 {
		var counts [256]int
		for _, k := range src {
			counts[byte(k>>shift)]++
		}
		if counts[byte(src[0]>>shift)] == len(src) {
			continue // every key has the same byte here
		}
		pos := 0
		for b, c := range counts {
			counts[b] = pos
			pos += c
		}
		for _, k := range src {
			b := byte(k >> shift)
			dst[counts[b]] = k
			counts[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

// replicasOf returns the members partition p holds so far.
func (pl *planner) replicasOf(p int) []int32 {
	start := p * pl.perPartition
	return pl.slots[start : start+int(pl.filled[p])]
}

// holds reports whether partition p already has member m.
func (pl *planner) holds(p int, m int32) bool {
	return slices.Contains(pl.replicasOf(p), m)
}

// add gives partition p member m as its next replica.
func (pl *planner) add(p int, m int32) {
	pl.slots[p*pl.perPartition+int(pl.filled[p])] = m
	pl.filled[p]++
	pl.load[m]++
}

// assignReplicas fills every partition with perPartition distinct members.
// Pairs are taken greedily in descending score order while the member is
// under its upper bound (rendezvous hashing with bounded loads); members
// the hashes left under the lower bound are then topped up.
func (pl *planner) assignReplicas() {
	n := pl.members
	q := replicaQuota(pl.partitions*pl.perPartition, n)
	if pl.perPartition == 1 {
		// Every replica is a leader, so both sets of bounds apply.
		lq := leaderQuota(pl.partitions, n)
		q = quota{lo: max(q.lo, lq.lo), hi: min(q.hi, lq.hi)}
	}
	keys, mask := sortedPairs(pl.partitions*n, func(i int) uint64 {
		return pl.score(i/n, i%n)
	})
	remaining := pl.partitions * pl.perPartition
	for r := len(keys) - 1; r >= 0 && remaining > 0; r-- {
		i := int(keys[r] & mask)
		p, m := i/n, int32(i%n)
		if int(pl.filled[p]) == pl.perPartition || pl.load[m] >= q.hi {
			continue
		}
		pl.add(p, m)
		remaining--
	}
	if remaining > 0 {
		pl.repairReplicas(q)
	}
	pl.raiseToLowerBound(q)
}

// raiseToLowerBound gives members the greedy pass left below the lower
// bound replicas taken from members above it, where that costs the least
// score.
func (pl *planner) raiseToLowerBound(q quota) {
	for x := int32(0); int(x) < pl.members; x++ {
		for pl.load[x] < q.lo {
			bestGain, bestSlot := int64(0), -1
			for p := 0; p < pl.partitions; p++ {
				if pl.holds(p, x) {
					continue
				}
				for j, y := range pl.replicasOf(p) {
					if pl.load[y] <= q.lo {
						continue
					}
					gain := int64(pl.score(p, int(x))>>32) - int64(pl.score(p, int(y))>>32)
					if bestSlot < 0 || gain > bestGain {
						bestGain, bestSlot = gain, p*pl.perPartition+j
					}
				}
			}
			if bestSlot < 0 {
				return
			}
			pl.load[pl.slots[bestSlot]]--
			pl.slots[bestSlot] = x
			pl.load[x]++
		}
	}
}

// repairReplicas completes partitions the greedy pass left short. That
// happens when the only members with quota left already hold the partition.
// The fix is a swap: a spare member x takes some member y's place in
// another partition, and y moves to the short partition. Loads stay within
// quota; of all possible swaps the one that keeps scores highest wins.
func (pl *planner) repairReplicas(q quota) {
	for p := 0; p < pl.partitions; p++ {
		for int(pl.filled[p]) < pl.perPartition {
			if !pl.swapInto(p, q) {
				pl.addLeastLoaded(p)
			}
		}
	}
}

// swapInto makes room for one more replica in p by a swap; false if none exists.
func (pl *planner) swapInto(p int, q quota) bool {
	bestGain, bestQ, bestSlot, bestX := int64(0), -1, -1, int32(-1)
	for x := int32(0); int(x) < pl.members; x++ {
		if pl.load[x] >= q.hi {
			continue
		}
		for other := 0; other < pl.partitions; other++ {
			if other == p || pl.holds(other, x) {
				continue
			}
			for j, y := range pl.replicasOf(other) {
				if pl.holds(p, y) {
					continue
				}
				// Compare scores in their top 32 bits so the sum cannot overflow.
				gain := int64(pl.score(other, int(x))>>32) + int64(pl.score(p, int(y))>>32) -
					int64(pl.score(other, int(y))>>32)
				if bestQ < 0 || gain > bestGain {
					bestGain, bestQ, bestSlot, bestX = gain, other, j, x
				}
			}
		}
	}
	if bestQ < 0 {
		return false
	}
	slot := bestQ*pl.perPartition + bestSlot
	y := pl.slots[slot]
	pl.slots[slot] = bestX
	pl.load[bestX]++
	pl.load[y]--
	pl.add(p, y)
	return true
}

// addLeastLoaded is the last resort when no swap exists; it keeps the
// result a valid replica list at the price of exceeding one member's quota.
// A swap exists whenever some member with room is missing from another
// partition, which quotas near the mean all but guarantee.
func (pl *planner) addLeastLoaded(p int) {
	best := int32(-1)
	for m := int32(0); int(m) < pl.members; m++ {
		if !pl.holds(p, m) && (best < 0 || pl.load[m] < pl.load[best]) {
			best = m
		}
	}
	pl.add(p, best)
}

// chooseLeaders picks each partition's preferred leader among its replicas
// so that no member leads more than leaderQuota allows. As with replicas,
// pairs go in descending score order under the quota; a partition left
// without a leader gets one through an augmenting path.
func (pl *planner) chooseLeaders() {
	k := pl.perPartition
	q := leaderQuota(pl.partitions, pl.members)
	keys, mask := sortedPairs(pl.partitions*k, func(i int) uint64 {
		return pl.score(i/k, int(pl.slots[i]))
	})
	unled := pl.partitions
	for r := len(keys) - 1; r >= 0 && unled > 0; r-- {
		i := int(keys[r] & mask)
		p, m := i/k, pl.slots[i]
		if pl.leader[p] >= 0 || pl.leaderLoad[m] >= q.hi {
			continue
		}
		pl.leader[p] = m
		pl.leaderLoad[m]++
		unled--
	}
	for p := 0; unled > 0 && p < pl.partitions; p++ {
		if pl.leader[p] < 0 {
			pl.augmentLeader(p, q)
			unled--
		}
	}
	pl.raiseLeadersToLowerBound(q)
}

// raiseLeadersToLowerBound hands members that lead too few partitions the
// leadership of one of their replicas, taken from a leader above the lower
// bound where that costs the least score. It is best effort: a member whose
// partitions are all led by members at the bound stays below it.
func (pl *planner) raiseLeadersToLowerBound(q quota) {
	for x := int32(0); int(x) < pl.members; x++ {
		for pl.leaderLoad[x] < q.lo {
			bestGain, best := int64(0), -1
			for p := 0; p < pl.partitions; p++ {
				y := pl.leader[p]
				if y == x || pl.leaderLoad[y] <= q.lo || !pl.holds(p, x) {
					continue
				}
				gain := int64(pl.score(p, int(x))>>32) - int64(pl.score(p, int(y))>>32)
				if best < 0 || gain > bestGain {
					bestGain, best = gain, p
				}
			}
			if best < 0 {
				break
			}
			pl.leaderLoad[pl.leader[best]]--
			pl.leader[best] = x
			pl.leaderLoad[x]++
		}
	}
}

// augmentLeader gives partition p a leader along a shortest chain of
// handovers: p takes a replica y that is at quota, one of the partitions y
// leads takes another of its replicas, and so on until a member with quota
// left ends the chain. Each member's leader count changes by at most the
// one unit the chain's end gains. If no chain exists, p falls back to its
// first replica and that member goes over quota; the property tests check
// that this does not happen in the configurations they sweep.
func (pl *planner) augmentLeader(p int, q quota) {
	parent := make([]int32, pl.partitions)
	for i := range parent {
		parent[i] = -1
	}
	expanded := make([]bool, pl.members)
	queue := []int{p}
	parent[p] = int32(p)
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for _, y := range pl.replicasOf(u) {
			if y == pl.leader[u] {
				continue
			}
			if pl.leaderLoad[y] < q.hi {
				pl.leaderLoad[y]++
				pl.handOver(u, y, p, parent)
				return
			}
			if expanded[y] {
				continue
			}
			expanded[y] = true
			for v := range pl.leader {
				if pl.leader[v] == y && parent[v] < 0 {
					parent[v] = int32(u)
					queue = append(queue, v)
				}
			}
		}
	}
	m := pl.replicasOf(p)[0]
	pl.leader[p] = m
	pl.leaderLoad[m]++
}

// handOver applies an augmenting chain found by augmentLeader: u takes y,
// and each partition up the chain takes the leader its child gave up.
func (pl *planner) handOver(u int, y int32, root int, parent []int32) {
	for {
		freed := pl.leader[u]
		pl.leader[u] = y
		if u == root {
			return
		}
		u, y = int(parent[u]), freed
	}
}

// ordered returns partition p's members, preferred leader first and the
// rest by descending score.
func (pl *planner) ordered(p int) []int32 {
	list := pl.replicasOf(p)
	lead := slices.Index(list, pl.leader[p])
	list[0], list[lead] = list[lead], list[0]
	rest := list[1:]
	slices.SortFunc(rest, func(a, b int32) int {
		sa, sb := pl.score(p, int(a)), pl.score(p, int(b))
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return int(a - b)
	})
	return list
}
