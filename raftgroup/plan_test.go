package raftgroup

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// planMember is the desired replica on node name: incarnation 1, address name:7000.
func planMember(name string) Replica {
	return Replica{NodeID: name, Incarnation: 1, Addr: name + ":7000"}
}

// planServers builds a configuration from "name" (a voter) and "name?" (a learner).
func planServers(specs ...string) []raft.Server {
	var out []raft.Server
	for _, spec := range specs {
		name, learner := strings.CutSuffix(spec, "?")
		m := planMember(name)
		suffrage := raft.Voter
		if learner {
			suffrage = raft.Nonvoter
		}
		out = append(out, raft.Server{Suffrage: suffrage, ID: m.serverID(), Address: ServerAddress(m.Addr, m.Incarnation)})
	}
	return out
}

// describe renders a plan as "none", or its kind and target nodes: "promote b c".
func describe(p plannedChange) string {
	words := map[Change]string{NoChange: "none", AddedLearner: "add", PromotedVoter: "promote", RemovedServer: "remove", TransferredLeadership: "transfer"}
	out := []string{words[p.kind]}
	for _, t := range p.targets {
		nodeID, _ := NodeOf(t.ID)
		out = append(out, nodeID)
	}
	return strings.Join(out, " ")
}

func nodeIDs(servers []raft.Server) []string {
	var out []string
	for _, s := range servers {
		nodeID, _ := NodeOf(s.ID)
		out = append(out, nodeID)
	}
	return out
}

// Each situation a leader meets, and the one change it makes next. self is "a" throughout.
func TestNextChange(t *testing.T) {
	for _, tc := range []struct {
		name     string
		config   []string // "b" votes, "b?" is a learner
		desired  []string // first: the preferred leader
		caughtUp []string
		balance  bool
		want     string
		asks     []string // the learners whose catch-up the leader asks (learnersToAsk)
	}{
		{name: "nothing to do", config: []string{"a", "b", "c"}, desired: []string{"a", "b", "c"}, want: "none"},
		{name: "no desired replicas", config: []string{"a", "b"}, want: "none"},
		{name: "missing desired replica added as a learner", config: []string{"a", "b"}, desired: []string{"a", "b", "c"}, want: "add c"},
		{name: "first missing replica in desired order added", config: []string{"a"}, desired: []string{"a", "c", "b"}, want: "add c"},
		{name: "missing replica added before a caught-up learner is promoted", config: []string{"a", "b?"}, desired: []string{"a", "b", "c"}, caughtUp: []string{"b"}, want: "add c"},
		{name: "caught-up learner promoted", config: []string{"a", "b", "c?"}, desired: []string{"a", "b", "c"}, caughtUp: []string{"c"}, want: "promote c", asks: []string{"c"}},
		{name: "learner not caught up: nothing", config: []string{"a", "b", "c?"}, desired: []string{"a", "b", "c"}, want: "none", asks: []string{"c"}},
		{name: "two promotions from an odd voter count", config: []string{"a", "b?", "c?"}, desired: []string{"a", "b", "c"}, caughtUp: []string{"b", "c"}, want: "promote b c", asks: []string{"b", "c"}},
		{name: "two promotions in desired order", config: []string{"a", "c?", "b?"}, desired: []string{"a", "b", "c"}, caughtUp: []string{"b", "c"}, want: "promote b c", asks: []string{"b", "c"}},
		{name: "at most two promotions from an odd voter count", config: []string{"a", "b?", "c?", "d?"}, desired: []string{"a", "b", "c", "d"}, caughtUp: []string{"b", "c", "d"}, want: "promote b c", asks: []string{"b", "c", "d"}},
		{name: "one promotion from an even voter count", config: []string{"a", "b", "c?", "d?"}, desired: []string{"a", "b", "c", "d"}, caughtUp: []string{"c", "d"}, want: "promote c", asks: []string{"c", "d"}},
		{name: "odd voter count, two learners, one caught up: wait", config: []string{"a", "b?", "c?"}, desired: []string{"a", "b", "c"}, caughtUp: []string{"c"}, want: "none", asks: []string{"b", "c"}},
		{name: "odd voter count, one learner caught up: promoted alone", config: []string{"a", "b", "c", "d?"}, desired: []string{"a", "b", "c", "d"}, caughtUp: []string{"d"}, want: "promote d", asks: []string{"d"}},
		{name: "voters counted over the whole configuration", config: []string{"a", "x", "b?", "c?"}, desired: []string{"a", "b", "c"}, caughtUp: []string{"b", "c"}, want: "promote b", asks: []string{"b", "c"}},
		{name: "non-desired learners are never asked nor promoted", config: []string{"a", "b", "c", "x?"}, desired: []string{"a", "b", "c"}, caughtUp: []string{"x"}, want: "remove x"},
		{name: "non-desired voter kept while a desired replica is a learner", config: []string{"a", "b", "x", "c?"}, desired: []string{"a", "b", "c"}, want: "none", asks: []string{"c"}},
		{name: "non-desired voter removed once all desired vote", config: []string{"a", "b", "x", "c"}, desired: []string{"a", "b", "c"}, want: "remove x"},
		{name: "servers removed in configuration order", config: []string{"a", "y", "b", "x", "c"}, desired: []string{"a", "b", "c"}, want: "remove y"},
		{name: "leader not desired hands leadership to the first desired voter", config: []string{"a", "b", "c", "d"}, desired: []string{"c", "b", "d"}, want: "transfer c"},
		{name: "leader not desired stays while a desired replica is a learner", config: []string{"a", "b", "c", "d?"}, desired: []string{"b", "c", "d"}, want: "none", asks: []string{"d"}},
		{name: "non-desired learner removed at once", config: []string{"a", "b", "x?", "c?"}, desired: []string{"a", "b", "c"}, want: "remove x", asks: []string{"c"}},
		{name: "servers leave in configuration order: the leader hands over before a learner goes", config: []string{"a", "b", "c", "d", "x?"}, desired: []string{"b", "c", "d"}, want: "transfer b"},
		{name: "balance: transfer to the preferred voter", config: []string{"a", "b", "c"}, desired: []string{"b", "a", "c"}, balance: true, want: "transfer b"},
		{name: "balance: preferred replica a learner, not caught up: no transfer", config: []string{"a", "c", "b?"}, desired: []string{"b", "a", "c"}, balance: true, want: "none", asks: []string{"b"}},
		{name: "balance: preferred replica missing: it is added", config: []string{"a", "c"}, desired: []string{"b", "a", "c"}, balance: true, want: "add b"},
		{name: "balance: never to another voter than the preferred", config: []string{"a", "c", "b?"}, desired: []string{"b", "c", "a"}, balance: true, want: "none", asks: []string{"b"}},
		{name: "balance: already the preferred leader", config: []string{"a", "b", "c"}, desired: []string{"a", "b", "c"}, balance: true, want: "none"},
		{name: "balance false: no transfer", config: []string{"a", "b", "c"}, desired: []string{"b", "a", "c"}, want: "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := reconcileState{servers: planServers(tc.config...), self: planMember("a").serverID(), balance: tc.balance}
			for _, name := range tc.desired {
				s.desired = append(s.desired, planMember(name))
			}
			if asks := nodeIDs(learnersToAsk(s)); !slices.Equal(asks, tc.asks) {
				t.Errorf("learners asked: %v, want %v", asks, tc.asks)
			}
			s.caughtUp = make(map[raft.ServerID]bool)
			for _, name := range tc.caughtUp {
				s.caughtUp[planMember(name).serverID()] = true
			}
			if got := describe(nextChange(s)); got != tc.want {
				t.Errorf("nextChange = %q, want %q", got, tc.want)
			}
		})
	}
}

