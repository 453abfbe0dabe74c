package gridkv_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
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

// exampleAddr returns a loopback address with a free port, so the example runs anywhere.
func exampleAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
