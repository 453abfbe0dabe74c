package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// expectClosed fails unless the server closes conn within d.
func expectClosed(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection still open after %v", d)
		}
		return
	}
}

// stillServes fails unless b still answers calls from a fresh client.
func stillServes(t *testing.T, b *Transport) {
	t.Helper()
	a, _ := newTestTransport(t, testOptions())
	if resp, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("alive")); err != nil || string(resp) != "alive" {
		t.Fatalf("transport stopped serving: %q, %v", resp, err)
	}
}

// rawMuxStream dials b, performs the mux handshake by hand and opens one
// yamux stream on which the test can write anything.
func rawMuxStream(t *testing.T, b *Transport) (net.Conn, *yamux.Session, *yamux.Stream) {
	t.Helper()
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	self := "127.0.0.1:1"
	if _, err := conn.Write(append([]byte{connTypeMux, byte(len(self))}, self...)); err != nil {
		t.Fatal(err)
	}
	conf := yamux.DefaultConfig()
	conf.LogOutput = io.Discard
	sess, err := yamux.Client(conn, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	return conn, sess, st
}

func TestGarbageConnections(t *testing.T) {
	opts := testOptions()
	opts.ReadTimeout = 300 * time.Millisecond
	b, rec := newTestTransport(t, opts)
	b.Handle(kindEcho, echo)

	t.Run("random bytes", func(t *testing.T) {
		rng := rand.New(rand.NewSource(1))
		for range 20 {
			conn, err := net.Dial("tcp", b.Addr())
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, 1+rng.Intn(4096))
			rng.Read(junk)
			_, _ = conn.Write(junk)
			expectClosed(t, conn, 3*time.Second)
			_ = conn.Close()
		}
		stillServes(t, b)
	})

	t.Run("bad connection type", func(t *testing.T) {
		conn, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte{0xEE, 1, 2, 3})
		expectClosed(t, conn, time.Second)
		eventually(t, time.Second, "a log line", func() bool { return rec.Contains("unknown connection type") })
		stillServes(t, b)
	})

	t.Run("slow sender", func(t *testing.T) {
		// Connects and never finishes the handshake: closed after ReadTimeout.
		conn, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte{connTypeMux, 20, '1'})
		start := time.Now()
		expectClosed(t, conn, 3*time.Second)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("closed after %v, before ReadTimeout", d)
		}
		stillServes(t, b)
	})

	t.Run("slow frame", func(t *testing.T) {
		// A request frame that starts but does not finish within ReadTimeout.
		_, sess, st := rawMuxStream(t, b)
		_, _ = st.Write([]byte{streamRequest, 0, 0})
		_ = st.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := st.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("stalled frame: read %v, want EOF", err)
		}
		_ = sess.Close()
		stillServes(t, b)
	})

	t.Run("huge length prefix", func(t *testing.T) {
		conn, _, st := rawMuxStream(t, b)
		var frame [5]byte
		frame[0] = streamRequest
		binary.BigEndian.PutUint32(frame[1:], 0xFFFFFFF0)
		_, _ = st.Write(frame[:])
		expectClosed(t, conn, 3*time.Second)
		eventually(t, time.Second, "a log line", func() bool { return rec.Contains("malformed request") })
		stillServes(t, b)
	})

	t.Run("malformed envelope", func(t *testing.T) {
		conn, _, st := rawMuxStream(t, b)
		body := []byte{0x93, 1, 2, 3} // a 3-element array: wrong shape
		frame := append([]byte{streamRequest, 0, 0, 0, byte(len(body))}, body...)
		_, _ = st.Write(frame)
		expectClosed(t, conn, 3*time.Second)
		stillServes(t, b)
	})

	t.Run("bad stream kind", func(t *testing.T) {
		conn, _, st := rawMuxStream(t, b)
		_, _ = st.Write([]byte{0x00, 1, 2})
		expectClosed(t, conn, 3*time.Second)
		stillServes(t, b)
	})

	t.Run("garbage udp", func(t *testing.T) {
		b.Gossip() // someone is "listening", so packets are delivered
		conn, err := net.Dial("udp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("not gossip"))
		stillServes(t, b)
	})
}

func TestMaxInbound(t *testing.T) {
	opts := testOptions()
	opts.MaxInbound = 2
	b, rec := newTestTransport(t, opts)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	eventually(t, time.Second, "two tracked inbound conns", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.inbound == 2
	})
	extra, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	expectClosed(t, extra, time.Second)
	// The log line is written just after the close the client observed.
	eventually(t, time.Second, "the refusal to be logged", func() bool { return rec.Contains("MaxInbound") })
	for _, c := range held {
		_ = c.Close()
	}
	eventually(t, 3*time.Second, "slots to free", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.inbound == 0
	})
}

func TestReadFrameRejectsHugePrefixWithoutAllocating(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1<<31)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var env envelope
	err := readFrame(&byteReader{b: hdr[:]}, 1<<20, nil, &env)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("rejecting a 2 GiB prefix allocated %d bytes", grew)
	}
}

// byteReader is a minimal io.Reader over a slice.
type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
