package cluster

import (
	"os"
	"strings"
	"testing"
)

// With GRIDKV_TEST_STACKS set, a timed-out wait's note names a file holding every goroutine's
// stack; without it, nothing is written.
func TestStacksNote(t *testing.T) {
	t.Setenv("GRIDKV_TEST_STACKS", "")
	if n := StacksNote(t); n != "" {
		t.Fatalf("without the variable: note %q", n)
	}
	dir := t.TempDir()
	t.Setenv("GRIDKV_TEST_STACKS", dir)
	n := StacksNote(t)
	path, ok := strings.CutPrefix(strings.TrimSpace(n), "goroutines at the deadline: ")
	if !ok {
		t.Fatalf("note %q names no file", n)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "TestStacksNote") {
		t.Fatalf("the dump does not show the test's own goroutine:\n%.500s", b)
	}
}
