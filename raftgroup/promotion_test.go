package raftgroup

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/transport"
	"github.com/hashicorp/go-metrics"
)

// holdingSink is a go-metrics sink that, once armed, holds the first caller of raft's
// "dispatchLog" timer until release returns. raft times dispatchLogs with a deferred call,
// so the leader loop is held right after it appended an entry and told the replicators,
// and before it does whatever follows the append.
type holdingSink struct {
	metrics.BlackholeSink
	armed   atomic.Pointer[func()]
	tripped atomic.Bool
}

func (s *holdingSink) AddSampleWithLabels(key []string, _ float32, _ []metrics.Label) {
	if len(key) == 0 || key[len(key)-1] != "dispatchLog" {
		return
	}
	if release := s.armed.Swap(nil); release != nil {
		s.tripped.Store(true)
		(*release)()
	}
}

// installHoldingSink makes a holdingSink raft's metrics sink for the rest of the test, then
// puts back what go-metrics starts with: a discarding sink behind a zero Config, which
// filters every metric out before it reaches the sink.
func installHoldingSink(t *testing.T) *holdingSink {
	t.Helper()
	sink := &holdingSink{}
	if _, err := metrics.NewGlobal(&metrics.Config{FilterDefault: true, TimerGranularity: time.Millisecond}, sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = metrics.NewGlobal(&metrics.Config{}, &metrics.BlackholeSink{}) })
	return sink
}

// slowLink delays, while to is set, every write of Raft traffic to the node at that address.
type slowLink struct {
	to    atomic.Pointer[string]
	delay time.Duration
}

func (s *slowLink) Allow(_, to string, class transport.Class) (time.Duration, bool) {
	if p := s.to.Load(); p != nil && *p == to && class == transport.ClassMux {
		return s.delay, true
	}
	return 0, true
}

// A learner promoted while one of three voters is dead needs every live voter, itself
// included, to acknowledge the promotion. hashicorp/raft drops the new voter's
// acknowledgement when it arrives between the leader appending the promotion and starting to
// count the new voter. The test stages that: it holds the leader loop in the window until the
// learner holds the entry (and has had time to answer), while the other live voter receives
// it only later, so that the old configuration cannot commit it either. The promotion must
// commit all the same, on an idle group, well within the apply timeout; without the empty entries
// awaitChange appends, it never commits at all.
func TestPromotionCommitsWhenTheNewVotersFirstAckIsDropped(t *testing.T) {
	sink := installHoldingSink(t)
	slow := &slowLink{delay: 500 * time.Millisecond}
	opts := transport.DefaultNetworkOptions()
	opts.Faults = slow
	// Timings that outlast the slow link: its delay holds heartbeats back too.
	patient := func(c *Config) {
		c.Tuning.HeartbeatTimeout = 2 * time.Second
		c.Tuning.ElectionTimeout = 2 * time.Second
		c.Tuning.LeaderLeaseTimeout = time.Second
	}
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNodeOn(t, fmt.Sprintf("n%d", i), uint64(100+i), opts, "127.0.0.1:0", 1, patient))
	}
	g := formGroup(t, 0, nodes)
	nodes[2].stop()
	n3 := startNodeOn(t, "n3", 103, opts, "127.0.0.1:0", 1, patient)
	desired := []Replica{nodes[0].member(), nodes[1].member(), n3.member()}
	if ch, err := g.Reconcile(desired, false); ch != AddedLearner || err != nil {
		t.Fatalf("Reconcile = %v, %v; want the learner added", ch, err)
	}
	var learner *Group
	waitFor(t, 10*time.Second, "the learner to apply everything", func() bool {
		learner = n3.m.Group(0)
		return learner != nil && learner.raft.AppliedIndex() >= g.raft.CommitIndex()
	})

	if err := g.ReadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	voter := nodes[1].m.Group(0)
	var staged atomic.Bool
	release := func() {
		// The leader has appended the promotion; wait for the learner to hold it, then give
		// its acknowledgement time to reach the leader. Should it arrive later, or the other
		// voter's arrive first, the race is not staged: staged says which.
		deadline := time.Now().Add(5 * time.Second)
		for learner.raft.LastIndex() < g.raft.LastIndex() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		staged.Store(learner.raft.LastIndex() == g.raft.LastIndex() && voter.raft.LastIndex() < g.raft.LastIndex())
	}
	slowed := nodes[1].tr.Addr()
	slow.to.Store(&slowed)
	sink.armed.Store(&release)
	start := time.Now()
	ch, err := g.Reconcile(desired, false)
	slow.to.Store(nil)
	if !sink.tripped.Load() || !staged.Load() {
		t.Fatalf("the race was not staged (leader held: %v)", sink.tripped.Load())
	}
	if ch != PromotedVoter || err != nil {
		t.Fatalf("Reconcile = %v, %v after %v; want the learner promoted", ch, err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("promotion committed in %v", time.Since(start).Round(time.Millisecond))
	voters, _ := voterIDs(t, g)
	if len(voters) != 4 {
		t.Fatalf("voters %v, want the three of before and the promoted learner", voters)
	}
	requireReadsAfterIdleTail(t, g)
}
