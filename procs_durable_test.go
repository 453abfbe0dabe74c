package gridkv_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
)

// The tests here run a cluster of three internal/procnode processes, each with its own
// DataDir, and drive it through the processes' stdin: no node runs in the test process, so a
// SIGKILL of all three kills every replica there is. Like TestRealProcesses they are skipped
// with -short only, so CI runs them.

// durableIDs are the node IDs of the process cluster, in start order.
var durableIDs = []string{"disk-0", "disk-1", "disk-2"}

// killAllRounds is how often TestDurableProcessesSurviveKillOfAll kills and restarts the
// whole cluster: twice, so that the second kill hits nodes that recovered from the first.
// That found hashicorp/raft-wal#31 in v0.4.0: once raft cleared a log suffix (a follower's
// uncommitted tail after the first restart), the WAL marked its tail segment sealed without
// writing its index, and the node's next start panicked in raft.NewRaft. v0.4.1 fixes it.
const killAllRounds = 2

// Every process is SIGKILLed at once while clients write, and all three start again with
// their original flags (the first without seeds) on their DataDirs: every write acknowledged
// before the kill is there, with the version it was acknowledged with, under the identities
// the nodes had.
func TestDurableProcessesSurviveKillOfAll(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills OS processes; runs without -short (as in CI)")
	}
	dc := startDurableProcs(t)
	incarnations := dc.incarnations(t)

	var writes []durableWrite
	for round := 1; round <= killAllRounds; round++ {
		w := startDurableWriters(dc, fmt.Sprintf("r%d", round), 6)
		dc.await(t, 60*time.Second, "300 writes acknowledged", func() error {
			if n := w.acked.Load(); n < 300 {
				return fmt.Errorf("%d acknowledged", n)
			}
			return nil
		})
		inFlight := dc.inFlight()
		dc.killAll(t)
		w.stop()
		for _, p := range dc.nodes {
			if !p.wait(10 * time.Second) {
				t.Fatalf("%s still running 10 s after SIGKILL", p.id)
			}
		}
		t.Logf("round %d: SIGKILL of all three with %d requests in flight; %d writes acknowledged, %d of unknown outcome",
			round, inFlight, w.acked.Load(), w.unknown.Load())
		if inFlight == 0 {
			t.Fatalf("no write was in flight when the processes were killed")
		}
		writes = append(writes, w.records()...)

		restart := time.Now()
		dc.restartAll(t)
		dc.await(t, 60*time.Second, "the restarted cluster formed: three alive members, every partition led, its voters the three nodes", dc.formed)
		t.Logf("round %d: all three restarted and formed in %v", round, time.Since(restart).Round(time.Millisecond))
		dc.checkWrites(t, writes)
		if got := dc.incarnations(t); !maps.Equal(got, incarnations) {
			t.Fatalf("incarnations after the restart %v, before %v", got, incarnations)
		}
	}
	// The cluster goes on taking writes.
	for i, p := range dc.nodes {
		key := fmt.Sprintf("after/%d", i)
		if r, err := p.call(durableRequest{Op: "cas", Key: key, Value: key}); err != nil || r.Error != "" {
			t.Fatalf("a write through %s after the restarts: %v %s", p.id, err, r.Error)
		}
	}
}

