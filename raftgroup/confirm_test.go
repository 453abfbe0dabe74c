package raftgroup

import (
	"context"
	"fmt"
	"testing"

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

// Read rounds are confirmed by term checks while a majority answers them, also when the peer
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
		rounds, heartbeats, _ := g.ReadStats()
		for end := i + 5; i < end; i++ {
			writeThenRead(t, g, fmt.Sprintf("k%d", i))
		}
		r, h, _ := g.ReadStats()
		r, h = r-rounds, h-heartbeats
		switch {
		case r == 0:
			t.Fatalf("%s: no read rounds counted", name)
		case wantHeartbeats && h != r:
			t.Fatalf("%s: %d of %d rounds were heartbeat rounds, want all", name, h, r)
		case !wantHeartbeats && h != 0 && g.Term() == term:
			t.Fatalf("%s: %d of %d rounds fell back to a heartbeat round", name, h, r)
		}
	}

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

	rounds, _, vouched := g.ReadStats()
	if err := g.ReadIndexVouched(ctx, f.ServerID(), f.Term()); err != nil {
		t.Fatal(err)
	}
	if v, _, ok := g.Partition().Get("k"); !ok || string(v) != "v" {
		t.Fatalf("after a vouched read, k = %q, %v", v, ok)
	}
	r, _, vch := g.ReadStats()
	if r != rounds || vch != vouched+1 {
		t.Fatalf("a voter's vouch in this term: %d rounds and %d vouched reads, want 0 and 1", r-rounds, vch-vouched)
	}

	// Vouches that prove nothing: a term after the leader's, a server outside the group, the
	// leader itself. Each read still succeeds, through a round of its own.
	for _, v := range []struct {
		name, server string
		term         uint64
	}{
		{"a later term", f.ServerID(), g.Term() + 1},
		{"a stranger", "n9/1", g.Term()},
		{"the leader itself", g.ServerID(), g.Term()},
	} {
		before, _, vouchedBefore := g.ReadStats()
		if err := g.ReadIndexVouched(ctx, v.server, v.term); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		after, _, vouchedAfter := g.ReadStats()
		if after != before+1 || vouchedAfter != vouchedBefore {
			t.Errorf("vouch from %s: %d rounds, %d vouched reads; want 1 and 0", v.name, after-before, vouchedAfter-vouchedBefore)
		}
	}

	// A follower is not the one to serve it.
	if err := f.ReadIndexVouched(ctx, g.ServerID(), g.Term()); !Retryable(err) {
		t.Fatalf("vouched read on a follower: %v, want a retryable not-leader error", err)
	}
}
