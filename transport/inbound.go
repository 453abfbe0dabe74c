package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
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
