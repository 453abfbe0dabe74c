package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/store"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSettingsFromEnvAndFlags(t *testing.T) {
	env := map[string]string{
		"GRIDKV_ID": "from-env", "GRIDKV_ADDR": "127.0.0.1:7001", "GRIDKV_SEEDS": "a:1,b:2",
		"GRIDKV_PARTITIONS": "16", "GRIDKV_LOG_FORMAT": "json", "GRIDKV_OP_TIMEOUT": "2s",
	}
	s, err := parseSettings([]string{"-id", "from-flag", "-partitions", "4"}, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if s.id != "from-flag" || s.partitions != 4 {
		t.Errorf("flags must win over the environment: id %q partitions %d", s.id, s.partitions)
	}
	if s.addr != "127.0.0.1:7001" || s.logFormat != "json" || s.opTimeout != 2*time.Second || s.seeds != "a:1,b:2" {
		t.Errorf("environment not applied: %+v", s)
	}
	opts, err := s.options(nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(opts.SeedAddrs, " ") != "a:1 b:2" || opts.Partitions != 4 || opts.LocalNodeID != "from-flag" {
		t.Errorf("options: %+v", opts)
	}

	_, err = parseSettings(nil, envOf(map[string]string{"GRIDKV_ID": "x", "GRIDKV_ADDR": "y:1", "GRIDKV_REPLICAS": "three"}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "GRIDKV_REPLICAS") {
		t.Errorf("a bad variable must be named in the error, got %v", err)
	}
	_, err = parseSettings([]string{"-log-format", "xml"}, envOf(nil), &bytes.Buffer{})
	for _, want := range []string{"-id is required", "-addr is required", "-log-format"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}

// TestHelpNamesEveryFlagAndVariable: -h documents each flag with its environment variable.
func TestHelpNamesEveryFlagAndVariable(t *testing.T) {
	var out bytes.Buffer
	_, err := parseSettings([]string{"-h"}, envOf(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, name := range []string{"id", "addr", "seeds", "data-dir", "sync", "partitions", "replicas", "cluster-key-file",
		"resp", "http", "log-format", "log-level", "timings", "op-timeout", "max-clients", "max-request-bytes", "pprof"} {
		if !strings.Contains(out.String(), "-"+name+"  [env "+envName(name)+"]") {
			t.Errorf("-h does not document -%s with %s", name, envName(name))
		}
	}
}

func TestClusterKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, err := readClusterKey(write("good", strings.Repeat("ab", 32)+"\n"))
	if err != nil || len(key) != 32 || key[0] != 0xab {
		t.Fatalf("32-byte hex key: %x, %v", key, err)
	}
	for name, content := range map[string]string{"short": "abcd", "nothex": strings.Repeat("zz", 16)} {
		if _, err := readClusterKey(write(name, content)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s key: error %v should name the file", name, err)
		}
	}
	if _, err := readClusterKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key file: no error")
	}
}

// -data-dir and -sync (or GRIDKV_DATA_DIR and GRIDKV_SYNC) set Storage.DataDir and Sync; a
// sync mode without a directory, or an unknown one, is refused.
func TestDataDirAndSync(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want store.SyncMode
		err  string
	}{
		{args: []string{"-data-dir", dir}, want: store.SyncAlways},
		{args: []string{"-data-dir", dir, "-sync", "none"}, want: store.SyncNone},
		{env: map[string]string{"GRIDKV_DATA_DIR": dir, "GRIDKV_SYNC": "none"}, want: store.SyncNone},
		{args: []string{"-data-dir", dir, "-sync", "sometimes"}, err: `-sync "sometimes"`},
		{args: []string{"-sync", "none"}, err: "needs -data-dir"},
	} {
		s, err := parseSettings(append([]string{"-id", "a", "-addr", "127.0.0.1:1"}, tc.args...), envOf(tc.env), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		opts, err := s.options(nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v %v: error %v, want one containing %q", tc.args, tc.env, err, tc.err)
			}
			continue
		}
		if err != nil || opts.Storage == nil || opts.Storage.DataDir != dir || opts.Storage.Sync != tc.want {
			t.Errorf("%v %v: options %+v, %v; want DataDir %s, Sync %v", tc.args, tc.env, opts.Storage, err, dir, tc.want)
		}
	}
}

func TestParseIntAsRedis(t *testing.T) {
	good := map[string]int64{"0": 0, "1": 1, "-1": -1, "9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63}
	for s, want := range good {
		if got, ok := parseInt([]byte(s)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "-", "-0", "01", "+1", " 1", "1 ", "1.0", "9223372036854775808", "-9223372036854775809", "99999999999999999999", "abc"} {
		if got, ok := parseInt([]byte(s)); ok {
			t.Errorf("parseInt(%q) = %d, want a refusal", s, got)
		}
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"a*", "ba", false}, {"*c", "abc", true},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"[ab]x", "bx", true}, {"[^ab]x", "bx", false},
		{"[a-c]", "b", true}, {"[a-c]", "d", false}, {`a\*`, "a*", true}, {`a\*`, "ab", false},
		{"*a*b*c*", "xxaxxbxxcxx", true}, {"*a*b*c*", "xxaxxcxxbxx", false},
		{strings.Repeat("*a", 20) + "b", strings.Repeat("a", 1000), false}, // must not take exponential time
	}
	for _, c := range cases {
		if got := globMatch([]byte(c.pattern), []byte(c.s)); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
	for p, want := range map[string][2]any{"user:*": {"user:", true}, "user:*x": {"user:", false}, "a?": {"a", false}, "": {"", false}} {
		prefix, exact := globPrefix([]byte(p))
		if prefix != want[0] || exact != want[1] {
			t.Errorf("globPrefix(%q) = %q, %v", p, prefix, exact)
		}
	}
}
