package raftgroup

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
)

// followerOf returns a replica of partition p other than leader.
func followerOf(t *testing.T, nodes []*node, p int, leader *Group) *Group {
	t.Helper()
	for _, n := range nodes {
		if g := n.m.Group(p); g != nil && g != leader {
			return g
		}
	}
	t.Fatal("no follower")
	return nil
}

func TestCheckTerms(t *testing.T) {
	nodes := threeNodes(t, 2)
	leader := formGroup(t, 0, nodes)
	f := followerOf(t, nodes, 0, leader)
	term := f.Term()
	host := f.m
	checks := []TermCheck{
		{Partition: 0, Server: f.ServerID(), Term: term},     // standing in the term asked
		{Partition: 0, Server: f.ServerID(), Term: term + 1}, // behind the asker: has voted in nothing later
		{Partition: 0, Server: f.ServerID(), Term: term - 1}, // moved past the asker's term
		{Partition: 0, Server: "n9/1", Term: term},           // another server ID
		{Partition: 1, Server: f.ServerID(), Term: term},     // not hosted there
		{Partition: 7, Server: f.ServerID(), Term: term},     // out of range
	}
	want := []bool{true, true, false, false, false, false}
	got := host.CheckTerms(checks)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("check %+v answered %v, want %v", checks[i], got[i], want[i])
		}
	}
}

// Reads are confirmed by their term checks while a majority answers them, also when the peer
// asked first says no or says nothing, and by raft's heartbeat round when no majority does;
// either way the read sees what was written before it.
func TestReadRoundsUseTermChecks(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	var peers []*node
	for _, n := range nodes {
		if n.m.Group(0) != g {
			peers = append(peers, n)
		}
	}
	i := 0
	phase := func(name string, wantHeartbeats bool) {
		t.Helper()
		term := g.Term()
		before := g.ReadStats()
		for end := i + 5; i < end; i++ {
			writeThenRead(t, g, fmt.Sprintf("k%d", i))
		}
		after := g.ReadStats()
		confirmed, heartbeats := after.Confirmed-before.Confirmed, after.HeartbeatRounds-before.HeartbeatRounds
		switch {
		case g.Term() != term:
			t.Logf("%s: the term changed; counts not checked", name) // an election under load; reads were still checked
		case wantHeartbeats && (confirmed != 0 || heartbeats == 0):
			t.Fatalf("%s: %d reads confirmed by term checks, %d heartbeat rounds; want none and some", name, confirmed, heartbeats)
		case !wantHeartbeats && (confirmed != 5 || heartbeats != 0):
			t.Fatalf("%s: %d of 5 reads confirmed by term checks, %d heartbeat rounds; want 5 and none", name, confirmed, heartbeats)
		}
	}

	writeThenRead(t, g, "barrier") // the term's first read runs its barrier in a round

	phase("every peer answering", false)
	for _, p := range peers { // whichever is asked first, one says no
		p.refuseTermChecks.Store(true)
		phase("one peer refusing", false)
		p.refuseTermChecks.Store(false)
	}
	for _, p := range peers { // whichever is asked first, one says nothing
		p.stallTermChecks.Store(true)
		phase("one peer silent", false)
		p.stallTermChecks.Store(false)
	}
	for _, p := range peers {
		p.refuseTermChecks.Store(true)
	}
	phase("every peer refusing", true)
}

