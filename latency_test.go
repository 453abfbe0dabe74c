package gridkv

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLatencyHistograms checks the striped histogram against what client_golang's own would
// report for the same observations: bucket bounds inclusive, counts cumulative, the sum in
// seconds.
func TestLatencyHistograms(t *testing.T) {
	h := newLatencyHistograms()
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ref", Help: "ref", Buckets: latencyBuckets[:]})
	durations := []time.Duration{0, 3 * time.Microsecond, 5 * time.Microsecond, 5*time.Microsecond + 1,
		time.Millisecond, 7 * time.Millisecond, time.Second, 11 * time.Second, time.Hour}
	for i, d := range durations {
		for j := range 3 { // different clock readings: different stripes
			h.observe(opSet, int64(d), int64(i*7919+j*104729))
			ref.Observe(d.Seconds())
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	refReg := prometheus.NewPedanticRegistry()
	refReg.MustRegister(ref)
	refFamilies, err := refReg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := refFamilies[0].GetMetric()[0].GetHistogram()
	for _, m := range families[0].GetMetric() {
		got := m.GetHistogram()
		op := m.GetLabel()[0].GetValue()
		if op != "set" {
			if got.GetSampleCount() != 0 {
				t.Errorf("%s: %d observations, want none", op, got.GetSampleCount())
			}
			continue
		}
		if got.GetSampleCount() != want.GetSampleCount() || math.Abs(got.GetSampleSum()-want.GetSampleSum()) > 1e-6 {
			t.Errorf("count %d sum %v, want %d and %v", got.GetSampleCount(), got.GetSampleSum(), want.GetSampleCount(), want.GetSampleSum())
		}
		for i, b := range got.GetBucket() {
			w := want.GetBucket()[i]
			if b.GetUpperBound() != w.GetUpperBound() || b.GetCumulativeCount() != w.GetCumulativeCount() {
				t.Errorf("bucket %d: le=%v count %d, want le=%v count %d", i, b.GetUpperBound(), b.GetCumulativeCount(), w.GetUpperBound(), w.GetCumulativeCount())
			}
		}
	}
}

// BenchmarkObserveOp measures what metrics add to one forwarded operation on the calling
// goroutine: two clock readings, a histogram observation and two counter increments, on
// every core at once. Compare with the CPU per operation the bench harness reports.
func BenchmarkObserveOp(b *testing.B) {
	m := newNodeMetrics(prometheus.NewRegistry())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var err error
			start := m.now()
			m.forward(opSet)
			m.observeOp(opSet, start, &err)
		}
	})
}
