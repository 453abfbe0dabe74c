package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// acceptLoop accepts TCP connections until the listener is closed.
func (t *Transport) acceptLoop() {
	const baseDelay, maxDelay = 5 * time.Millisecond, time.Second
	var delay time.Duration
	for {
		conn, err := t.tcpLn.AcceptTCP()
		if err != nil {
			if t.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Typically file-descriptor exhaustion: back off rather than spin.
			delay = min(max(2*delay, baseDelay), maxDelay)
			t.logger.Warn("transport: accept failed", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		c, err := t.track(conn, true)
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				t.logger.Warn("transport: inbound connection refused", "remote", conn.RemoteAddr().String(), "error", err)
			}
			continue
		}
		if !t.goTracked("inbound connection", c, func() { t.serveInbound(c) }) {
			_ = c.Close()
		}
	}
}

// readAdvertise reads the dialer's advertised address from the connection
// set-up: one length byte, then that many bytes.
func readAdvertise(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", fmt.Errorf("read advertised address length: %w", err)
	}
	if n[0] == 0 {
		return "", errors.New("empty advertised address")
	}
	buf := make([]byte, n[0])
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", fmt.Errorf("read advertised address: %w", err)
	}
	addr := string(buf)
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", fmt.Errorf("advertised address %q: %w", addr, err)
	}
	return addr, nil
}

// serveMux runs the server side of a yamux session: every stream the peer
// opens gets its own goroutine. It returns when the session ends.
func (t *Transport) serveMux(c net.Conn, from string) {
	cc := newCoalescingConn(c, t.opts.WriteTimeout, muxFaults{faults: t.opts.Faults, local: t.advertise, remote: from})
	sess, err := yamux.Server(cc, t.yamuxConf)
	if err != nil { // only for an invalid config, which newYamuxConfig rules out
		t.logger.Error("transport: yamux server", "error", err)
		_ = cc.Close()
		return
	}
	t.acceptedMux.Add(1)
	defer func() { _ = sess.Close() }()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if !t.isClosed() {
				t.logger.Debug("transport: inbound session ended", "peer", from, "error", err)
			}
			return
		}
		if !t.goTracked("inbound stream", st, func() { t.serveStream(sess, st, from) }) {
			_ = st.Close()
			return
		}
	}
}

// serveStream reads a stream's kind and routes it.
func (t *Transport) serveStream(sess *yamux.Session, st *yamux.Stream, from string) {
	_ = st.SetReadDeadline(time.Now().Add(t.opts.ReadTimeout))
	var hdr [5]byte
	if _, err := io.ReadFull(st, hdr[:1]); err != nil {
		t.logger.Debug("transport: stream closed before its kind byte", "peer", from, "error", err)
		_ = st.Close()
		return
	}
	switch hdr[0] {
	case streamRaft:
		if _, err := io.ReadFull(st, hdr[1:5]); err != nil {
			t.logger.Debug("transport: raft stream header incomplete", "peer", from, "error", err)
			_ = st.Close()
			return
		}
		_ = st.SetReadDeadline(time.Time{})
		t.routeRaft(binary.BigEndian.Uint32(hdr[1:5]), st, from)
	case streamRequest:
		_ = st.SetReadDeadline(time.Time{})
		t.serveRequests(sess, st, from)
	default:
		// The peer does not speak this protocol: drop its connection.
		t.logger.Warn("transport: unknown stream kind, closing connection", "peer", from, "kind", hdr[0])
		_ = st.Close()
		_ = sess.Close()
	}
}
