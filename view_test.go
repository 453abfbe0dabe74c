package gridkv

import (
	"slices"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/membership"
)

func member(id string, state membership.State, leads ...int) membership.Member {
	return membership.Member{Meta: membership.Meta{ID: id, Addr: id + ":1", Incarnation: 7, Leads: leads}, State: state}
}

// placed returns the node IDs that hold a replica of some partition in v.
func placed(v *clusterView) []string {
	var ids []string
	for _, replicas := range v.placement {
		for _, m := range replicas {
			if !slices.Contains(ids, m.NodeID) {
				ids = append(ids, m.NodeID)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// Each rule of the cluster view, one situation per case: who holds replicas, since when a
// dead member counts as dead, and whose leader tables count.
func TestBuildView(t *testing.T) {
	now := time.Unix(1000, 0)
	const grace = 30 * time.Second
	alive, suspect, dead, left := membership.StateAlive, membership.StateSuspect, membership.StateDead, membership.StateLeft
	for _, tc := range []struct {
		name      string
		members   []membership.Member
		deadSince map[string]time.Time
		wantPlace []string             // nodes holding replicas
		wantDead  map[string]time.Time // the dead-since table for the next build
		wantLead  map[int]string       // gossiped leaders
	}{
		{
			name:      "all alive",
			members:   []membership.Member{member("a", alive), member("b", alive), member("c", alive)},
			wantPlace: []string{"a", "b", "c"},
			wantDead:  map[string]time.Time{},
		},
		{
			name:      "suspect keeps its place",
			members:   []membership.Member{member("a", alive), member("b", suspect)},
			wantPlace: []string{"a", "b"},
			wantDead:  map[string]time.Time{},
		},
		{
			name:      "newly dead: within grace from now on",
			members:   []membership.Member{member("a", alive), member("b", dead)},
			wantPlace: []string{"a", "b"},
			wantDead:  map[string]time.Time{"b": now},
		},
		{
			name:      "dead within grace keeps its place",
			members:   []membership.Member{member("a", alive), member("b", dead)},
			deadSince: map[string]time.Time{"b": now.Add(-grace + time.Second)},
			wantPlace: []string{"a", "b"},
			wantDead:  map[string]time.Time{"b": now.Add(-grace + time.Second)},
		},
		{
			name:      "dead past grace is replaced",
			members:   []membership.Member{member("a", alive), member("b", dead)},
			deadSince: map[string]time.Time{"b": now.Add(-grace)},
			wantPlace: []string{"a"},
			wantDead:  map[string]time.Time{"b": now.Add(-grace)},
		},
		{
			name:      "back from the dead: its clock restarts",
			members:   []membership.Member{member("a", alive), member("b", alive)},
			deadSince: map[string]time.Time{"b": now.Add(-time.Hour)},
			wantPlace: []string{"a", "b"},
			wantDead:  map[string]time.Time{},
		},
		{
			name:      "left gracefully is replaced at once",
			members:   []membership.Member{member("a", alive), member("b", left)},
			wantPlace: []string{"a"},
			wantDead:  map[string]time.Time{},
		},
		{
			name:      "gone from the member list is forgotten",
			members:   []membership.Member{member("a", alive)},
			deadSince: map[string]time.Time{"b": now.Add(-time.Second)},
			wantPlace: []string{"a"},
			wantDead:  map[string]time.Time{},
		},
		{
			name: "leader tables count only from alive members, within range",
			members: []membership.Member{
				member("a", alive, 0, 1, 99), member("b", suspect, 2), member("c", dead, 3),
			},
			deadSince: map[string]time.Time{"c": now},
			wantPlace: []string{"a", "b", "c"},
			wantDead:  map[string]time.Time{"c": now},
			wantLead:  map[int]string{0: "a", 1: "a"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, deadSince := buildView(viewInput{
				members: tc.members, deadSince: tc.deadSince, now: now, deadGrace: grace, partitions: 8, replicas: 3,
			})
			if got := placed(v); !slices.Equal(got, tc.wantPlace) {
				t.Errorf("replicas on %v; want %v", got, tc.wantPlace)
			}
			if len(deadSince) != len(tc.wantDead) {
				t.Errorf("dead since %v; want %v", deadSince, tc.wantDead)
			}
			for id, at := range tc.wantDead {
				if !deadSince[id].Equal(at) {
					t.Errorf("%s dead since %v; want %v", id, deadSince[id], at)
				}
			}
			if len(v.gossipLeaders) != len(tc.wantLead) {
				t.Errorf("gossiped leaders %v; want %v", v.gossipLeaders, tc.wantLead)
			}
			for p, id := range tc.wantLead {
				if v.gossipLeaders[p].id != id {
					t.Errorf("partition %d led by %q; want %q", p, v.gossipLeaders[p].id, id)
				}
			}
			for p, replicas := range v.placement {
				if want := min(3, len(tc.wantPlace)); len(replicas) != want {
					t.Errorf("partition %d has %d replicas; want %d", p, len(replicas), want)
				}
				for _, r := range replicas {
					if r.Addr != r.NodeID+":1" || r.Incarnation != 7 {
						t.Errorf("partition %d replica %+v lost its address or incarnation", p, r)
					}
				}
			}
		})
	}
}
