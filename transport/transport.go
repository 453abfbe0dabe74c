package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
)

// Connection-type bytes: the first byte of every TCP connection. Printable
// letters so a packet capture is easy to read, and unlikely to be the first
// byte of a stray client speaking another protocol.
const (
	connTypeGossip byte = 'G' // the rest is a memberlist stream
	connTypeLink   byte = 'L' // advertised address, then frames (see link.go)
	connTypeSnap   byte = 'S' // advertised address, then one InstallSnapshot and its answer
)

// After the connection-type byte (and, with a ClusterKey, the key
// handshake) both kinds of connection carry the dialer's advertised
// address: one length byte, then the address. The accepting side uses it
// for logs and to ask the Faults hook about the link.

const (
	// maxAdvertiseLen bounds the address a dialer names in the mux
	// handshake; it is sent with a one-byte length.
	maxAdvertiseLen = 255

	// udpRecvBufSize is the UDP socket receive buffer asked for, so a burst
	// of gossip is not dropped by the kernel while memberlist catches up.
	udpRecvBufSize = 2 << 20

	// maxUDPPacket is the largest datagram read.
	maxUDPPacket = 65536

	// listenAttempts bounds the retries when port 0 gives a TCP port whose
	// UDP twin is already taken.
	listenAttempts = 10
)

// Transport is a node's single network endpoint. It is safe for concurrent
// use. Create it with Listen; Close releases everything it holds.
//
// Locks: mu, peersMu, groupsMu, handlersMu, gossipMu, auth.mu, each link's mu and each
// pipeline's mu are independent, except that a pipeline's mu is held while taking its link's
// mu; no other code path holds two of them at once.
type Transport struct {
	opts      NetworkOptions
	advertise string // host:port peers dial; what Addr reports
	logger    *slog.Logger

	tcpLn   *net.TCPListener
	udpConn *net.UDPConn

	// done is closed when Close starts; every blocking wait selects on it.
	done chan struct{}
	// baseCtx is cancelled by Close; handler contexts derive from it so
	// running handlers learn that the node is going away.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	closeOnce  sync.Once
	// wg counts every goroutine this package starts. Add is only called
	// with mu held and closed false, so it never races Close's Wait.
	wg sync.WaitGroup

	// mu protects closed, conns and inbound.
	mu      sync.Mutex
	closed  bool
	conns   map[*trackedConn]struct{} // every open TCP connection, both directions
	inbound int                       // inbound connections in conns, for MaxInbound

	// peersMu protects links.
	peersMu sync.RWMutex
	// links holds the links this node dialled, by peer address; guarded by peersMu.
	links map[string]*linkSet

	// groupsMu protects groups, unknownGroup and creating.
	groupsMu     sync.RWMutex
	groups       map[uint32]*RaftTransport
	unknownGroup func(group uint32) bool
	creating     map[uint32][]heldFrame // groups whose unknown-group handler is running, with the requests held for them

	// handlersMu protects handlers.
	handlersMu sync.RWMutex
	handlers   map[uint8]Handler

	// gossipMu protects gossip.
	gossipMu sync.Mutex
	gossip   *gossipTransport

	// Connection counters; tests use them to check that the number of TCP
	// connections does not grow with the number of Raft groups.
	acceptedMux atomic.Int64
	dialedMux   atomic.Int64
	// idleSweeps counts the runs of the idle-link sweep, so tests can
	// wait for sweeps instead of sleeping.
	idleSweeps atomic.Int64

	// delayedPackets counts outbound gossip packets held back by a Faults
	// delay, bounded by maxDelayedPackets.
	delayedPackets atomic.Int32

	// authKey is the HMAC key of the connection handshake, derived from
	// NetworkOptions.ClusterKey; nil without a key.
	authKey []byte
	// auth counts and rate-limits the logging of refused connections.
	auth authState
}

// Listen binds TCP and UDP on opts.BindAddr (or on advertise when BindAddr
// is empty) and starts serving. advertise is the host:port peers use to
// reach this node. When the bind port is 0 a free port is chosen, UDP binds
// the same port, and Addr reports the advertised host with that port.
// logger may be nil to discard logs.
func Listen(opts NetworkOptions, advertise string, logger *slog.Logger) (*Transport, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.WithDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	advHost, advPort, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("transport: advertise address %q is not host:port: %w", advertise, err)
	}
	if advHost == "" {
		return nil, fmt.Errorf("transport: advertise address %q has no host peers could dial", advertise)
	}
	if len(advertise) > maxAdvertiseLen {
		return nil, fmt.Errorf("transport: advertise address %q is longer than %d bytes", advertise, maxAdvertiseLen)
	}
	bind := opts.BindAddr
	if bind == "" {
		bind = advertise
	}
	tcpLn, udpConn, err := listenPair(bind)
	if err != nil {
		return nil, err
	}
	port := tcpLn.Addr().(*net.TCPAddr).Port
	if _, bindPort, _ := net.SplitHostPort(bind); bindPort == "0" || advPort == "0" {
		advertise = net.JoinHostPort(advHost, strconv.Itoa(port))
	}

	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		opts:       opts,
		advertise:  advertise,
		logger:     logger,
		tcpLn:      tcpLn,
		udpConn:    udpConn,
		done:       make(chan struct{}),
		baseCtx:    ctx,
		cancelBase: cancel,
		conns:      make(map[*trackedConn]struct{}),
		links:      make(map[string]*linkSet),
		groups:     make(map[uint32]*RaftTransport),
		creating:   make(map[uint32][]heldFrame),
		handlers:   make(map[uint8]Handler),
		authKey:    deriveAuthKey(opts.ClusterKey),
	}
	t.goTracked("tcp accept loop", nil, t.acceptLoop)
	t.goTracked("udp read loop", nil, t.udpLoop)
	t.goTracked("idle link sweep", nil, t.sweepIdleLinks)
	logger.Debug("transport listening", "bind", tcpLn.Addr().String(), "advertise", advertise)
	return t, nil
}

