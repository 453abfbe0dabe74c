// Command gridkv runs one GridKV node as a process, for users who do not write Go: it joins
// (or starts) a cluster by gossip, serves the Redis protocol on -resp and an HTTP port on
// -http with Prometheus metrics, the node's status as JSON, health and readiness checks and a
// status page. Run it with -h for every flag and its environment variable;
// docs/node-program.md describes deployments and the commands served.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	s, err := parseSettings(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gridkv:", err)
		os.Exit(2)
	}
	log := s.logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		// After the first signal, a second one gets the default action: an operator who
		// does not want to wait for the graceful leave can end the process at once.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, s, log); err != nil {
		log.Error("gridkv: exiting", "err", err)
		os.Exit(1)
	}
}

// run starts the node and its servers, and stops them all when ctx ends.
func run(ctx context.Context, s settings, log *slog.Logger) error {
	n, err := startNode(s, log)
	if err != nil {
		return err
	}
	log.Info("gridkv: node started", "id", s.id, "addr", s.addr, "resp", n.respAddr(), "http", n.httpAddr())
	go func() {
		if err := n.kv.WaitReady(ctx); err == nil {
			log.Info("gridkv: ready: every partition has a leader")
		}
	}()
	select {
	case <-ctx.Done():
		log.Info("gridkv: signal received, leaving the cluster")
	case err = <-n.failed:
		log.Error("gridkv: a server failed", "err", err)
	}
	start := time.Now()
	if cerr := n.close(); cerr != nil && err == nil {
		err = cerr
	}
	log.Info("gridkv: stopped", "took", time.Since(start).Round(time.Millisecond))
	return err
}
