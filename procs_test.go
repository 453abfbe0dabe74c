package gridkv_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/internal/lincheck"
)

// procPartitions is the partition count of the process cluster: small, since four nodes (three
// of them separate processes, perhaps race-instrumented) share a two-core machine.
const procPartitions = 8

// TestRealProcesses runs three nodes as separate OS processes (internal/procnode) and one in
// this process, and checks linearizability while one process is killed with SIGKILL and
// replaced by a new, empty process at the same address, and another is frozen with SIGSTOP
// past the election timeout and resumed. Clients can only drive the in-process node; every
// partition they touch still replicates to the processes.
//
// It is skipped with -short only; CI runs `go test -race ./...` without -short, so it runs
// there.
func TestRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills OS processes; runs without -short (as in CI)")
	}
	bin := buildProcnode(t)

	// Stops the processes if the test fails before it stops them itself, after the in-process
	// node closed (this cleanup is registered before the harness's, so it runs after them).
	ps := &procs{}
	t.Cleanup(ps.stopAll)
	nodes := make([]*procNode, 3)
	var seeds []string
	for i := range nodes {
		nodes[i] = ps.start(t, bin, fmt.Sprintf("proc-%d", i), "", seeds)
		seeds = append(seeds, nodes[i].addr)
	}

	c := cluster.Start(t, 1, cluster.Options{Partitions: procPartitions, Mutate: func(_ int, o *gridkv.GridKVOptions) {
		o.LocalNodeID = "local"
		o.SeedAddrs = append([]string(nil), seeds...)
	}})
	kv := c.Node(0).KV
	cluster.WaitFor(t, 30*time.Second, "four alive members", func() bool { return cluster.AliveMembers(kv) == 4 })

	// The harness checks the history with porcupine when the test ends.
	h := c.NewHistory()
	const clients = 4
	until := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lincheck.Client{ID: i, KV: kv, Keys: 8, OpTime: 3 * time.Second, Until: until}.Run(h)
		}()
	}

	// Faults, while the clients run.
	time.Sleep(3 * time.Second)
	victim := nodes[1]
	t.Logf("%v: SIGKILL %s", since(h), victim.id)
	victim.signal(t, syscall.SIGKILL)
	victim.wait(10 * time.Second)
	time.Sleep(2 * time.Second)
	nodes[1] = ps.start(t, bin, victim.id, victim.addr, []string{nodes[0].addr, nodes[2].addr})
	t.Logf("%v: %s is back, empty, under a new incarnation", since(h), victim.id)

	time.Sleep(3 * time.Second)
	frozen := nodes[2]
	t.Logf("%v: SIGSTOP %s", since(h), frozen.id)
	frozen.signal(t, syscall.SIGSTOP)
	time.Sleep(gridkv.LocalTimings().Raft.ElectionTimeout + 3*time.Second)
	frozen.signal(t, syscall.SIGCONT)
	t.Logf("%v: SIGCONT %s", since(h), frozen.id)

	wg.Wait()
	ops := h.Ops()
	t.Logf("%d operations: %d writes of unknown outcome, %d failed reads dropped, %d swaps, %d mismatches",
		len(ops), h.Unknown.Load(), h.Dropped.Load(), h.Swaps.Load(), h.Mismatches.Load())
	if len(ops) < 100 {
		t.Fatalf("only %d operations completed in 20 s", len(ops))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.Set(ctx, "final", []byte("write")); err != nil {
		t.Fatalf("a write after the faults healed failed: %v\n%s", err, c.Describe())
	}
	for _, p := range nodes {
		if p.exited() {
			t.Errorf("%s exited during the test: %s", p.id, p.stderr.String())
		}
	}
	// The in-process node first: it hands its leaderships to the processes as it leaves. Then
	// the processes, so that the goroutines watching them are gone when the harness checks
	// for leaks.
	c.Stop(0)
	ps.stopAll()
}

func since(h *lincheck.History) time.Duration {
	return time.Since(h.Start()).Round(100 * time.Millisecond)
}

// buildProcnode builds internal/procnode into a temporary directory, with -race when this
// test binary has it, so the build reuses the packages the test run already compiled.
func buildProcnode(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "procnode")
	args := []string{"build", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, "./internal/procnode")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	start := time.Now()
	out, err := exec.Command(goTool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built procnode (race: %v) in %v", raceEnabled(), time.Since(start).Round(time.Millisecond))
	return bin
}

func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// procNode is one node running as a child process.
type procNode struct {
	id, addr string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	ready    chan struct{} // closed when the process printed "ready"
	done     chan struct{} // closed when the process exited
	stderr   *syncBuffer
}

// procs holds every node process a test started, so that one cleanup stops them all.
type procs struct {
	mu  sync.Mutex // guards all
	all []*procNode
}

// stopAll stops every process at once: one by one, each would wait for the others' elections.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := append([]*procNode(nil), ps.all...)
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop()
		}()
	}
	wg.Wait()
}

// start starts a node process and waits until it prints "ready". An empty addr picks a free
// port (another port when something took it first); a given one is reused, as a node
// restarted at its old address does.
func (ps *procs) start(t *testing.T, bin, id, addr string, seeds []string) *procNode {
	t.Helper()
	for attempt := 0; ; attempt++ {
		a := addr
		if a == "" {
			var err error
			if a, err = cluster.FreeAddr(); err != nil {
				t.Fatal(err)
			}
		}
		p := launch(t, bin, id, a, seeds)
		ps.mu.Lock()
		ps.all = append(ps.all, p)
		ps.mu.Unlock()
		select {
		case <-p.ready:
			return p
		case <-p.done:
			if addr == "" && attempt < 4 && strings.Contains(p.stderr.String(), "address already in use") {
				continue
			}
			t.Fatalf("%s exited before it was ready: %s", id, p.stderr.String())
		case <-time.After(60 * time.Second):
			t.Fatalf("%s not ready after 60s: %s", id, p.stderr.String())
		}
	}
}

func launch(t *testing.T, bin, id, addr string, seeds []string) *procNode {
	t.Helper()
	args := []string{"-id", id, "-addr", addr, "-partitions", fmt.Sprint(procPartitions)}
	if len(seeds) > 0 {
		args = append(args, "-seeds", strings.Join(seeds, ","))
	}
	cmd := exec.Command(bin, args...)
	p := &procNode{id: id, addr: addr, cmd: cmd, ready: make(chan struct{}), done: make(chan struct{}), stderr: &syncBuffer{}}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", id, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				close(p.ready)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *procNode) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to %s: %v", sig, p.id, err)
	}
}

func (p *procNode) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to exit and reports whether it did.
func (p *procNode) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop asks the process to close its node (stdin closes), waits a while, then kills it. A
// stopped (SIGSTOP) process is resumed first so that it can act on the request.
func (p *procNode) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.stdin.Close()
	if !p.wait(10 * time.Second) {
		_ = p.cmd.Process.Kill()
		p.wait(5 * time.Second)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reading test.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