func TestReadIndexVouched(t *testing.T) {
	nodes := threeNodes(t, 1)
	g := formGroup(t, 0, nodes)
	f := followerOf(t, nodes, 0, g)
	ctx := context.Background()
	if _, err := g.Propose(ctx, store.Command{Op: store.OpSet, Key: "k", Value: []byte("v")}, WriteLevel{}); err != nil {
		t.Fatal(err)
	}
	if err := g.ReadIndex(ctx); err != nil { // the term's barrier
		t.Fatal(err)
	}

	before := g.ReadStats()
	if err := g.ReadIndexVouched(ctx, f.ServerID(), f.Term()); err != nil {
		t.Fatal(err)
	}
	if v, _, ok := g.Partition().Get("k"); !ok || string(v) != "v" {
		t.Fatalf("after a vouched read, k = %q, %v", v, ok)
	}
	after := g.ReadStats()
	if after.Vouched != before.Vouched+1 || after.Confirmed != before.Confirmed || after.Rounds != before.Rounds {
		t.Fatalf("a voter's vouch in this term: before %+v, after %+v; want one vouched read and nothing else", before, after)
	}

	// Vouches that prove nothing: a term after the leader's, a server outside the group, the
	// leader itself. Each read still succeeds, confirmed by its own term checks.
	for _, v := range []struct {
		name, server string
		term         uint64
	}{
		{"a later term", f.ServerID(), g.Term() + 1},
		{"a stranger", "n9/1", g.Term()},
		{"the leader itself", g.ServerID(), g.Term()},
	} {
		before := g.ReadStats()
		if err := g.ReadIndexVouched(ctx, v.server, v.term); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		after := g.ReadStats()
		if after.Vouched != before.Vouched || after.Confirmed != before.Confirmed+1 {
			t.Errorf("vouch from %s: before %+v, after %+v; want one read confirmed by term checks", v.name, before, after)
		}
	}

	// A follower is not the one to serve it.
	if err := f.ReadIndexVouched(ctx, g.ServerID(), g.Term()); !Retryable(err) {
		t.Fatalf("vouched read on a follower: %v, want a retryable not-leader error", err)
	}
}

// Checks that come up while a call to a peer is out leave together in the next call, from any
// group, each distinct check once, and every asker gets its own answer.
func TestTermConfirmerSharesCalls(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex // guards calls
	var calls [][]TermCheck
	call := func(ctx context.Context, addr string, checks []TermCheck) ([]bool, error) {
		mu.Lock()
		calls = append(calls, slices.Clone(checks))
		first := len(calls) == 1
		mu.Unlock()
		if first {
			<-gate
		}
		oks := make([]bool, len(checks))
		for i, c := range checks {
			oks[i] = c.Term == 7
		}
		return oks, nil
	}
	c := newTermConfirmer(call, time.Minute, slog.New(slog.DiscardHandler))
	defer c.close()
	callCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(calls)
	}

	answers := make(chan checkAnswer, 8)
	c.ask("peer", TermCheck{Partition: 0, Server: "n1/1", Term: 7}, 0, answers) // leaves at once, held at the gate
	waitFor(t, 5*time.Second, "the first call", func() bool { return callCount() == 1 })
	for i := 1; i <= 5; i++ {
		c.ask("peer", TermCheck{Partition: 0, Server: "n1/1", Term: 7}, i, answers)
	}
	c.ask("peer", TermCheck{Partition: 1, Server: "n1/1", Term: 7}, 6, answers)
	c.ask("peer", TermCheck{Partition: 2, Server: "n1/1", Term: 8}, 7, answers)
	close(gate)

	got := make(map[int]bool)
	for range 8 {
		select {
		case a := <-answers:
			got[a.peer] = a.ok
		case <-time.After(5 * time.Second):
			t.Fatalf("answers so far %v, want 8", got)
		}
	}
	for i := 0; i <= 6; i++ {
		if !got[i] {
			t.Errorf("asker %d got no, want yes", i)
		}
	}
	if got[7] {
		t.Error("asker 7 (term 8) got yes, want no")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || len(calls[1]) != 3 {
		t.Fatalf("calls %v, want 2, the second carrying the 3 distinct checks queued behind the first", calls)
	}
}

// A group with a single voter confirms its reads without asking anyone and without the read
// loop (after the term's barrier).
func TestSingleVoterReadsAskNoOne(t *testing.T) {
	n := startNode(t, "n0", 1, "127.0.0.1:0", 1)
	n.refuseTermChecks.Store(true) // asking anyone would fail
	g, err := n.m.Open(0, true)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "bootstrap leader", g.IsLeader)
	writeThenRead(t, g, "barrier")
	before := g.ReadStats()
	for i := range 5 {
		writeThenRead(t, g, fmt.Sprintf("k%d", i))
	}
	after := g.ReadStats()
	if after.Confirmed != before.Confirmed+5 || after.Rounds != before.Rounds {
		t.Fatalf("single voter: before %+v, after %+v; want 5 reads confirmed and no round", before, after)
	}
}
