package transport

import (
	"net"
	"sync"
	"time"
)

// maxPending bounds the bytes a coalescingConn holds for its connection; writers wait above it.
const maxPending = 4 << 20

// coalescingConn lets every stream of a yamux session share write system calls. yamux writes
// each frame (header, then body) with its own Write; here Write only appends to a buffer and
// one flusher goroutine writes whatever has piled up. While a write is on the wire, the frames
// of many Raft groups and requests gather and leave together in the next one. When the
// connection is quiet the flusher is waiting, so a lone frame goes out at once: batching adds
// no delay.
type coalescingConn struct {
	net.Conn
	timeout time.Duration // write deadline of each flush; 0: none

	mu      sync.Mutex
	cond    *sync.Cond // signalled when pending grows, drains, or err is set; uses mu
	pending []byte     // bytes written by yamux, not yet on the wire; guarded by mu
	err     error      // the first write error, or net.ErrClosed; guarded by mu

	done chan struct{} // closed when the flusher returns
}

func newCoalescingConn(c net.Conn, writeTimeout time.Duration) *coalescingConn {
	cc := &coalescingConn{Conn: c, timeout: writeTimeout, done: make(chan struct{})}
	cc.cond = sync.NewCond(&cc.mu)
	go cc.flushLoop()
	return cc
}

// Write queues p. It blocks only while maxPending bytes are already queued, and reports the
// error of an earlier flush: yamux then tears the session down as it would for a failed write.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) >= maxPending && c.err == nil {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.pending = append(c.pending, p...)
	c.cond.Broadcast()
	return len(p), nil
}

func (c *coalescingConn) flushLoop() {
	defer close(c.done)
	var spare []byte
	c.mu.Lock()
	for {
		for len(c.pending) == 0 && c.err == nil {
			c.cond.Wait()
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		out := c.pending
		c.pending = spare[:0]
		c.cond.Broadcast() // writers waiting for room
		c.mu.Unlock()

		if c.timeout > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		}
		_, err := c.Conn.Write(out)

		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
			_ = c.Conn.Close()
			c.cond.Broadcast()
		}
		spare = out
		if cap(spare) > 1<<20 {
			spare = nil // don't keep a burst's buffer for the connection's life
		}
	}
}

// Close stops the flusher and closes the connection. Bytes still queued are dropped: yamux
// closes its connection only when the session is over.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	err := c.Conn.Close()
	<-c.done
	return err
}
