// Command failover shows GridKV riding out the loss of a node under traffic, the
// high-availability setting: five nodes, 16 partitions, N=3, R=2, W=2. Four nodes run in this process; the
// fifth runs in a child process (this program started again), so that it can be killed
// outright, with no chance to hand over its partitions or say goodbye. Clients on the four
// write keys and read their own writes back while the fifth leads some partitions; a third of
// the way through, the child is killed with SIGKILL. The program prints the throughput before
// and after, the longest a client waited for one write, and how long the cluster took to put
// a third replica back in every partition. It checks that every client kept writing after the
// kill, that every acknowledged write is readable afterwards, and that the repair completes.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/feellmoose/gridkv"
)

// childEnv, when set (to "id,address,seed"), makes the program run one node and nothing else;
// verboseEnv makes that node log to stderr.
const (
	childEnv   = "GRIDKV_FAILOVER_NODE"
	verboseEnv = "GRIDKV_FAILOVER_VERBOSE"
)

const (
	nodeCount      = 5
	clientsPerNode = 2
	victim         = "node-5"
)

// nodeTimings are the nodes' clocks: LocalTimings, for nodes that share one machine. The
// test lengthens Raft's timeouts under the race detector.
var nodeTimings = gridkv.LocalTimings()

func main() {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(serveNode(spec))
	}
	base := flag.Int("port", 7701, "first of five consecutive loopback ports")
	traffic := flag.Duration("d", 12*time.Second, "how long to send traffic; the child is killed a third of the way in")
	verbose := flag.Bool("v", false, "log GridKV's messages to stderr")
	flag.Parse()
	if err := run(addrsFrom(*base, nodeCount), *traffic, loggerFor(*verbose)); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

// client is one writer: it writes its own keys in sequence and reads some back.
type client struct {
	node    int
	acked   []string // keys acknowledged, in order; key i holds value i
	hist    *hdrhistogram.Histogram
	retries int
	// afterKill counts writes acknowledged after the kill.
	afterKill int
	err       error
	total     *atomic.Int64  // writes acknowledged by all clients
	perSecond []atomic.Int64 // writes acknowledged by all clients in each second of traffic
	begin     time.Time
}

