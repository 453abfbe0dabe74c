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
	faults  muxFaults     // consulted before each flush (tests only)

	mu      sync.Mutex
	cond    *sync.Cond // signalled when pending grows, drains, or err is set; uses mu
	pending []byte     // bytes written by yamux, not yet on the wire; guarded by mu
	err     error      // the first write error, or net.ErrClosed; guarded by mu

	done      chan struct{} // closed when the flusher returns
	closing   chan struct{} // closed by Close, to cut short a fault delay
	closeOnce sync.Once
}

// newCoalescingConn starts the flusher for c. faults decides, before each
// flush, whether the bytes may go to the peer (a cut link closes the
// connection) and how long they are held first.
func newCoalescingConn(c net.Conn, writeTimeout time.Duration, faults muxFaults) *coalescingConn {
	cc := &coalescingConn{Conn: c, timeout: writeTimeout, faults: faults, done: make(chan struct{}), closing: make(chan struct{})}
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

		// Every byte of the connection passes here, so a one-way cut stops
		// exactly one direction. Cutting closes the connection: yamux fails
		// the session and redials later, through a dial that is checked
		// again.
		err := c.applyFaults()
		if err == nil {
			err = c.write(out)
		}

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

// applyFaults waits out a fault delay and reports a cut link as an error.
func (c *coalescingConn) applyFaults() error {
	delay, ok := c.faults.allow()
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-c.closing:
			return net.ErrClosed
		}
	}
	if !ok {
		return errFaultRefused{from: c.faults.local, to: c.faults.remote, class: ClassMux}
	}
	return nil
}

// write puts out on the wire under the flush deadline.
func (c *coalescingConn) write(out []byte) error {
	if c.timeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	_, err := c.Conn.Write(out)
	return err
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
	c.closeOnce.Do(func() { close(c.closing) })
	err := c.Conn.Close()
	<-c.done
	return err
}
