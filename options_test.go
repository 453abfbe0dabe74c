package gridkv

import (
	"testing"

	"github.com/feellmoose/gridkv/raftgroup"
)

// A zero field of Timings takes its DefaultTimings value: a zero JoinTimeout once gave a 5 s
// join instead of the documented 30 s.
func TestZeroTimingsTakeDefaults(t *testing.T) {
	c, err := newConfig(&GridKVOptions{LocalNodeID: "n", LocalAddress: "127.0.0.1:1", Timings: &Timings{}})
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultTimings()
	if c.timings != def {
		t.Errorf("zero Timings became %+v; want %+v", c.timings, def)
	}
	tm := LocalTimings()
	tm.JoinTimeout = 0
	if c, err = newConfig(&GridKVOptions{LocalNodeID: "n", LocalAddress: "127.0.0.1:1", Timings: &tm}); err != nil {
		t.Fatal(err)
	}
	if c.timings.JoinTimeout != def.JoinTimeout || c.timings.DeadGrace != LocalTimings().DeadGrace {
		t.Errorf("JoinTimeout 0 became %v (want %v); DeadGrace %v kept as %v", c.timings.JoinTimeout, def.JoinTimeout, LocalTimings().DeadGrace, c.timings.DeadGrace)
	}
}

// W=1 acknowledges before commit only when reads do not claim to see every acknowledged
// write; with overlapping quorums (a single node, or R=N) a write waits for its commit.
func TestWriteLevelHonoursOverlappingQuorums(t *testing.T) {
	for _, tc := range []struct {
		n, r, w int
		want    raftgroup.Ack
	}{
		{1, 1, 1, raftgroup.AckCommit},
		{3, 1, 1, raftgroup.AckAppend},
		{3, 2, 1, raftgroup.AckAppend},
		{3, 3, 1, raftgroup.AckCommit},
		{3, 2, 2, raftgroup.AckCommit},
		{3, 1, 3, raftgroup.AckApplied},
	} {
		c := &config{replicas: tc.n, readQ: tc.r, writeQ: tc.w}
		if got := c.writeLevel().Ack; got != tc.want {
			t.Errorf("N=%d R=%d W=%d: ack %v, want %v", tc.n, tc.r, tc.w, got, tc.want)
		}
	}
}
