package gridkv

import "testing"

func TestClusterIDCarriesSettings(t *testing.T) {
	want := clusterSettings{partitions: 64, replicas: 5}
	id := newClusterID(want)
	if got, ok := parseClusterID(id); !ok || got != want {
		t.Fatalf("parseClusterID(%q) = %+v, %v; want %+v", id, got, ok, want)
	}
	if newClusterID(want) == id {
		t.Fatal("two new cluster IDs are equal")
	}
	for _, id := range []string{
		"",
		"0123456789abcdef0123456789abcdef", // an earlier version's: no settings
		"x.p8",
		"x.p8.n",
		"x.8.3",
		"x.p0.n3",
		"x.p8.n0",
		"x.p99999.n3",
		"x.p-1.n3",
		"x.p8.n3.extra",
	} {
		if s, ok := parseClusterID(id); ok {
			t.Errorf("parseClusterID(%q) = %+v; want no settings", id, s)
		}
	}
}

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
