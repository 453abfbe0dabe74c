package transport

import (
	"context"
	"fmt"
	"time"
)

// Class says which traffic a fault decision is about.
type Class int

const (
	ClassPacket Class = iota + 1 // a gossip UDP packet
	ClassGossip                  // a gossip TCP stream (memberlist push/pull, fallback probes)
	ClassMux                     // the multiplexed connection: Raft traffic and forwarded requests
)

// String names the class for logs and test failures.
func (c Class) String() string {
	switch c {
	case ClassPacket:
		return "packet"
	case ClassGossip:
		return "gossip"
	case ClassMux:
		return "mux"
	default:
		return fmt.Sprintf("Class(%d)", int(c))
	}
}

// Faults decides the fate of traffic between two nodes. Tests set NetworkOptions.Faults to drop,
// delay and cut links; nil means a perfect network. Allow must be safe for concurrent use and fast.
type Faults interface {
	// Allow reports whether traffic of class may go from the node at from to the node at to (advertised host:port
	// addresses), and how long to hold it first.
	Allow(from, to string, class Class) (delay time.Duration, ok bool)
}

// maxDelayedPackets bounds the outbound UDP packets held back by a Faults
// delay at once. Gossip tolerates loss, so packets past the bound are
// dropped rather than queued without limit.
const maxDelayedPackets = 1024

// errFaultRefused is returned by a dial that the Faults hook refused.
type errFaultRefused struct {
	from, to string
	class    Class
}

func (e errFaultRefused) Error() string {
	return fmt.Sprintf("transport: %s link %s -> %s cut by fault injection", e.class, e.from, e.to)
}

// allow consults the Faults hook; without one every link is perfect.
func (t *Transport) allow(from, to string, class Class) (time.Duration, bool) {
	if t.opts.Faults == nil {
		return 0, true
	}
	return t.opts.Faults.Allow(from, to, class)
}

// checkDial applies the Faults hook to an outbound connection to addr: it
// waits out any delay (or until ctx ends or the transport closes) and then
// refuses the dial if the link is cut.
func (t *Transport) checkDial(ctx context.Context, addr string, class Class) error {
	if t.opts.Faults == nil {
		return nil
	}
	delay, ok := t.opts.Faults.Allow(t.advertise, addr, class)
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.done:
			return ErrClosed
		}
	}
	if !ok {
		return errFaultRefused{from: t.advertise, to: addr, class: class}
	}
	return nil
}

// sendDelayed writes a gossip packet after delay without holding up the
// caller: memberlist's packet writes must not block. Delayed packets are
// counted so a long delay cannot pile up goroutines; over the bound the
// packet is dropped, as a congested network would.
func (t *Transport) sendDelayed(b []byte, addr string, delay time.Duration) {
	if t.delayedPackets.Add(1) > maxDelayedPackets {
		t.delayedPackets.Add(-1)
		return
	}
	buf := append([]byte(nil), b...) // memberlist reuses b after WriteTo returns
	started := t.goTracked("delayed gossip packet", nil, func() {
		defer t.delayedPackets.Add(-1)
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
			_ = t.writePacket(buf, addr)
		case <-t.done:
		}
	})
	if !started {
		t.delayedPackets.Add(-1)
	}
}

// muxFaults is what a coalescingConn needs to apply the Faults hook to its
// flushes: the hook and the two ends of the connection, as advertised
// addresses. The zero value applies no faults.
type muxFaults struct {
	faults Faults
	local  string // this node's advertised address
	remote string // the peer's advertised address
}

// allow reports the hook's decision for one flush from local to remote.
func (m muxFaults) allow() (time.Duration, bool) {
	if m.faults == nil {
		return 0, true
	}
	return m.faults.Allow(m.local, m.remote, ClassMux)
}
