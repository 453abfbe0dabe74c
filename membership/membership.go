package membership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is what this node believes about a member.
type State int

// The member states, in memberlist's order.
const (
	// StateAlive: the member answers probes.
	StateAlive State = iota
	// StateSuspect: a probe failed; the member is dead unless it refutes in time.
	StateSuspect
	// StateDead: the member failed to refute a suspicion (crashed or cut off).
	StateDead
	// StateLeft: the member announced a graceful Leave.
	StateLeft
)

// String returns "alive", "suspect", "dead" or "left".
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	default:
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
}

// live reports whether s is alive or suspect (as opposed to gone).
func (s State) live() bool { return s == StateAlive || s == StateSuspect }

// Member is one node as seen from here: its gossiped metadata and its state.
type Member struct {
	Meta
	State State
}

// Timing tunes failure detection and gossip. Zero fields of Config.Timing
// take their LANTiming value.
type Timing struct {
	// ProbeInterval is the time between two failure probes of this node.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an ack; must be shorter
	// than ProbeInterval.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect has to refute before it is
	// declared dead: the suspicion timeout is at least
	// SuspicionMult * max(1, log10(members)) * ProbeInterval and at most six
	// times that (memberlist's SuspicionMaxTimeoutMult), shrinking as other
	// members confirm the suspicion.
	SuspicionMult int
	// GossipInterval is the time between two gossip rounds (metadata updates,
	// state changes).
	GossipInterval time.Duration
	// PushPullInterval is the time between two full state exchanges with a
	// random member (anti-entropy); it also bounds how long memberlist keeps
	// gossiping to dead members.
	PushPullInterval time.Duration
	// DeadReclaim is how long a dead or left member is still reported by
	// Members() before it is forgotten. memberlist also lets a dead member's
	// name come back at another address after this time.
	DeadReclaim time.Duration
}

// LANTiming mirrors memberlist.DefaultLANConfig: suited to a LAN.
func LANTiming() Timing {
	return Timing{
		ProbeInterval:    time.Second,
		ProbeTimeout:     500 * time.Millisecond,
		SuspicionMult:    4,
		GossipInterval:   200 * time.Millisecond,
		PushPullInterval: 30 * time.Second,
		DeadReclaim:      30 * time.Second,
	}
}

// LocalTiming is LANTiming scaled down for loopback clusters in tests: a
// crashed member is suspected within a few hundred milliseconds and declared
// dead within a few seconds.
func LocalTiming() Timing {
	t := LANTiming()
	t.ProbeInterval = 200 * time.Millisecond
	t.ProbeTimeout = 100 * time.Millisecond
	t.SuspicionMult = 3
	t.GossipInterval = 50 * time.Millisecond
	t.PushPullInterval = 2 * time.Second
	t.DeadReclaim = 10 * time.Second
	return t
}

// withDefaults fills zero fields from LANTiming.
func (t Timing) withDefaults() Timing {
	lan := LANTiming()
	if t.ProbeInterval <= 0 {
		t.ProbeInterval = lan.ProbeInterval
	}
	if t.ProbeTimeout <= 0 {
		t.ProbeTimeout = lan.ProbeTimeout
	}
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = lan.SuspicionMult
	}
	if t.GossipInterval <= 0 {
		t.GossipInterval = lan.GossipInterval
	}
	if t.PushPullInterval <= 0 {
		t.PushPullInterval = lan.PushPullInterval
	}
	if t.DeadReclaim <= 0 {
		t.DeadReclaim = lan.DeadReclaim
	}
	return t
}

