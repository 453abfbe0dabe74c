// Command procnode runs one GridKV node as its own process, for tests that kill, stop and
// restart real processes (procs_test.go at the module root).
//
// It starts a node with LocalTimings, prints "ready" on stdout once the node's WaitReady
// returns, and serves until its stdin closes or it receives SIGTERM or SIGINT; then it closes
// the node and exits. Errors go to stderr, with a non-zero exit status. With -data-dir the node
// keeps its state on disk (Storage.DataDir) and, started again on the same directory with the
// same -id and -addr, is the node it was.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/store"
)

func main() {
	id := flag.String("id", "", "node ID (required)")
	addr := flag.String("addr", "", "host:port to listen on and advertise (required)")
	seeds := flag.String("seeds", "", "comma-separated addresses of existing members; empty: start a new cluster, or rejoin its own with -data-dir state")
	partitions := flag.Int("partitions", 0, "partition count (0: the default)")
	dataDir := flag.String("data-dir", "", "directory for the node's Raft logs, votes, snapshots and identity (Storage.DataDir); empty: memory only")
	verbose := flag.Bool("v", false, "log at debug level to stderr")
	readyTimeout := flag.Duration("ready-timeout", time.Minute, "how long to wait for every partition to have a leader")
	flag.Parse()

	if err := run(*id, *addr, *seeds, *partitions, *dataDir, *verbose, *readyTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "procnode:", err)
		os.Exit(1)
	}
}

func run(id, addr, seeds string, partitions int, dataDir string, verbose bool, readyTimeout time.Duration) error {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	timings := gridkv.LocalTimings()
	opts := &gridkv.GridKVOptions{
		LocalNodeID:  id,
		LocalAddress: addr,
		Partitions:   partitions,
		Timings:      &timings,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	if seeds != "" {
		opts.SeedAddrs = strings.Split(seeds, ",")
	}
	if dataDir != "" {
		opts.Storage = &store.StorageOptions{DataDir: dataDir}
	}
	kv, err := gridkv.NewGridKV(opts)
	if err != nil {
		return err
	}
	defer kv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	err = kv.WaitReady(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("not ready after %v: %w", readyTimeout, err)
	}
	fmt.Println("ready")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-signals:
	case <-stdinClosed:
	}
	return kv.Close()
}