// One process is SIGKILLed and started again on its DataDir, twice: a node back within
// DeadGrace, still a voter everywhere, and a node back after the others dropped it from its
// groups. Each time it comes back under the incarnation in its identity.json, so as the
// same Raft server IDs, every partition's voters are the three nodes again, and no node ever
// lists a fourth member.
func TestDurableProcessRejoinsAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills OS processes; runs without -short (as in CI)")
	}
	dc := startDurableProcs(t)
	incarnations := dc.incarnations(t)
	extra := dc.watchMembers()
	w := startDurableWriters(dc, "w", 2)

	for _, round := range []struct {
		victim    int
		afterDrop bool // restart only once the others dropped the victim from every group
	}{{victim: 1}, {victim: 2, afterDrop: true}} {
		victim := dc.nodes[round.victim]
		others := dc.except(round.victim)
		before := w.acked.Load()
		victim.signal(t, syscall.SIGKILL)
		if !victim.wait(10 * time.Second) {
			t.Fatalf("%s still running 10 s after SIGKILL", victim.id)
		}
		killed := time.Now()
		if round.afterDrop {
			dc.await(t, 60*time.Second, victim.id+" dropped from every group by the others", func() error {
				return votersOf(others, victim.id, false)
			})
			t.Logf("%s dropped from every group %v after SIGKILL", victim.id, time.Since(killed).Round(time.Millisecond))
		}
		// The others kept taking writes while it was gone, for it to catch up on.
		dc.await(t, 30*time.Second, "writes acknowledged while "+victim.id+" was down", func() error {
			if n := w.acked.Load(); n < before+50 {
				return fmt.Errorf("%d acknowledged since the kill", n-before)
			}
			return nil
		})
		dc.restart(t, round.victim)
		dc.await(t, 60*time.Second, victim.id+" back: three alive members, every partition led, its voters the three nodes", dc.formed)
		t.Logf("%s killed and back as a voter of every group in %v", victim.id, time.Since(killed).Round(time.Millisecond))
		if got := dc.incarnations(t); !maps.Equal(got, incarnations) {
			t.Fatalf("incarnations after %s restarted %v, before %v", victim.id, got, incarnations)
		}
	}
	w.stop()
	if err := extra(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes acknowledged, %d of unknown outcome", w.acked.Load(), w.unknown.Load())
	dc.checkWrites(t, w.records())
}

// durableProcs is a cluster of three procnode processes with DataDirs.
type durableProcs struct {
	bin   string
	ps    *procs         // every process started, for the cleanup
	mu    sync.Mutex     // guards nodes: the test goroutine replaces them, writers and watchers read them
	nodes []*durableProc // the current process of each node, by index into durableIDs
}

// durableProc is one procnode process with a DataDir, driven through its stdin.
type durableProc struct {
	*procNode
	dataDir string
	seeds   []string // as first started: a restart passes the same

	mu      sync.Mutex // guards nextID, pending, gone and writes to stdin
	nextID  uint64
	pending map[uint64]chan durableReply
	gone    bool // stdout closed: no reply will come
}

// durableRequest and durableReply are procnode's request and reply lines (see its doc).
type durableRequest struct {
	ID      uint64 `json:"id"`
	Op      string `json:"op"`
	Key     string `json:"key,omitempty"`
	Version uint64 `json:"version,omitempty"`
	Value   string `json:"value,omitempty"`
	Timeout string `json:"timeout,omitempty"`
}

type durableReply struct {
	ID      uint64         `json:"id"`
	Version uint64         `json:"version"`
	Value   string         `json:"value"`
	Status  *gridkv.Status `json:"status"`
	Error   string         `json:"error"`
	Code    string         `json:"code"`
}

// errNoReply is a call whose process exited before it answered: a write's outcome is unknown.
var errNoReply = errors.New("the process exited before it replied")

// startDurableProcs starts three nodes, each on a fresh DataDir, the first without seeds and
// each other with the addresses of the ones before it, all three in one process group so that
// one kill(2) reaches them all, and waits until the cluster is formed.
func startDurableProcs(t *testing.T) *durableProcs {
	t.Helper()
	dc := &durableProcs{bin: buildProcnode(t), ps: &procs{}}
	t.Cleanup(dc.ps.stopAll)
	var seeds []string
	pgid := 0
	for _, id := range durableIDs {
		p := dc.startFresh(t, id, filepath.Join(t.TempDir(), id), seeds, pgid)
		if pgid == 0 {
			pgid = p.cmd.Process.Pid
		}
		dc.nodes = append(dc.nodes, p)
		seeds = append(seeds, p.addr)
	}
	dc.await(t, 60*time.Second, "three alive members, every partition led, its voters the three nodes", dc.formed)
	return dc
}

