// Command orders sells a limited stock with CompareAndSwap on a three-node GridKV cluster with
// N=3, R=2, W=2 (linearizable reads, writes acknowledged on commit). Many buyers, spread over
// the nodes, each take one unit at a time: read the stock record with its version, write it
// back with one unit less and the order's ID added, at that version, and retry from the
// current entry when another buyer got there first. Each sale then records an order with
// CompareAndSwap at version 0. A write that fails with ErrUnavailable may or may not have
// applied; the order ID in the stock record (and the order key) tell which, so a buyer can
// retry without selling a unit twice. At the end every product must be sold out, never below
// zero, and the stock records, the buyers' counts and the order keys must all agree.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/feellmoose/gridkv"
)

var products = []string{"lamp", "desk", "chair", "shelf"}

// nodeTimings are the nodes' clocks: LocalTimings, for nodes that share one machine. The
// test lengthens Raft's timeouts under the race detector.
var nodeTimings = gridkv.LocalTimings()

func main() {
	base := flag.Int("port", 7601, "first of three consecutive loopback ports")
	stock := flag.Int("stock", 500, "units of each product")
	verbose := flag.Bool("v", false, "log GridKV's messages to stderr")
	flag.Parse()
	if err := run(addrsFrom(*base, 3), *stock, loggerFor(*verbose)); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// run sells stock units of each product to 32 buyers, who keep buying until every product is
// sold out, then checks the books.
func run(addrs []string, stock int, logger *slog.Logger) error {
	nodes, err := startCluster(addrs, logger)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, p := range products {
		if _, err := nodes[0].CompareAndSwap(ctx, "stock/"+p, 0, stockRecord{left: stock}.encode()); err != nil {
			return fmt.Errorf("stocking %s: %w", p, err)
		}
	}
	fmt.Printf("%d units of each of %d products in stock; 32 buyers over %d nodes\n", stock, len(products), len(nodes))

	type buyer struct {
		sold      map[string]int
		conflicts int
		retries   int
		hist      *hdrhistogram.Histogram
		err       error
	}
	buyers := make([]*buyer, 32)
	start := time.Now()
	var wg sync.WaitGroup
	for b := range buyers {
		by := &buyer{sold: map[string]int{}, hist: hdrhistogram.New(1, int64(time.Minute), 3)}
		buyers[b] = by
		kv := nodes[b%len(nodes)]
		wg.Go(func() {
			// Each buyer goes round the products, starting at its own, until all are sold out.
			soldOut := map[string]bool{}
			for i := b; len(soldOut) < len(products); i++ {
				product := products[i%len(products)]
				if soldOut[product] {
					continue
				}
				t := time.Now()
				conflicts, retries, err := buy(ctx, kv, product, fmt.Sprintf("%02d-%d", b, i))
				by.conflicts += conflicts
				by.retries += retries
				switch {
				case errors.Is(err, errSoldOut):
					soldOut[product] = true
				case err != nil:
					by.err = err
					return
				default:
					by.sold[product]++
					by.hist.RecordValue(time.Since(t).Nanoseconds())
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	hist := hdrhistogram.New(1, int64(time.Minute), 3)
	sold := map[string]int{}
	conflicts, retries := 0, 0
	var errs []error
	for _, by := range buyers {
		hist.Merge(by.hist)
		conflicts += by.conflicts
		retries += by.retries
		errs = append(errs, by.err)
		for p, n := range by.sold {
			sold[p] += n
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("%d orders in %v: %.0f orders/s; an order took p50 %v, p99 %v\n",
		hist.TotalCount(), elapsed.Round(time.Millisecond), float64(hist.TotalCount())/elapsed.Seconds(),
		nanos(hist.ValueAtQuantile(50)), nanos(hist.ValueAtQuantile(99)))
	fmt.Printf("%d compare-and-swaps lost to another buyer and were retried; %d requests repeated after ErrUnavailable\n",
		conflicts, retries)

	return checkBooks(ctx, nodes[1], stock, sold)
}

var errSoldOut = errors.New("sold out")

// stockRecord is a product's stock: the units left and the IDs of the orders sold so far.
type stockRecord struct {
	left int
	sold []string
}

func (r stockRecord) encode() []byte {
	return []byte(strconv.Itoa(r.left) + ";" + strings.Join(r.sold, ","))
}

func parseStock(v []byte) (stockRecord, error) {
	left, sold, ok := strings.Cut(string(v), ";")
	n, err := strconv.Atoi(left)
	if !ok || err != nil {
		return stockRecord{}, fmt.Errorf("not a stock record: %q", v)
	}
	r := stockRecord{left: n}
	if sold != "" {
		r.sold = strings.Split(sold, ",")
	}
	return r, nil
}

// buy takes one unit of product for orderID and records the order. It returns how many times
// another buyer's write came first, and how many writes it repeated after ErrUnavailable.
func buy(ctx context.Context, kv *gridkv.GridKV, product, orderID string) (conflicts, retries int, err error) {
	key := "stock/" + product
	e, err := readEntry(ctx, kv, key, &retries)
	if err != nil {
		return conflicts, retries, err
	}
	for {
		rec, err := parseStock(e.Value)
		if err != nil {
			return conflicts, retries, fmt.Errorf("%s: %w", key, err)
		}
		if slices.Contains(rec.sold, orderID) {
			break // an attempt whose outcome was unknown did apply
		}
		if rec.left < 0 {
			return conflicts, retries, fmt.Errorf("%s is negative: %d", key, rec.left)
		}
		if rec.left == 0 {
			return conflicts, retries, errSoldOut
		}
		next := stockRecord{left: rec.left - 1, sold: append(rec.sold, orderID)}
		// The swap applies only if nobody wrote the stock since e was read; on a mismatch
		// it returns the current entry, so the retry needs no extra read.
		cur, err := kv.CompareAndSwap(ctx, key, e.Version, next.encode())
		switch {
		case err == nil:
		case errors.Is(err, gridkv.ErrVersionMismatch):
			conflicts++
			e = cur
			continue
		case errors.Is(err, gridkv.ErrUnavailable):
			// Applied or not: read the record again and look for orderID in it.
			retries++
			if e, err = readEntry(ctx, kv, key, &retries); err != nil {
				return conflicts, retries, err
			}
			continue
		default:
			return conflicts, retries, err
		}
		break
	}
	// Version 0: the order is created only if the key does not exist. Order IDs are unique,
	// so an order already there was created by an earlier attempt of this call.
	for {
		cur, err := kv.CompareAndSwap(ctx, "orders/"+product+"/"+orderID, 0, []byte(product))
		switch {
		case err == nil:
			return conflicts, retries, nil
		case errors.Is(err, gridkv.ErrVersionMismatch) && string(cur.Value) == product:
			return conflicts, retries, nil
		case errors.Is(err, gridkv.ErrUnavailable) && ctx.Err() == nil:
			retries++
			time.Sleep(20 * time.Millisecond)
		default:
			return conflicts, retries, fmt.Errorf("recording order %s: %w", orderID, err)
		}
	}
}

// readEntry reads key linearizably, repeating the read after ErrUnavailable until ctx ends.
func readEntry(ctx context.Context, kv *gridkv.GridKV, key string, retries *int) (gridkv.Entry, error) {
	for {
		e, err := kv.GetEntry(ctx, key)
		if !errors.Is(err, gridkv.ErrUnavailable) || ctx.Err() != nil {
			return e, err
		}
		*retries++
		time.Sleep(20 * time.Millisecond)
	}
}

// checkBooks reads the stock records and lists the orders through kv (linearizable: every
// write acknowledged before is seen), and compares them with what the buyers counted.
func checkBooks(ctx context.Context, kv *gridkv.GridKV, stock int, sold map[string]int) error {
	for _, p := range products {
		e, err := kv.GetEntry(ctx, "stock/"+p)
		if err != nil {
			return err
		}
		rec, err := parseStock(e.Value)
		if err != nil {
			return err
		}
		orders, err := listKeys(ctx, kv, "orders/"+p+"/")
		if err != nil {
			return err
		}
		if rec.left != 0 {
			return fmt.Errorf("%s: %d units left after every buyer found it sold out", p, rec.left)
		}
		ids := map[string]bool{}
		for _, id := range rec.sold {
			ids[id] = true
		}
		if len(rec.sold) != stock || len(ids) != stock || sold[p] != stock || len(orders) != stock {
			return fmt.Errorf("%s: %d units stocked; the record lists %d sales (%d distinct orders), buyers counted %d, %d orders recorded",
				p, stock, len(rec.sold), len(ids), sold[p], len(orders))
		}
		for _, key := range orders {
			if id := strings.TrimPrefix(key, "orders/"+p+"/"); !ids[id] {
				return fmt.Errorf("%s: order %s is not in the stock record", p, id)
			}
		}
	}
	fmt.Printf("check passed: every product sold out, none oversold; for each, %d units = %d sales in its stock record = %d orders recorded\n",
		stock, stock, stock)
	return nil
}

// listKeys returns the keys under prefix, a page at a time.
func listKeys(ctx context.Context, kv *gridkv.GridKV, prefix string) ([]string, error) {
	var keys []string
	var opts []gridkv.Option
	for {
		page, err := kv.List(ctx, prefix, opts...)
		if err != nil {
			return nil, err
		}
		for _, e := range page.Entries {
			keys = append(keys, e.Key)
		}
		if !page.More {
			return keys, nil
		}
		opts = []gridkv.Option{gridkv.WithStartAfter(page.Entries[len(page.Entries)-1].Key)}
	}
}

func nanos(ns int64) time.Duration { return time.Duration(ns) }

// addrsFrom returns n consecutive loopback addresses from port base.
func addrsFrom(base, n int) []string {
	var addrs []string
	for i := range n {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", base+i))
	}
	return addrs
}

func loggerFor(verbose bool) *slog.Logger {
	if !verbose {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startCluster starts a node on each address with N=3, R=2, W=2, the first creating the
// cluster and the others joining it, and waits until every partition has a leader and three
// replicas and every node leads a partition, so the sale does not start in the middle of the
// hand-offs that spread leadership.
func startCluster(addrs []string, logger *slog.Logger) ([]*gridkv.GridKV, error) {
	timings := nodeTimings
	var nodes []*gridkv.GridKV
	for i, addr := range addrs {
		opts := &gridkv.GridKVOptions{
			LocalNodeID:  fmt.Sprintf("node-%d", i+1),
			LocalAddress: addr,
			ReplicaCount: 3,
			ReadQuorum:   2,
			WriteQuorum:  2,
			Logger:       logger,
			Timings:      &timings,
		}
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
	for !settled(nodes, len(addrs)) {
		select {
		case <-ctx.Done():
			return nodes, fmt.Errorf("waiting for every partition to have %d replicas and every node to lead one: %w", len(addrs), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nodes, nil
}

// settled reports whether every node sees each partition with a leader and n replicas, and
// leads at least one partition itself.
func settled(nodes []*gridkv.GridKV, n int) bool {
	for _, kv := range nodes {
		st := kv.Status()
		leads := 0
		for _, p := range st.Partitions {
			if p.Leader == "" || len(p.Replicas) != n {
				return false
			}
			if p.Leader == st.NodeID {
				leads++
			}
		}
		if leads == 0 {
			return false
		}
	}
	return true
}

// closeAll closes the nodes at once: one by one, each would wait for the others to take over
// its partitions.
func closeAll(nodes []*gridkv.GridKV) {
	var wg sync.WaitGroup
	for _, kv := range nodes {
		wg.Go(func() { kv.Close() })
	}
	wg.Wait()
}
