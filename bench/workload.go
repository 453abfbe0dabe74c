package main

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/feellmoose/gridkv"
)

// workload is what the clients do; the baseline and GridKV run the same one.
type workload struct {
	readRatio float64 // fraction of operations that are reads
	valueSize int
	dist      string // "uniform" or "zipf"
}

func (w workload) String() string {
	return fmt.Sprintf("r=%g v=%d %s", w.readRatio, w.valueSize, w.dist)
}

// zipfS is the Zipf exponent; math/rand needs s > 1, so YCSB's 0.99 is not available.
const zipfS = 1.1

// keySet holds the key strings, built once so the workers do not allocate them per operation.
type keySet []string

func newKeySet(n int) keySet {
	ks := make(keySet, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("bench:%08d", i)
	}
	return ks
}

// keyPicker chooses key indexes for one worker; it is not safe for concurrent use.
type keyPicker struct {
	rng  *rand.Rand
	zipf *rand.Zipf
	n    int
}

func newKeyPicker(dist string, n int, seed uint64) *keyPicker {
	rng := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
	p := &keyPicker{rng: rng, n: n}
	if dist == "zipf" && n > 1 {
		p.zipf = rand.NewZipf(rng, zipfS, 1, uint64(n-1))
	}
	return p
}

func (p *keyPicker) next() int {
	if p.zipf != nil {
		return int(p.zipf.Uint64())
	}
	return p.rng.IntN(p.n)
}

// client is one way into a store. Implementations are safe for concurrent use.
type client interface {
	get(ctx context.Context, key string) ([]byte, error)
	set(ctx context.Context, key string, value []byte) error
}

// gridClient issues operations through one GridKV node.
type gridClient struct {
	kv       *gridkv.GridKV
	readOpts []gridkv.Option // built once: passing a slice on to a variadic call does not allocate
}

func newGridClient(kv *gridkv.GridKV, level gridkv.Consistency) *gridClient {
	c := &gridClient{kv: kv}
	if level != 0 {
		c.readOpts = []gridkv.Option{gridkv.WithConsistency(level)}
	}
	return c
}

func (c *gridClient) get(ctx context.Context, key string) ([]byte, error) {
	return c.kv.Get(ctx, key, c.readOpts...)
}

func (c *gridClient) set(ctx context.Context, key string, value []byte) error {
	return c.kv.Set(ctx, key, value)
}

// clientsFor returns one client per node the driver holds; workers take them in turn, so
// in-process they spread over the nodes and with -procs they all use the driver's node.
func clientsFor(c *cluster, level gridkv.Consistency) []client {
	out := make([]client, len(c.nodes))
	for i, kv := range c.nodes {
		out[i] = newGridClient(kv, level)
	}
	return out
}
