package raftgroup

import (
	"strings"
	"testing"
	"time"
)

func TestTimingValidate(t *testing.T) {
	if err := DefaultTuning().Validate(); err != nil {
		t.Fatalf("DefaultTuning: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Tuning)
		want   []string // in the error
	}{
		{"lease above heartbeat", func(t *Tuning) { t.HeartbeatTimeout = 500 * time.Millisecond; t.ElectionTimeout = time.Second },
			[]string{"LeaderLeaseTimeout", "1s", "HeartbeatTimeout", "500ms"}},
		{"election below heartbeat", func(t *Tuning) { t.ElectionTimeout = time.Second }, []string{"ElectionTimeout", "1s", "2s"}},
		{"zero heartbeat", func(t *Tuning) { t.HeartbeatTimeout = 0 }, []string{"HeartbeatTimeout", "0s"}},
		{"tiny commit timeout", func(t *Tuning) { t.CommitTimeout = time.Microsecond }, []string{"CommitTimeout", "1µs"}},
		{"zero snapshot interval", func(t *Tuning) { t.SnapshotInterval = 0 }, []string{"SnapshotInterval"}},
		{"zero apply timeout", func(t *Tuning) { t.ApplyTimeout = 0 }, []string{"ApplyTimeout"}},
		{"zero batch", func(t *Tuning) { t.MaxBatch = 0 }, []string{"MaxBatch", "0"}},
		{"batch too large", func(t *Tuning) { t.MaxBatch = 1 << 20 }, []string{"MaxBatch", "1048576"}},
		{"no inflight batch", func(t *Tuning) { t.MaxInflightBatches = 0 }, []string{"MaxInflightBatches", "0"}},
	} {
		tm := DefaultTuning()
		tc.change(&tm)
		err := tm.Validate()
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not name %q", tc.name, err, w)
			}
		}
	}
}
