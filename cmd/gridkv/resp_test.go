package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// expect sends each command and checks its printed reply (see respConn.read).
func expect(t *testing.T, rc *respConn, steps [][2]string) {
	t.Helper()
	for _, st := range steps {
		args := strings.Split(st[0], "|")
		if got := rc.do(args...); got != st[1] {
			t.Errorf("%s: got %q, want %q", strings.Join(args, " "), got, st[1])
		}
	}
}

func TestRESPStringCommands(t *testing.T) {
	n := startTestNode(t)
	rc := dialRESP(t, n.respAddr())
	expect(t, rc, [][2]string{
		{"PING", "+PONG"},
		{"ping|hi", "$hi"},
		{"ECHO|x y", "$x y"},
		{"GET|k", "$nil"},
		{"GET|", "$nil"}, // Redis allows an empty key; GridKV holds none
		{"SET|k|v1", "+OK"},
		{"GET|k", "$v1"},
		{"SET|k|v2|NX", "$nil"},
		{"SET|k|v2|XX|GET", "$v1"},
		{"SET|fresh|v|XX", "$nil"},
		{"SET|fresh|v|NX|GET", "$nil"},
		{"GET|fresh", "$v"},
		{"SET|k|v3|GET", "$v2"},
		{"SET|k|v|NX|XX", "-ERR syntax error"},
		{"SET|k|v|EX|1|PX|5", "-ERR syntax error"},
		{"SET|k|v|EX|x", "-ERR value is not an integer or out of range"},
		{"SET|k|v|EX|0", "-ERR invalid expire time in 'set' command"},
		{"SET||v", "-ERR invalid key: GridKV keys are 1 to 1024 bytes"},
		{"EXISTS|k|k|nothing", ":2"},
		{"MSET|a|1|b|2", "+OK"},
		{"MSET|a|1|b", "-ERR wrong number of arguments for 'mset' command"},
		{"MGET|a|nothing|b", "*[$1 $nil $2]"},
		{"DEL|a|b|nothing", ":2"},
		{"DEL|a", ":0"},
		{"INCR|n", ":1"},
		{"INCRBY|n|41", ":42"},
		{"DECR|n", ":41"},
		{"DECRBY|n|-9", ":50"},
		{"INCRBY|n|x", "-ERR value is not an integer or out of range"},
		{"INCR|k", "-ERR value is not an integer or out of range"},
		{"SET|big|9223372036854775807", "+OK"},
		{"INCR|big", "-ERR increment or decrement would overflow"},
		{"SET|lead|007", "+OK"},
		{"INCR|lead", "-ERR value is not an integer or out of range"},
		{"DECRBY|n|-9223372036854775808", "-ERR decrement would overflow"},
		{"GET", "-ERR wrong number of arguments for 'get' command"},
		{"NOPE|a|b", "-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "},
		{"SELECT|0", "+OK"},
		{"SELECT|1", "-ERR DB index is out of range"},
		{"SELECT|x", "-ERR value is not an integer or out of range"},
	})
}

