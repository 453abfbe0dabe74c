package cluster

import (
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// maxPoll is how often WaitFor polls at most; short waits poll more often, so that a 500 ms
// deadline is not missed by a whole interval.
const maxPoll = 50 * time.Millisecond

// WaitFor polls cond until it returns true; it is the one way tests wait for a condition. After
// timeout it fails the test with msg and the last Status of every live node of the clusters the
// test started, with why their predicates last returned false. cond is called at least once,
// even when timeout is not positive. Call it from the test goroutine: it may call t.Fatalf.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	poll := min(maxPoll, max(timeout/20, time.Millisecond))
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, c := range clustersOf(t) {
				b.WriteString(c.Describe())
			}
			t.Fatalf("%s: not true after %v\n%s%s", msg, timeout, b.String(), StacksNote(t))
		}
		time.Sleep(poll)
	}
}

// StacksNote writes every goroutine's stack to a file in the directory GRIDKV_TEST_STACKS
// names, for a wait that timed out, and returns a line naming the file for the failure
// message; without the variable it writes nothing and returns "". A stuck wait usually means
// some goroutine waits for ever, and its stack says on what.
func StacksNote(t testing.TB) string {
	dir := os.Getenv("GRIDKV_TEST_STACKS")
	if dir == "" {
		return ""
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	f, err := os.CreateTemp(dir, "stacks-"+name+"-*.txt")
	if err != nil {
		return "goroutine dump failed: " + err.Error() + "\n"
	}
	defer f.Close()
	if err := pprof.Lookup("goroutine").WriteTo(f, 2); err != nil {
		return "goroutine dump failed: " + err.Error() + "\n"
	}
	path, _ := filepath.Abs(f.Name())
	return "goroutines at the deadline: " + path + "\n"
}