// Config configures Start.
type Config struct {
	// NodeID identifies this node; it is also the memberlist node name.
	// Required.
	NodeID string
	// Addr is the advertised host:port, where other nodes reach this one.
	// Required; a host name is resolved once at Start.
	Addr string
	// Incarnation changes on every start of the node; gossiped in Meta.
	Incarnation uint64
	// ClusterID is set by the node that creates a cluster (no seeds); a
	// creating node with "" gets a random ID. At most MaxClusterIDLen bytes. A joining node passes "" and
	// adopts the ID of the members it merges with.
	ClusterID string
	// Seeds are host:port of existing members; this node's own Addr is
	// skipped. A node with seeds never creates a cluster on its own.
	Seeds []string
	// Rejoin marks a node started again with the state of an earlier run: it
	// belongs to ClusterID (required with Rejoin) whether or not anyone
	// answers. Start tries Seeds and Peers once and goes on without them;
	// the node keeps trying them in the background until they answer. Only a
	// member of another cluster answering fails Start (ErrForeignCluster).
	Rejoin bool
	// Peers are host:port of members this node knew in its earlier run,
	// tried like seeds with Rejoin.
	Peers []string
	// Transport carries gossip (UDP-like packets and TCP-like streams).
	// Required. memberlist owns it from Start on: Shutdown (and a failed
	// Start) shut it down.
	Transport memberlist.NodeAwareTransport
	// Timing tunes failure detection; zero fields take LANTiming values.
	Timing Timing
	// JoinTimeout bounds how long Start keeps retrying the seeds (with
	// backoff) before it fails; default 30s. A join attempt in flight when it
	// runs out is finished first, so Start may overrun by one attempt (each
	// seed connection is bounded by a timeout derived from ProbeTimeout).
	JoinTimeout time.Duration
	// SecretKey, when set, encrypts and authenticates every gossip packet
	// and stream with memberlist's keyring (AES-GCM); gossip without it, or
	// with another key, is dropped. 16, 24 or 32 bytes. Every member must
	// have the same key.
	SecretKey []byte
	// Logger receives this package's and memberlist's logs; nil discards.
	Logger *slog.Logger
	// OnChange is called after any member join, leave, state change or
	// metadata update. Bursts are coalesced into one call; calls come from
	// one membership goroutine, never concurrently and never with membership
	// locks held. It must not call Shutdown (Shutdown waits for it).
	OnChange func()
}

// MaxClusterIDLen bounds a cluster ID, so that the metadata size checked at
// Start still holds once a joining node adopts one.
const MaxClusterIDLen = 64

// defaultJoinTimeout is used when Config.JoinTimeout is zero.
const defaultJoinTimeout = 30 * time.Second

// updateCoalesce is the least time between two metadata broadcasts caused by
// SetLeads: leadership can change for many partitions in a burst, and every
// broadcast costs gossip bandwidth on every node.
const updateCoalesce = 200 * time.Millisecond

// Membership is one node's view of the cluster. Its methods are safe for
// concurrent use; none blocks on the network except Leave.
type Membership struct {
	cfg    Config
	timing Timing
	logger *slog.Logger
	list   *memberlist.Memberlist // set once in Start, before any goroutine reads it
	// advertise is our resolved host:port; the state snapshot dials it.
	advertise string
	// snapshotSides counts the NotifyMerge calls still expected from our own
	// state snapshot (client and server side of one push/pull with
	// ourselves); while it is positive NotifyMerge recognizes and declines
	// them. A side that never comes only leaves a short window in which a
	// member that already knows us has its join merge declined on our side
	// (it still merges our state on its side, and gossip does the rest).
	snapshotSides atomic.Int32

	// mu protects the fields below. It is a leaf lock: nothing that takes
	// another lock (memberlist calls, OnChange) is called while it is held,
	// because memberlist calls our delegates with its own node lock held.
	mu        sync.Mutex
	clusterID string                              // "" only while joining
	leads     []int                               // own lead set, normalized
	selfState State                               // alive until Leave
	members   map[string]*record                  // every other known member, by ID
	refusals  map[string]time.Time                // last Warn per refused member+cluster
	snapshot  map[string]memberlist.NodeStateType // states seen by the running snapshot
	foreign   error                               // the last merge refused for another cluster's

	seeds []string // validated seed addresses, for rejoinLoop; read-only after Start

	changed    chan struct{} // 1-buffered: coalesces OnChange notifications
	leadsDirty chan struct{} // 1-buffered: coalesces metadata broadcasts
	recheck    chan struct{} // 1-buffered: asks watchLoop for a snapshot now
	stop       chan struct{} // closed by Shutdown
	wg         sync.WaitGroup

	// lifeMu serializes Leave and Shutdown: memberlist panics on a Leave
	// after Shutdown. It protects isShutdown and shutdownErr.
	lifeMu      sync.Mutex
	isShutdown  bool
	shutdownErr error
}

