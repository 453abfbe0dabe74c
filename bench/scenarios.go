package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// clusterStartTimeout bounds starting a cluster and waiting for its full replica sets.
const clusterStartTimeout = 3 * time.Minute

// bench runs the selected scenarios in order.
type bench struct {
	cfg  *config
	prog *progress
	keys keySet

	cur       *cluster           // the cluster of the current shape, if any
	closing   chan struct{}      // closed once the previous cluster has finished closing
	baselines map[string]*sample // by workload and worker count
}

func newBench(cfg *config, prog *progress) *bench {
	return &bench{cfg: cfg, prog: prog, keys: newKeySet(cfg.keys), baselines: map[string]*sample{}}
}

// job is one row to measure: a scenario with one value of each swept setting.
type job struct {
	sc    scenario
	label string
	work  workload
}

// jobs expands a scenario over -value-size, -dist and, for a mixed scenario, -read-ratio.
func (b *bench) jobs(sc scenario) []job {
	ratios := []float64{sc.readRatio}
	if sc.readRatio < 0 {
		ratios = b.cfg.readRatios
	}
	var out []job
	for _, r := range ratios {
		for _, v := range b.cfg.valueSizes {
			for _, d := range b.cfg.dists {
				label := sc.name
				if sc.readRatio < 0 {
					label += fmt.Sprintf(" r=%g", r)
				}
				if len(b.cfg.valueSizes) > 1 {
					label += fmt.Sprintf(" v=%d", v)
				}
				if len(b.cfg.dists) > 1 {
					label += " " + d
				}
				out = append(out, job{sc: sc, label: label, work: workload{readRatio: r, valueSize: v, dist: d}})
			}
		}
	}
	return out
}