func TestRESPExpiry(t *testing.T) {
	n := startTestNode(t)
	rc := dialRESP(t, n.respAddr())
	expect(t, rc, [][2]string{
		{"TTL|missing", ":-2"},
		{"SET|k|v", "+OK"},
		{"TTL|k", ":-1"},
		{"EXPIRE|k|100", ":1"},
		{"TTL|k", ":100"},
		{"EXPIRE|k|50|GT", ":0"},
		{"EXPIRE|k|50|LT", ":1"},
		{"EXPIRE|k|60|NX", ":0"},
		{"EXPIRE|k|60|NX|XX", "-ERR NX and XX, GT or LT options at the same time are not compatible"},
		{"EXPIRE|k|60|FOO", "-ERR Unsupported option FOO"},
		{"PERSIST|k", ":1"},
		{"PERSIST|k", ":0"},
		{"TTL|k", ":-1"},
		{"EXPIRE|missing|10", ":0"},
		{"SET|n|5|EX|100", "+OK"},
		{"INCR|n", ":6"},
		{"TTL|n", ":100"}, // INCR keeps the deadline
		{"SET|n|7", "+OK"},
		{"TTL|n", ":-1"}, // SET without EX drops it
		{"EXPIRE|n|-1", ":1"},
		{"EXISTS|n", ":0"},
	})
	// A key written with PX expires: poll until it is gone (it must go within seconds).
	expect(t, rc, [][2]string{{"SET|short|v|PX|200", "+OK"}})
	if got := rc.do("PTTL", "short"); !strings.HasPrefix(got, ":") || got == ":-1" || got == ":-2" {
		t.Fatalf("PTTL of a key set PX 200 = %q", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for rc.do("GET", "short") != "$nil" {
		if time.Now().After(deadline) {
			t.Fatal("a key set PX 200 still readable after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := rc.do("TTL", "short"); got != ":-2" {
		t.Fatalf("TTL of an expired key = %q, want :-2", got)
	}
}

// TestRESPScan writes keys under two prefixes and checks that SCAN with each MATCH and
// COUNT returns every matching key exactly once, and that DBSIZE counts them all.
func TestRESPScan(t *testing.T) {
	n := startTestNode(t)
	rc := dialRESP(t, n.respAddr())
	want := map[string]bool{}
	for i := range 57 {
		k := fmt.Sprintf("user:%03d", i)
		want[k] = true
		rc.send("SET", k, "x")
		rc.send("SET", fmt.Sprintf("order:%03d", i), "y")
	}
	for range 2 * 57 {
		if r, err := rc.read(); err != nil || r != "+OK" {
			t.Fatalf("pipelined SET: %q %v", r, err)
		}
	}
	if got := rc.do("DBSIZE"); got != ":114" {
		t.Fatalf("DBSIZE = %q, want :114", got)
	}
	for _, match := range []string{"user:*", "user:0[0-4]?", "*:01*"} {
		for _, count := range []string{"1", "7", "1000"} {
			seen := map[string]int{}
			cursor := "0"
			for calls := 0; ; calls++ {
				if calls > 200 {
					t.Fatalf("MATCH %s COUNT %s: no end after 200 calls", match, count)
				}
				reply := rc.do("SCAN", cursor, "MATCH", match, "COUNT", count)
				cur, keys := parseScan(t, reply)
				for _, k := range keys {
					seen[k]++
				}
				if cursor = cur; cursor == "0" {
					break
				}
			}
			for k, c := range seen {
				if c != 1 || !globMatch([]byte(match), []byte(k)) {
					t.Errorf("MATCH %s COUNT %s: %s returned %d times", match, count, k, c)
				}
			}
			expected := 0
			for k := range want {
				if globMatch([]byte(match), []byte(k)) {
					expected++
				}
			}
			if strings.HasPrefix(match, "*") {
				expected *= 2 // order:01x too
			}
			if len(seen) != expected {
				t.Errorf("MATCH %s COUNT %s: %d keys, want %d", match, count, len(seen), expected)
			}
		}
	}
	expect(t, rc, [][2]string{
		{"SCAN|12345", "-ERR invalid cursor"},
		{"SCAN|abc", "-ERR invalid cursor"},
		{"SCAN|0|COUNT|0", "-ERR syntax error"},
		{"SCAN|0|MATCH", "-ERR syntax error"},
		{"SCAN|0|TYPE|hash", "*[$0 *[]]"},
	})
}

// parseScan splits a printed SCAN reply "*[$cursor *[$k1 $k2]]".
func parseScan(t *testing.T, reply string) (string, []string) {
	t.Helper()
	if !strings.HasPrefix(reply, "*[$") || !strings.HasSuffix(reply, "]]") {
		t.Fatalf("SCAN reply %q", reply)
	}
	cursor, rest, _ := strings.Cut(reply[3:], " ")
	if _, err := strconv.ParseUint(cursor, 10, 64); err != nil {
		t.Fatalf("SCAN cursor %q is not a number", cursor)
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(rest, "*["), "]]")
	var keys []string
	for _, f := range strings.Fields(inner) {
		keys = append(keys, strings.TrimPrefix(f, "$"))
	}
	return cursor, keys
}

func TestRESPHelloAndResp3(t *testing.T) {
	n := startTestNode(t)
	rc := dialRESP(t, n.respAddr())
	hello := rc.do("HELLO", "3")
	if !strings.HasPrefix(hello, "%{$server $redis $version $") || !strings.Contains(hello, "$proto :3") {
		t.Fatalf("HELLO 3 = %q", hello)
	}
	expect(t, rc, [][2]string{
		{"GET|nothing", "_"},
		{"MGET|nothing", "*[_]"},
		{"CONFIG|GET|maxmemory", "%{}"},
		{"HELLO|4", "-NOPROTO unsupported protocol version"},
		{"HELLO|x", "-ERR Protocol version is not an integer or out of range"},
		{"HELLO|2|FOO", "-ERR Syntax error in HELLO option 'FOO'"},
	})
	if hello := rc.do("HELLO", "2", "AUTH", "default", "pw", "SETNAME", "me"); !strings.HasPrefix(hello, "*[$server $redis") {
		t.Fatalf("HELLO 2 = %q", hello)
	}
	expect(t, rc, [][2]string{{"GET|nothing", "$nil"}, {"CLIENT|GETNAME", "$me"}})
	if info := rc.do("INFO"); !strings.Contains(info, "# Server") || !strings.Contains(info, "gridkv_node_id:t1") || !strings.Contains(info, "# Keyspace") {
		t.Fatalf("INFO = %q", info)
	}
	if got := rc.do("COMMAND", "COUNT"); got != ":"+strconv.Itoa(len(commandList)) {
		t.Fatalf("COMMAND COUNT = %q", got)
	}
	if got := rc.do("COMMAND", "INFO", "get"); got != "*[*[$get :2 *[+readonly +fast] :1 :1 :1 *[] *[] *[] *[]]]" {
		t.Fatalf("COMMAND INFO get = %q", got)
	}
	if got := rc.do("COMMAND", "DOCS", "get"); !strings.HasPrefix(got, "*[$get *[$summary $") {
		t.Fatalf("COMMAND DOCS get = %q", got)
	}
}

func TestRESPPipelineAndQuit(t *testing.T) {
	n := startTestNode(t)
	rc := dialRESP(t, n.respAddr())
	var batch []byte
	for i := range 200 {
		batch = append(batch, encodeCommand("SET", "p"+strconv.Itoa(i), strconv.Itoa(i))...)
		batch = append(batch, encodeCommand("GET", "p"+strconv.Itoa(i))...)
	}
	if _, err := rc.c.Write(batch); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if r, _ := rc.read(); r != "+OK" {
			t.Fatalf("reply %d to SET = %q", i, r)
		}
		if r, _ := rc.read(); r != "$"+strconv.Itoa(i) {
			t.Fatalf("reply %d to GET = %q", i, r)
		}
	}
	if got := rc.do("QUIT"); got != "+OK" {
		t.Fatalf("QUIT = %q", got)
	}
	if !rc.closedByPeer() {
		t.Fatal("connection open after QUIT")
	}
}

// TestRESPOversizeRequest: a request past -max-request-bytes gets an error and the
// connection is closed; the node keeps serving.
func TestRESPOversizeRequest(t *testing.T) {
	n := startTestNode(t) // max request 2 MiB
	rc := dialRESP(t, n.respAddr())
	rc.c.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n"))
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for sent := 0; sent < 3<<20; sent += len(chunk) {
		if _, err := rc.c.Write(chunk); err != nil {
			break // the server closed first
		}
	}
	r, err := rc.read()
	if err != nil || !strings.HasPrefix(r, "-ERR Protocol error: request larger than") {
		t.Fatalf("reply to an oversize request = %q, %v", r, err)
	}
	if !rc.closedByPeer() {
		t.Fatal("connection open after an oversize request")
	}
	if got := dialRESP(t, n.respAddr()).do("PING"); got != "+PONG" {
		t.Fatalf("PING after = %q", got)
	}
	// A value over GridKV's limit fits the request bound and is refused by the store.
	big := strings.Repeat("v", 1<<20+1)
	if got := dialRESP(t, n.respAddr()).do("SET", "k", big); !strings.HasPrefix(got, "-ERR string exceeds maximum allowed size") {
		t.Fatalf("SET of a value over 1 MiB = %q", got)
	}
}

func TestRESPMaxClients(t *testing.T) {
	n := startTestNode(t) // max 64 clients
	var conns []*respConn
	for range 64 {
		rc := dialRESP(t, n.respAddr())
		if got := rc.do("PING"); got != "+PONG" {
			t.Fatalf("PING = %q", got)
		}
		conns = append(conns, rc)
	}
	extra := dialRESP(t, n.respAddr())
	if r, err := extra.read(); r != "-ERR max number of clients reached" {
		t.Fatalf("65th client got %q, %v", r, err)
	}
	conns[0].c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", n.respAddr())
		if err != nil {
			t.Fatal(err)
		}
		rc := &respConn{t: t, c: c, rd: bufio.NewReader(c)}
		r := rc.do("PING")
		c.Close()
		if r == "+PONG" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room for a client after one closed: %q", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRESPGarbage throws random bytes and malformed frames at the server. Each connection
// must end with an error reply or a close, never hang the server; the node must answer a
// PING on a fresh connection afterwards, so it neither crashed nor wedged.
func TestRESPGarbage(t *testing.T) {
	n := startTestNode(t)
	inputs := [][]byte{
		[]byte("*x\r\n"),
		[]byte("*2\r\n$3\r\nGET\r\n:5\r\n"),
		[]byte("*1\r\n$-5\r\n"),
		[]byte("*1\r\n$3\nGET\r\n"),
		[]byte("*1\r\n$3\r\nGETXX"),
		[]byte("*-1\r\n"),
		[]byte("\"unbalanced\n"),
		[]byte("*999999999999999999999\r\n"),
		[]byte("*9999999999\r\n"),      // once kept redcon walking ten billion missing arguments
		[]byte("*1000\r\n$1\r\nx\r\n"), // incomplete: answered when the client half-closes
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		b := make([]byte, 1+rng.IntN(300))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		if rng.IntN(2) == 0 {
			b[0] = '*'
		}
		inputs = append(inputs, append(b, '\r', '\n'))
	}
	for i, in := range inputs {
		rc := dialRESP(t, n.respAddr())
		rc.c.Write(in)
		rc.c.(*net.TCPConn).CloseWrite() // the end of input ends an incomplete command
		// Protocol errors end in an error reply and a close; an inline line of junk is an
		// unknown command, as in Redis, and the connection stays open.
		start := time.Now()
		r, err := rc.read()
		if time.Since(start) > 2*time.Second {
			t.Errorf("input %d %q: %v before a reply or a close", i, in, time.Since(start))
		}
		if err == nil && !strings.HasPrefix(r, "-") {
			t.Errorf("input %d %q: reply %q, want an error", i, in, r)
		}
		if strings.HasPrefix(in0(in), "*") && err == nil && !rc.closedByPeer() {
			t.Errorf("input %d %q: connection open after a protocol error", i, in)
		}
		rc.c.Close()
	}
	if got := dialRESP(t, n.respAddr()).do("PING"); got != "+PONG" {
		t.Fatalf("PING after garbage = %q", got)
	}
}

func in0(b []byte) string { return string(b[:1]) }

// TestRESPBadFrameAfterGoodCommands: commands before a bad frame are answered, in order,
// then the error, then the close, as Redis does.
func TestRESPBadFrameAfterGoodCommands(t *testing.T) {
	n := startTestNode(t)
	rc := dialRESP(t, n.respAddr())
	rc.c.Write(append(append(encodeCommand("SET", "a", "1"), encodeCommand("GET", "a")...), "*2\r\n:1\r\n"...))
	for _, want := range []string{"+OK", "$1", "-ERR Protocol error: expected '$', got ':'"} {
		if got, err := rc.read(); got != want {
			t.Fatalf("got %q (%v), want %q", got, err, want)
		}
	}
	if !rc.closedByPeer() {
		t.Fatal("connection open after a bad frame")
	}
}
