package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossipTransport is memberlist's view of the Transport: packets are UDP
// datagrams on the shared port, streams are TCP connections tagged with the
// gossip connection type.
type gossipTransport struct {
	t        *Transport
	packets  chan *memberlist.Packet
	streams  chan net.Conn
	stop     chan struct{} // closed by Shutdown
	stopOnce sync.Once
}

var _ memberlist.NodeAwareTransport = (*gossipTransport)(nil)

// Gossip returns the memberlist transport to set as memberlist.Config's
// Transport. Its Shutdown, called by memberlist on shutdown, only stops
// delivering gossip: the listener stays up for Raft and requests, and
// Transport.Close closes everything. After a Shutdown, Gossip returns a
// fresh gossip transport, so a node can create a new memberlist. Until
// Gossip is first called, inbound gossip is dropped.
func (t *Transport) Gossip() memberlist.NodeAwareTransport {
	t.gossipMu.Lock()
	defer t.gossipMu.Unlock()
	if t.gossip == nil || t.gossip.stopped() {
		t.gossip = &gossipTransport{
			t:       t,
			packets: make(chan *memberlist.Packet),
			streams: make(chan net.Conn),
			stop:    make(chan struct{}),
		}
	}
	return t.gossip
}

// currentGossip returns the gossip transport in use, or nil.
func (t *Transport) currentGossip() *gossipTransport {
	t.gossipMu.Lock()
	defer t.gossipMu.Unlock()
	if t.gossip == nil || t.gossip.stopped() {
		return nil
	}
	return t.gossip
}

func (g *gossipTransport) stopped() bool {
	select {
	case <-g.stop:
		return true
	default:
		return false
	}
}

// FinalAdvertiseAddr returns ip and port when memberlist was configured with
// an advertise IP, and otherwise the Transport's advertised host (resolved
// if it is a name) and port.
func (g *gossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		addr := net.ParseIP(ip)
		if addr == nil {
			return nil, 0, fmt.Errorf("transport: gossip advertise address %q is not an IP", ip)
		}
		if v4 := addr.To4(); v4 != nil {
			addr = v4
		}
		return addr, port, nil
	}
	host, portStr, err := net.SplitHostPort(g.t.advertise)
	if err != nil {
		return nil, 0, err
	}
	p, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, 0, fmt.Errorf("transport: advertise port %q: %w", portStr, err)
	}
	addr := net.ParseIP(host)
	if addr == nil {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			return nil, 0, fmt.Errorf("transport: resolve advertise host %q: %v", host, err)
		}
		addr = ips[0]
		for _, c := range ips {
			if c.To4() != nil {
				addr = c
				break
			}
		}
	}
	if v4 := addr.To4(); v4 != nil {
		addr = v4
	}
	return addr, p, nil
}

// WriteTo sends one gossip packet to addr.
func (g *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return g.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends one gossip packet as a UDP datagram from the shared
// port, so the receiver sees this node's real gossip address as the source.
// The Faults hook may drop the packet (reported as sent, as a lossy network
// would) or delay it without blocking the caller.
func (g *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	t := g.t
	if t.isClosed() {
		return time.Time{}, ErrClosed
	}
	if delay, ok := t.allow(t.advertise, a.Addr, ClassPacket); !ok {
		return time.Now(), nil
	} else if delay > 0 {
		t.sendDelayed(b, a.Addr, delay)
		return time.Now(), nil
	}
	return time.Now(), t.writePacket(b, a.Addr)
}

// writePacket sends b as one UDP datagram from the shared port to addr.
func (t *Transport) writePacket(b []byte, addr string) error {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		_, err = t.udpConn.WriteToUDPAddrPort(b, ap)
		return err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	_, err = t.udpConn.WriteToUDP(b, ua)
	return err
}

// PacketCh implements memberlist.Transport.
func (g *gossipTransport) PacketCh() <-chan *memberlist.Packet { return g.packets }

// StreamCh implements memberlist.Transport.
func (g *gossipTransport) StreamCh() <-chan net.Conn { return g.streams }

// DialTimeout opens a gossip stream to addr.
func (g *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return g.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a TCP connection to a.Addr and tags it as a
// gossip stream. The connection is memberlist's; Transport.Close also
// closes it.
func (g *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	t := g.t
	if t.isClosed() {
		return nil, ErrClosed
	}
	if timeout <= 0 {
		timeout = t.opts.ReadTimeout + t.opts.WriteTimeout
	}
	// memberlist has no context to give; Close ends a pending dial through
	// t.done and by closing the tracked connection.
	return t.dialConn(context.Background(), a.Addr, connTypeGossip, timeout)
}

// Shutdown stops delivering packets and streams to memberlist. It leaves
// the shared listener running. Idempotent.
func (g *gossipTransport) Shutdown() error {
	g.stopOnce.Do(func() { close(g.stop) })
	return nil
}

// deliverGossipStream hands an inbound gossip connection to memberlist, or
// closes it when no memberlist is listening.
func (t *Transport) deliverGossipStream(c net.Conn) {
	g := t.currentGossip()
	if g == nil {
		t.logger.Debug("transport: gossip stream dropped: no memberlist", "remote", c.RemoteAddr().String())
		_ = c.Close()
		return
	}
	select {
	case g.streams <- c:
	case <-g.stop:
		_ = c.Close()
	case <-t.done:
		_ = c.Close()
	}
}

// udpLoop reads gossip packets until the UDP socket is closed.
func (t *Transport) udpLoop() {
	buf := make([]byte, maxUDPPacket)
	for {
		n, from, err := t.udpConn.ReadFromUDP(buf)
		now := time.Now()
		if err != nil {
			if t.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.logger.Debug("transport: UDP read failed", "error", err)
			continue
		}
		if n == 0 {
			continue
		}
		g := t.currentGossip()
		if g == nil {
			continue
		}
		if t.opts.Faults != nil {
			if _, ok := t.opts.Faults.Allow(from.String(), t.advertise, ClassPacket); !ok {
				continue
			}
		}
		// memberlist keeps the packet, so it gets its own copy rather than a
		// 64 KiB buffer per datagram.
		pkt := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: now}
		select {
		case g.packets <- pkt:
		case <-g.stop:
		case <-t.done:
			return
		}
	}
}
