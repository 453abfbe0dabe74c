package gridkv_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/feellmoose/gridkv"
)

// ExampleNewGridKV starts a one-node cluster, writes a key, reads it back with its version, and
// updates it with a compare-and-swap.
func ExampleNewGridKV() {
	timings := gridkv.LocalTimings() // fast failure detection for nodes on one machine
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "node-1",
		LocalAddress: exampleAddr(), // e.g. "127.0.0.1:7946"
		Timings:      &timings,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer kv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	if err := kv.Set(ctx, "user:1001", []byte("Alice")); err != nil {
		log.Fatal(err)
	}
	e, err := kv.GetEntry(ctx, "user:1001")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s = %s\n", e.Key, e.Value)

	// Only the writer that read the current version wins.
	if _, err := kv.CompareAndSwap(ctx, "user:1001", e.Version, []byte("Alice Smith")); err != nil {
		log.Fatal(err)
	}
	_, err = kv.CompareAndSwap(ctx, "user:1001", e.Version, []byte("Alicia"))
	fmt.Println("second swap at the old version:", errors.Is(err, gridkv.ErrVersionMismatch))

	v, _ := kv.Get(ctx, "user:1001")
	fmt.Println("user:1001 =", string(v))

	_, err = kv.Get(ctx, "user:1002")
	fmt.Println("user:1002 missing:", errors.Is(err, gridkv.ErrKeyNotFound))
	// Output:
	// user:1001 = Alice
	// second swap at the old version: true
	// user:1001 = Alice Smith
	// user:1002 missing: true
}

// ExampleGridKVOptions_seedAddrs starts a cluster of two nodes: the first names no seeds and
// creates the cluster, the second joins it through SeedAddrs. A value written through one node
// is read through the other.
func ExampleGridKVOptions_seedAddrs() {
	timings := gridkv.LocalTimings()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	addr1 := exampleAddr()
	kv1, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "node-1",
		LocalAddress: addr1,
		Partitions:   4,
		Timings:      &timings,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer kv1.Close()
	if err := kv1.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	// Every node after the first names seeds: here the first node. In production give every
	// node the same list, so a restarted node rejoins through whichever seed is up.
	kv2, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "node-2",
		LocalAddress: exampleAddr(),
		SeedAddrs:    []string{addr1},
		Partitions:   4,
		Timings:      &timings,
	})
	if err != nil {
		log.Fatal(err) // e.g. no seed answered within Timings.JoinTimeout
	}
	defer kv2.Close()
	if err := kv2.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	if err := kv1.Set(ctx, "user:1001", []byte("Alice")); err != nil {
		log.Fatal(err)
	}
	v, err := kv2.Get(ctx, "user:1001")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("node-2 reads user:1001 =", string(v))
	fmt.Println("members node-2 knows:", len(kv2.Status().Members))
	// Output:
	// node-2 reads user:1001 = Alice
	// members node-2 knows: 2
}

// ExampleWithConsistency sets the read level of single calls. This node's quorums (R + W <= N)
// make its reads stale by default: served from its own replica with no network round trip.
// One call asks for a linearizable read instead, served by the partition leader after it
// confirms its leadership; another asks for a stale read explicitly.
func ExampleWithConsistency() {
	timings := gridkv.LocalTimings()
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "node-1",
		LocalAddress: exampleAddr(),
		ReplicaCount: 3,
		WriteQuorum:  2,
		ReadQuorum:   1, // R + W <= N: stale reads by default
		Partitions:   4,
		Timings:      &timings,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer kv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	if err := kv.Set(ctx, "flag:dark-mode", []byte("on")); err != nil {
		log.Fatal(err)
	}

	// Must see every write acknowledged before it began, wherever it was made.
	v, err := kv.Get(ctx, "flag:dark-mode", gridkv.WithConsistency(gridkv.Linearizable))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("linearizable:", string(v))

	// May miss the latest writes made through other nodes, but costs no round trip when this
	// node holds a replica.
	v, err = kv.Get(ctx, "flag:dark-mode", gridkv.WithConsistency(gridkv.Stale))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stale:", string(v))
	// Output:
	// linearizable: on
	// stale: on
}

