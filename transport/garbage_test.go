package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"runtime"
	"testing"
	"time"
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

// rawLink dials b and performs the link set-up by hand, so the test can write anything.
func rawLink(t *testing.T, b *Transport) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	self := "127.0.0.1:1"
	if _, err := conn.Write(append([]byte{connTypeLink, byte(len(self))}, self...)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// rawFrame is a frame with the given header fields and body.
func rawFrame(typ, kind uint8, group uint32, id, aux uint64, body []byte) []byte {
	b := appendFrameHeader(nil, frameHeader{typ: typ, kind: kind, group: group, id: id, aux: aux})
	return finishFrame(append(b, body...))
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
		_, _ = conn.Write([]byte{connTypeLink, 20, '1'})
		start := time.Now()
		expectClosed(t, conn, 3*time.Second)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("closed after %v, before ReadTimeout", d)
		}
		stillServes(t, b)
	})

	t.Run("slow frame", func(t *testing.T) {
		// A frame that starts but does not finish within ReadTimeout.
		conn := rawLink(t, b)
		frame := rawFrame(frameCallReq, kindEcho, 0, 1, uint64(time.Second), []byte("hello"))
		_, _ = conn.Write(frame[:len(frame)-2])
		start := time.Now()
		expectClosed(t, conn, 3*time.Second)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("closed after %v, before ReadTimeout", d)
		}
		stillServes(t, b)
	})

	t.Run("idle link stays open", func(t *testing.T) {
		// Between frames a link may wait as long as it likes, then be answered.
		conn := rawLink(t, b)
		time.Sleep(2 * opts.ReadTimeout)
		_, _ = conn.Write(rawFrame(frameCallReq, kindEcho, 0, 7, uint64(time.Second), []byte("late")))
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		var hdr [linkHeaderSize]byte
		h, body, err := readLinkFrame(bufio.NewReader(conn), &hdr, 1<<20, nil, 0)
		if err != nil || h.typ != frameCallResp || h.id != 7 || h.kind != statusOK || string(body) != "late" {
			t.Fatalf("answer %+v %q, %v", h, body, err)
		}
	})

	t.Run("huge length prefix", func(t *testing.T) {
		conn := rawLink(t, b)
		var frame [linkHeaderSize]byte
		binary.BigEndian.PutUint32(frame[:], 0xFFFFFFF0)
		_, _ = conn.Write(frame[:])
		expectClosed(t, conn, 3*time.Second)
		eventually(t, time.Second, "a log line", func() bool { return rec.Contains("malformed frame") })
		stillServes(t, b)
	})

	t.Run("malformed raft request", func(t *testing.T) {
		rt, err := b.RaftTransport(RaftConfig{Group: 9, Local: "x#1", Incarnation: 1, Resolve: resolve, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		conn := rawLink(t, b)
		_, _ = conn.Write(rawFrame(frameRaftReq, raftAppendEntries, 9, 1, 1, []byte{0xff, 0xff, 0xff}))
		expectClosed(t, conn, 3*time.Second)
		select {
		case rpc := <-rt.Consumer():
			t.Fatalf("garbage reached raft: %#v", rpc.Command)
		default:
		}
		stillServes(t, b)
	})

	t.Run("unknown raft RPC", func(t *testing.T) {
		rt, err := b.RaftTransport(RaftConfig{Group: 10, Local: "x#1", Incarnation: 1, Resolve: resolve, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		conn := rawLink(t, b)
		_, _ = conn.Write(rawFrame(frameRaftReq, 77, 10, 1, 1, nil))
		expectClosed(t, conn, 3*time.Second)
		stillServes(t, b)
	})

	t.Run("bad frame type", func(t *testing.T) {
		conn := rawLink(t, b)
		_, _ = conn.Write(rawFrame(0x42, 0, 0, 1, 0, []byte("x")))
		expectClosed(t, conn, 3*time.Second)
		stillServes(t, b)
	})

	t.Run("response sent to the accepting side", func(t *testing.T) {
		conn := rawLink(t, b)
		_, _ = conn.Write(rawFrame(frameCallResp, statusOK, 0, 1, 0, []byte("x")))
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
	var hdr [linkHeaderSize]byte
	binary.BigEndian.PutUint32(hdr[:], 1<<31)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var scratch [linkHeaderSize]byte
	_, _, err := readLinkFrame(bufio.NewReader(&byteReader{b: hdr[:]}), &scratch, 1<<20, nil, 0)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, errMalformedFrame) {
		t.Fatalf("err = %v, want errMalformedFrame", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("rejecting a 2 GiB prefix allocated %d bytes", grew)
	}
}

// TestReadFrameGrowsWithTheBytes: a frame under the limit but larger than what arrives is
// not allocated whole on the length prefix's say-so.
func TestReadFrameGrowsWithTheBytes(t *testing.T) {
	b := rawFrame(frameCallReq, 1, 0, 1, 1, nil)
	binary.BigEndian.PutUint32(b, uint32(linkHeaderSize-4+60<<20)) // 60 MiB declared
	b = append(b, make([]byte, 1000)...)                           // 1000 bytes sent
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var scratch [linkHeaderSize]byte
	_, _, err := readLinkFrame(bufio.NewReader(&byteReader{b: b}), &scratch, maxLinkFrame, nil, 0)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Fatalf("a 60 MiB prefix with 1000 bytes behind it allocated %d bytes", grew)
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
