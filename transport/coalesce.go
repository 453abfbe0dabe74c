package transport

import (
	"net"
	"sync"
	"time"
)

const (
	// maxPending bounds the bytes a coalescingConn holds for its connection; writers wait
	// above it.
	maxPending = 4 << 20
	// directRounds is how many batches a sender that found the connection idle writes before
	// it hands what is still queued to the flusher goroutine.
	directRounds = 4
)

// coalescingConn lets every sender on a link share write system calls. A sender that finds
// the connection idle writes its frame itself, then whatever other senders queued meanwhile,
// a few rounds at most; a sender that finds a write under way only queues its frame. So a
// lone frame costs one system call and no goroutine hand-off, and under load the frames of
// many Raft groups and requests gather and leave together. What the direct sender leaves
// queued, the flusher goroutine writes. Small urgent frames (heartbeats, votes, requests,
// answers) queued with WriteUrgent go ahead of bulk ones, so none waits behind megabytes of
// log entries. With a Faults hook (tests), every write goes through
// the flusher, which applies it.
type coalescingConn struct {
	net.Conn
	timeout time.Duration // write deadline of each write; 0: none
	faults  muxFaults     // consulted before each flush (tests only)

	mu      sync.Mutex
	cond    *sync.Cond // signalled when the flusher has work, room appears, or err is set; uses mu
	urgent  []byte     // small frames queued, to go before pending; guarded by mu
	pending []byte     // frames queued, not yet on the wire; guarded by mu
	spare   [2][]byte  // drained buffers for the next batch (urgent, pending); guarded by mu
	writing bool       // a sender or the flusher is writing; guarded by mu
	handoff bool       // pending is the flusher's to write; guarded by mu
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

// Write sends p, or queues it behind the write under way. It blocks while maxPending bytes
// are already queued, or while it writes, and reports the error of an earlier write: the link
// then ends, as it would for a failed write.
func (c *coalescingConn) Write(p []byte) (int, error) { return c.send(p, false) }

// WriteUrgent is Write for a small frame that must not wait behind bulk ones: it goes ahead
// of the frames queued with Write (those keep their order among themselves), and waits for
// room only past twice maxPending.
func (c *coalescingConn) WriteUrgent(p []byte) (int, error) { return c.send(p, true) }

func (c *coalescingConn) send(p []byte, urgent bool) (int, error) {
	c.mu.Lock()
	for c.err == nil && (len(c.pending) >= maxPending && !urgent || len(c.urgent) >= 2*maxPending) {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.writing || c.handoff || len(c.pending)+len(c.urgent) > 0 || c.faults.faults != nil {
		if urgent {
			c.urgent = append(c.urgent, p...)
		} else {
			c.pending = append(c.pending, p...)
		}
		if !c.writing && !c.handoff {
			c.handoff = true
			c.cond.Broadcast()
		}
		c.mu.Unlock()
		return len(p), nil
	}
	c.writing = true
	c.mu.Unlock()

	err := c.write(nil, p)
	for round := 1; ; round++ {
		c.mu.Lock()
		if err != nil {
			c.failLocked(err)
			c.writing = false
			c.mu.Unlock()
			return 0, err
		}
		if len(c.pending)+len(c.urgent) == 0 {
			c.writing = false
			c.mu.Unlock()
			return len(p), nil
		}
		if round == directRounds {
			c.writing = false
			c.handoff = true
			c.cond.Broadcast()
			c.mu.Unlock()
			return len(p), nil
		}
		u, b := c.takeLocked()
		c.mu.Unlock()
		err = c.write(u, b)
		c.mu.Lock()
		c.keepLocked(u, b)
		c.mu.Unlock()
	}
}

// takeLocked swaps the queued frames out for writing and wakes senders waiting for room.
func (c *coalescingConn) takeLocked() (urgent, pending []byte) {
	urgent, pending = c.urgent, c.pending
	c.urgent, c.pending = c.spare[0][:0], c.spare[1][:0]
	c.spare = [2][]byte{}
	c.cond.Broadcast()
	return urgent, pending
}

// keepLocked keeps written buffers for reuse, unless a burst made them large.
func (c *coalescingConn) keepLocked(urgent, pending []byte) {
	for i, b := range [2][]byte{urgent, pending} {
		if cap(b) <= 1<<20 && c.spare[i] == nil {
			c.spare[i] = b[:0]
		}
	}
}

// failLocked records the first write error and closes the connection.
func (c *coalescingConn) failLocked(err error) {
	if c.err == nil {
		c.err = err
		_ = c.Conn.Close()
	}
	c.cond.Broadcast()
}

// flushLoop writes what senders handed off, until the connection fails or closes.
func (c *coalescingConn) flushLoop() {
	defer close(c.done)
	c.mu.Lock()
	for {
		for !c.handoff && c.err == nil {
			c.cond.Wait()
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		if len(c.pending)+len(c.urgent) == 0 {
			c.handoff = false
			continue
		}
		c.writing = true
		u, b := c.takeLocked()
		c.mu.Unlock()

		// Every byte of the connection passes here or through a direct write, which
		// happens only without a Faults hook; so a one-way cut stops exactly one
		// direction. Cutting closes the connection: the link fails its requests in
		// flight and is dialled again later, through a dial that is checked again.
		err := c.applyFaults()
		if err == nil {
			err = c.write(u, b)
		}

		c.mu.Lock()
		c.writing = false
		c.keepLocked(u, b)
		if err != nil {
			c.failLocked(err)
		}
		// handoff stays set: the loop writes what was queued meanwhile, or clears it.
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

// write puts urgent, then pending, on the wire under the write deadline, in one system call
// where the connection can.
func (c *coalescingConn) write(urgent, pending []byte) error {
	if c.timeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	var err error
	switch {
	case len(urgent) == 0:
		_, err = c.Conn.Write(pending)
	case len(pending) == 0:
		_, err = c.Conn.Write(urgent)
	default:
		bufs := net.Buffers{urgent, pending}
		_, err = bufs.WriteTo(c.Conn)
	}
	return err
}

// Close stops the flusher and closes the connection. Bytes still queued are dropped: a link
// is closed only when it has failed or is no longer wanted.
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
