package transport

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// raftLayer is the raft.StreamLayer of one Raft group: Dial opens a yamux
// stream tagged with the group, Accept yields the streams peers opened for
// it. Many layers share the Transport's connections.
type raftLayer struct {
	t     *Transport
	group uint32
	// conns is unbuffered: a stream is handed over only to an Accept that
	// is actually waiting, so none is stranded in a buffer at Close.
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*raftLayer)(nil)

// RaftLayer registers group and returns its raft.StreamLayer, to be wrapped
// by raft.NewNetworkTransportWithConfig. Closing the layer (raft's
// NetworkTransport does on Close) unregisters the group. Registering a group
// again replaces, and closes, its previous layer.
func (t *Transport) RaftLayer(group uint32) raft.StreamLayer {
	l := &raftLayer{t: t, group: group, conns: make(chan net.Conn), done: make(chan struct{})}
	t.groupsMu.Lock()
	old := t.groups[group]
	t.groups[group] = l
	t.groupsMu.Unlock()
	if old != nil {
		t.logger.Warn("transport: raft group registered twice; closing the old layer", "group", group)
		old.closeOnce.Do(func() { close(old.done) })
	}
	return l
}

// SetUnknownGroupHandler sets fn to be called when a peer opens a Raft
// stream for a group with no registered layer, typically because this node
// was just added to the group and has no Raft instance for it yet. fn
// should create the group (registering its layer with RaftLayer) and return
// true, or return false to refuse the stream, which is then closed. fn runs
// on the goroutine serving that stream, may block, and can be called
// concurrently for the same group; it must be idempotent. nil removes it.
func (t *Transport) SetUnknownGroupHandler(fn func(group uint32) bool) {
	t.groupsMu.Lock()
	t.unknownGroup = fn
	t.groupsMu.Unlock()
}

// routeRaft hands an inbound Raft stream to its group's layer.
func (t *Transport) routeRaft(group uint32, st net.Conn, from string) {
	t.groupsMu.RLock()
	l, fn := t.groups[group], t.unknownGroup
	t.groupsMu.RUnlock()
	if l == nil {
		if fn == nil || !fn(group) {
			t.logger.Debug("transport: stream for unknown raft group refused", "group", group, "peer", from)
			_ = st.Close()
			return
		}
		t.groupsMu.RLock()
		l = t.groups[group]
		t.groupsMu.RUnlock()
		if l == nil {
			t.logger.Warn("transport: unknown-group handler accepted a group but registered no layer", "group", group)
			_ = st.Close()
			return
		}
	}
	select {
	case l.conns <- st:
	case <-l.done:
		_ = st.Close()
	case <-t.done:
		_ = st.Close()
	}
}

// Accept waits for the next stream a peer opened for this group.
func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	case <-l.t.done:
		return nil, ErrClosed
	}
}

// Close unregisters the group and makes Accept return ErrClosed. Streams
// already accepted are raft's to close. Idempotent.
func (l *raftLayer) Close() error {
	l.closeOnce.Do(func() {
		l.t.groupsMu.Lock()
		if l.t.groups[l.group] == l {
			delete(l.t.groups, l.group)
		}
		l.t.groupsMu.Unlock()
		close(l.done)
	})
	return nil
}

// Addr returns the node's advertised address, which raft uses as its local
// address.
func (l *raftLayer) Addr() net.Addr { return advertisedAddr(l.t.advertise) }

// Dial opens a stream for this group to the node at address over one of the
// shared connections to it.
func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, ErrClosed
	default:
	}
	if l.t.isClosed() {
		return nil, ErrClosed
	}
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var hdr [5]byte
	hdr[0] = streamRaft
	binary.BigEndian.PutUint32(hdr[1:], l.group)
	st, _, err := l.t.openStream(ctx, l.t.peer(string(address)), hdr[:])
	if err != nil {
		return nil, err
	}
	return st, nil
}

// advertisedAddr is a net.Addr for an advertised host:port, which need not
// be a literal IP.
type advertisedAddr string

// Network implements net.Addr.
func (a advertisedAddr) Network() string { return "tcp" }

// String implements net.Addr.
func (a advertisedAddr) String() string { return string(a) }
