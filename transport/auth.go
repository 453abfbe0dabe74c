package transport

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The ClusterKey handshake. It runs right after the connection-type byte,
// so it binds the type, and before anything else is read:
//
//	dialer   -> acceptor  nonceD                     (32 random bytes)
//	acceptor -> dialer    nonceA, mac("A")           (32 random bytes, HMAC-SHA256)
//	dialer   -> acceptor  mac("D")
//	acceptor -> dialer    authOK
//
// where mac(role) = HMAC-SHA256(authKey, authLabel | role | nonceD | nonceA |
// type). Fresh nonces on both sides make every proof good for one
// connection only; the role byte keeps one side's proof from being replayed
// as the other's. The dialer checks the acceptor's proof before giving its
// own, so a node that merely listens learns nothing it could reuse. The
// final byte lets the dialer report a rejected proof as a handshake error
// rather than as a broken session later.
//
// The key authenticates the peer, not the bytes after the handshake: an
// active man in the middle could relay the handshake and then tamper with
// the stream. TLS is what protects the stream.
const (
	authLabel    = "gridkv transport auth v1"
	authNonceLen = 32
	authMACLen   = sha256.Size
	authOK       = 0x01

	// authRoleDialer and authRoleAcceptor are the role bytes in the MAC.
	authRoleDialer   = 'D'
	authRoleAcceptor = 'A'

	// authLogInterval is how often a refused remote IP is logged; refusals
	// in between are counted and reported with the next log line, so a
	// scanner cannot flood the log.
	authLogInterval = 10 * time.Second
	// authLogMaxIPs bounds the remote IPs remembered for rate limiting.
	authLogMaxIPs = 4096
)

// authError marks a set-up failure that means the peer did not prove it
// belongs to the cluster (wrong or missing key, or a TLS failure).
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// authRefused wraps err as an *authError.
func authRefused(format string, args ...any) error {
	return &authError{err: fmt.Errorf(format, args...)}
}

// authState is a Transport's record of refused peers: the failure count
// and the per-IP log rate limit.
type authState struct {
	// failures counts inbound connections refused by the handshake.
	failures atomic.Int64

	// mu protects logged.
	mu     sync.Mutex
	logged map[string]authLogEntry // by remote IP
}

// authLogEntry is one remote IP's log rate-limit state.
type authLogEntry struct {
	at         time.Time // when the IP was last logged
	suppressed int       // refusals since then that were not logged
}

// deriveAuthKey derives the HMAC key of the handshake from the cluster key,
// so the handshake never uses the very key that memberlist encrypts with.
func deriveAuthKey(clusterKey []byte) []byte {
	if len(clusterKey) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte(authLabel + " key"))
	return m.Sum(nil)
}

// authMAC computes the proof of role for one connection.
func authMAC(key []byte, role byte, nonceD, nonceA []byte, typ byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(authLabel))
	m.Write([]byte{role})
	m.Write(nonceD)
	m.Write(nonceA)
	m.Write([]byte{typ})
	return m.Sum(nil)
}

// authOutbound runs the dialer's side of the ClusterKey handshake on c,
// under the deadline already set. Without a key it does nothing.
func (t *Transport) authOutbound(c net.Conn, typ byte) error {
	if t.authKey == nil {
		return nil
	}
	msg := make([]byte, authNonceLen+authNonceLen+authMACLen)
	nonceD := msg[:authNonceLen]
	if _, err := rand.Read(nonceD); err != nil {
		return fmt.Errorf("auth nonce: %w", err)
	}
	if _, err := c.Write(nonceD); err != nil {
		return fmt.Errorf("auth: send nonce: %w", err)
	}
	reply := msg[authNonceLen:]
	if _, err := io.ReadFull(c, reply); err != nil {
		return fmt.Errorf("auth: read peer's proof (does the peer have a ClusterKey?): %w", err)
	}
	nonceA, macA := reply[:authNonceLen], reply[authNonceLen:]
	if !hmac.Equal(macA, authMAC(t.authKey, authRoleAcceptor, nonceD, nonceA, typ)) {
		return errors.New("auth: the peer's proof is wrong: its ClusterKey differs")
	}
	if _, err := c.Write(authMAC(t.authKey, authRoleDialer, nonceD, nonceA, typ)); err != nil {
		return fmt.Errorf("auth: send proof: %w", err)
	}
	var ok [1]byte
	if _, err := io.ReadFull(c, ok[:]); err != nil {
		return fmt.Errorf("auth: the peer refused this node's proof: %w", err)
	}
	if ok[0] != authOK {
		return fmt.Errorf("auth: unexpected reply %#x to this node's proof", ok[0])
	}
	return nil
}

