package main

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
)

var (
	fuzzNodeOnce sync.Once
	fuzzNode     *node
)

// FuzzRESPInput sends arbitrary bytes to one node's RESP port. Whatever arrives, every reply
// must be well-formed RESP, the server must end the exchange (answer, or close) rather than
// crash, and a fresh connection must still get PONG. `go test -fuzz FuzzRESPInput` explores
// further than the seeds, which run in every `go test`.
func FuzzRESPInput(f *testing.F) {
	for _, seed := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"*2\r\n$4\r\nSCAN\r\n$20\r\n18446744073709551615\r\n",
		"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$20\r\n99999999999999999999\r\n",
		"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\n",
		"*9999999999\r\n", "*1\r\n$-1\r\n", "*0\r\n", "$5\r\nhello\r\n", "PING\r\n", "\"a\nb\"\r\n", "*2\r\n$1\r\n",
		"*3\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n",
		"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$5\r\n[[[*\\\r\n",
	} {
		f.Add([]byte(seed))
	}
	// One node serves every input (a node per input would make fuzzing crawl).
	f.Cleanup(func() {
		if fuzzNode != nil {
			_ = fuzzNode.close()
		}
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzNodeOnce.Do(func() { fuzzNode = startTestNodeNoCleanup(t) })
		if fuzzNode == nil {
			t.Fatal("the shared node did not start (see the first input's failure)")
		}
		c, err := net.Dial("tcp", fuzzNode.respAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(in)
		// Half-close: the server sees the end of input, answers what it parsed, and closes.
		c.(*net.TCPConn).CloseWrite()
		rc := &respConn{t: t, c: c, rd: bufio.NewReader(c)}
		for {
			_, err := rc.read()
			if err == nil {
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("input %q: no reply and no close within 10 s", in)
			}
			if strings.HasPrefix(err.Error(), "bad line") || strings.HasPrefix(err.Error(), "unknown reply type") {
				t.Fatalf("input %q: malformed reply: %v", in, err)
			}
			break // EOF or reset: the server closed
		}
		pc := dialRESP(t, fuzzNode.respAddr())
		if got := pc.do("PING"); got != "+PONG" {
			t.Fatalf("after input %q, PING = %q", in, got)
		}
	})
}