func (b *bench) runAll(ctx context.Context) ([]row, error) {
	defer b.waitClosed()
	defer b.closeCluster()
	if err := b.runBaselines(ctx); err != nil {
		return nil, err
	}
	var rows []row
	for i, sc := range b.cfg.scenarios {
		var err error
		var got []row
		switch sc.kind {
		case kindHeap:
			b.closeCluster() // nothing else may hold heap while it is measured
			b.waitClosed()
			got, err = b.heap(ctx, sc)
		case kindIdle:
			got, err = b.idle(ctx, sc)
		case kindList:
			got, err = b.list(ctx, sc)
		case kindWatch:
			got, err = b.watch(ctx, sc)
		default:
			got, err = b.workload(ctx, sc, i)
		}
		rows = append(rows, got...)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	return rows, nil
}

func baselineKey(w workload) string { return w.String() }

// runBaselines measures the raw map for every distinct workload first, while no cluster runs
// beside it.
func (b *bench) runBaselines(ctx context.Context) error {
	r := &runner{keys: b.keys, workers: b.cfg.workers, rate: b.cfg.rate, cpuClock: processCPU}
	maps := map[int]*rawMap{}
	for _, sc := range b.cfg.scenarios {
		if sc.kind != kindWorkload {
			continue
		}
		for _, j := range b.jobs(sc) {
			key := baselineKey(j.work)
			if b.baselines[key] != nil {
				continue
			}
			m := maps[j.work.valueSize]
			if m == nil {
				m = newRawMap()
				if err := preload(ctx, []client{m}, b.keys, j.work.valueSize, b.cfg.workers); err != nil {
					return err
				}
				maps[j.work.valueSize] = m
			}
			b.prog.step("baseline raw map, %s: measuring %v", j.work, b.cfg.duration)
			s, err := r.run(ctx, []client{m}, j.work, b.cfg.warmup, b.cfg.duration)
			if err != nil {
				return fmt.Errorf("baseline %s: %w", j.work, err)
			}
			b.baselines[key] = s
		}
	}
	return nil
}

// clusterFor returns the cluster of sh, closing the previous one if its shape differs.
func (b *bench) clusterFor(ctx context.Context, sh shape) (*cluster, error) {
	if b.cur != nil && b.cur.shape == sh {
		return b.cur, nil
	}
	b.closeCluster()
	b.prog.step("starting a cluster of %s", sh)
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	t0 := time.Now()
	c, err := startCluster(ctx, b.cfg, sh)
	if err != nil {
		return nil, err
	}
	b.prog.step("cluster of %s ready in %v", sh, time.Since(t0).Round(time.Millisecond))
	b.cur = c
	b.waitClosed() // the previous cluster must not burn CPU during a measurement
	return c, nil
}

// closeCluster starts closing the current cluster in the background: a graceful Close takes
// seconds, which the next cluster's start-up can overlap.
func (b *bench) closeCluster() {
	if b.cur == nil {
		return
	}
	b.waitClosed()
	c, done := b.cur, make(chan struct{})
	b.cur, b.closing = nil, done
	go func() {
		defer close(done)
		t0 := time.Now()
		c.close()
		b.prog.step("closed the cluster of %s in %v", c.shape, time.Since(t0).Round(time.Millisecond))
	}()
}

func (b *bench) waitClosed() {
	if b.closing == nil {
		return
	}
	if !isClosed(b.closing) {
		b.prog.step("waiting for the previous cluster to close")
	}
	<-b.closing
	b.closing = nil
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// cpuClock returns the CPU time of this process plus, with -procs, the cluster's children.
func (c *cluster) cpuClock() time.Duration {
	t := processCPU()
	for _, ch := range c.children {
		t += ch.cpuTime()
	}
	return t
}

func (b *bench) workload(ctx context.Context, sc scenario, index int) ([]row, error) {
	c, err := b.clusterFor(ctx, sc.shape)
	if err != nil {
		return nil, err
	}
	clients := clientsFor(c, sc.level)
	if sc.ttl {
		for i := range clients {
			clients[i] = ttlClient{clients[i].(*gridClient)}
		}
	}
	r := &runner{keys: b.keys, workers: b.cfg.workers, rate: b.cfg.rate, cpuClock: c.cpuClock}
	if sc.shape.disk.durable() {
		r.fsyncs = c.walFsyncs
	}
	if sc.parked > 0 {
		release := make(chan struct{})
		var parked sync.WaitGroup
		for range sc.parked {
			parked.Go(func() { <-release })
		}
		defer parked.Wait()
		defer close(release)
	}
	if sc.watchers > 0 {
		// Watches of a prefix nothing writes: they must cost the writes nothing.
		b.prog.step("%s: opening %d idle watchers", sc.name, sc.watchers)
		ws := startWatchers(ctx, c, sc.watchers, "bench-idle-watch/", false)
		defer ws.close()
		time.Sleep(watchSettle)
	}
	var rows []row
	for _, j := range b.jobs(sc) {
		if j.work.readRatio > 0 && c.loaded != j.work.valueSize {
			b.prog.step("%s: preloading %d keys of %d bytes", j.label, len(b.keys), j.work.valueSize)
			if err := preload(ctx, clients, b.keys, j.work.valueSize, b.cfg.workers); err != nil {
				return rows, err
			}
			c.loaded = j.work.valueSize
		}
		b.prog.step("[%d/%d] %s: measuring %v", index+1, len(b.cfg.scenarios), j.label, b.cfg.duration)
		s, err := r.run(ctx, clients, j.work, b.cfg.warmup, b.cfg.duration)
		if err != nil {
			return rows, err
		}
		if j.work.readRatio == 0 {
			c.loaded = j.work.valueSize // every write stores a value of this size
		}
		rw := row{Scenario: j.label, Shape: sc.shape.String(), Workload: j.work.String()}
		rw.fill(s, b.baselines[baselineKey(j.work)])
		if sc.shape.disk.durable() {
			rw.fillFsyncs(s, j.work, sc.shape)
		}
		rows = append(rows, rw)
	}
	return rows, nil
}

// idle measures the CPU the cluster burns with no traffic for -duration.
func (b *bench) idle(ctx context.Context, sc scenario) ([]row, error) {
	c, err := b.clusterFor(ctx, sc.shape)
	if err != nil {
		return nil, err
	}
	b.prog.step("idle %s: measuring %v", sc.shape, b.cfg.duration)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs0 := ms.Mallocs
	cpu0, t0 := c.cpuClock(), time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(b.cfg.duration):
	}
	wall := time.Since(t0)
	s := &sample{wall: wall, cpu: c.cpuClock() - cpu0}
	runtime.ReadMemStats(&ms)
	rw := row{Scenario: sc.name, Shape: sc.shape.String(), CPUPercent: s.cpuPercent()}
	rw.Note = fmt.Sprintf("%.0f allocs/s", float64(ms.Mallocs-mallocs0)/wall.Seconds())
	return []row{rw}, nil
}

// heap measures the heap that -keys keys take on a fresh single node, against the raw map
// holding the same keys and values. Both are measured alone in the process.
func (b *bench) heap(ctx context.Context, sc scenario) ([]row, error) {
	var rows []row
	for _, size := range b.cfg.valueSizes {
		b.prog.step("heap: %d keys of %d bytes in the raw map", len(b.keys), size)
		m := newRawMap()
		before := heapAfterGC()
		if err := preload(ctx, []client{m}, b.keys, size, b.cfg.workers); err != nil {
			return rows, err
		}
		rawBytes := heapAfterGC() - before
		runtime.KeepAlive(m)
		m = nil

		c, err := b.clusterFor(ctx, sc.shape)
		if err != nil {
			return rows, err
		}
		b.prog.step("heap: %d keys of %d bytes in one node", len(b.keys), size)
		clients := clientsFor(c, 0)
		before = heapAfterGC()
		if err := preload(ctx, clients, b.keys, size, b.cfg.workers); err != nil {
			return rows, err
		}
		gridBytes := heapAfterGC() - before
		b.closeCluster() // the next size starts from an empty node
		b.waitClosed()

		label := sc.name
		if len(b.cfg.valueSizes) > 1 {
			label += fmt.Sprintf(" v=%d", size)
		}
		rw := row{Scenario: label, Shape: sc.shape.String(), HeapBytes: gridBytes, RawHeapBytes: rawBytes}
		if rawBytes > 0 {
			rw.RatioHeap = float64(gridBytes) / float64(rawBytes)
		}
		rw.Note = fmt.Sprintf("heap +%s vs raw +%s = %.2fx (%d keys x %d B)",
			mib(gridBytes), mib(rawBytes), rw.RatioHeap, len(b.keys), size)
		rows = append(rows, rw)
	}
	return rows, nil
}

// heapAfterGC returns HeapAlloc after two collections (the second frees what finalizers
// of the first released).
func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
