package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/feellmoose/gridkv"
)

// respConfig bounds what the RESP server accepts.
type respConfig struct {
	opTimeout  time.Duration // per command, for reaching a leader or quorum
	maxClients int
	maxRequest int // bytes a client may send without completing a command
	nodeID     string
	start      time.Time
}

// respServer serves the Redis protocol over one GridKV node. redcon reads and parses
// commands, runs one goroutine per connection and answers pipelined commands in order;
// this type decides what each command does.
type respServer struct {
	kv    *gridkv.GridKV
	cfg   respConfig
	log   *slog.Logger
	srv   *redcon.Server
	ln    net.Listener
	stats *respStats
	scans *scanCursors

	// ctx ends when the server closes, so commands waiting on a leader stop waiting.
	ctx    context.Context
	cancel context.CancelFunc

	clients  atomic.Int64
	conns    sync.WaitGroup // one per accepted connection until redcon reports it closed
	nextConn atomic.Int64
}

// client is the state of one connection.
type client struct {
	conn  redcon.Conn
	proto int // 2 or 3: the RESP version HELLO chose
	id    int64
	name  string
}

func newRESPServer(ln net.Listener, kv *gridkv.GridKV, cfg respConfig, log *slog.Logger) *respServer {
	s := &respServer{ln: ln, kv: kv, cfg: cfg, log: log, stats: newRESPStats(), scans: newScanCursors(10000, 10*time.Minute)}
	s.stats.srv = s
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = redcon.NewServerNetwork("tcp", "", s.handle, s.accept, s.closed)
	return s
}

// serve serves until close; it returns nil after close.
func (s *respServer) serve() error {
	if err := s.srv.Serve(limitListener{s.ln, s.cfg.maxRequest}); err != nil {
		return fmt.Errorf("resp: %w", err)
	}
	return nil
}

func (s *respServer) addr() string { return s.ln.Addr().String() }

// close stops accepting, disconnects every client (redcon closes their connections) and
// waits, at most wait, for the commands in flight to return.
func (s *respServer) close(wait time.Duration) {
	s.cancel()
	_ = s.srv.Close()
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		s.log.Warn("resp: commands still running at shutdown")
	}
}

func (s *respServer) accept(conn redcon.Conn) bool {
	if s.clients.Add(1) > int64(s.cfg.maxClients) {
		s.clients.Add(-1)
		conn.WriteError("ERR max number of clients reached")
		return false // redcon flushes the error, then closes
	}
	s.conns.Add(1)
	conn.SetContext(&client{conn: conn, proto: 2, id: s.nextConn.Add(1)})
	return true
}

// closed runs under redcon's server lock: it must not block.
func (s *respServer) closed(conn redcon.Conn, err error) {
	s.clients.Add(-1)
	s.conns.Done()
}

// handle runs one command. A panic in a command is a bug: the client gets an error and is
// disconnected, and the node goes on serving the others.
func (s *respServer) handle(conn redcon.Conn, cmd redcon.Command) {
	c, _ := conn.Context().(*client)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("resp: command panicked", "command", safeName(cmd.Args[0]), "panic", r)
			conn.WriteError("ERR internal error")
			conn.Close()
		}
	}()
	s.dispatch(c, cmd.Args)
}

// safeName is a command name fit for a log line.
func safeName(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	return strconv.Quote(string(b))
}

// limitListener hands out limitConns: redcon sees only whole, well-framed commands of at
// most max bytes.
type limitListener struct {
	net.Listener
	max int
}

func (l limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &limitConn{Conn: c, max: l.max}, nil
}