// startFresh starts a node on a free port (another when something took it first) and waits
// until it is ready.
func (dc *durableProcs) startFresh(t *testing.T, id, dataDir string, seeds []string, pgid int) *durableProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		addr, err := cluster.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		p := dc.launch(t, id, addr, dataDir, seeds, pgid)
		select {
		case <-p.ready:
			return p
		case <-p.done:
			if attempt < 4 && strings.Contains(p.stderr.String(), "address already in use") {
				continue
			}
			t.Fatalf("%s exited before it was ready: %s", id, p.stderr.String())
		case <-time.After(90 * time.Second):
			t.Fatalf("%s not ready after 90 s: %s", id, p.stderr.String())
		}
	}
}

func (dc *durableProcs) launch(t *testing.T, id, addr, dataDir string, seeds []string, pgid int) *durableProc {
	t.Helper()
	args := []string{"-id", id, "-addr", addr, "-partitions", fmt.Sprint(procPartitions), "-data-dir", dataDir}
	if len(seeds) > 0 {
		args = append(args, "-seeds", strings.Join(seeds, ","))
	}
	cmd := exec.Command(dc.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid}
	p := &durableProc{
		procNode: &procNode{id: id, addr: addr, cmd: cmd, ready: make(chan struct{}), done: make(chan struct{}), stderr: &syncBuffer{}},
		dataDir:  dataDir,
		seeds:    seeds,
		pending:  make(map[uint64]chan durableReply),
	}
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
	dc.ps.mu.Lock()
	dc.ps.all = append(dc.ps.all, p.procNode)
	dc.ps.mu.Unlock()
	go p.readReplies(stdout)
	return p
}