// The change carries what raft needs: a learner is added at its desired address, and a
// promotion or removal names the server as the configuration holds it.
func TestNextChangeTargets(t *testing.T) {
	c := Replica{NodeID: "c", Incarnation: 7, Addr: "10.0.0.3:7000"}
	s := reconcileState{servers: planServers("a", "b"), self: planMember("a").serverID(), desired: []Replica{planMember("a"), planMember("b"), c}}
	want := raft.Server{Suffrage: raft.Nonvoter, ID: ServerID("c", 7), Address: ServerAddress("10.0.0.3:7000", 7)}
	if p := nextChange(s); p.kind != AddedLearner || !slices.Equal(p.targets, []raft.Server{want}) {
		t.Fatalf("nextChange = %+v, want a learner %+v", p, want)
	}
	s.servers = append(s.servers, want)
	s.caughtUp = map[raft.ServerID]bool{want.ID: true}
	if p := nextChange(s); p.kind != PromotedVoter || !slices.Equal(p.targets, []raft.Server{want}) {
		t.Fatalf("nextChange = %+v, want %+v promoted", p, want)
	}
}

// A replica is dropped only once a configuration without it is committed.
func TestDroppable(t *testing.T) {
	servers := planServers("a", "b")
	a, c := planMember("a").serverID(), planMember("c").serverID()
	for _, tc := range []struct {
		name                  string
		id                    raft.ServerID
		cfgIndex, commitIndex uint64
		want                  bool
	}{
		{name: "configuration lists it", id: a, cfgIndex: 5, commitIndex: 9, want: false},
		{name: "configuration lists it, uncommitted", id: a, cfgIndex: 9, commitIndex: 5, want: false},
		{name: "left out, not yet committed", id: c, cfgIndex: 9, commitIndex: 8, want: false},
		{name: "left out, committed at its index", id: c, cfgIndex: 9, commitIndex: 9, want: true},
		{name: "left out, committed past it", id: c, cfgIndex: 9, commitIndex: 12, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := droppable(servers, tc.cfgIndex, tc.commitIndex, tc.id); got != tc.want {
				t.Errorf("droppable = %v, want %v", got, tc.want)
			}
		})
	}
}