// record is what we know about another member. Dead and left members stay
// until DeadReclaim after the state change.
type record struct {
	meta  Meta
	state State
	since time.Time // last state change
}

// Start creates the memberlist and, with seeds, joins through them, retrying
// until Config.JoinTimeout; the error then names the seeds and the last
// failure. A node with seeds never creates a cluster on its own.
func Start(ctx context.Context, cfg Config) (*Membership, error) {
	seeds, err := validate(&cfg)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("node", cfg.NodeID)

	host, port, err := resolveAdvertise(ctx, cfg.Addr)
	if err != nil {
		return nil, err
	}

	m := &Membership{
		cfg:        cfg,
		seeds:      seeds,
		timing:     cfg.Timing,
		logger:     logger,
		clusterID:  cfg.ClusterID,
		members:    make(map[string]*record),
		changed:    make(chan struct{}, 1),
		leadsDirty: make(chan struct{}, 1),
		recheck:    make(chan struct{}, 1),
		stop:       make(chan struct{}),
		advertise:  net.JoinHostPort(host, strconv.Itoa(port)),
	}
	if len(seeds) == 0 && m.clusterID == "" {
		m.clusterID = newClusterID()
		logger.Info("creating a new cluster", "cluster", m.clusterID)
	}

	mlc := memberlist.DefaultLANConfig()
	mlc.Name = cfg.NodeID
	mlc.Transport = cfg.Transport
	mlc.AdvertiseAddr = host
	mlc.AdvertisePort = port
	mlc.ProbeInterval = m.timing.ProbeInterval
	mlc.ProbeTimeout = m.timing.ProbeTimeout
	mlc.SuspicionMult = m.timing.SuspicionMult
	mlc.GossipInterval = m.timing.GossipInterval
	mlc.PushPullInterval = m.timing.PushPullInterval
	mlc.GossipToTheDeadTime = m.timing.PushPullInterval
	mlc.DeadNodeReclaimTime = m.timing.DeadReclaim
	// memberlist's LAN stream timeout is 20 probe timeouts; keep the ratio so
	// LocalTiming also fails a dead seed quickly.
	mlc.TCPTimeout = 20 * m.timing.ProbeTimeout
	mlc.Logger = newMemberlistLogger(logger)
	if len(cfg.SecretKey) > 0 {
		// A copy: the keyring keeps the slice, and the caller's may change.
		mlc.SecretKey = append([]byte(nil), cfg.SecretKey...)
	}
	d := &delegates{m: m}
	mlc.Delegate = d
	mlc.Events = d
	mlc.Alive = d
	mlc.Merge = d

	list, err := memberlist.Create(mlc)
	if err != nil {
		return nil, fmt.Errorf("membership: create memberlist for %s at %s: %w", cfg.NodeID, cfg.Addr, err)
	}
	m.list = list

	if cfg.Rejoin {
		if err := m.rejoin(); err != nil {
			if serr := list.Shutdown(); serr != nil {
				logger.Warn("shutting down memberlist after a refused rejoin", "err", serr)
			}
			return nil, err
		}
	} else if len(seeds) > 0 {
		if err := m.join(ctx, seeds); err != nil {
			if serr := list.Shutdown(); serr != nil {
				logger.Warn("shutting down memberlist after failed join", "err", serr)
			}
			return nil, err
		}
		// Our first alive message carried no cluster ID; gossip the adopted one.
		m.gossipMeta()
	}

	m.wg.Add(4)
	go m.notifyLoop()
	go m.broadcastLoop()
	go m.watchLoop()
	go m.rejoinLoop()
	logger.Info("membership started", "addr", cfg.Addr, "cluster", m.ClusterID(), "seeds", seeds)
	return m, nil
}

