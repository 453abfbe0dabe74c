// Command procnode runs one GridKV node as its own process, for tests that kill, stop and
// restart real processes (procs_test.go and procs_durable_test.go at the module root).
//
// It starts a node with LocalTimings, prints "ready" on stdout once the node's WaitReady
// returns, and serves until its stdin closes or it receives SIGTERM or SIGINT; then it closes
// the node and exits. Errors go to stderr, with a non-zero exit status. With -data-dir the node
// keeps its state on disk (Storage.DataDir) and, started again on the same directory with the
// same -id and -addr, is the node it was.
//
// # Requests on stdin
//
// Once ready, the node also answers requests, one JSON object a line on stdin, so that a test
// can drive a cluster of processes without joining it (a member in the test process would
// host replicas, and survive what the processes do not):
//
//	{"id":1,"op":"cas","key":"k","version":0,"value":"v","ttl":"1h","timeout":"5s"}
//	{"id":2,"op":"set","key":"k","value":"v"}
//	{"id":3,"op":"get","key":"k"}       a linearizable GetEntry
//	{"id":4,"op":"status"}
//
// Each is served on its own goroutine, so answers may come out of order; each is one JSON
// object a line on stdout, after "ready", carrying the request's id:
//
//	{"id":1,"version":12,"value":"v","expires_at":"..."}
//	{"id":3,"error":"...","code":"not_found"}
//	{"id":4,"status":{"NodeID":"...","Members":[...],"Partitions":[...]}}
//
// code names the sentinel error when there is one: "not_found", "version_mismatch",
// "unavailable", "closed". A request without a timeout gets ten seconds.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/store"
)

// defaultRequestTimeout bounds a request that names no timeout.
const defaultRequestTimeout = 10 * time.Second

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
	out := &replyWriter{enc: json.NewEncoder(os.Stdout)}
	out.line("ready")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	go func() {
		defer close(stdinClosed)
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var req request
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				fmt.Fprintf(os.Stderr, "procnode: unreadable request %q: %v\n", sc.Text(), err)
				continue
			}
			go func() { out.reply(serve(kv, req)) }()
		}
		if err := sc.Err(); err != nil {
			fmt.Fprintln(os.Stderr, "procnode: reading stdin:", err)
		}
	}()
	select {
	case <-signals:
	case <-stdinClosed:
	}
	// Requests still in flight end with ErrClosed; their replies may be lost as the process
	// exits, which a client treats as an unknown outcome.
	return kv.Close()
}

// request is one operation asked for on stdin.
type request struct {
	ID      uint64   `json:"id"`
	Op      string   `json:"op"` // cas, set, get or status
	Key     string   `json:"key,omitempty"`
	Version uint64   `json:"version,omitempty"` // cas: the version expected; 0: the key must not exist
	Value   string   `json:"value,omitempty"`
	TTL     duration `json:"ttl,omitempty"`     // cas and set: WithTTL, if positive
	Timeout duration `json:"timeout,omitempty"` // 0: defaultRequestTimeout
}

// reply is the answer to one request, on stdout.
type reply struct {
	ID        uint64         `json:"id"`
	Version   uint64         `json:"version,omitempty"`
	Value     string         `json:"value,omitempty"`
	ExpiresAt time.Time      `json:"expires_at,omitzero"`
	Status    *gridkv.Status `json:"status,omitempty"`
	Error     string         `json:"error,omitempty"`
	Code      string         `json:"code,omitempty"` // the sentinel error, see the package doc
}

func serve(kv *gridkv.GridKV, req request) reply {
	timeout := time.Duration(req.Timeout)
	if timeout <= 0 {
		timeout = defaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var writeOpts []gridkv.Option
	if req.TTL > 0 {
		writeOpts = append(writeOpts, gridkv.WithTTL(time.Duration(req.TTL)))
	}
	var (
		e   gridkv.Entry
		err error
	)
	switch req.Op {
	case "cas":
		e, err = kv.CompareAndSwap(ctx, req.Key, req.Version, []byte(req.Value), writeOpts...)
	case "set":
		err = kv.Set(ctx, req.Key, []byte(req.Value), writeOpts...)
	case "get":
		e, err = kv.GetEntry(ctx, req.Key, gridkv.WithConsistency(gridkv.Linearizable))
	case "status":
		st := kv.Status()
		return reply{ID: req.ID, Status: &st}
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		return reply{ID: req.ID, Error: err.Error(), Code: errorCode(err)}
	}
	return reply{ID: req.ID, Version: e.Version, Value: string(e.Value), ExpiresAt: e.ExpiresAt}
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, gridkv.ErrKeyNotFound):
		return "not_found"
	case errors.Is(err, gridkv.ErrVersionMismatch):
		return "version_mismatch"
	case errors.Is(err, gridkv.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, gridkv.ErrClosed):
		return "closed"
	}
	return ""
}

// replyWriter writes whole lines to stdout from many goroutines.
type replyWriter struct {
	mu  sync.Mutex // guards enc and stdout
	enc *json.Encoder
}

func (w *replyWriter) line(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Println(s)
}

func (w *replyWriter) reply(r reply) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.enc.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "procnode: writing a reply:", err)
	}
}

// duration is a time.Duration written in JSON as a string such as "1.5s".
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}
