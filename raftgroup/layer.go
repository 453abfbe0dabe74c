package raftgroup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// errWrongIncarnation is returned by the first read of a stream addressed to another
// incarnation of this node: a peer still talking to this node's previous life.
var errWrongIncarnation = errors.New("raftgroup: stream addressed to another incarnation")

// taggedLayer wraps the transport's stream layer for one group. Every stream it dials starts
// with the 8-byte incarnation of the target; every stream it accepts must start with this
// node's incarnation, or its first read fails and raft drops the connection.
type taggedLayer struct {
	raft.StreamLayer
	incarnation uint64
	local       advertised
}

// advertised is the net.Addr raft's NetworkTransport reports as its local address: the
// node's server address, suffix included, so leaders send it to followers verbatim.
type advertised string

func (a advertised) Network() string { return "tcp" }
func (a advertised) String() string  { return string(a) }

func (l *taggedLayer) Addr() net.Addr { return l.local }

func (l *taggedLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	hostPort, inc, err := SplitAddress(address)
	if err != nil {
		return nil, err
	}
	conn, err := l.StreamLayer.Dial(raft.ServerAddress(hostPort), timeout)
	if err != nil {
		return nil, err
	}
	var tag [8]byte
	binary.BigEndian.PutUint64(tag[:], inc)
	if timeout > 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := conn.Write(tag[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("raftgroup: writing stream tag to %s: %w", hostPort, err)
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

func (l *taggedLayer) Accept() (net.Conn, error) {
	conn, err := l.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &checkedConn{Conn: conn, want: l.incarnation}, nil
}

// checkedConn verifies the incarnation tag on its first read. Raft's NetworkTransport reads
// each accepted connection from a single goroutine, so no lock is needed.
type checkedConn struct {
	net.Conn
	want    uint64
	checked bool
	err     error
}

func (c *checkedConn) Read(p []byte) (int, error) {
	if !c.checked {
		c.checked = true
		var tag [8]byte
		if _, err := io.ReadFull(c.Conn, tag[:]); err != nil {
			c.err = err
		} else if got := binary.BigEndian.Uint64(tag[:]); got != c.want {
			c.err = fmt.Errorf("%w: got %x, this node is %x", errWrongIncarnation, got, c.want)
		}
		if c.err != nil {
			c.Conn.Close()
		}
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}