// readReplies reads "ready" and then the replies, handing each to its caller; when stdout
// closes, every call still waiting gets errNoReply.
func (p *durableProc) readReplies(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	ready := false
	for sc.Scan() {
		if !ready {
			if strings.TrimSpace(sc.Text()) == "ready" {
				ready = true
				close(p.ready)
			}
			continue
		}
		var r durableReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		p.mu.Lock()
		ch := p.pending[r.ID]
		delete(p.pending, r.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	p.mu.Lock()
	p.gone = true
	for id, ch := range p.pending {
		close(ch)
		delete(p.pending, id)
	}
	p.mu.Unlock()
	_ = p.cmd.Wait()
	close(p.done)
}

// call sends req (its ID is filled in) and waits for the reply. It returns errNoReply if the
// process exits first: for a write, an outcome unknown.
func (p *durableProc) call(req durableRequest) (durableReply, error) {
	ch := make(chan durableReply, 1)
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return durableReply{}, errNoReply
	}
	p.nextID++
	req.ID = p.nextID
	p.pending[req.ID] = ch
	line, err := json.Marshal(req)
	if err == nil {
		_, err = p.stdin.Write(append(line, '\n'))
	}
	if err != nil {
		delete(p.pending, req.ID)
		p.mu.Unlock()
		return durableReply{}, fmt.Errorf("%s: sending a request: %w", p.id, err)
	}
	p.mu.Unlock()
	select {
	case r, ok := <-ch:
		if !ok {
			return durableReply{}, errNoReply
		}
		return r, nil
	case <-time.After(callTimeout):
		p.mu.Lock()
		delete(p.pending, req.ID)
		p.mu.Unlock()
		return durableReply{}, fmt.Errorf("%s: no reply to %s %s within %v", p.id, req.Op, req.Key, callTimeout)
	}
}

// callTimeout bounds a call to a process that neither answers nor exits: a request's own
// timeout is at most 20 s.
const callTimeout = time.Minute

func (p *durableProc) status() (gridkv.Status, error) {
	r, err := p.call(durableRequest{Op: "status"})
	if err != nil {
		return gridkv.Status{}, err
	}
	if r.Status == nil {
		return gridkv.Status{}, fmt.Errorf("%s: status: %s", p.id, r.Error)
	}
	return *r.Status, nil
}

// awaitReady waits until p printed "ready", failing the test if it exits first. A restarted
// node must get its old address again: the test fails, saying so, if the port is taken (the
// listener of a killed process is gone with it; another process may have taken the port).
func (dc *durableProcs) awaitReady(t *testing.T, p *durableProc) {
	t.Helper()
	select {
	case <-p.ready:
	case <-p.done:
		if strings.Contains(p.stderr.String(), "address already in use") {
			t.Fatalf("%s could not listen on %s again: the port is still taken: %s", p.id, p.addr, p.stderr.String())
		}
		t.Fatalf("%s exited before it was ready: %s", p.id, p.stderr.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("%s not ready after 90 s: %s", p.id, p.stderr.String())
	}
}

// restart starts node i again with the flags it was first started with, on its DataDir.
func (dc *durableProcs) restart(t *testing.T, i int) {
	t.Helper()
	old := dc.node(i)
	p := dc.launch(t, old.id, old.addr, old.dataDir, old.seeds, 0)
	dc.awaitReady(t, p)
	dc.mu.Lock()
	dc.nodes[i] = p
	dc.mu.Unlock()
}

// restartAll starts every node again at once, with their first flags: none is ready before
// another is up, the first having no seeds.
func (dc *durableProcs) restartAll(t *testing.T) {
	t.Helper()
	started := make([]*durableProc, len(dc.nodes))
	pgid := 0
	for i, old := range dc.nodes {
		started[i] = dc.launch(t, old.id, old.addr, old.dataDir, old.seeds, pgid)
		if pgid == 0 {
			pgid = started[i].cmd.Process.Pid
		}
	}
	for _, p := range started {
		dc.awaitReady(t, p)
	}
	dc.mu.Lock()
	dc.nodes = started
	dc.mu.Unlock()
}

// killAll sends SIGKILL to the process group all three nodes run in: one kill(2), so no node
// outlives another by more than the kernel takes to deliver it.
func (dc *durableProcs) killAll(t *testing.T) {
	t.Helper()
	pgid := dc.nodes[0].cmd.Process.Pid
	for _, p := range dc.nodes {
		if g, err := syscall.Getpgid(p.cmd.Process.Pid); err != nil || g != pgid {
			t.Fatalf("%s is in process group %d (%v), not %d", p.id, g, err, pgid)
		}
	}
	if pgid <= 1 || pgid == syscall.Getpgrp() {
		t.Fatalf("refusing to kill process group %d", pgid)
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL to process group %d: %v", pgid, err)
	}
}

func (dc *durableProcs) node(i int) *durableProc {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return dc.nodes[i]
}

func (dc *durableProcs) live() []*durableProc {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	var out []*durableProc
	for _, p := range dc.nodes {
		if !p.exited() {
			out = append(out, p)
		}
	}
	return out
}

func (dc *durableProcs) except(i int) []*durableProc {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return slices.Delete(slices.Clone(dc.nodes), i, i+1)
}

// inFlight counts the requests sent and not yet answered.
func (dc *durableProcs) inFlight() int {
	n := 0
	for _, p := range dc.live() {
		p.mu.Lock()
		n += len(p.pending)
		p.mu.Unlock()
	}
	return n
}

// incarnations reads every node's incarnation from the identity.json in its DataDir.
func (dc *durableProcs) incarnations(t *testing.T) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, p := range dc.nodes {
		inc, _ := readIdentity(t, p.dataDir)["incarnation"].(string)
		if inc == "" {
			t.Fatalf("%s: no incarnation in %s/identity.json", p.id, p.dataDir)
		}
		out[p.id] = inc
	}
	return out
}

// formed returns nil once every node, each asked through its Status, lists exactly the
// three nodes as alive members and, for every partition, a leader and the three as voters.
func (dc *durableProcs) formed() error {
	dc.mu.Lock()
	nodes := slices.Clone(dc.nodes)
	dc.mu.Unlock()
	for _, p := range nodes {
		st, err := p.status()
		if err != nil {
			return err
		}
		var alive []string
		for _, m := range st.Members {
			if m.State == "alive" {
				alive = append(alive, m.ID)
			}
		}
		slices.Sort(alive)
		if len(st.Members) != len(durableIDs) || !slices.Equal(alive, durableIDs) {
			return fmt.Errorf("%s lists members %+v", p.id, st.Members)
		}
		if err := votersOf([]*durableProc{p}, "", true); err != nil {
			return err
		}
	}
	return nil
}

// votersOf returns nil if every partition, in the Status of every node given, has a leader
// and as voters exactly the three nodes (all true) or the three but id (all false).
func votersOf(nodes []*durableProc, id string, all bool) error {
	want := durableIDs
	if !all {
		want = slices.DeleteFunc(slices.Clone(durableIDs), func(s string) bool { return s == id })
	}
	for _, p := range nodes {
		st, err := p.status()
		if err != nil {
			return err
		}
		if len(st.Partitions) != procPartitions {
			return fmt.Errorf("%s lists %d partitions", p.id, len(st.Partitions))
		}
		for _, ps := range st.Partitions {
			voters := slices.Sorted(slices.Values(ps.Replicas))
			if ps.Leader == "" || !slices.Equal(voters, want) {
				return fmt.Errorf("%s: partition %d led by %q, voters %v; want voters %v", p.id, ps.ID, ps.Leader, ps.Replicas, want)
			}
		}
	}
	return nil
}

// watchMembers asks every live node for its Status, over and over, until the returned
// function is called; that returns an error if any node ever listed a member other than the
// three, or more than three.
func (dc *durableProcs) watchMembers() func() error {
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		polls := 0
		for {
			for _, p := range dc.live() {
				st, err := p.status()
				if err != nil {
					continue // killed meanwhile
				}
				polls++
				ids := make([]string, 0, len(st.Members))
				for _, m := range st.Members {
					ids = append(ids, m.ID)
				}
				if len(ids) > len(durableIDs) || slices.ContainsFunc(ids, func(id string) bool { return !slices.Contains(durableIDs, id) }) {
					done <- fmt.Errorf("%s listed members %+v", p.id, st.Members)
					return
				}
			}
			select {
			case <-stop:
				if polls == 0 {
					done <- errors.New("no node answered a Status request")
				} else {
					done <- nil
				}
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() error {
		close(stop)
		return <-done
	}
}

// await polls cond until it returns nil, failing the test with its last error and every
// node's log after timeout.
func (dc *durableProcs) await(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %v\n%s", what, timeout, err, dc.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logs returns what every node process written to stderr, the last 4 KB of each.
func (dc *durableProcs) logs() string {
	dc.ps.mu.Lock()
	all := slices.Clone(dc.ps.all)
	dc.ps.mu.Unlock()
	var b strings.Builder
	for _, p := range all {
		s := p.stderr.String()
		if len(s) > 4096 {
			s = "..." + s[len(s)-4096:]
		}
		fmt.Fprintf(&b, "--- %s (pid %d, exited %v):\n%s\n", p.id, p.cmd.Process.Pid, p.exited(), s)
	}
	return b.String()
}

// durableWrite is what a client knows of one key: the last write acknowledged, and the value
// of a later write whose outcome it does not know.
type durableWrite struct {
	key     string
	acked   *durableReply // nil: no write of the key was acknowledged
	unknown string        // "": none
}

// durableWriters write keys under a prefix through the nodes in turn: each key is created with
// CompareAndSwap at version 0 and, if acknowledged, swapped once more at the version it got.
// A key whose write fails is left for good, its outcome unknown.
type durableWriters struct {
	acked, unknown atomic.Int64
	halt           chan struct{}
	wg             sync.WaitGroup
	mu             sync.Mutex // guards writes
	writes         []*durableWrite
}

func startDurableWriters(dc *durableProcs, prefix string, clients int) *durableWriters {
	w := &durableWriters{halt: make(chan struct{})}
	for c := range clients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-w.halt:
					return
				default:
				}
				live := dc.live()
				if len(live) == 0 {
					return
				}
				p := live[(c+n)%len(live)]
				rec := &durableWrite{key: fmt.Sprintf("%s/c%d/%05d", prefix, c, n)}
				w.mu.Lock()
				w.writes = append(w.writes, rec)
				w.mu.Unlock()
				var version uint64
				for step := 1; step <= 2; step++ {
					value := fmt.Sprintf("%s#%d", rec.key, step)
					r, err := p.call(durableRequest{Op: "cas", Key: rec.key, Version: version, Value: value, Timeout: "5s"})
					w.mu.Lock()
					if err != nil || r.Error != "" {
						rec.unknown = value
						w.mu.Unlock()
						w.unknown.Add(1)
						break
					}
					rec.acked = &r
					w.mu.Unlock()
					w.acked.Add(1)
					version = r.Version
				}
			}
		}()
	}
	return w
}

