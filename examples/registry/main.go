// Command registry is a service registry on GridKV: each service instance registers itself
// under services/ with a TTL and refreshes it; a client lists the instances and watches the
// prefix, and sees an instance that stops refreshing (it crashed) expire. It runs a
// three-node cluster on loopback in one process.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/feellmoose/gridkv"
)

func main() {
	base := flag.Int("port", 7301, "first of three consecutive loopback ports")
	flag.Parse()
	if err := run(addrsFrom(*base, 3)); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

const ttl = 2 * time.Second

func run(addrs []string) error {
	nodes, err := startCluster(addrs)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Two instances register, each through its own node, and refresh at a third of the TTL.
	instances := map[string]*gridkv.GridKV{"services/api/a": nodes[0], "services/api/b": nodes[1]}
	stops := map[string]context.CancelFunc{}
	for key, kv := range instances {
		if err := kv.Set(ctx, key, []byte("up"), gridkv.WithTTL(ttl)); err != nil {
			return err
		}
		rctx, stop := context.WithCancel(ctx)
		stops[key] = stop
		go refresh(rctx, kv, key)
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()

	client := nodes[2]
	page, err := client.List(ctx, "services/")
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, e := range page.Entries {
		live[e.Key] = true
	}
	fmt.Printf("client lists %v\n", keys(live))

	// Instance b crashes: it stops refreshing, and its registration runs out.
	crashed := time.Now()
	stops["services/api/b"]()
	fmt.Println("services/api/b stops refreshing")
	for ev, err := range client.Watch(ctx, "services/", gridkv.FromCursor(page.Cursor)) {
		if err != nil {
			return err
		}
		if ev.Type != gridkv.EventExpire && ev.Type != gridkv.EventDelete {
			continue // a refresh
		}
		delete(live, ev.Entry.Key)
		fmt.Printf("client sees %s %s after %v: live %v\n", ev.Type, ev.Entry.Key,
			time.Since(crashed).Round(100*time.Millisecond), keys(live))
		break
	}
	if live["services/api/b"] || !live["services/api/a"] {
		return fmt.Errorf("live instances %v; want only services/api/a", keys(live))
	}
	fmt.Println("done")
	return nil
}

// refresh rewrites key with a fresh TTL until ctx ends.
func refresh(ctx context.Context, kv *gridkv.GridKV, key string) {
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_ = kv.Set(ctx, key, []byte("up"), gridkv.WithTTL(ttl))
		}
	}
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
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
