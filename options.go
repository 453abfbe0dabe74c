package gridkv

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feellmoose/gridkv/membership"
	"github.com/feellmoose/gridkv/raftgroup"
	"github.com/feellmoose/gridkv/store"
	"github.com/feellmoose/gridkv/transport"
)

// DefaultPartitions is the partition count of a cluster whose first node leaves Partitions
// zero. Each partition is a Raft group, and a Raft log entry costs the same whether it carries
// one command or many: with fewer partitions the same clients fill each entry fuller. Measured
// on 3 nodes with 100 clients (2 vCPUs, medians of 3), 8 partitions against 16 gave 1.31x the
// writes and 1.28x the linearizable reads, 4 gave 1.74x and 1.60x. More partitions spread
// leaders over more nodes: a cluster that will grow past about 8 nodes should set more. See
// the README.
const DefaultPartitions = 8

// MaxPartitions bounds Partitions: the leader table each node gossips is a bitmap of them.
const MaxPartitions = 1024

// GridKVOptions configures a node. Zero values mean the documented defaults.
type GridKVOptions struct {
	LocalNodeID  string   // required, unique in the cluster, at most 128 bytes
	LocalAddress string   // required, host:port other nodes reach this node at (TCP and UDP)
	SeedAddrs    []string // addresses of existing members; empty: start a new cluster

	Network *transport.NetworkOptions // nil: defaults, BindAddr = LocalAddress
	Storage *store.StorageOptions     // nil: defaults (store.BackendMemorySharded)

	// ReplicaCount and Partitions are fixed when a cluster is created, by its first node, and
	// travel with the cluster's ID. A joining node that leaves them zero takes the cluster's;
	// one that sets them otherwise fails NewGridKV with ErrClusterMismatch.
	ReplicaCount int // N, default 3
	WriteQuorum  int // W, default N/2+1
	ReadQuorum   int // R, default N/2+1
	Partitions   int // default DefaultPartitions

	Logger *slog.Logger // nil: discard

	// Metrics, when set, is where the node registers its Prometheus collectors; every
	// metric name starts with "gridkv_" and every series carries node=LocalNodeID, so nodes
	// with different IDs can share a registry. Close unregisters them. The Go runtime and
	// process collectors are the program's to register. nil: no metrics, and no cost beyond
	// a nil check per call. See docs/operations.md.
	Metrics prometheus.Registerer

	// Timings tunes failure detection, elections and placement; nil: DefaultTimings(). A
	// zero field takes its DefaultTimings value.
	Timings *Timings

	// ClusterKey is the secret every node of the cluster shares: 16, 24 or 32 bytes. It
	// encrypts gossip and authenticates every TCP connection (gossip and Raft/requests)
	// before anything else on it is read. nil: no encryption or authentication, fit only
	// for loopback or a trusted private network. Overrides Network.ClusterKey when set.
	ClusterKey []byte
	// TLS, when set, wraps every TCP connection in TLS (the ClusterKey handshake then runs
	// inside): it is used to accept and, with ServerName defaulting to the dialed host, to
	// dial. For mutual authentication set ClientAuth to tls.RequireAndVerifyClientCert and
	// fill Certificates, ClientCAs and RootCAs. Gossip UDP packets are not TLS: set ClusterKey
	// too to encrypt them. Overrides Network.TLS when set.
	TLS *tls.Config
}

// Timings are the clocks of a node. DefaultTimings suits a LAN; LocalTimings suits nodes on
// one machine (tests, examples), where failures are detected in about a second.
type Timings struct {
	Gossip membership.Timing // failure detection
	Raft   raftgroup.Tuning  // elections, heartbeats, snapshots, batching

	JoinTimeout time.Duration // how long a node with seeds keeps trying them at start
	// DeadGrace is how long a dead node keeps its place in the groups before its replicas
	// are replaced, so a node that flaps does not cause churn. A node that left gracefully is
	// replaced at once.
	DeadGrace time.Duration
	// ReconcileInterval is how often leaders compare their groups with the placement.
	ReconcileInterval time.Duration
	// MaxChangesPerTick caps membership changes and leadership transfers a node starts per
	// ReconcileInterval, so a join does not stall it.
	MaxChangesPerTick int
}