func (w *durableWriters) stop() {
	close(w.halt)
	w.wg.Wait()
}

func (w *durableWriters) records() []durableWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]durableWrite, len(w.writes))
	for i, r := range w.writes {
		out[i] = *r
	}
	return out
}

// checkWrites reads every key written, linearizably, through every node. A key whose last
// write was acknowledged holds exactly what that write returned; one with a later write of
// unknown outcome holds either that or the later value at a higher version; one never
// acknowledged is missing or holds the value written.
func (dc *durableProcs) checkWrites(t *testing.T, writes []durableWrite) {
	t.Helper()
	start := time.Now()
	var (
		mu       sync.Mutex
		failures []string
		checked  atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	next := make(chan durableWrite)
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rec := range next {
				for _, p := range dc.nodes {
					checked.Add(1)
					got, err := p.call(durableRequest{Op: "get", Key: rec.key, Timeout: "20s"})
					if err != nil || (got.Error != "" && got.Code != "not_found") {
						fail("%s: GetEntry(%s): %v %s", p.id, rec.key, err, got.Error)
						continue
					}
					found := got.Code != "not_found"
					want := "missing, or " + rec.unknown
					ok := !found || got.Value == rec.unknown
					if a := rec.acked; a != nil {
						want = fmt.Sprintf("%q@%d", a.Value, a.Version)
						ok = found && got.Value == a.Value && got.Version == a.Version
						if rec.unknown != "" {
							want += fmt.Sprintf(", or %q above version %d", rec.unknown, a.Version)
							ok = ok || found && got.Value == rec.unknown && got.Version > a.Version
						}
					}
					if !ok {
						state := "missing"
						if found {
							state = fmt.Sprintf("%q@%d", got.Value, got.Version)
						}
						fail("%s: %s is %s, want %s", p.id, rec.key, state, want)
					}
				}
			}
		}()
	}
	acked := 0
	for _, rec := range writes {
		if rec.acked != nil {
			acked++
		}
		next <- rec
	}
	close(next)
	wg.Wait()
	t.Logf("%d reads of %d keys (%d with an acknowledged write) in %v", checked.Load(), len(writes), acked,
		time.Since(start).Round(time.Millisecond))
	if len(failures) > 0 {
		slices.Sort(failures)
		t.Fatalf("%d reads found what no write left:\n%s\n%s", len(failures), strings.Join(failures[:min(len(failures), 50)], "\n"), dc.logs())
	}
	if acked == 0 {
		t.Fatalf("no write was acknowledged, so none was checked")
	}
}
