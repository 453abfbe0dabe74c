package gridkv

import "testing"

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