// validate checks cfg, fills defaults and returns the seeds other than our
// own address.
func validate(cfg *Config) ([]string, error) {
	if cfg.NodeID == "" {
		return nil, fmt.Errorf("%w: NodeID is empty", ErrInvalidConfig)
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w: Addr %q: %v", ErrInvalidConfig, cfg.Addr, err)
	}
	if cfg.Transport == nil {
		return nil, fmt.Errorf("%w: Transport is nil", ErrInvalidConfig)
	}
	if cfg.Rejoin && cfg.ClusterID == "" {
		return nil, fmt.Errorf("%w: Rejoin without a ClusterID", ErrInvalidConfig)
	}
	if len(cfg.ClusterID) > MaxClusterIDLen {
		return nil, fmt.Errorf("%w: ClusterID of %d bytes, over %d", ErrInvalidConfig, len(cfg.ClusterID), MaxClusterIDLen)
	}
	if n := len(cfg.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("%w: SecretKey is %d bytes; it must be 16, 24 or 32", ErrInvalidConfig, n)
	}
	if cfg.JoinTimeout < 0 {
		return nil, fmt.Errorf("%w: JoinTimeout %v is negative", ErrInvalidConfig, cfg.JoinTimeout)
	}
	if cfg.JoinTimeout == 0 {
		cfg.JoinTimeout = defaultJoinTimeout
	}
	cfg.Timing = cfg.Timing.withDefaults()
	if cfg.Timing.ProbeTimeout >= cfg.Timing.ProbeInterval {
		return nil, fmt.Errorf("%w: Timing.ProbeTimeout %v must be shorter than Timing.ProbeInterval %v",
			ErrInvalidConfig, cfg.Timing.ProbeTimeout, cfg.Timing.ProbeInterval)
	}
	// memberlist panics on metadata over its limit: check the largest Meta
	// this node can ever gossip (every partition led) now.
	all := make([]int, MaxPartitions)
	for i := range all {
		all[i] = i
	}
	worst, err := encodeMeta(Meta{ID: cfg.NodeID, Addr: cfg.Addr, Incarnation: ^uint64(0),
		ClusterID: strings.Repeat("x", MaxClusterIDLen), Leads: all})
	if err != nil {
		return nil, fmt.Errorf("%w: encode metadata: %v", ErrInvalidConfig, err)
	}
	if len(worst) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: metadata of NodeID %q, Addr %q and ClusterID %q can reach %d bytes, over memberlist's %d",
			ErrInvalidConfig, cfg.NodeID, cfg.Addr, cfg.ClusterID, len(worst), memberlist.MetaMaxSize)
	}
	var seeds []string
	candidates := cfg.Seeds
	if cfg.Rejoin {
		candidates = append(slices.Clone(cfg.Seeds), cfg.Peers...)
	}
	for _, s := range candidates {
		if !sameHostPort(s, cfg.Addr) && !slices.Contains(seeds, s) {
			seeds = append(seeds, s)
		}
	}
	return seeds, nil
}

// sameHostPort reports whether two host:port strings spell the same address
// (ignoring brackets and case of the host).
func sameHostPort(a, b string) bool {
	ah, ap, errA := net.SplitHostPort(a)
	bh, bp, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return ap == bp && strings.EqualFold(ah, bh)
}

