package transport

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// Type selects the kind of network a Transport runs on.
type Type int

// TCP is the only network type: TCP for streams, UDP on the same port for
// gossip packets.
const TCP Type = 0

// Option defaults. They are exported through DefaultNetworkOptions rather
// than as constants so that there is one place to read them from.
const (
	defaultMaxConns     = 2
	defaultMaxIdle      = 16
	defaultIdleTimeout  = time.Minute
	defaultReadTimeout  = 10 * time.Second
	defaultWriteTimeout = 10 * time.Second
	defaultMaxInbound   = 1024
	defaultMaxFrameSize = 8 << 20

	// minFrameSize keeps a frame large enough to carry an error response,
	// so a tiny limit cannot turn every failure into an undecodable frame.
	minFrameSize = 1 << 10
	// minIdleTimeout keeps the idle sweep, which runs four times per
	// IdleTimeout, from spinning.
	minIdleTimeout = 10 * time.Millisecond
	// maxFrameSizeLimit keeps the declared length well inside uint32 and
	// bounds what one frame may make a node allocate.
	maxFrameSizeLimit = 1 << 30
)

// NetworkOptions configures a Transport. The zero value of every field means
// "use the default"; DefaultNetworkOptions returns the defaults filled in.
type NetworkOptions struct {
	// Type is the network type; only TCP exists.
	Type Type
	// BindAddr is the host:port to listen on for TCP and UDP. Empty means
	// the node's advertised address.
	BindAddr string
	// MaxConns is the number of links (TCP connections) this node dials to
	// one peer for requests, plus one that carries the Raft log entries of
	// every group; the peer's links to this node are its own. Every link
	// carries many requests at once: a Raft group's other RPCs always use
	// the same link to a peer (its number modulo MaxConns) and calls take
	// turns, so the connections between two nodes do not grow with
	// partitions or load. A link is dialled when first needed. Default 2.
	MaxConns int
	// MaxIdle is kept for compatibility and ignored: links multiplex
	// requests and keep no idle streams.
	MaxIdle int
	// IdleTimeout is how long a link this node dialled may go without
	// sending anything and with no request in flight before it is closed;
	// the next request dials again. Raft's heartbeats keep the links between
	// the replicas of a group open. A link is closed between IdleTimeout and
	// 1.25*IdleTimeout after its last use. Default 1m; when set, at least
	// 10ms.
	IdleTimeout time.Duration
	// ReadTimeout bounds how long a started frame or a connection handshake
	// may take to arrive completely; it also caps a Call whose context has
	// no deadline. Default 10s.
	ReadTimeout time.Duration
	// WriteTimeout is the deadline on each write to a connection; a write
	// that misses it closes the connection. Default 10s.
	WriteTimeout time.Duration
	// MaxInbound is the number of inbound TCP connections open at once.
	// Connections beyond it are closed as soon as they are accepted, and
	// logged. Default 1024.
	MaxInbound int
	// MaxFrameSize is the largest request or response frame, in bytes, this
	// node sends or accepts. Default 8 MiB; when set, between 1 KiB and 1 GiB.
	MaxFrameSize int

	// ClusterKey, when set, authenticates every TCP connection (gossip, links
	// and snapshots) with a challenge-response over this shared key before anything
	// else on it is read; a peer without the key is disconnected. It must
	// be 16, 24 or 32 bytes. The same key encrypts gossip packets, but that
	// is memberlist's keyring, configured in the membership package.
	ClusterKey []byte
	// TLS, when set, wraps every TCP connection in TLS before the ClusterKey
	// handshake: the config is used as given to accept connections and, with
	// ServerName defaulted to the dialed host, to dial them. For mutual
	// authentication set ClientAuth to tls.RequireAndVerifyClientCert and
	// give both Certificates and the CA pools (ClientCAs, RootCAs).
	TLS *tls.Config

	// Faults, when set, decides the fate of every packet, dial and link write
	// between nodes; see Faults. It exists for tests: leave it nil in
	// production.
	Faults Faults
}

// DefaultNetworkOptions returns the options with every default filled in.
func DefaultNetworkOptions() NetworkOptions {
	return NetworkOptions{}.WithDefaults()
}

// WithDefaults returns a copy of o with each zero field set to its default.
// BindAddr stays empty: its default, the advertised address, is only known
// to Listen.
func (o NetworkOptions) WithDefaults() NetworkOptions {
	if o.MaxConns == 0 {
		o.MaxConns = defaultMaxConns
	}
	if o.MaxIdle == 0 {
		o.MaxIdle = defaultMaxIdle
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = defaultIdleTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = defaultReadTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = defaultWriteTimeout
	}
	if o.MaxInbound == 0 {
		o.MaxInbound = defaultMaxInbound
	}
	if o.MaxFrameSize == 0 {
		o.MaxFrameSize = defaultMaxFrameSize
	}
	return o
}

// Validate reports the first invalid field. Zero values are valid (they mean
// the default), so Validate may be called before or after WithDefaults. The
// error names the field and its value.
func (o NetworkOptions) Validate() error {
	if o.Type != TCP {
		return fmt.Errorf("transport: Type %d is unknown; only TCP (0) exists", int(o.Type))
	}
	if o.BindAddr != "" {
		if _, _, err := net.SplitHostPort(o.BindAddr); err != nil {
			return fmt.Errorf("transport: BindAddr %q is not host:port: %w", o.BindAddr, err)
		}
	}
	if o.MaxConns < 0 {
		return fmt.Errorf("transport: MaxConns %d must be >= 0", o.MaxConns)
	}
	if o.MaxIdle < 0 {
		return fmt.Errorf("transport: MaxIdle %d must be >= 0", o.MaxIdle)
	}
	if o.IdleTimeout != 0 && o.IdleTimeout < minIdleTimeout {
		return fmt.Errorf("transport: IdleTimeout %v must be 0 (default) or at least %v", o.IdleTimeout, minIdleTimeout)
	}
	if o.ReadTimeout < 0 {
		return fmt.Errorf("transport: ReadTimeout %v must be >= 0", o.ReadTimeout)
	}
	if o.WriteTimeout < 0 {
		return fmt.Errorf("transport: WriteTimeout %v must be >= 0", o.WriteTimeout)
	}
	if o.MaxInbound < 0 {
		return fmt.Errorf("transport: MaxInbound %d must be >= 0", o.MaxInbound)
	}
	if o.MaxFrameSize != 0 && (o.MaxFrameSize < minFrameSize || o.MaxFrameSize > maxFrameSizeLimit) {
		return fmt.Errorf("transport: MaxFrameSize %d must be 0 (default) or between %d and %d",
			o.MaxFrameSize, minFrameSize, maxFrameSizeLimit)
	}
	if n := len(o.ClusterKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("transport: ClusterKey is %d bytes; it must be 16, 24 or 32", n)
	}
	return nil
}
