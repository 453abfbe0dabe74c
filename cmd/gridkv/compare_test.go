package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/internal/freeport"
)

// startRedis starts a redis-server on a free loopback port, without persistence and with
// one database (as GridKV has), and stops it when the test ends.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not installed (.ci/run installs it)")
		}
		t.Skip("redis-server is not installed: the comparison with Redis needs it (apt-get install redis-server)")
	}
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--databases", "1", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := tryDial(addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not listen within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// compared is how a command's replies from Redis and GridKV must agree.
type compared int

const (
	exact compared = iota
	shape          // the same reply type: values legitimately differ (versions, ids, cursors)
)

type step struct {
	cmd  string // arguments separated by '|'
	mode compared
}

// TestCompareWithRedis sends one command sequence to redis-server and to a GridKV node and
// requires the same replies, so that GridKV's answers, errors included, are Redis's.
func TestCompareWithRedis(t *testing.T) {
	redisAddr := startRedis(t)
	n := startTestNode(t)
	steps := []step{
		{"PING", exact}, {"PING|hello", exact}, {"PING|a|b", exact}, {"ECHO|hi", exact}, {"ECHO", exact},
		{"SELECT|0", exact}, {"SELECT|1", exact}, {"SELECT|x", exact},
		{"GET|k", exact}, {"GET", exact}, {"GET|a|b", exact},
		{"SET|k|v", exact}, {"GET|k", exact}, {"SET|k", exact},
		{"SET|k|v2|NX", exact}, {"SET|k|v2|XX", exact}, {"GET|k", exact},
		{"SET|k|v3|GET", exact}, {"SET|new|v|NX|GET", exact}, {"SET|new2|v|XX|GET", exact},
		{"SET|k|v|NX|XX", exact}, {"SET|k|v|EX|10|PX|100", exact}, {"SET|k|v|EX", exact},
		{"SET|k|v|EX|abc", exact}, {"SET|k|v|EX|0", exact}, {"SET|k|v|PX|-5", exact},
		{"SET|k|v|FOO", exact}, {"SET|k|v|ex|100", exact}, {"TTL|k", exact}, {"PTTL|missing", exact},
		{"SET|k|v|px|100000", exact}, {"TTL|k", exact},
		{"DEL|k|new|nothing", exact}, {"DEL", exact}, {"EXISTS|k", exact}, {"EXISTS", exact},
		{"MSET|a|1|b|2|c|3", exact}, {"MSET|a", exact}, {"MSET|a|1|b", exact},
		{"MGET|a|b|zz|c", exact}, {"MGET", exact}, {"EXISTS|a|a|b|zz", exact},
		{"INCR|counter", exact}, {"INCR|counter", exact}, {"INCRBY|counter|10", exact},
		{"DECR|counter", exact}, {"DECRBY|counter|5", exact}, {"DECRBY|counter|-5", exact},
		{"INCRBY|counter|1.5", exact}, {"INCRBY|counter| 1", exact}, {"INCRBY|counter|+1", exact},
		{"INCRBY|counter|99999999999999999999", exact}, {"INCR|a|b", exact},
		{"SET|s|hello", exact}, {"INCR|s", exact}, {"SET|s|12 ", exact}, {"INCR|s", exact},
		{"SET|s|-0", exact}, {"INCR|s", exact}, {"SET|s|0", exact}, {"INCR|s", exact},
		{"SET|max|9223372036854775807", exact}, {"INCR|max", exact}, {"DECRBY|max|-1", exact},
		{"SET|min|-9223372036854775808", exact}, {"DECR|min", exact}, {"INCRBY|min|-1", exact},
		{"DECRBY|min|-9223372036854775808", exact},
		{"EXPIRE|a|100", exact}, {"TTL|a", exact}, {"PTTL|a", shape}, {"EXPIRE|zz|100", exact},
		{"EXPIRE|a|200|GT", exact}, {"TTL|a", exact}, {"EXPIRE|a|50|GT", exact}, {"EXPIRE|a|50|LT", exact},
		{"EXPIRE|a|500|NX", exact}, {"EXPIRE|b|500|XX", exact}, {"EXPIRE|b|500|NX", exact}, {"TTL|b", exact},
		{"EXPIRE|b|5|NX|XX", exact}, {"EXPIRE|b|5|GT|LT", exact}, {"EXPIRE|b|5|BAD", exact},
		{"EXPIRE|b|x", exact}, {"EXPIRE|b", exact}, {"EXPIRE|b|9223372036854775807", exact},
		{"PEXPIRE|c|100000", exact}, {"TTL|c", exact}, {"PERSIST|c", exact}, {"PERSIST|c", exact},
		{"TTL|c", exact}, {"PERSIST|zz", exact}, {"PERSIST", exact},
		{"SET|inc|5|EX|100", exact}, {"INCR|inc", exact}, {"TTL|inc", exact},
		{"EXPIRE|c|0", exact}, {"EXISTS|c", exact}, {"PEXPIRE|b|-1", exact}, {"GET|b", exact},
		{"DBSIZE", exact}, {"DBSIZE|x", exact},
		{"SCAN|0", shape}, {"SCAN|0|MATCH|m*|COUNT|100", shape}, {"SCAN", exact}, {"SCAN|0|COUNT|0", exact},
		{"SCAN|0|COUNT|x", exact}, {"SCAN|0|MATCH", exact}, {"SCAN|0|FOO|bar", exact}, {"SCAN|x", exact},
		{"INFO", shape}, {"INFO|keyspace", shape}, {"INFO|server", shape},
		{"CONFIG|GET|nothing-matches-this", exact}, {"CONFIG|GET", exact}, {"CONFIG|GET|appendonly", exact}, {"CONFIG|GET|databases", exact}, {"CONFIG|NOPE", exact},
		{"COMMAND|COUNT", shape}, {"COMMAND|INFO|get", shape}, {"COMMAND|DOCS|get", shape}, {"COMMAND|NOPE", exact},
		{"CLIENT|ID", shape}, {"CLIENT|SETNAME|me", exact}, {"CLIENT|GETNAME", exact}, {"CLIENT|NOPE", exact},
		{"NOSUCH", exact}, {"NOSUCH|a|b", exact}, {"nosuch|" + strings.Repeat("x", 200), exact},
		{"HELLO|4", exact}, {"HELLO|x", exact}, {"HELLO|2|BAD", exact}, {"HELLO|2", shape},
		{"HELLO|3", shape}, {"GET|zz", exact}, {"MGET|a|zz", exact}, {"CONFIG|GET|nothing-matches-this", exact},
		{"INFO|server", shape}, {"SET|k|v|NX", exact}, {"SET|k|v|NX", exact}, {"TTL|zz", exact},
		{"HELLO|2", shape}, {"GET|zz", exact},

		{"QUIT", exact},
	}
	redis := dialRESP(t, redisAddr)
	grid := dialRESP(t, n.respAddr())
	for _, st := range steps {
		args := strings.Split(st.cmd, "|")
		want, got := redis.do(args...), grid.do(args...)
		switch st.mode {
		case exact:
			if got != want {
				t.Errorf("%s:\n  redis:  %q\n  gridkv: %q", st.cmd, want, got)
			}
		case shape:
			if got[0] != want[0] {
				t.Errorf("%s: reply types differ:\n  redis:  %q\n  gridkv: %q", st.cmd, want, got)
			}
		}
	}
	if !redis.closedByPeer() || !grid.closedByPeer() {
		t.Error("a connection is open after QUIT")
	}
}