// DefaultTimings returns timings for a LAN.
func DefaultTimings() Timings {
	return Timings{
		Gossip:            membership.LANTiming(),
		Raft:              raftgroup.DefaultTuning(),
		JoinTimeout:       30 * time.Second,
		DeadGrace:         30 * time.Second,
		ReconcileInterval: 500 * time.Millisecond,
		MaxChangesPerTick: 4,
	}
}

// LocalTimings starts from DefaultTimings and speeds failure detection up for nodes that
// share one machine.
func LocalTimings() Timings {
	t := DefaultTimings()
	t.Gossip = membership.LocalTiming()
	t.Raft.HeartbeatTimeout = 500 * time.Millisecond
	t.Raft.ElectionTimeout = 500 * time.Millisecond
	t.Raft.LeaderLeaseTimeout = 250 * time.Millisecond
	t.Raft.ApplyTimeout = 5 * time.Second
	t.JoinTimeout = 10 * time.Second
	t.DeadGrace = 3 * time.Second
	t.ReconcileInterval = 200 * time.Millisecond
	t.MaxChangesPerTick = 16
	return t
}

// config is the validated, defaulted form of GridKVOptions.
type config struct {
	nodeID     string
	addr       string
	seeds      []string
	network    transport.NetworkOptions
	storage    store.StorageOptions
	replicas   int
	writeQ     int
	readQ      int
	partitions int
	logger     *slog.Logger
	timings    Timings

	// Which cluster-wide settings the caller chose; the others follow the cluster joined.
	partitionsSet, replicasSet, writeQSet, readQSet bool
}

