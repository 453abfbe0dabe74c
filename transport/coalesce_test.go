package transport

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// gatedConn records what is written to it; a write waits while the gate is closed.
type gatedConn struct {
	net.Conn
	mu     sync.Mutex
	gate   chan struct{}
	out    bytes.Buffer
	writes int
}

func (g *gatedConn) Write(p []byte) (int, error) {
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes++
	return g.out.Write(p)
}

func (g *gatedConn) SetWriteDeadline(time.Time) error { return nil }
func (g *gatedConn) Close() error                     { return nil }

func (g *gatedConn) written() (string, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String(), g.writes
}

// TestCoalescingUrgentFirst: while a write is on the wire, frames queue; urgent ones leave
// ahead of bulk ones, each kind in its own order, all in the next write.
func TestCoalescingUrgentFirst(t *testing.T) {
	g := &gatedConn{gate: make(chan struct{})}
	c := newCoalescingConn(g, 0, muxFaults{})
	defer c.Close()

	first := make(chan struct{})
	go func() {
		defer close(first)
		_, _ = c.Write([]byte("[first]")) // finds the connection idle: writes it itself
	}()
	eventually(t, 5*time.Second, "the first write to be under way", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.writing
	})
	_, _ = c.Write([]byte("[bulk1]"))
	_, _ = c.WriteUrgent([]byte("[urgent1]"))
	_, _ = c.Write([]byte("[bulk2]"))
	_, _ = c.WriteUrgent([]byte("[urgent2]"))
	close(g.gate)
	<-first
	eventually(t, 5*time.Second, "everything written", func() bool {
		out, _ := g.written()
		return len(out) == len("[first][urgent1][urgent2][bulk1][bulk2]")
	})
	out, writes := g.written()
	if out != "[first][urgent1][urgent2][bulk1][bulk2]" {
		t.Fatalf("wire order %q", out)
	}
	if writes > 3 {
		t.Fatalf("%d writes for two batches", writes)
	}
}
