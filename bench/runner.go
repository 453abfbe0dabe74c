package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds, from 1ns to a minute, to three significant digits.
const (
	histLowest  = 1
	histHighest = int64(time.Minute)
	histDigits  = 3
)

// opTimeout bounds a measured run's operations beyond its end, so a stuck cluster fails
// the run instead of hanging it.
const opTimeout = 30 * time.Second

// sample is the outcome of one measured run.
type sample struct {
	ops     int64
	errs    int64
	lastErr error
	wall    time.Duration
	cpu     time.Duration // user+system, of every process in the cluster
	mallocs uint64        // heap allocations in this process
	fsyncs  uint64        // the cluster's WAL fsyncs, when the runner counts them
	hist    *hdrhistogram.Histogram
}

func (s *sample) fsyncsPerSec() float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(s.fsyncs) / s.wall.Seconds()
}

func (s *sample) opsPerSec() float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(s.ops) / s.wall.Seconds()
}

func (s *sample) cpuPercent() float64 {
	if s.wall <= 0 {
		return 0
	}
	return 100 * s.cpu.Seconds() / s.wall.Seconds()
}

func (s *sample) allocsPerOp() float64 {
	if s.ops == 0 {
		return 0
	}
	return float64(s.mallocs) / float64(s.ops)
}

// runner drives workloads. Its histograms are reused across runs, since a hundred of them
// take megabytes.
type runner struct {
	keys     keySet
	workers  int
	rate     float64
	cpuClock func() time.Duration
	// fsyncs, if set, returns the cluster's WAL fsyncs so far; it is read at the start and
	// the end of the measured window, outside any operation's timing.
	fsyncs func() (uint64, error)

	hists []*hdrhistogram.Histogram
}

// processCPU returns this process's user+system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// run warms up for warmup, then measures the workload for d.
func (r *runner) run(ctx context.Context, clients []client, w workload, warmup, d time.Duration) (*sample, error) {
	if warmup > 0 {
		if _, err := r.measure(ctx, clients, w, warmup); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	return r.measure(ctx, clients, w, d)
}

func (r *runner) measure(ctx context.Context, clients []client, w workload, d time.Duration) (*sample, error) {
	for len(r.hists) < r.workers {
		r.hists = append(r.hists, hdrhistogram.New(histLowest, histHighest, histDigits))
	}
	ctx, cancel := context.WithTimeout(ctx, d+opTimeout)
	defer cancel()

	var (
		wg      sync.WaitGroup
		ops     atomic.Int64
		errs    atomic.Int64
		lastErr atomic.Pointer[error]
	)
	var fsyncs0 uint64
	if r.fsyncs != nil {
		var err error
		if fsyncs0, err = r.fsyncs(); err != nil {
			return nil, fmt.Errorf("reading the fsync count: %w", err)
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs0 := ms.Mallocs
	cpu0 := r.cpuClock()
	start := time.Now()
	end := start.Add(d)
	for i := 0; i < r.workers; i++ {
		h := r.hists[i]
		h.Reset()
		wk := &worker{
			client: clients[i%len(clients)],
			keys:   r.keys,
			pick:   newKeyPicker(w.dist, len(r.keys), uint64(start.UnixNano())+uint64(i)),
			value:  makeValue(w.valueSize, i),
			reads:  w.readRatio,
			hist:   h,
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n, failed int64
			var err error
			if r.rate > 0 {
				interval := max(time.Duration(float64(r.workers)/r.rate*float64(time.Second)), 1)
				first := start.Add(interval * time.Duration(i) / time.Duration(r.workers))
				n, failed, err = wk.openLoop(ctx, first, interval, end)
			} else {
				n, failed, err = wk.closedLoop(ctx, end)
			}
			ops.Add(n)
			errs.Add(failed)
			if err != nil {
				lastErr.Store(&err)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := r.cpuClock() - cpu0
	runtime.ReadMemStats(&ms)
	var fsyncs uint64
	if r.fsyncs != nil {
		n, err := r.fsyncs()
		if err != nil {
			return nil, fmt.Errorf("reading the fsync count: %w", err)
		}
		fsyncs = n - fsyncs0
	}

	s := &sample{
		ops:     ops.Load(),
		errs:    errs.Load(),
		wall:    wall,
		cpu:     cpu,
		mallocs: ms.Mallocs - mallocs0,
		fsyncs:  fsyncs,
		hist:    hdrhistogram.New(histLowest, histHighest, histDigits),
	}
	for _, h := range r.hists[:r.workers] {
		s.hist.Merge(h)
	}
	if p := lastErr.Load(); p != nil {
		s.lastErr = *p
	}
	if s.ops == 0 {
		if s.lastErr != nil {
			return s, fmt.Errorf("no operation succeeded: %w", s.lastErr)
		}
		return s, errors.New("no operation completed")
	}
	return s, nil
}

// worker is one client goroutine's state.
type worker struct {
	client client
	keys   keySet
	pick   *keyPicker
	value  []byte
	reads  float64
	hist   *hdrhistogram.Histogram
}

func (wk *worker) do(ctx context.Context) error {
	key := wk.keys[wk.pick.next()]
	if wk.reads >= 1 || (wk.reads > 0 && wk.pick.rng.Float64() < wk.reads) {
		_, err := wk.client.get(ctx, key)
		return err
	}
	return wk.client.set(ctx, key, wk.value)
}

// closedLoop issues the next operation as soon as the previous one returns, until end.
// Each worker checks the clock itself: a timer's goroutine can wait long behind a hundred
// busy workers.
func (wk *worker) closedLoop(ctx context.Context, end time.Time) (ops, errs int64, lastErr error) {
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		if err := wk.do(ctx); err != nil {
			errs++
			lastErr = err
			continue
		}
		wk.hist.RecordValue(int64(time.Since(t0)))
		ops++
	}
	return ops, errs, lastErr
}

// openLoop issues operations at first, first+interval, ... up to end, whatever the previous
// one took, and measures each from its scheduled time: a slow response delays the ones
// behind it, and their latency shows it (no coordinated omission).
func (wk *worker) openLoop(ctx context.Context, first time.Time, interval time.Duration, end time.Time) (ops, errs int64, lastErr error) {
	for due := first; due.Before(end) && ctx.Err() == nil; due = due.Add(interval) {
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		if err := wk.do(ctx); err != nil {
			errs++
			lastErr = err
			continue
		}
		wk.hist.RecordValue(int64(time.Since(due)))
		ops++
	}
	return ops, errs, lastErr
}

func makeValue(size, seed int) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = byte('a' + (i+seed)%26)
	}
	return v
}

// preload writes every key once with a value of size bytes, spread over workers.
func preload(ctx context.Context, clients []client, keys keySet, size, workers int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i%len(clients)]
			value := makeValue(size, i)
			for k := i; k < len(keys); k += workers {
				if err := c.set(ctx, keys[k], value); err != nil {
					errc <- fmt.Errorf("preloading %s: %w", keys[k], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}