// resolveAdvertise splits addr and resolves its host to an IP, which is what
// memberlist advertises.
func resolveAdvertise(ctx context.Context, addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: Addr %q: %v", ErrInvalidConfig, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w: Addr %q: bad port", ErrInvalidConfig, addr)
	}
	if net.ParseIP(host) != nil {
		return host, port, nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return "", 0, fmt.Errorf("%w: Addr %q: resolve host: %v", ErrInvalidConfig, addr, err)
	}
	return ips[0].IP.String(), port, nil
}

// newClusterID returns a random cluster ID for a node creating a cluster.
func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// rejoin makes one attempt to reach the seeds and remembered peers of a node with state.
// None answering is not an error: they may be starting too, and rejoinLoop keeps trying
// them. Only an answer from another cluster is.
func (m *Membership) rejoin() error {
	if len(m.seeds) == 0 {
		m.logger.Info("rejoining the cluster; no seeds or peers to contact, waiting to be found", "cluster", m.clusterID)
		return nil
	}
	n, err := m.list.Join(m.seeds)
	m.mu.Lock()
	foreign := m.foreign
	m.mu.Unlock()
	if foreign != nil && n == 0 {
		return foreign
	}
	if n > 0 {
		m.logger.Info("rejoined the cluster", "cluster", m.clusterID, "answered", n)
	} else {
		m.logger.Info("rejoining the cluster; none of its members answered yet, trying in the background",
			"cluster", m.clusterID, "tried", m.seeds, "err", err)
	}
	return nil
}

// join retries the seeds with backoff until one accepts us, the join timeout
// runs out or ctx is cancelled.
func (m *Membership) join(ctx context.Context, seeds []string) error {
	start := time.Now()
	deadline := start.Add(m.cfg.JoinTimeout)
	backoff := 100 * time.Millisecond
	const maxBackoff = 2 * time.Second
	var lastErr error
	for attempt := 1; ; attempt++ {
		n, err := m.list.Join(seeds)
		switch {
		case err == nil && n > 0 && m.ClusterID() != "":
			m.logger.Info("joined cluster", "seeds", seeds, "answered", n, "attempts", attempt, "cluster", m.ClusterID())
			return nil
		case err == nil:
			// Unreachable through our merge check, which refuses a merge
			// that teaches us no cluster ID; kept so Start cannot return
			// without one.
			lastErr = fmt.Errorf("seeds answered but none knows its cluster ID")
		default:
			// memberlist's multi-error spans lines; keep the error one line.
			lastErr = errors.New(strings.Join(strings.Fields(err.Error()), " "))
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return fmt.Errorf("%w: no seed of %v accepted %s within %v (%d attempts); last error: %v",
				ErrJoinFailed, seeds, m.cfg.NodeID, m.cfg.JoinTimeout, attempt, lastErr)
		}
		m.logger.Debug("join attempt failed, retrying", "seeds", seeds, "attempt", attempt, "err", lastErr)
		wait := min(backoff, remaining)
		backoff = min(2*backoff, maxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: joining through %v: %w (last error: %v)", ErrJoinFailed, seeds, ctx.Err(), lastErr)
		case <-t.C:
		}
	}
}

// Members returns every known member including this node: alive, suspect,
// and dead or left ones until Timing.DeadReclaim after they went, sorted by
// ID. The result is the caller's.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members)+1)
	out = append(out, m.localLocked())
	for _, r := range m.members {
		out = append(out, Member{Meta: r.meta.clone(), State: r.state})
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Local returns this node's own member entry.
func (m *Membership) Local() Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.localLocked()
}

// localLocked builds our own entry from local fields; they, not gossip, are
// the truth about ourselves. m.mu must be held.
func (m *Membership) localLocked() Member {
	return Member{Meta: m.localMetaLocked().clone(), State: m.selfState}
}

// localMetaLocked returns the metadata we gossip. m.mu must be held; the
// Leads slice is shared.
func (m *Membership) localMetaLocked() Meta {
	return Meta{
		ID:          m.cfg.NodeID,
		Addr:        m.cfg.Addr,
		Incarnation: m.cfg.Incarnation,
		ClusterID:   m.clusterID,
		Leads:       m.leads,
	}
}