// listenPair binds TCP and UDP on the same address. With port 0 the kernel
// picks the TCP port; if UDP cannot have the same number, another TCP port
// is tried.
func listenPair(bind string) (*net.TCPListener, *net.UDPConn, error) {
	tcpAddr, err := net.ResolveTCPAddr("tcp", bind)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: resolve bind address %q: %w", bind, err)
	}
	var lastErr error
	for range listenAttempts {
		tcpLn, err := net.ListenTCP("tcp", tcpAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("transport: listen TCP on %q: %w", bind, err)
		}
		port := tcpLn.Addr().(*net.TCPAddr).Port
		udpConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: tcpAddr.IP, Port: port, Zone: tcpAddr.Zone})
		if err == nil {
			setUDPRecvBuf(udpConn)
			return tcpLn, udpConn, nil
		}
		_ = tcpLn.Close()
		lastErr = err
		if tcpAddr.Port != 0 {
			break // a fixed port: retrying cannot help
		}
	}
	return nil, nil, fmt.Errorf("transport: listen UDP on %q: %w", bind, lastErr)
}

// setUDPRecvBuf asks for a large receive buffer, halving until the kernel
// accepts; a small buffer only costs dropped gossip packets, so failure is
// not an error.
func setUDPRecvBuf(c *net.UDPConn) {
	for size := udpRecvBufSize; size > 0; size /= 2 {
		if c.SetReadBuffer(size) == nil {
			return
		}
	}
}

// Addr returns the address peers use to reach this node (host:port).
func (t *Transport) Addr() string { return t.advertise }

// Close stops the transport: it closes the listeners and every connection,
// makes blocked calls return, cancels the contexts of running handlers, and
// waits for every goroutine the transport started, including running
// handlers, to return. It is idempotent; every call waits, returns nil.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		close(t.done)
		conns := make([]*trackedConn, 0, len(t.conns))
		for c := range t.conns {
			conns = append(conns, c)
		}
		t.mu.Unlock()

		t.cancelBase()
		_ = t.tcpLn.Close()
		_ = t.udpConn.Close()
		// Closing a session's connection ends the session: its streams fail
		// and the goroutines serving them return.
		for _, c := range conns {
			_ = c.Close()
		}
		t.logger.Debug("transport closed", "addr", t.advertise)
	})
	t.wg.Wait()
	return nil
}

// isClosed reports whether Close has started.
func (t *Transport) isClosed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// goTracked runs fn in a goroutine counted by wg, unless the transport is
// closed. A panic in fn is logged with its stack and, as a last line of
// defence, closes onPanic (if not nil) instead of crashing the process.
func (t *Transport) goTracked(what string, onPanic io.Closer, fn func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				t.logger.Error("transport: recovered from panic", "in", what, "panic", r, "stack", string(debug.Stack()))
				if onPanic != nil {
					_ = onPanic.Close()
				}
			}
		}()
		fn()
	}()
	return true
}

// trackedConn is a TCP connection registered with its Transport, so that
// Close can find it and MaxInbound can count it. Closing it unregisters it.
type trackedConn struct {
	net.Conn
	t        *Transport
	inbound  bool
	closeErr error
	once     sync.Once
}

// Close closes the connection once and unregisters it.
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		if c.inbound {
			c.t.inbound--
		}
		c.t.mu.Unlock()
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// track registers conn. It fails, closing conn, when the transport is closed
// or (for inbound connections) when MaxInbound connections are already open.
func (t *Transport) track(conn net.Conn, inbound bool) (*trackedConn, error) {
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		_ = conn.Close()
		return nil, ErrClosed
	case inbound && t.inbound >= t.opts.MaxInbound:
		open := t.inbound
		t.mu.Unlock()
		_ = conn.Close()
		return nil, fmt.Errorf("transport: %d inbound connections open, MaxInbound %d", open, t.opts.MaxInbound)
	}
	c := &trackedConn{Conn: conn, t: t, inbound: inbound}
	t.conns[c] = struct{}{}
	if inbound {
		t.inbound++
	}
	t.mu.Unlock()
	return c, nil
}
