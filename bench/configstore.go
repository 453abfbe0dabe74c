package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/feellmoose/gridkv"
)

// listPage is the page size of the list scenario.
const listPage = 100

// listClient turns every read of the workload into a List of one page after the key read.
type listClient struct{ kv *gridkv.GridKV }

func (c listClient) get(ctx context.Context, key string) ([]byte, error) {
	_, err := c.kv.List(ctx, "", gridkv.WithStartAfter(key), gridkv.WithLimit(listPage))
	return nil, err
}

func (c listClient) set(context.Context, string, []byte) error {
	return errors.New("the list scenario only reads")
}

// list measures pages of listPage keys, each after a random key, from a node holding -keys
// keys.
func (b *bench) list(ctx context.Context, sc scenario) ([]row, error) {
	c, err := b.clusterFor(ctx, sc.shape)
	if err != nil {
		return nil, err
	}
	size := b.cfg.valueSizes[0]
	if c.loaded != size {
		b.prog.step("list: preloading %d keys of %d bytes", len(b.keys), size)
		if err := preload(ctx, clientsFor(c, 0), b.keys, size, b.cfg.workers); err != nil {
			return nil, err
		}
		c.loaded = size
	}
	var clients []client
	for _, kv := range c.nodes {
		clients = append(clients, listClient{kv})
	}
	r := &runner{keys: b.keys, workers: b.cfg.workers, rate: b.cfg.rate, cpuClock: c.cpuClock}
	w := workload{readRatio: 1, valueSize: size, dist: b.cfg.dists[0]}
	b.prog.step("list: pages of %d keys, measuring %v", listPage, b.cfg.duration)
	s, err := r.run(ctx, clients, w, b.cfg.warmup, b.cfg.duration)
	if err != nil {
		return nil, err
	}
	rw := row{Scenario: sc.name, Shape: sc.shape.String(), Workload: fmt.Sprintf("page=%d keys=%d v=%d", listPage, len(b.keys), size)}
	rw.fill(s, nil)
	rw.Note = fmt.Sprintf("%.0f keys/s listed", rw.OpsPerSec*listPage)
	return []row{rw}, nil
}

// stampClient writes values that start with the time of the write, for the watch scenario's
// lag.
type stampClient struct{ kv *gridkv.GridKV }

func (c stampClient) get(ctx context.Context, key string) ([]byte, error) { return c.kv.Get(ctx, key) }

func (c stampClient) set(ctx context.Context, key string, value []byte) error {
	v := make([]byte, max(len(value), 8))
	copy(v, value)
	binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
	return c.kv.Set(ctx, key, v)
}

// watchers runs n watches of prefix spread over the cluster's nodes until stop is called.
// With lag set, each records the delay from a write to its event.
type watchers struct {
	events atomic.Int64
	mu     sync.Mutex // guards lag
	lag    *hdrhistogram.Histogram
	stop   context.CancelFunc
	wg     sync.WaitGroup
	errs   atomic.Int64
}

func startWatchers(ctx context.Context, c *cluster, n int, prefix string, lag bool) *watchers {
	ctx, cancel := context.WithCancel(ctx)
	ws := &watchers{stop: cancel}
	if lag {
		ws.lag = hdrhistogram.New(histLowest, histHighest, histDigits)
	}
	for i := range n {
		kv := c.nodes[i%len(c.nodes)]
		ws.wg.Go(func() {
			for ev, err := range kv.Watch(ctx, prefix) {
				if err != nil {
					if ctx.Err() == nil {
						ws.errs.Add(1)
					}
					return
				}
				ws.events.Add(1)
				if ws.lag != nil && len(ev.Entry.Value) >= 8 {
					d := time.Now().UnixNano() - int64(binary.BigEndian.Uint64(ev.Entry.Value))
					ws.mu.Lock()
					_ = ws.lag.RecordValue(max(d, histLowest))
					ws.mu.Unlock()
				}
			}
		})
	}
	return ws
}

func (ws *watchers) close() {
	ws.stop()
	ws.wg.Wait()
}

// watchSettle is how long the watch scenarios give their watchers to start (each first reads
// where every partition stands) before measuring.
const watchSettle = 2 * time.Second

// watch measures the events delivered to watchWatchers watchers of every key while the
// workload writes at W=2, and each event's lag behind its write.
func (b *bench) watch(ctx context.Context, sc scenario) ([]row, error) {
	c, err := b.clusterFor(ctx, sc.shape)
	if err != nil {
		return nil, err
	}
	ws := startWatchers(ctx, c, sc.watchers, "", true)
	defer ws.close()
	time.Sleep(watchSettle)
	var clients []client
	for _, kv := range c.nodes {
		clients = append(clients, stampClient{kv})
	}
	r := &runner{keys: b.keys, workers: b.cfg.workers, rate: b.cfg.rate, cpuClock: c.cpuClock}
	w := workload{readRatio: 0, valueSize: b.cfg.valueSizes[0], dist: b.cfg.dists[0]}
	b.prog.step("watch: %d watchers, writes at W=2, measuring %v", sc.watchers, b.cfg.duration)
	ev0 := ws.events.Load()
	s, err := r.run(ctx, clients, w, 0, b.cfg.duration)
	if err != nil {
		return nil, err
	}
	delivered := ws.events.Load() - ev0
	ws.mu.Lock()
	p50, p99 := micros(ws.lag.ValueAtQuantile(50)), micros(ws.lag.ValueAtQuantile(99))
	ws.mu.Unlock()
	rw := row{Scenario: sc.name, Shape: sc.shape.String(), Workload: w.String(), CPUPercent: s.cpuPercent()}
	rw.Ops = delivered
	rw.OpsPerSec = float64(delivered) / s.wall.Seconds()
	rw.P50us, rw.P99us = p50, p99
	rw.Note = fmt.Sprintf("%d watchers: %.0f events/s delivered for %.0f writes/s; lag p50 %.1f ms, p99 %.1f ms; %d watch errors",
		sc.watchers, rw.OpsPerSec, s.opsPerSec(), p50/1000, p99/1000, ws.errs.Load())
	return []row{rw}, nil
}

// ttlClient writes every key with a TTL, for the cost of deadlines on writes.
type ttlClient struct{ *gridClient }

func (c ttlClient) set(ctx context.Context, key string, value []byte) error {
	return c.kv.Set(ctx, key, value, gridkv.WithTTL(time.Hour))
}