// ClusterID returns the cluster this node belongs to ("" only during Start
// of a joining node).
func (m *Membership) ClusterID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clusterID
}

// SetLeads replaces the partitions this node advertises as leading and
// gossips the change. It does not block: broadcasts are coalesced to at most
// one per 200ms and the latest value wins. Partitions outside
// [0, MaxPartitions) are dropped and logged.
func (m *Membership) SetLeads(partitions []int) {
	kept, dropped := normalizeLeads(partitions)
	if len(dropped) > 0 {
		m.logger.Warn("ignoring lead partitions out of range", "partitions", dropped, "max", MaxPartitions)
	}
	m.mu.Lock()
	same := slices.Equal(m.leads, kept)
	m.leads = kept
	m.mu.Unlock()
	if same {
		return
	}
	signal(m.leadsDirty)
	signal(m.changed)
}

// Leave announces a graceful departure, waiting up to timeout for the
// announcement to go out; other members then see this node as StateLeft.
// The node keeps gossiping until Shutdown.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.isShutdown {
		return ErrShutdown
	}
	err := m.list.Leave(timeout)
	m.mu.Lock()
	m.selfState = StateLeft
	m.mu.Unlock()
	signal(m.changed)
	if err != nil {
		return fmt.Errorf("membership: leave of %s: %w", m.cfg.NodeID, err)
	}
	m.logger.Info("left cluster", "cluster", m.ClusterID())
	return nil
}

// Shutdown stops gossip abruptly (others detect the failure; call Leave
// first for a graceful exit), shuts the transport down and waits for every
// goroutine this package started. It is idempotent.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.isShutdown {
		return m.shutdownErr
	}
	m.isShutdown = true
	// memberlist first: with its transport closed, a state snapshot that
	// watchLoop may be running fails at once instead of running into its
	// stream timeout. Our delegates stay safe to call meanwhile.
	if err := m.list.Shutdown(); err != nil {
		m.shutdownErr = fmt.Errorf("membership: shutdown of %s: %w", m.cfg.NodeID, err)
	}
	close(m.stop)
	m.wg.Wait()
	m.logger.Debug("membership shut down")
	return m.shutdownErr
}

// signal does a non-blocking send on a 1-buffered channel: a pending signal
// already covers this one.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// notifyLoop calls OnChange once per burst of changes.
func (m *Membership) notifyLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.changed:
			if m.cfg.OnChange != nil {
				m.callOnChange()
			}
		}
	}
}

// callOnChange runs the caller's callback; a panic in it is logged instead
// of killing the process from a goroutine the caller does not own.
func (m *Membership) callOnChange() {
	defer func() {
		if r := recover(); r != nil {
			m.logger.Error("OnChange panicked", "panic", r)
		}
	}()
	m.cfg.OnChange()
}

// broadcastLoop gossips metadata changes made by SetLeads, at most one per
// updateCoalesce; NodeMeta reads the latest leads, so a burst collapses into
// its final value.
func (m *Membership) broadcastLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.leadsDirty:
		}
		m.gossipMeta()
		t := time.NewTimer(updateCoalesce)
		select {
		case <-m.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// gossipMeta queues an alive message with our current metadata.
// memberlist.UpdateNode waits until the message has gone out to a peer, and
// forever with timeout 0, which would hang Shutdown; the wait is bounded and
// a timeout is harmless: the message stays queued and gossip retransmits it.
func (m *Membership) gossipMeta() {
	if err := m.list.UpdateNode(5 * m.timing.GossipInterval); err != nil {
		m.logger.Debug("metadata broadcast not confirmed yet", "err", err)
	}
}

// watchLoop refreshes the states memberlist reports through no event
// (suspect; dead versus left) every ProbeInterval, and right after a member
// is gone, and forgets dead members after DeadReclaim.
func (m *Membership) watchLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(m.timing.ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		case <-m.recheck:
		}
		if m.refreshStates() {
			signal(m.changed)
		}
	}
}

