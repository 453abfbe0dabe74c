package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// childFlag is the hidden first argument that makes the binary run one node (-procs mode).
const childFlag = "-node"

// child is a node running in a separate OS process. The protocol is two lines and a pipe:
// the child prints its address once it started and "ready" once its own view shows every
// partition fully replicated; it closes its node and exits when its stdin reaches EOF.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	addr  string
}

func startChild(spec nodeSpec) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, childFlag, string(b))
	cmd.Stderr = os.Stderr // only written with -v, or on failure
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.ID, err)
	}
	ch := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
		close(ch.lines)
	}()
	return ch, nil
}

// waitReady waits for the child's "ready" line.
func (ch *child) waitReady(ctx context.Context) error {
	for {
		select {
		case line, ok := <-ch.lines:
			if !ok {
				return fmt.Errorf("node process %d exited before it was ready", ch.cmd.Process.Pid)
			}
			if addr, found := strings.CutPrefix(line, "addr "); found {
				ch.addr = addr
			}
			if line == "ready" {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for node process %d: %w", ch.cmd.Process.Pid, ctx.Err())
		}
	}
}

// stop closes the child's stdin, so it leaves the cluster, and kills it if it has not exited
// within ten seconds.
func (ch *child) stop() {
	ch.stdin.Close()
	exited := make(chan struct{})
	go func() { ch.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		ch.cmd.Process.Kill()
		<-exited
	}
}

// cpuTime returns the child's user+system CPU time so far, from /proc (Linux only; zero
// elsewhere). Getrusage cannot see children that are still running.
func (ch *child) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ch.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTicksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clockTicksPerSecond
}

// runChild is main for a node process.
func runChild(arg string) error {
	var spec nodeSpec
	if err := json.Unmarshal([]byte(arg), &spec); err != nil {
		return fmt.Errorf("node spec: %w", err)
	}
	cfg := &config{timings: spec.Timings, inflight: spec.MaxInflight, commit: spec.CommitTimeout}
	kv, addr, _, err := startNode(spec, cfg.gridTimings())
	if err != nil {
		return err
	}
	defer kv.Close()
	fmt.Printf("addr %s\n", addr)

	// Ready once this node's own view shows the whole cluster fully replicated.
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-eof:
			return nil
		case <-tick.C:
		}
		if fullyReplicated(kv.Status(), spec.Nodes, min(spec.Replicas, spec.Nodes)) {
			break
		}
	}
	fmt.Println("ready")
	<-eof
	return nil
}
