// Command devsingle runs GridKV as a single node with one replica per partition
// (ReplicaCount 1), the setting for development and for tests of code that embeds GridKV: no
// other node to start, ready as soon as its groups elect themselves, and the same API as a
// cluster. It exercises each kind of call once, checking the answers, then measures writes
// and reads from many goroutines.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv"
)

func main() {
	port := flag.Int("port", 7991, "loopback port of the node")
	traffic := flag.Duration("d", 5*time.Second, "how long to measure throughput")
	verbose := flag.Bool("v", false, "log GridKV's messages to stderr")
	flag.Parse()
	if err := run(fmt.Sprintf("127.0.0.1:%d", *port), *traffic, loggerFor(*verbose)); err != nil {
		fmt.Fprintln(os.Stderr, "devsingle:", err)
		os.Exit(1)
	}
}

func run(addr string, traffic time.Duration, logger *slog.Logger) error {
	start := time.Now()
	timings := gridkv.LocalTimings()
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "dev",
		LocalAddress: addr,
		ReplicaCount: 1, // R and W default to 1 as well: every read is served locally
		Logger:       logger,
		Timings:      &timings,
	})
	if err != nil {
		return err
	}
	defer kv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), traffic+60*time.Second)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		return err
	}
	fmt.Printf("single node ready in %v\n", time.Since(start).Round(time.Millisecond))

	if err := tour(ctx, kv); err != nil {
		return err
	}
	return measure(ctx, kv, traffic)
}

// tour makes each kind of call once and checks what it returns.
func tour(ctx context.Context, kv *gridkv.GridKV) error {
	if err := kv.Set(ctx, "user:1", []byte("Alice")); err != nil {
		return err
	}
	if v, err := kv.Get(ctx, "user:1"); err != nil || string(v) != "Alice" {
		return fmt.Errorf("%w: get user:1 = %q, %v; want Alice", errMissedWrite, v, err)
	}
	e, err := kv.GetEntry(ctx, "user:1")
	if err != nil {
		return err
	}
	if _, err := kv.CompareAndSwap(ctx, "user:1", e.Version, []byte("Alice B.")); err != nil {
		return fmt.Errorf("compare-and-swap at the current version: %w", err)
	}
	if _, err := kv.CompareAndSwap(ctx, "user:1", e.Version, []byte("stale")); !errors.Is(err, gridkv.ErrVersionMismatch) {
		return fmt.Errorf("compare-and-swap at an old version returned %v, want ErrVersionMismatch", err)
	}
	if err := kv.Delete(ctx, "user:1"); err != nil {
		return err
	}
	if _, err := kv.Get(ctx, "user:1"); !errors.Is(err, gridkv.ErrKeyNotFound) {
		return fmt.Errorf("%w: get after delete returned %v, want ErrKeyNotFound", errMissedWrite, err)
	}
	fmt.Println("check passed: set, get, compare-and-swap (match and mismatch), delete")

	for i := range 5 {
		if err := kv.Set(ctx, fmt.Sprintf("cfg/%d", i), []byte("x")); err != nil {
			return err
		}
	}
	page, err := kv.List(ctx, "cfg/")
	if err != nil {
		return err
	}
	if len(page.Entries) != 5 {
		return fmt.Errorf("%w: list cfg/ returned %d entries, want 5", errMissedWrite, len(page.Entries))
	}
	watchCtx, stopWatch := context.WithTimeout(ctx, 10*time.Second)
	defer stopWatch()
	if err := kv.Set(ctx, "cfg/ttl", []byte("short-lived"), gridkv.WithTTL(200*time.Millisecond)); err != nil {
		return err
	}
	// The listing's cursor predates the write above, so the watch sees it, then its expiry.
	var seen []gridkv.EventType
	for ev, err := range kv.Watch(watchCtx, "cfg/", gridkv.FromCursor(page.Cursor)) {
		if err != nil {
			return fmt.Errorf("watch ended after %v: %w", seen, err)
		}
		seen = append(seen, ev.Type)
		if ev.Type == gridkv.EventExpire {
			break
		}
	}
	if len(seen) != 2 || seen[0] != gridkv.EventPut {
		return fmt.Errorf("watch saw %v, want a put then an expiry", seen)
	}
	fmt.Println("check passed: list, watch from the listing's cursor, a key with a TTL expiring")
	return nil
}

// errMissedWrite marks a read, made after a write was acknowledged, that did not return it.
var errMissedWrite = errors.New("a read did not return the write acknowledged just before it")

// measure runs 16 goroutines for d, each writing its own keys and reading each back at once.
// R + W > N (1 + 1 > 1), so reads are linearizable: each must return the value just written.
func measure(ctx context.Context, kv *gridkv.GridKV, d time.Duration) error {
	var writes, reads, missed atomic.Int64
	var firstMiss atomic.Value
	errs := make([]error, 16)
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := range errs {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				key, value := fmt.Sprintf("load/%d/%d", g, i%1000), fmt.Sprintf("%d", i)
				if err := kv.Set(ctx, key, []byte(value)); err != nil {
					errs[g] = err
					return
				}
				writes.Add(1)
				v, err := kv.Get(ctx, key)
				if err != nil && !errors.Is(err, gridkv.ErrKeyNotFound) {
					errs[g] = err
					return
				}
				reads.Add(1)
				if string(v) != value {
					missed.Add(1)
					firstMiss.CompareAndSwap(nil, fmt.Sprintf("get %s returned %q (err %v) after set %q", key, v, err, value))
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("%d goroutines over %v: %.0f writes/s and %.0f reads/s\n",
		len(errs), d, float64(writes.Load())/d.Seconds(), float64(reads.Load())/d.Seconds())
	if n := missed.Load(); n > 0 {
		return fmt.Errorf("%w: %d of %d reads, first: %s", errMissedWrite, n, reads.Load(), firstMiss.Load())
	}
	fmt.Println("check passed: every read returned the value written just before it")
	return nil
}

func loggerFor(verbose bool) *slog.Logger {
	if !verbose {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