// authInbound runs the acceptor's side of the ClusterKey handshake on c,
// under the deadline already set. Without a key it does nothing. Every
// failure is an *authError.
func (t *Transport) authInbound(c net.Conn, typ byte) error {
	if t.authKey == nil {
		return nil
	}
	buf := make([]byte, authNonceLen+authNonceLen)
	nonceD, nonceA := buf[:authNonceLen], buf[authNonceLen:]
	if _, err := io.ReadFull(c, nonceD); err != nil {
		return authRefused("auth: read nonce: %w", err)
	}
	if _, err := rand.Read(nonceA); err != nil {
		// Not the peer's fault, but the connection cannot be trusted.
		return fmt.Errorf("auth nonce: %w", err)
	}
	reply := append(append(make([]byte, 0, authNonceLen+authMACLen), nonceA...),
		authMAC(t.authKey, authRoleAcceptor, nonceD, nonceA, typ)...)
	if _, err := c.Write(reply); err != nil {
		return authRefused("auth: send proof: %w", err)
	}
	macD := make([]byte, authMACLen)
	if _, err := io.ReadFull(c, macD); err != nil {
		// A dialer with another key stops here: it rejected this node's proof.
		return authRefused("auth: peer gave no proof (different or missing ClusterKey?): %w", err)
	}
	if !hmac.Equal(macD, authMAC(t.authKey, authRoleDialer, nonceD, nonceA, typ)) {
		return authRefused("auth: the peer's proof is wrong: its ClusterKey differs")
	}
	if _, err := c.Write([]byte{authOK}); err != nil {
		return fmt.Errorf("auth: send acknowledgement: %w", err)
	}
	return nil
}

// tlsClient wraps tc in TLS when NetworkOptions.TLS is set and runs the
// client handshake, verifying the server as the dialed host unless the
// config names a ServerName.
func (t *Transport) tlsClient(ctx context.Context, tc *trackedConn, addr string) (net.Conn, error) {
	if t.opts.TLS == nil {
		return tc, nil
	}
	cfg := t.opts.TLS
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	c := tls.Client(tc, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return c, nil
}

// tlsServer wraps tc in TLS when NetworkOptions.TLS is set and runs the
// server handshake; whether the client must present a certificate is the
// config's ClientAuth. A failed handshake is an *authError.
func (t *Transport) tlsServer(tc *trackedConn) (net.Conn, error) {
	if t.opts.TLS == nil {
		return tc, nil
	}
	c := tls.Server(tc, t.opts.TLS)
	if err := c.HandshakeContext(t.baseCtx); err != nil {
		return nil, authRefused("tls: %w", err)
	}
	return c, nil
}

// authFailed counts an inbound connection refused by the handshake and
// logs it at Warn, at most once per authLogInterval per remote IP.
func (t *Transport) authFailed(remote net.Addr, err error) {
	t.auth.failures.Add(1)
	ip := remote.String()
	if host, _, splitErr := net.SplitHostPort(ip); splitErr == nil {
		ip = host
	}
	now := time.Now()
	t.auth.mu.Lock()
	if t.auth.logged == nil {
		t.auth.logged = make(map[string]authLogEntry)
	}
	e, seen := t.auth.logged[ip]
	if seen && now.Sub(e.at) < authLogInterval {
		e.suppressed++
		t.auth.logged[ip] = e
		t.auth.mu.Unlock()
		return
	}
	if !seen && len(t.auth.logged) >= authLogMaxIPs {
		// Forget IPs whose interval has passed; if a flood of addresses
		// keeps the map full, start over rather than grow without bound.
		for k, v := range t.auth.logged {
			if now.Sub(v.at) >= authLogInterval {
				delete(t.auth.logged, k)
			}
		}
		if len(t.auth.logged) >= authLogMaxIPs {
			clear(t.auth.logged)
		}
	}
	t.auth.logged[ip] = authLogEntry{at: now}
	t.auth.mu.Unlock()
	t.logger.Warn("transport: peer failed authentication, connection closed",
		"remote", remote.String(), "error", err, "suppressed_since_last", e.suppressed)
}

// AuthFailures returns how many inbound connections this transport has
// refused because the peer failed the TLS or ClusterKey handshake.
func (t *Transport) AuthFailures() int64 { return t.auth.failures.Load() }
