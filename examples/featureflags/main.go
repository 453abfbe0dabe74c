// Command featureflags keeps feature flags in GridKV: an application lists the flags once,
// then watches them from the listing's Cursor, so it sees every flip made through any node,
// none twice and none missed. It runs a three-node cluster on loopback in one process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/feellmoose/gridkv"
)

func main() {
	base := flag.Int("port", 7201, "first of three consecutive loopback ports")
	flag.Parse()
	if err := run(addrsFrom(*base, 3)); err != nil {
		fmt.Fprintln(os.Stderr, "featureflags:", err)
		os.Exit(1)
	}
}

func run(addrs []string) error {
	nodes, err := startCluster(addrs)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	admin, app := nodes[0], nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, f := range []string{"dark-mode", "new-checkout", "beta-search"} {
		if err := admin.Set(ctx, "flags/"+f, []byte("off")); err != nil {
			return err
		}
	}

	// The application: list the flags, then follow them from where the listing was taken.
	page, err := app.List(ctx, "flags/")
	if err != nil {
		return err
	}
	flags := map[string]string{}
	for _, e := range page.Entries {
		flags[e.Key] = string(e.Value)
	}
	fmt.Printf("app listed %d flags: %v\n", len(flags), flags)

	changes := make(chan gridkv.Event)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan error, 1)
	go func() {
		for ev, err := range app.Watch(watchCtx, "flags/", gridkv.FromCursor(page.Cursor)) {
			if err != nil {
				watchDone <- err
				return
			}
			changes <- ev
		}
	}()

	// An operator flips flags through another node.
	if err := admin.Set(ctx, "flags/dark-mode", []byte("on")); err != nil {
		return err
	}
	if err := nodes[1].Delete(ctx, "flags/beta-search"); err != nil {
		return err
	}
	for range 2 {
		select {
		case ev := <-changes:
			switch ev.Type {
			case gridkv.EventPut:
				flags[ev.Entry.Key] = string(ev.Entry.Value)
			case gridkv.EventDelete, gridkv.EventExpire:
				delete(flags, ev.Entry.Key)
			}
			fmt.Printf("app saw %s of %s (version %d): flags now %v\n", ev.Type, ev.Entry.Key, ev.Entry.Version, flags)
		case err := <-watchDone:
			return fmt.Errorf("watch ended: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if flags["flags/dark-mode"] != "on" {
		return errors.New("the app missed the flip of dark-mode")
	}
	stopWatch()
	if err := <-watchDone; !errors.Is(err, context.Canceled) {
		return fmt.Errorf("watch ended with %v", err)
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
