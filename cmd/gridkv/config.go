package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/feellmoose/gridkv"
)

// envPrefix is prepended to a flag's name, upper-cased with '-' as '_', to form the
// environment variable that sets it: -cluster-key-file is GRIDKV_CLUSTER_KEY_FILE.
const envPrefix = "GRIDKV_"

// settings are the program's flags after parsing, before they become GridKVOptions.
type settings struct {
	id             string
	addr           string
	seeds          string
	dataDir        string
	sync           string
	partitions     int
	replicas       int
	clusterKeyFile string
	resp           string
	http           string
	logFormat      string
	logLevel       string
	timings        string
	opTimeout      time.Duration
	maxClients     int
	maxRequest     int
	pprof          bool
}

// envName is the environment variable that sets the flag named name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseSettings reads args (without the program name) and the environment: a flag on the
// command line wins over its variable. It returns flag.ErrHelp after printing usage for -h.
func parseSettings(args []string, getenv func(string) string, out io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("gridkv", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&s.id, "id", "", "node ID, unique in the cluster (required)")
	fs.StringVar(&s.addr, "addr", "", "host:port for cluster traffic, TCP and UDP; other nodes reach this node there (required)")
	fs.StringVar(&s.seeds, "seeds", "", "comma-separated addresses (-addr) of existing members; empty: start a new cluster")
	fs.StringVar(&s.dataDir, "data-dir", "", "directory for Raft logs, votes and snapshots: the node keeps its data and identity across restarts; empty: memory only")
	fs.StringVar(&s.sync, "sync", "always", "with -data-dir, when log writes reach the disk: always (fsync before a write is acknowledged) or none (the OS writes back; a power loss can lose the last seconds)")
	fs.IntVar(&s.partitions, "partitions", 0, "partition count, fixed for the cluster's life (0: the cluster's, or the default for a new one)")
	fs.IntVar(&s.replicas, "replicas", 0, "copies of each partition (0: the cluster's, or 3 for a new one)")
	fs.StringVar(&s.clusterKeyFile, "cluster-key-file", "", "file holding the cluster key in hex (16, 24 or 32 bytes); empty: no encryption or authentication")
	fs.StringVar(&s.resp, "resp", "", "host:port to serve the Redis protocol on; empty: none")
	fs.StringVar(&s.http, "http", "", "host:port to serve /metrics, /status, /healthz, /readyz and the status page on; empty: none")
	fs.StringVar(&s.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&s.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&s.timings, "timings", "lan", "failure detection and election clocks: lan, or local for nodes sharing one machine")
	fs.DurationVar(&s.opTimeout, "op-timeout", 5*time.Second, "how long one RESP command may wait for a leader or quorum before it fails with CLUSTERDOWN")
	fs.IntVar(&s.maxClients, "max-clients", 10000, "RESP connections served at once; more are refused with an error")
	fs.IntVar(&s.maxRequest, "max-request-bytes", 8<<20, "largest RESP request accepted; a client sending more gets an error and is disconnected")
	fs.BoolVar(&s.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the -http address")
	fs.Usage = func() { usage(fs) }

	// The environment first, so that the command line, parsed after, overrides it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(envName(f.Name))
		if v == "" || envErr != nil {
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = fmt.Errorf("%s=%q: %v", envName(f.Name), v, err)
		}
	})
	if envErr != nil {
		return s, envErr
	}
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q (every setting is a flag: see -h)", fs.Arg(0))
	}
	return s, s.validate()
}

func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, `gridkv runs one GridKV node: a member of a replicated key-value cluster that
serves the Redis protocol (-resp) and an HTTP status and metrics port (-http).

Start the first node without -seeds; start every other node with -seeds naming
existing members (give all nodes the same list):

  gridkv -id n1 -addr 127.0.0.1:7001 -resp 127.0.0.1:6381 -http 127.0.0.1:8081
  gridkv -id n2 -addr 127.0.0.1:7002 -seeds 127.0.0.1:7001 -resp 127.0.0.1:6382

SIGTERM or SIGINT leaves the cluster gracefully and exits 0.

Every flag can also be set by an environment variable; the flag wins when both are set.

Flags:
`)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  -%s  [env %s]\n      %s%s\n", f.Name, envName(f.Name), f.Usage, def)
	})
}

func (s settings) validate() error {
	var errs []error
	if s.id == "" {
		errs = append(errs, errors.New("-id is required"))
	}
	if s.addr == "" {
		errs = append(errs, errors.New("-addr is required"))
	}
	if s.logFormat != "text" && s.logFormat != "json" {
		errs = append(errs, fmt.Errorf("-log-format %q: want text or json", s.logFormat))
	}
	if _, err := parseLevel(s.logLevel); err != nil {
		errs = append(errs, err)
	}
	if s.timings != "lan" && s.timings != "local" {
		errs = append(errs, fmt.Errorf("-timings %q: want lan or local", s.timings))
	}
	if s.opTimeout <= 0 {
		errs = append(errs, fmt.Errorf("-op-timeout %v: must be positive", s.opTimeout))
	}
	if s.maxClients < 1 {
		errs = append(errs, fmt.Errorf("-max-clients %d: must be at least 1", s.maxClients))
	}
	// A request must fit the largest value GridKV stores, with its key and framing.
	if min := gridkv.MaxValueSize + gridkv.MaxKeySize + 64; s.maxRequest < min {
		errs = append(errs, fmt.Errorf("-max-request-bytes %d: must be at least %d, to fit the largest key and value", s.maxRequest, min))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("-log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func (s settings) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(s.logLevel) // validated
	ho := &slog.HandlerOptions{Level: level}
	if s.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// options turns the settings into GridKVOptions; it reads the cluster key file.
func (s settings) options(log *slog.Logger) (*gridkv.GridKVOptions, error) {
	timings := gridkv.DefaultTimings()
	if s.timings == "local" {
		timings = gridkv.LocalTimings()
	}
	opts := &gridkv.GridKVOptions{
		LocalNodeID:  s.id,
		LocalAddress: s.addr,
		Partitions:   s.partitions,
		ReplicaCount: s.replicas,
		Timings:      &timings,
		Logger:       log,
	}
	for _, seed := range strings.Split(s.seeds, ",") {
		if seed = strings.TrimSpace(seed); seed != "" {
			opts.SeedAddrs = append(opts.SeedAddrs, seed)
		}
	}
	if s.clusterKeyFile != "" {
		key, err := readClusterKey(s.clusterKeyFile)
		if err != nil {
			return nil, err
		}
		opts.ClusterKey = key
	}
	if err := applyDataDir(opts, s.dataDir, s.sync); err != nil {
		return nil, err
	}
	return opts, nil
}

// readClusterKey reads a key written in hex, surrounding white space ignored (as
// `openssl rand -hex 32 > key` leaves a newline).
func readClusterKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-cluster-key-file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("-cluster-key-file %s: not hex: %v", path, err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("-cluster-key-file %s: %d bytes, want 16, 24 or 32", path, len(key))
}
