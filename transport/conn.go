package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Connection set-up, the same for gossip streams and mux sessions:
//
//	[TLS handshake]          only with NetworkOptions.TLS
//	type byte                connTypeGossip or connTypeMux
//	[ClusterKey handshake]   only with NetworkOptions.ClusterKey; binds the type byte
//	advertise                one length byte, then the dialer's host:port
//
// All of it must complete within a deadline (ReadTimeout on accept), and
// nothing the peer sends reaches memberlist, raft or a handler before it
// has.

// dialConn opens a TCP connection of type typ to addr and runs the
// dialer's side of the set-up. timeout bounds the TCP dial and the set-up
// together; the Faults hook is consulted first. The returned connection
// is tracked (Transport.Close closes it) and has no deadline set.
func (t *Transport) dialConn(ctx context.Context, addr string, typ byte, timeout time.Duration) (net.Conn, error) {
	class := ClassMux
	if typ == connTypeGossip {
		class = ClassGossip
	}
	if err := t.checkDial(ctx, addr, class); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	tc, err := t.track(raw, false)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = tc.SetDeadline(deadline)
	c, err := t.setupOutbound(ctx, tc, addr, typ)
	if err != nil {
		_ = tc.Close()
		return nil, fmt.Errorf("transport: handshake with %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// setupOutbound runs the dialer's side of the set-up on tc and returns the
// connection to use from then on (tc itself, or TLS over it).
func (t *Transport) setupOutbound(ctx context.Context, tc *trackedConn, addr string, typ byte) (net.Conn, error) {
	c, err := t.tlsClient(ctx, tc, addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{typ}); err != nil {
		return nil, err
	}
	if err := t.authOutbound(c, typ); err != nil {
		return nil, err
	}
	hello := make([]byte, 0, 1+len(t.advertise))
	hello = append(hello, byte(len(t.advertise)))
	hello = append(hello, t.advertise...)
	if _, err := c.Write(hello); err != nil {
		return nil, err
	}
	return c, nil
}

// serveInbound runs the accepting side of the set-up and hands the
// connection to gossip, or serves it as a link or a snapshot connection until it ends.
func (t *Transport) serveInbound(tc *trackedConn) {
	remote := tc.RemoteAddr().String()
	// The whole set-up must arrive within ReadTimeout, so a client that
	// connects and sends nothing cannot hold a connection slot.
	_ = tc.SetDeadline(time.Now().Add(t.opts.ReadTimeout))
	c, typ, from, err := t.setupInbound(tc)
	if err != nil {
		var authErr *authError
		if errors.As(err, &authErr) {
			t.authFailed(tc.RemoteAddr(), err)
		} else {
			t.logger.Debug("transport: inbound connection set-up failed", "remote", remote, "error", err)
		}
		_ = tc.Close()
		return
	}
	class := ClassMux
	if typ == connTypeGossip {
		class = ClassGossip
	}
	if _, ok := t.allow(from, t.advertise, class); !ok {
		t.logger.Debug("transport: inbound connection cut by fault injection", "peer", from, "class", class)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	switch typ {
	case connTypeGossip:
		t.deliverGossipStream(c)
	case connTypeLink:
		t.serveLink(c, from)
	case connTypeSnap:
		t.serveSnapshot(c, from)
	}
}

// setupInbound runs the accepting side of the set-up on tc. It returns the
// connection to use (tc itself, or TLS over it), its type and the peer's
// advertised address. Errors that mean the peer failed authentication are
// *authError.
func (t *Transport) setupInbound(tc *trackedConn) (net.Conn, byte, string, error) {
	c, err := t.tlsServer(tc)
	if err != nil {
		return nil, 0, "", err
	}
	var typ [1]byte
	if _, err := io.ReadFull(c, typ[:]); err != nil {
		return nil, 0, "", fmt.Errorf("read connection type: %w", err)
	}
	switch typ[0] {
	case connTypeGossip, connTypeLink, connTypeSnap:
	default:
		// Without a key this is the only defence against a stray client, so
		// it is worth a warning; with a key the handshake would refuse it.
		t.logger.Warn("transport: unknown connection type, closing", "remote", tc.RemoteAddr().String(), "type", typ[0])
		return nil, 0, "", fmt.Errorf("unknown connection type %#x", typ[0])
	}
	if err := t.authInbound(c, typ[0]); err != nil {
		return nil, 0, "", err
	}
	from, err := readAdvertise(c)
	if err != nil {
		return nil, 0, "", err
	}
	return c, typ[0], from, nil
}
