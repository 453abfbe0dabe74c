// Command election elects a leader with GridKV: candidates race to create one key with
// CompareAndSwap at version 0 and a TTL; the winner keeps it alive by rewriting it at its
// version; the others watch it and run again when it expires or is released. When the leader
// stops refreshing (it crashed), another takes over within about a TTL. It runs a three-node
// cluster on loopback in one process, one candidate per node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/feellmoose/gridkv"
)

func main() {
	base := flag.Int("port", 7401, "first of three consecutive loopback ports")
	flag.Parse()
	if err := run(addrsFrom(*base, 3)); err != nil {
		fmt.Fprintln(os.Stderr, "election:", err)
		os.Exit(1)
	}
}

const (
	key = "election/leader"
	ttl = 2 * time.Second
)

// candidate runs for leader through kv until ctx ends. Each time it wins it reports on won and
// holds the lease until hold ends (a crash: it stops refreshing) or ctx does.
func candidate(ctx context.Context, kv *gridkv.GridKV, name string, won chan<- string, hold func(string) context.Context) error {
	for ctx.Err() == nil {
		e, err := kv.CompareAndSwap(ctx, key, 0, []byte(name), gridkv.WithTTL(ttl))
		switch {
		case err == nil:
			won <- name
			crashed, err := lead(hold(name), kv, name, e.Version)
			if crashed || err != nil {
				return err // a crashed candidate runs no more
			}
			continue
		case !errors.Is(err, gridkv.ErrVersionMismatch):
			return err
		}
		// Someone leads: wait until the key is gone, then run again. The watch starts at the
		// version seen, so a change in between is not missed.
		if err := awaitVacancy(ctx, kv); err != nil {
			return err
		}
	}
	return nil
}

// lead refreshes the lease at its version until ctx ends (crashed: the lease then runs out by
// itself); it returns at once if it lost the lease.
func lead(ctx context.Context, kv *gridkv.GridKV, name string, version uint64) (crashed bool, err error) {
	tick := time.NewTicker(ttl / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case <-tick.C:
		}
		e, err := kv.CompareAndSwap(ctx, key, version, []byte(name), gridkv.WithTTL(ttl))
		switch {
		case errors.Is(err, gridkv.ErrVersionMismatch):
			return false, nil // lost it
		case err != nil && ctx.Err() != nil:
			return true, nil
		case err != nil:
			return false, err
		}
		version = e.Version
	}
}

// awaitVacancy returns once the leader key is absent.
func awaitVacancy(ctx context.Context, kv *gridkv.GridKV) error {
	page, err := kv.List(ctx, key)
	if err != nil {
		return err
	}
	if len(page.Entries) == 0 {
		return nil
	}
	for ev, err := range kv.Watch(ctx, key, gridkv.FromCursor(page.Cursor)) {
		if err != nil {
			return err
		}
		if ev.Type != gridkv.EventPut {
			return nil
		}
	}
	return ctx.Err()
}

func run(addrs []string) error {
	nodes, err := startCluster(addrs)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	won := make(chan string, 3)
	var mu sync.Mutex
	crash := map[string]context.CancelFunc{}
	hold := func(name string) context.Context {
		mu.Lock()
		defer mu.Unlock()
		c, stop := context.WithCancel(ctx)
		crash[name] = stop
		return c
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i, kv := range nodes {
		wg.Go(func() {
			if err := candidate(ctx, kv, fmt.Sprintf("candidate-%d", i+1), won, hold); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	first := <-won
	fmt.Printf("%s is the leader\n", first)
	time.Sleep(ttl) // it keeps the lease past its TTL by refreshing it
	if v, err := nodes[0].Get(ctx, key); err != nil || string(v) != first {
		return fmt.Errorf("after one TTL the leader key is %q, %v; want %s", v, err, first)
	}
	fmt.Printf("%s still leads after %v: it refreshes its lease\n", first, ttl)

	crashed := time.Now()
	mu.Lock()
	crash[first]()
	mu.Unlock()
	fmt.Printf("%s stops refreshing\n", first)
	select {
	case next := <-won:
		fmt.Printf("%s takes over %v later\n", next, time.Since(crashed).Round(100*time.Millisecond))
		if next == first {
			return errors.New("the crashed leader won again")
		}
	case err := <-errs:
		return err
	case <-ctx.Done():
		return errors.New("no one took over")
	}
	fmt.Println("done")
	return nil
}

// addrsFrom returns n consecutive loopback addresses from port base.
func addrsFrom(base, n int) []string {
	var addrs []string
	for i := range n {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", base+i))
	}
	return addrs
}

// startCluster starts a node on each address, the first creating the cluster and the others
// joining it, and waits until every partition has a leader.
func startCluster(addrs []string) ([]*gridkv.GridKV, error) {
	timings := gridkv.LocalTimings()
	var nodes []*gridkv.GridKV
	for i, addr := range addrs {
		opts := &gridkv.GridKVOptions{LocalNodeID: fmt.Sprintf("node-%d", i+1), LocalAddress: addr, Timings: &timings}
		if i > 0 {
			opts.SeedAddrs = []string{addrs[0]}
		}
		kv, err := gridkv.NewGridKV(opts)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, kv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, kv := range nodes {
		if err := kv.WaitReady(ctx); err != nil {
			return nodes, err
		}
	}
	return nodes, nil
}

func closeAll(nodes []*gridkv.GridKV) {
	for _, kv := range nodes {
		kv.Close()
	}
}