func run(addrs []string, traffic time.Duration, logger *slog.Logger) error {
	nodes, err := startNodes(addrs[:nodeCount-1], logger)
	defer closeAll(nodes)
	if err != nil {
		return err
	}
	child, err := startChild(victim, addrs[nodeCount-1], addrs[0], logger != nil)
	if err != nil {
		return err
	}
	defer child.stop()
	ctx, cancel := context.WithTimeout(context.Background(), traffic+3*time.Minute)
	defer cancel()

	start := time.Now()
	if err := poll(ctx, 60*time.Second, func() string { return settled(nodes, true) }); err != nil {
		return fmt.Errorf("waiting for the cluster: %w", err)
	}
	fmt.Printf("5 nodes (%s in a child process, pid %d); every partition has 3 replicas and every node leads one, after %v\n",
		victim, child.cmd.Process.Pid, time.Since(start).Round(time.Millisecond))
	fmt.Printf("%s leads partitions %v\n", victim, ledBy(nodes, victim))

	var total atomic.Int64
	perSecond := make([]atomic.Int64, int(traffic/time.Second)+1)
	begin := time.Now()
	var clients []*client
	for n := range nodes {
		for range clientsPerNode {
			clients = append(clients, &client{node: n, hist: newHistogram(), total: &total, perSecond: perSecond, begin: begin})
		}
	}
	var killed atomic.Bool
	stop := begin.Add(traffic)
	var wg sync.WaitGroup
	for id, c := range clients {
		wg.Go(func() { c.err = c.run(ctx, nodes[c.node], id, stop, &killed) })
	}

	// The kill, a third of the way in.
	time.Sleep(traffic / 3)
	before := total.Load()
	killedAt := time.Now()
	if err := child.kill(); err != nil {
		return err
	}
	killed.Store(true)
	fmt.Printf("killed %s (SIGKILL) after %v, %d writes acknowledged so far\n",
		victim, killedAt.Sub(begin).Round(time.Millisecond), before)
	wg.Wait()
	end := time.Now()

	hist := newHistogram()
	retries, afterKill := 0, 0
	var errs []error
	for id, c := range clients {
		hist.Merge(c.hist)
		retries += c.retries
		afterKill += c.afterKill
		errs = append(errs, c.err)
		if c.err == nil && c.afterKill == 0 {
			errs = append(errs, fmt.Errorf("client %d on node-%d wrote nothing after the kill", id, c.node+1))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("writes: %.0f/s before the kill, %.0f/s after; p50 %v, p99 %v; longest wait for one write %v; %d requests repeated after ErrUnavailable\n",
		float64(before)/killedAt.Sub(begin).Seconds(), float64(afterKill)/end.Sub(killedAt).Seconds(),
		time.Duration(hist.ValueAtQuantile(50)), time.Duration(hist.ValueAtQuantile(99)), time.Duration(hist.Max()), retries)
	var series []string
	for i := range perSecond[:len(perSecond)-1] {
		if i == int(killedAt.Sub(begin)/time.Second) {
			series = append(series, "(kill)") // during the second that follows
		}
		series = append(series, strconv.FormatInt(perSecond[i].Load(), 10))
	}
	fmt.Printf("writes acknowledged in each second: %s\n", strings.Join(series, " "))
	fmt.Printf("check passed: all %d clients kept writing after the kill (%d writes acknowledged after it)\n", len(clients), afterKill)

	checked := 0
	for _, c := range clients {
		reader := nodes[(c.node+1)%len(nodes)]
		for i, key := range c.acked {
			if err := expect(ctx, reader, key, i, new(int)); err != nil {
				return err
			}
			checked++
		}
	}
	fmt.Printf("check passed: all %d acknowledged writes read back through another node\n", checked)

	if err := poll(ctx, 60*time.Second, func() string { return settled(nodes, false) }); err != nil {
		return fmt.Errorf("waiting for a third replica in every partition: %w", err)
	}
	fmt.Printf("check passed: every partition has 3 replicas again, none on %s, %v after the kill\n",
		victim, time.Since(killedAt).Round(time.Millisecond))
	return nil
}

// run writes this client's keys in sequence through kv until stop, and every tenth write
// reads back one of its earlier keys. A request that fails with ErrUnavailable (its leader
// was on the killed node, or moved) is repeated: writing the same value again is harmless.
func (c *client) run(ctx context.Context, kv *gridkv.GridKV, id int, stop time.Time, killed *atomic.Bool) error {
	for i := 0; time.Now().Before(stop); i++ {
		key := fmt.Sprintf("client/%d/%d", id, i)
		t := time.Now()
		for {
			err := kv.Set(ctx, key, []byte(strconv.Itoa(i)))
			if err == nil {
				break
			}
			if !errors.Is(err, gridkv.ErrUnavailable) || ctx.Err() != nil {
				return fmt.Errorf("set %s: %w", key, err)
			}
			c.retries++
			time.Sleep(20 * time.Millisecond)
		}
		c.hist.RecordValue(time.Since(t).Nanoseconds())
		c.acked = append(c.acked, key)
		c.total.Add(1)
		c.perSecond[min(int(time.Since(c.begin)/time.Second), len(c.perSecond)-1)].Add(1)
		if killed.Load() {
			c.afterKill++
		}
		if i%10 == 9 {
			j := rand.IntN(len(c.acked))
			if err := expect(ctx, kv, c.acked[j], j, &c.retries); err != nil {
				return err
			}
		}
	}
	return nil
}

// expect reads key linearizably and checks that it holds want, repeating the read after
// ErrUnavailable.
func expect(ctx context.Context, kv *gridkv.GridKV, key string, want int, retries *int) error {
	for {
		v, err := kv.Get(ctx, key)
		switch {
		case err == nil:
			if string(v) != strconv.Itoa(want) {
				return fmt.Errorf("%s holds %q, want %d", key, v, want)
			}
			return nil
		case errors.Is(err, gridkv.ErrKeyNotFound):
			return fmt.Errorf("acknowledged write of %s lost", key)
		case !errors.Is(err, gridkv.ErrUnavailable) || ctx.Err() != nil:
			return fmt.Errorf("reading %s: %w", key, err)
		}
		*retries++
		time.Sleep(20 * time.Millisecond)
	}
}

// settled returns "" once each of nodes sees every partition with a leader and three
// replicas, and either (withVictim) the victim is among the leaders and every in-process
// node leads a partition, or (!withVictim) no partition counts the victim. Otherwise it says
// what is missing.
func settled(nodes []*gridkv.GridKV, withVictim bool) string {
	for _, kv := range nodes {
		st := kv.Status()
		leads := map[string]int{}
		for _, p := range st.Partitions {
			if p.Leader == "" || len(p.Replicas) != 3 {
				return fmt.Sprintf("%s sees partition %d with leader %q and replicas %v", st.NodeID, p.ID, p.Leader, p.Replicas)
			}
			if !withVictim && slices.Contains(p.Replicas, victim) {
				return fmt.Sprintf("%s sees partition %d still counting %s", st.NodeID, p.ID, victim)
			}
			leads[p.Leader]++
		}
		if withVictim && (leads[victim] == 0 || leads[st.NodeID] == 0) {
			return fmt.Sprintf("%s sees leaders %v", st.NodeID, leads)
		}
	}
	return ""
}

// ledBy returns the partitions node leads, as the first in-process node sees them.
func ledBy(nodes []*gridkv.GridKV, node string) []int {
	var ids []int
	for _, p := range nodes[0].Status().Partitions {
		if p.Leader == node {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// poll calls check until it returns "" or limit passes; the error carries its last answer.
func poll(ctx context.Context, limit time.Duration, check func() string) error {
	deadline := time.Now().Add(limit)
	for {
		missing := check()
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %s", limit, missing)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, int64(time.Minute), 3) }

// options returns the settings every node of the cluster uses: N=3, R=2, W=2, and 16
// partitions. With the default 8 on five nodes, the placement (which bounds each node's
// preferred leaderships only loosely) can leave a node leading nothing.
func options(id, addr string, seeds []string, logger *slog.Logger) *gridkv.GridKVOptions {
	timings := nodeTimings
	return &gridkv.GridKVOptions{
		LocalNodeID:  id,
		LocalAddress: addr,
		SeedAddrs:    seeds,
		Partitions:   16,
		ReplicaCount: 3,
		ReadQuorum:   2,
		WriteQuorum:  2,
		Logger:       logger,
		Timings:      &timings,
	}
}

// startNodes starts the in-process nodes, the first creating the cluster.
func startNodes(addrs []string, logger *slog.Logger) ([]*gridkv.GridKV, error) {
	var nodes []*gridkv.GridKV
	for i, addr := range addrs {
		var seeds []string
		if i > 0 {
			seeds = addrs[:1]
		}
		kv, err := gridkv.NewGridKV(options(fmt.Sprintf("node-%d", i+1), addr, seeds, logger))
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, kv)
	}
	return nodes, nil
}

// child is a node running in another process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// startChild runs this program again as the node id at addr, joining through seed, and waits
// until it says it is ready.
func startChild(id, addr, seed string, verbose bool) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{id, addr, seed}, ","))
	if verbose {
		cmd.Env = append(cmd.Env, verboseEnv+"=1")
		cmd.Stderr = os.Stderr
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(c.done)
	}()
	select {
	case err = <-ready:
	case <-time.After(60 * time.Second):
		err = errors.New("no answer in 60s")
	}
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("starting %s in a child process: %w", id, err)
	}
	return c, nil
}

// kill ends the child at once, and waits until it is gone.
func (c *child) kill() error {
	if err := c.cmd.Process.Kill(); err != nil {
		return err
	}
	<-c.done
	return nil
}

// stop asks the child to close its node (by closing its stdin) and waits for it; a child
// already killed is simply waited for.
func (c *child) stop() {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// serveNode is the child process: it runs one node, says "ready" on stdout once the node
// is, and closes it when its stdin ends (the parent closed it or exited). It returns the
// exit code.
func serveNode(spec string) int {
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		fmt.Fprintf(os.Stderr, "%s=%q: want id,address,seed\n", childEnv, spec)
		return 2
	}
	var logger *slog.Logger
	if os.Getenv(verboseEnv) != "" {
		logger = loggerFor(true)
	}
	kv, err := gridkv.NewGridKV(options(parts[0], parts[1], parts[2:], logger))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer kv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kv.WaitReady(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

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

// closeAll closes the nodes at once: one by one, each would wait for the others to take over
// its partitions.
func closeAll(nodes []*gridkv.GridKV) {
	var wg sync.WaitGroup
	for _, kv := range nodes {
		wg.Go(func() { kv.Close() })
	}
	wg.Wait()
}