// newConfig fills defaults and validates relations, naming the offending field and value.
func newConfig(o *GridKVOptions) (config, error) {
	if o == nil {
		return config{}, fmt.Errorf("gridkv: options are nil")
	}
	c := config{
		nodeID:     o.LocalNodeID,
		addr:       o.LocalAddress,
		replicas:   o.ReplicaCount,
		writeQ:     o.WriteQuorum,
		readQ:      o.ReadQuorum,
		partitions: o.Partitions,
		logger:     o.Logger,
	}
	if c.nodeID == "" {
		return config{}, fmt.Errorf("gridkv: LocalNodeID is required")
	}
	if len(c.nodeID) > 128 {
		return config{}, fmt.Errorf("gridkv: LocalNodeID %q is longer than 128 bytes", c.nodeID)
	}
	if err := checkHostPort("LocalAddress", c.addr); err != nil {
		return config{}, err
	}
	for i, s := range o.SeedAddrs {
		if err := checkHostPort(fmt.Sprintf("SeedAddrs[%d]", i), s); err != nil {
			return config{}, err
		}
		if s != c.addr {
			c.seeds = append(c.seeds, s)
		}
	}
	c.replicasSet, c.partitionsSet = c.replicas != 0, c.partitions != 0
	c.writeQSet, c.readQSet = c.writeQ != 0, c.readQ != 0
	if c.replicas == 0 {
		c.replicas = 3
	}
	if c.partitions == 0 {
		c.partitions = DefaultPartitions
	}
	if err := c.checkClusterSettings(); err != nil {
		return config{}, err
	}
	if o.Network != nil {
		c.network = *o.Network
	}
	if n := len(o.ClusterKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return config{}, fmt.Errorf("gridkv: ClusterKey is %d bytes; it must be 16, 24 or 32", n)
	}
	if len(o.ClusterKey) > 0 {
		// A copy, so the caller changing its slice cannot change a running node's key.
		c.network.ClusterKey = append([]byte(nil), o.ClusterKey...)
	}
	if o.TLS != nil {
		c.network.TLS = o.TLS
	}
	c.network = c.network.WithDefaults()
	if err := c.network.Validate(); err != nil {
		return config{}, fmt.Errorf("gridkv: Network: %w", err)
	}
	if c.network.BindAddr == "" {
		c.network.BindAddr = c.addr
	}
	if o.Storage != nil {
		c.storage = *o.Storage
	}
	c.storage = c.storage.WithDefaults()
	if err := c.storage.Validate(); err != nil {
		return config{}, fmt.Errorf("gridkv: Storage: %w", err)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if o.Timings != nil {
		c.timings = *o.Timings
	}
	if err := c.timings.fill(); err != nil {
		return config{}, err
	}
	return c, nil
}

// fill gives each zero field of t its DefaultTimings value and checks the rest, naming the
// field and its value. Every node checks its Raft timings here, though its replicas may start
// long after NewGridKV returned.
func (t *Timings) fill() error {
	def := DefaultTimings()
	if t.Gossip == (membership.Timing{}) {
		t.Gossip = def.Gossip
	}
	if t.Raft == (raftgroup.Tuning{}) {
		t.Raft = def.Raft
	}
	for _, f := range []struct {
		name       string
		v          *time.Duration
		defaultVal time.Duration
	}{
		{"JoinTimeout", &t.JoinTimeout, def.JoinTimeout},
		{"DeadGrace", &t.DeadGrace, def.DeadGrace},
		{"ReconcileInterval", &t.ReconcileInterval, def.ReconcileInterval},
	} {
		if *f.v < 0 {
			return fmt.Errorf("gridkv: Timings.%s %v must not be negative", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.defaultVal
		}
	}
	if t.MaxChangesPerTick < 0 {
		return fmt.Errorf("gridkv: Timings.MaxChangesPerTick %d must not be negative", t.MaxChangesPerTick)
	}
	if t.MaxChangesPerTick == 0 {
		t.MaxChangesPerTick = def.MaxChangesPerTick
	}
	if err := t.Raft.Validate(); err != nil {
		return fmt.Errorf("gridkv: Timings.Raft.%w", err)
	}
	return nil
}

// checkClusterSettings fills the quorums' defaults and checks ReplicaCount, the quorums and
// Partitions against each other.
func (c *config) checkClusterSettings() error {
	if c.replicas < 1 || c.replicas > 9 {
		return fmt.Errorf("gridkv: ReplicaCount %d must be in 1..9", c.replicas)
	}
	majority := c.replicas/2 + 1
	if c.writeQ == 0 || !c.writeQSet {
		c.writeQ, c.writeQSet = majority, false
	}
	if c.readQ == 0 || !c.readQSet {
		c.readQ, c.readQSet = majority, false
	}
	if c.writeQ < 1 || c.writeQ > c.replicas {
		return fmt.Errorf("gridkv: WriteQuorum %d must be in 1..ReplicaCount (%d)", c.writeQ, c.replicas)
	}
	if c.readQ < 1 || c.readQ > c.replicas {
		return fmt.Errorf("gridkv: ReadQuorum %d must be in 1..ReplicaCount (%d)", c.readQ, c.replicas)
	}
	if c.partitions < 1 || c.partitions > MaxPartitions {
		return fmt.Errorf("gridkv: Partitions %d must be in 1..%d", c.partitions, MaxPartitions)
	}
	return nil
}

// adoptCluster takes the Partitions and ReplicaCount of the cluster this node joined, fixed
// when the cluster was created: a node that left them zero takes the cluster's, and one that
// set them otherwise is refused with both values named. Nodes that disagreed would place
// partitions differently and route keys to partitions that do not hold them.
func (c *config) adoptCluster(partitions, replicas int) error {
	if c.partitionsSet && c.partitions != partitions {
		return fmt.Errorf("%w: Partitions is %d here, the cluster's is %d", ErrClusterMismatch, c.partitions, partitions)
	}
	if c.replicasSet && c.replicas != replicas {
		return fmt.Errorf("%w: ReplicaCount is %d here, the cluster's is %d", ErrClusterMismatch, c.replicas, replicas)
	}
	c.partitions, c.replicas = partitions, replicas
	return c.checkClusterSettings()
}

func checkHostPort(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("gridkv: %s %q is not host:port: %w", field, addr, err)
	}
	if host == "" {
		return fmt.Errorf("gridkv: %s %q has no host", field, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("gridkv: %s %q has an invalid port", field, addr)
	}
	return nil
}

// readLinearizable reports whether reads default to linearizable: R + W > N.
func (c *config) readLinearizable() bool { return c.readQ+c.writeQ > c.replicas }

// writeLevel maps WriteQuorum onto the Raft acknowledgement point (DESIGN.md's table).
//
// W=1 acknowledges on the leader's append, before the entry commits, only when the quorums do
// not overlap (R+W <= N): that caller asked for neither durability nor reading its own
// writes. When they overlap (a single node, or W=1 with R=N) reads are linearizable, and a
// read right after the acknowledgement must see the write, so the write waits for its commit.
func (c *config) writeLevel() raftgroup.WriteLevel {
	switch {
	case c.writeQ == 1 && c.writeQ+c.readQ <= c.replicas:
		return raftgroup.WriteLevel{Ack: raftgroup.AckAppend}
	case c.writeQ <= c.replicas/2+1:
		return raftgroup.WriteLevel{Ack: raftgroup.AckCommit}
	default:
		return raftgroup.WriteLevel{Ack: raftgroup.AckApplied, Replicas: c.writeQ}
	}
}

// Consistency is a read's level for one call, overriding what ReadQuorum and WriteQuorum imply.
type Consistency int

const (
	Linearizable Consistency = iota + 1 // leader, after confirming leadership
	Stale                               // this node's replica if it has one, else as Linearizable
)

// Option changes one call. It is a plain value rather than a function so that passing one
// costs no allocation on the read path. Options a call does not use are ignored.
type Option struct {
	kind        optionKind
	consistency Consistency
	n           int64  // WithLimit's count, WithTTL's duration
	s           string // WithStartAfter's key
	cursor      Cursor
}

type optionKind uint8

const (
	optConsistency optionKind = iota + 1
	optLimit
	optStartAfter
	optCursor
	optTTL
)

// WithConsistency sets the read level of one Get, GetEntry or List (writes ignore it).
func WithConsistency(c Consistency) Option {
	return Option{kind: optConsistency, consistency: c}
}

// DefaultListLimit is the page size of a List without WithLimit, or with WithLimit(0).
const DefaultListLimit = 1000

// MaxListLimit is the largest page a List returns; WithLimit above it is cut to it.
const MaxListLimit = 10000

// WithLimit makes List return at most n entries; 0 means DefaultListLimit, and more than
// MaxListLimit means MaxListLimit. A negative n fails the call.
func WithLimit(n int) Option { return Option{kind: optLimit, n: int64(n)} }

// WithStartAfter makes List return only keys greater than key, in byte order: pass the last
// key of a page to get the next.
func WithStartAfter(key string) Option { return Option{kind: optStartAfter, s: key} }

// FromCursor makes Watch yield the changes after c, a Cursor from a List page or an Event.
func FromCursor(c Cursor) Option { return Option{kind: optCursor, cursor: c} }

// WithTTL makes Set or CompareAndSwap write a key that expires d after the write applies
// (by the partition leader's clock): from then on no read returns it, List omits it, and
// watchers see EventExpire once. A later write without WithTTL makes the key permanent
// again. d must be positive; it is kept to the millisecond.
func WithTTL(d time.Duration) Option { return Option{kind: optTTL, n: int64(d)} }

// callOptions are one call's options, gathered.
type callOptions struct {
	consistency Consistency // 0: what ReadQuorum and WriteQuorum imply
	limit       int
	startAfter  string
	cursor      Cursor
	ttl         time.Duration
}

// gather collects opts, last one of a kind winning, and checks them.
func gather(opts []Option) (callOptions, error) {
	var c callOptions
	c.limit = DefaultListLimit
	for _, o := range opts {
		switch o.kind {
		case optConsistency:
			c.consistency = o.consistency
		case optLimit:
			switch {
			case o.n < 0:
				return c, fmt.Errorf("gridkv: WithLimit(%d): the limit must not be negative", o.n)
			case o.n == 0:
				c.limit = DefaultListLimit
			default:
				c.limit = int(min(o.n, MaxListLimit))
			}
		case optStartAfter:
			if len(o.s) > MaxKeySize {
				return c, fmt.Errorf("%w: WithStartAfter of %d bytes, the limit is %d", ErrInvalidKey, len(o.s), MaxKeySize)
			}
			c.startAfter = o.s
		case optCursor:
			c.cursor = o.cursor
		case optTTL:
			if o.n <= 0 {
				return c, fmt.Errorf("gridkv: WithTTL(%v): the TTL must be positive", time.Duration(o.n))
			}
			c.ttl = time.Duration(o.n)
		}
	}
	return c, nil
}

// unprotectedExposure returns the first of LocalAddress and BindAddr whose host is not a
// loopback address when the node has no ClusterKey, or "" when there is nothing to warn
// about. Without a key anyone who reaches such an address can join the cluster and read or
// write data.
func (c config) unprotectedExposure() string {
	if len(c.network.ClusterKey) > 0 {
		return ""
	}
	for _, addr := range []string{c.addr, c.network.BindAddr} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		if host == "localhost" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			continue
		}
		return addr
	}
	return ""
}