// ExampleGridKV_CompareAndSwap increments a counter from several goroutines at once without
// losing an increment: each reads the counter with its version, writes the next value only if
// the version is unchanged, and retries when another writer got there first.
func ExampleGridKV_CompareAndSwap() {
	timings := gridkv.LocalTimings()
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "node-1",
		LocalAddress: exampleAddr(),
		Partitions:   4,
		Timings:      &timings,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer kv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	increment := func(key string) error {
		for {
			n, version := 0, uint64(0) // version 0: swap only if the key does not exist yet
			e, err := kv.GetEntry(ctx, key)
			switch {
			case err == nil:
				if n, err = strconv.Atoi(string(e.Value)); err != nil {
					return err
				}
				version = e.Version
			case !errors.Is(err, gridkv.ErrKeyNotFound):
				return err
			}
			_, err = kv.CompareAndSwap(ctx, key, version, []byte(strconv.Itoa(n+1)))
			if errors.Is(err, gridkv.ErrVersionMismatch) {
				continue // another writer changed the counter since we read it: read again
			}
			return err
		}
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if err := increment("visits"); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	wg.Wait()

	v, err := kv.Get(ctx, "visits")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("visits =", string(v))
	// Output:
	// visits = 20
}

// ExampleGridKV_Status prints a node's view of the cluster: the members gossip reports, and
// each partition's leader and voting replicas.
func ExampleGridKV_Status() {
	timings := gridkv.LocalTimings()
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "node-1",
		LocalAddress: exampleAddr(),
		Partitions:   4,
		Timings:      &timings,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer kv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	st := kv.Status()
	fmt.Println("node:", st.NodeID)
	for _, m := range st.Members {
		fmt.Println("member:", m.ID, m.State) // m.Address is the member's LocalAddress
	}
	for _, p := range st.Partitions {
		fmt.Printf("partition %d: leader %s, replicas %v\n", p.ID, p.Leader, p.Replicas)
	}
	// Output:
	// node: node-1
	// member: node-1 alive
	// partition 0: leader node-1, replicas [node-1]
	// partition 1: leader node-1, replicas [node-1]
	// partition 2: leader node-1, replicas [node-1]
	// partition 3: leader node-1, replicas [node-1]
}

// ExampleGridKV_Get tells errors apart with errors.Is: the errors GridKV returns wrap its
// sentinel errors with detail, so never compare them with == or by their text.
func ExampleGridKV_Get() {
	timings := gridkv.LocalTimings()
	kv, err := gridkv.NewGridKV(&gridkv.GridKVOptions{
		LocalNodeID:  "node-1",
		LocalAddress: exampleAddr(),
		Partitions:   4,
		Timings:      &timings,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer kv.Close() // Close is idempotent: closing again after the explicit Close below is fine

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	describe := func(err error) string {
		switch {
		case err == nil:
			return "ok"
		case errors.Is(err, gridkv.ErrKeyNotFound):
			return "not found"
		case errors.Is(err, gridkv.ErrInvalidKey):
			return "invalid key"
		case errors.Is(err, gridkv.ErrValueTooLarge):
			return "value too large"
		case errors.Is(err, gridkv.ErrClosed):
			return "closed"
		case errors.Is(err, gridkv.ErrUnavailable):
			return "unavailable: retry later; a write may or may not have taken effect"
		default:
			return err.Error()
		}
	}

	_, err = kv.Get(ctx, "user:404")
	fmt.Println("Get of a missing key:", describe(err))
	_, err = kv.Get(ctx, "")
	fmt.Println("Get of an empty key:", describe(err))
	err = kv.Set(ctx, "blob", make([]byte, gridkv.MaxValueSize+1))
	fmt.Println("Set of an oversized value:", describe(err))
	fmt.Println("Delete of a missing key:", describe(kv.Delete(ctx, "user:404")))

	if err := kv.Close(); err != nil {
		log.Fatal(err)
	}
	_, err = kv.Get(ctx, "user:1001")
	fmt.Println("Get after Close:", describe(err))
	// Output:
	// Get of a missing key: not found
	// Get of an empty key: invalid key
	// Set of an oversized value: value too large
	// Delete of a missing key: ok
	// Get after Close: closed
}

// exampleAddr returns a loopback address with a free port, so the example runs anywhere.
func exampleAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
