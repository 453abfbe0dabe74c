package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/internal/freeport"
)

// proc is one gridkv process started by a test.
type proc struct {
	id, addr, resp, http string
	cmd                  *exec.Cmd
	stderr               *syncBuffer
	exited               chan struct{}
	err                  error // Wait's result, once exited is closed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gridkv")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// startProc starts a node; settings other than its addresses come from env, to check that
// the GRIDKV_* variables reach the flags.
func startProc(t *testing.T, bin, id, seeds string, env ...string) *proc {
	t.Helper()
	p := &proc{id: id, addr: freeAddr(t), resp: freeAddr(t), http: freeAddr(t), stderr: &syncBuffer{}, exited: make(chan struct{})}
	args := []string{"-id", id, "-addr", p.addr, "-resp", p.resp, "-http", p.http}
	if seeds != "" {
		args = append(args, "-seeds", seeds)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), append([]string{"GRIDKV_TIMINGS=local", "GRIDKV_PARTITIONS=4"}, env...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("stderr of %s:\n%s", id, p.stderr.String())
		}
	})
	return p
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready: %v", p.id, p.err)
		default:
		}
		resp, err := http.Get("http://" + p.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v (last: %v)", p.id, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestThreeProcesses builds the program, starts three nodes as processes, writes through
// one and reads through the others over RESP, renders the status page, then stops every
// node with SIGTERM and requires a clean exit.
func TestThreeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts three processes")
	}
	bin := buildBinary(t)
	first := startProc(t, bin, "n1", "", "GRIDKV_LOG_FORMAT=json")
	first.waitReady(t, 60*time.Second)
	procs := []*proc{first,
		startProc(t, bin, "n2", first.addr),
		startProc(t, bin, "n3", first.addr),
	}
	for _, p := range procs {
		p.waitReady(t, 60*time.Second)
	}
	waitMembers(t, first, 3, 30*time.Second)

	c1 := dialRESP(t, procs[0].resp)
	if got := c1.do("SET", "greeting", "hello"); got != "+OK" {
		t.Fatalf("SET through n1 = %q", got)
	}
	for _, p := range procs[1:] {
		if got := dialRESP(t, p.resp).do("GET", "greeting"); got != "$hello" {
			t.Fatalf("GET through %s = %q, want $hello", p.id, got)
		}
		if got := dialRESP(t, p.resp).do("INCR", "visits"); !strings.HasPrefix(got, ":") {
			t.Fatalf("INCR through %s = %q", p.id, got)
		}
	}
	// Deadlines survive forwarding: whichever node leads a key's partition, TTL through
	// every node reports the one SET gave (keys spread over the partitions' leaders).
	for i := range 8 {
		key := "ttl:" + strconv.Itoa(i)
		if got := c1.do("SET", key, "v", "EX", "100"); got != "+OK" {
			t.Fatalf("SET %s EX 100 = %q", key, got)
		}
		for _, p := range procs {
			if got := dialRESP(t, p.resp).do("TTL", key); got != ":100" && got != ":99" {
				t.Errorf("TTL %s through %s = %q, want :100", key, p.id, got)
			}
		}
	}
	if got := c1.do("GET", "visits"); got != "$2" {
		t.Fatalf("GET visits = %q, want $2 after one INCR through each of two nodes", got)
	}

	t.Run("StatusPage", func(t *testing.T) { checkStatusPage(t, procs) })

	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		select {
		case <-p.exited:
			if p.err != nil {
				t.Errorf("%s after SIGTERM: %v, want exit status 0", p.id, p.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still running 30 s after SIGTERM", p.id)
		}
	}
	// n1 logs JSON (GRIDKV_LOG_FORMAT=json): every line must parse.
	for _, line := range strings.Split(strings.TrimSpace(first.stderr.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("n1 log line is not JSON: %q", line)
		}
	}
	if !strings.Contains(first.stderr.String(), `"msg":"gridkv: stopped"`) {
		t.Error("n1 did not log its stop")
	}
}

// waitMembers polls /status until the node sees want members alive.
func waitMembers(t *testing.T, p *proc, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := fetchStatus(t, p)
		alive := 0
		for _, m := range st.Members {
			if m.State == "alive" {
				alive++
			}
		}
		if alive == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %d members alive after %v, want %d", p.id, alive, within, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fetchStatus(t *testing.T, p *proc) nodeStatus {
	t.Helper()
	resp, err := http.Get("http://" + p.http + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st nodeStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkStatusPage renders n1's page in headless Chromium while a client keeps sending
// commands to n1, and checks what the page shows after its scripts ran a few refreshes:
// every member, a row per partition with its leader, and a non-zero ops/s figure.
func checkStatusPage(t *testing.T, procs []*proc) {
	chromium := findChromium()
	if chromium == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (.ci/run installs it)")
		}
		t.Skip("chromium is not installed: the status page test needs it")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		rc := dialRESP(t, procs[0].resp)
		for i := 0; ctx.Err() == nil; i++ {
			rc.send("SET", "page:"+strconv.Itoa(i%100), "x")
			if _, err := rc.read(); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	// The page computes ops/s from two samples of /status a second apart: --virtual-time-budget
	// lets its timers run for 4 s of page time before the DOM is dumped.
	runCtx, runCancel := context.WithTimeout(ctx, 90*time.Second)
	defer runCancel()
	out, err := exec.CommandContext(runCtx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--virtual-time-budget=4000", "--dump-dom", "http://"+procs[0].http+"/").Output()
	cancel()
	<-done
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	dom := string(out)
	for _, p := range procs {
		if !regexp.MustCompile(`<td( class="self")?>` + p.id + `</td><td>` + regexp.QuoteMeta(p.addr) + `</td><td class="alive">alive</td>`).MatchString(dom) {
			t.Errorf("the page shows no alive member row for %s at %s", p.id, p.addr)
		}
	}
	rows := regexp.MustCompile(`<tr><td>(\d+)</td><td>(n[123])</td><td>[n123, ]+</td></tr>`).FindAllStringSubmatch(dom, -1)
	if len(rows) != 4 {
		t.Errorf("the page shows %d partition rows with a leader, want 4", len(rows))
	}
	m := regexp.MustCompile(`<span id="ops">(\d+)</span>`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no ops/s figure on the page; commands sent meanwhile: %d", sent.Load())
	}
	if ops, _ := strconv.Atoi(m[1]); ops <= 0 {
		t.Errorf("the page shows %d ops/s while a client sent %d commands", ops, sent.Load())
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}

// findChromium returns the path of a Chromium or Chrome binary, or "".
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}
