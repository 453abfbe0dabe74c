package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/internal/freeport"
)

// startTestNode starts a one-node cluster in this process with RESP and HTTP on free
// loopback ports, ready to serve, and closes it when the test ends.
func startTestNode(t testing.TB) *node {
	t.Helper()
	n := startTestNodeNoCleanup(t)
	t.Cleanup(func() { _ = n.close() })
	return n
}

// startTestNodeNoCleanup is startTestNode for a caller that closes the node itself.
func startTestNodeNoCleanup(t testing.TB) *node {
	t.Helper()
	var n *node
	var err error
	for attempt := 0; attempt < 5; attempt++ { // another process may take the port first
		var addr string
		if addr, err = freeport.Addr(); err != nil {
			t.Fatal(err)
		}
		s := settings{id: "t1", addr: addr, resp: "127.0.0.1:0", http: "127.0.0.1:0", partitions: 4,
			replicas: 3, timings: "local", logFormat: "text", logLevel: "error",
			opTimeout: 5 * time.Second, maxClients: 64, maxRequest: 2 << 20}
		if n, err = startNode(s, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.kv.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// respConn is a raw RESP client for tests: it writes commands as arrays of bulk strings and
// reads replies into a printable form, so replies of two servers compare as strings.
type respConn struct {
	t  testing.TB
	c  net.Conn
	rd *bufio.Reader
}

func dialRESP(t testing.TB, addr string) *respConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &respConn{t: t, c: c, rd: bufio.NewReader(c)}
}

func encodeCommand(args ...string) []byte {
	var b []byte
	b = fmt.Appendf(b, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

func (rc *respConn) send(args ...string) {
	rc.t.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write(encodeCommand(args...)); err != nil {
		rc.t.Fatalf("write %q: %v", args, err)
	}
}

// do sends one command and returns its reply, printed.
func (rc *respConn) do(args ...string) string {
	rc.t.Helper()
	rc.send(args...)
	r, err := rc.read()
	if err != nil {
		rc.t.Fatalf("reply to %q: %v", args, err)
	}
	return r
}

// read reads one reply: "+OK", "-ERR ...", ":5", "$hello" (bulk), "$nil", "_" (RESP3
// null), "*[a b]" (array), "%{k v}" (map), "~[...]" (set), "=txt:..." (verbatim), ",1.5".
func (rc *respConn) read() (string, error) {
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := rc.rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(line, "\r\n") || len(line) < 3 {
		return "", fmt.Errorf("bad line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+', '-', ':', ',', '#':
		return string(kind) + body, nil
	case '_':
		return "_", nil
	case '$', '=':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "$nil", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rc.rd, buf); err != nil {
			return "", err
		}
		return string(kind) + string(buf[:n]), nil
	case '*', '%', '~':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "*nil", nil
		}
		if kind == '%' {
			n *= 2
		}
		items := make([]string, n)
		for i := range items {
			if items[i], err = rc.read(); err != nil {
				return "", err
			}
		}
		open, end := "[", "]"
		if kind == '%' {
			open, end = "{", "}"
		}
		return string(kind) + open + strings.Join(items, " ") + end, nil
	}
	return "", fmt.Errorf("unknown reply type %q", line)
}

// closedByPeer reports whether the server closed the connection (reads return EOF or a
// reset) within a few seconds.
func (rc *respConn) closedByPeer() bool {
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	for {
		_, err := rc.c.Read(b[:])
		if err != nil {
			ne, ok := err.(net.Error)
			return !(ok && ne.Timeout())
		}
	}
}

func tryDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }
