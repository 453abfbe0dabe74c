package raftgroup

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Close returns only once every question the leader's groups sent to other replicas has
// ended, even one that gives up late once cancelled: here the question a write acknowledged
// by all three replicas sends to a replica that never answers.
func TestCloseWaitsForReplicaQuestions(t *testing.T) {
	n1 := startNode(t, "n1", 101, "127.0.0.1:0", 1)
	n2 := startNode(t, "n2", 102, "127.0.0.1:0", 1)
	silent := n2.tr.Addr()
	var (
		block   atomic.Bool  // from now on, questions to the silent replica hang
		running atomic.Int32 // questions to it not yet returned
		entered = make(chan struct{}, 1)
	)
	leader := startNode(t, "n0", 100, "127.0.0.1:0", 1, func(cfg *Config) {
		ask := cfg.WaitApplied
		cfg.WaitApplied = func(ctx context.Context, addr string, group int, index uint64) error {
			if !block.Load() || addr != silent {
				return ask(ctx, addr, group, index)
			}
			running.Add(1)
			defer running.Add(-1)
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done()
			// Gives up late, as a call blocked on a connection until its deadline would.
			time.Sleep(time.Second)
			return ctx.Err()
		}
	})
	nodes := []*node{leader, n1, n2}
	g := formGroup(t, 0, nodes)
	block.Store(true)
	written := make(chan error, 1)
	go func() {
		_, err := g.Propose(context.Background(), set("k", "v"), WriteLevel{Ack: AckApplied, Replicas: 3})
		written <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the write never asked the silent replica")
	}
	leader.m.Close()
	if n := running.Load(); n != 0 {
		t.Fatalf("Close returned with %d questions to the silent replica still running", n)
	}
	if err := <-written; !errors.Is(err, ErrClosed) {
		t.Fatalf("write waiting on the silent replica: %v, want ErrClosed", err)
	}
	for _, n := range nodes {
		n.stop()
	}
	goleak.VerifyNone(t)
}
