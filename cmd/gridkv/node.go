package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/feellmoose/gridkv"
)

// node is one GridKV instance with the servers in front of it.
type node struct {
	kv     *gridkv.GridKV
	log    *slog.Logger
	resp   *respServer  // nil without -resp
	http   *http.Server // nil without -http
	httpLn net.Listener
	failed chan error // a server that stopped on its own
	start  time.Time
}

// startNode binds the RESP and HTTP addresses first, so that a port already taken fails the
// start before the node joins a cluster, then starts the node and serves.
func startNode(s settings, log *slog.Logger) (*node, error) {
	n := &node{log: log, failed: make(chan error, 2), start: time.Now()}
	var respLn, httpLn net.Listener
	var err error
	if s.resp != "" {
		if respLn, err = net.Listen("tcp", s.resp); err != nil {
			return nil, fmt.Errorf("-resp: %w", err)
		}
	}
	if s.http != "" {
		if httpLn, err = net.Listen("tcp", s.http); err != nil {
			closeIf(respLn)
			return nil, fmt.Errorf("-http: %w", err)
		}
	}

	if s.replicas == 1 {
		// With one copy the default write quorum is 1, acknowledged when the leader has
		// appended the entry, before it commits: a read issued right after the reply may
		// not see the write yet.
		log.Warn("gridkv: -replicas 1: writes are acknowledged before they commit; a read right after a write may miss it")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts, err := s.options(log)
	if err == nil {
		opts.Metrics = reg
		n.kv, err = gridkv.NewGridKV(opts)
	}
	if err != nil {
		closeIf(respLn)
		closeIf(httpLn)
		return nil, err
	}

	if respLn != nil {
		n.resp = newRESPServer(respLn, n.kv, respConfig{
			opTimeout:  s.opTimeout,
			maxClients: s.maxClients,
			maxRequest: s.maxRequest,
			nodeID:     s.id,
			start:      n.start,
		}, log)
		reg.MustRegister(n.resp.stats)
		go func() {
			if err := n.resp.serve(); err != nil {
				n.failed <- err
			}
		}()
	}
	if httpLn != nil {
		n.httpLn = httpLn
		n.http = &http.Server{
			Handler:           newHTTPHandler(n, reg, s.pprof),
			ReadHeaderTimeout: 10 * time.Second,
		}
		go func() {
			if err := n.http.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
				n.failed <- fmt.Errorf("http: %w", err)
			}
		}()
	}
	return n, nil
}

func closeIf(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

func (n *node) respAddr() string {
	if n.resp == nil {
		return ""
	}
	return n.resp.addr()
}

func (n *node) httpAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

// close stops taking RESP clients, leaves the cluster, then stops the HTTP port last so
// /healthz and /metrics answer while the node leaves.
func (n *node) close() error {
	if n.resp != nil {
		n.resp.close(5 * time.Second)
	}
	err := n.kv.Close()
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if herr := n.http.Shutdown(ctx); herr != nil && err == nil {
			err = herr
		}
	}
	return err
}