// rejoinLoop heals splits. memberlist stops gossiping to a member shortly after declaring it
// dead and never contacts it again, so after a network partition longer than failure
// detection both sides would stay apart for good. Every few probe intervals this loop runs
// a state exchange with the addresses of dead (not departed) members and with seeds that are
// not live members; once the network heals, each side learns the other is alive (the one
// declared dead refutes it) and the cluster is whole again. Peers of another cluster are
// still refused by the merge checks.
func (m *Membership) rejoinLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(5 * m.timing.ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		targets := m.rejoinTargets()
		if len(targets) == 0 {
			continue
		}
		if n, err := m.list.Join(targets); n > 0 {
			m.logger.Info("re-merged with members thought gone", "contacted", n, "targets", targets)
		} else if err != nil {
			m.logger.Debug("rejoin attempt", "targets", targets, "err", err)
		}
	}
}

// rejoinTargets returns the addresses worth a state exchange: dead members' and seeds that
// no live member holds.
func (m *Membership) rejoinTargets() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	live := make(map[string]bool)
	var out []string
	for _, r := range m.members {
		switch r.state {
		case StateAlive, StateSuspect:
			live[r.meta.Addr] = true
		case StateDead:
			out = append(out, r.meta.Addr)
		}
	}
	for _, seed := range m.seeds {
		if !live[seed] && !slices.Contains(out, seed) {
			out = append(out, seed)
		}
	}
	return out
}

// errSnapshot declines a join merge that contains this very node: either our
// own state snapshot or a member that already knows us; there is nothing to
// merge either way. memberlist logs the declined merge; the log bridge
// recognizes this text and keeps it at Debug.
var errSnapshot = errors.New("membership: peer list already holds this node, not merging")

// stateSnapshot returns memberlist's view of every node it holds. memberlist
// (v0.7.0) has no accessor for it: Members() omits dead and left nodes and
// leaves Node.State unset, and events say nothing about suspicion. Its
// push/pull does send every node with its true state, so we push/pull with
// ourselves and read the list in NotifyMerge, which declines the merge so
// neither side's state changes. Nil if the exchange failed.
func (m *Membership) stateSnapshot() map[string]memberlist.NodeStateType {
	m.mu.Lock()
	m.snapshot = nil
	m.mu.Unlock()
	m.snapshotSides.Store(2)
	_, err := m.list.Join([]string{m.advertise})
	m.mu.Lock()
	snap := m.snapshot
	m.snapshot = nil
	m.mu.Unlock()
	if snap == nil {
		m.logger.Debug("state snapshot failed", "err", err)
	}
	return snap
}

// refreshStates applies a state snapshot to the members we hold and drops
// dead/left members older than DeadReclaim. It only moves a member between
// alive and suspect, or between dead and left: joins and departures come
// from events, and a snapshot a moment stale must not undo them. A stale
// flip inside a pair is corrected by the next snapshot.
func (m *Membership) refreshStates() bool {
	m.mu.Lock()
	others := len(m.members)
	m.mu.Unlock()
	var snap map[string]memberlist.NodeStateType
	if others > 0 {
		snap = m.stateSnapshot()
	}
	now := time.Now()
	changed := false
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, r := range m.members {
		if ms, ok := snap[id]; ok {
			s := State(ms) // same order as memberlist's states
			if s != r.state && s.live() == r.state.live() {
				m.logger.Debug("member state changed", "member", id, "from", r.state, "to", s)
				if s.live() {
					r.since = now // dead->left keeps the time it went
				}
				r.state = s
				changed = true
			}
		}
		if (r.state == StateDead || r.state == StateLeft) && now.Sub(r.since) >= m.timing.DeadReclaim {
			m.logger.Debug("forgetting member", "member", id, "state", r.state)
			delete(m.members, id)
			changed = true
		}
	}
	return changed
}
