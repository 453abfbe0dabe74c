package gridkv_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/transport"
)

// The node's wire protocol (see package transport): a connection-type byte, then for a link
// the dialer's address with a length byte, then frames: a big-endian uint32 length, a frame
// type, a kind, a uint32 group, a uint64 request ID, a uint64 incarnation or time budget, and
// the body.
const (
	wireGossip   = 'G'
	wireLink     = 'L'
	frameRaftReq = 1
	frameCallReq = 3
	frameHeader  = 26
)

// linkFrame is one frame of the link protocol.
func linkFrame(typ, kind byte, group uint32, id, aux uint64, body []byte) []byte {
	b := make([]byte, frameHeader, frameHeader+len(body))
	binary.BigEndian.PutUint32(b, uint32(frameHeader-4+len(body)))
	b[4], b[5] = typ, kind
	binary.BigEndian.PutUint32(b[6:], group)
	binary.BigEndian.PutUint64(b[10:], id)
	binary.BigEndian.PutUint64(b[18:], aux)
	return append(b, body...)
}

// TestGarbageOnARunningNode aims hostile traffic at one node of a three-node cluster while
// clients write and read through every node: random bytes, truncated and stalled handshakes and
// frames, huge length prefixes, an unknown connection type, garbage on Raft streams and UDP,
// and a connection flood past MaxInbound. Every client operation must still succeed (retrying
// within its deadline), the heap must not grow without bound, and the attacked node must still
// serve afterwards.
func TestGarbageOnARunningNode(t *testing.T) {
	const maxInbound = 24
	c := cluster.Start(t, 3, cluster.Options{Mutate: func(i int, o *gridkv.GridKVOptions) {
		if i == 2 {
			o.Network = &transport.NetworkOptions{MaxInbound: maxInbound, ReadTimeout: time.Second}
		}
	}})
	nodes := c.Live()
	cluster.WaitFor(t, 30*time.Second, "every node to see three alive members", func() bool {
		for _, n := range nodes {
			if cluster.AliveMembers(n.KV) != 3 {
				return false
			}
		}
		return true
	})
	target := nodes[2].Addr

	// Clients on every node: each writes a fresh value and reads it back, retrying a failed
	// operation until it succeeds or its deadline passes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops atomic.Int64
	failures := make(chan error, 64)
	for ni, n := range nodes {
		for ci := 0; ci < 2; ci++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					key := fmt.Sprintf("hostile-%d-%d-%d", ni, ci, seq%16)
					value := []byte(fmt.Sprintf("v%d", seq))
					if err := retry(func(ctx context.Context) error { return n.KV.Set(ctx, key, value) }); err != nil {
						failures <- fmt.Errorf("Set %s through %s: %w", key, n.ID, err)
						return
					}
					err := retry(func(ctx context.Context) error {
						got, err := n.KV.Get(ctx, key)
						if err == nil && !bytes.Equal(got, value) {
							return fmt.Errorf("%w: read %q, wrote %q", errWrongValue, got, value)
						}
						return err
					})
					if err != nil {
						failures <- fmt.Errorf("Get %s through %s: %w", key, n.ID, err)
						return
					}
					ops.Add(2)
				}
			}()
		}
	}

	// The baseline is taken once client traffic has warmed the node's buffers up.
	time.Sleep(2 * time.Second)
	heapBefore := settledHeap()

	attacks := []struct {
		name string
		run  func(t *testing.T, addr string)
	}{
		{"random bytes", attackRandomBytes},
		{"bad connection type", attackBadType},
		{"truncated handshake", attackTruncatedHandshake},
		{"truncated frame", attackTruncatedFrame},
		{"huge length prefix", attackHugePrefix},
		{"garbage raft frames", attackRaftGarbage},
		{"slow sender", attackSlowSender},
		{"garbage udp", attackUDP},
		{"connection flood", func(t *testing.T, addr string) { attackFlood(t, addr, 8*maxInbound) }},
	}
	for _, a := range attacks {
		start := time.Now()
		a.run(t, target)
		t.Logf("%s: %v, %d client operations so far, heap in use %d MiB", a.name, time.Since(start).Round(time.Millisecond), ops.Load(), settledHeap()>>20)
	}
	// Leave the clients a moment on a cluster no longer under attack.
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	if ops.Load() == 0 {
		t.Fatal("no client operation completed")
	}

	// The attacked node still serves, as the entry point and as a peer.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[2].KV.Set(ctx, "after-the-attack", []byte("ok")); err != nil {
		t.Fatalf("Set through the attacked node: %v", err)
	}
	for _, n := range nodes {
		if got, err := n.KV.Get(ctx, "after-the-attack"); err != nil || string(got) != "ok" {
			t.Fatalf("Get through %s: %q, %v", n.ID, got, err)
		}
	}

	heapAfter := settledHeap()
	grew := int64(heapAfter) - int64(heapBefore)
	t.Logf("heap in use: %d MiB before, %d MiB after; %d client operations", heapBefore>>20, heapAfter>>20, ops.Load())
	if grew > 256<<20 {
		t.Fatalf("heap grew by %d MiB under attack", grew>>20)
	}
}

var errWrongValue = errors.New("wrong value")

// retry runs op with a fresh 5 s context until it succeeds or 20 s have passed. A wrong value
// is not retried: it is a bug, not unavailability.
func retry(op func(ctx context.Context) error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := op(ctx)
		cancel()
		if err == nil || errors.Is(err, errWrongValue) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settledHeap returns the bytes of heap in use after a collection.
func settledHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return conn
}

// awaitClosed fails the test unless the peer closes conn within d. Whatever the peer sends
// first is read and ignored.
func awaitClosed(t *testing.T, conn net.Conn, d time.Duration, what string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: connection still open after %v", what, d)
	}
}

// link performs the link set-up by hand, so the test can write any frame.
func link(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn := dial(t, addr)
	self := "127.0.0.1:1"
	if _, err := conn.Write(append([]byte{wireLink, byte(len(self))}, self...)); err != nil {
		t.Fatal(err)
	}
	return conn
}

func attackRandomBytes(t *testing.T, addr string) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 30 {
		conn := dial(t, addr)
		junk := make([]byte, 1+rng.IntN(4096))
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		if junk[0] == wireGossip || junk[0] == wireLink || junk[0] == 'S' {
			junk[0] = 0xEE // those start a valid-looking handshake; other attacks cover them
		}
		_, _ = conn.Write(junk)
		awaitClosed(t, conn, 5*time.Second, "random bytes")
		conn.Close()
	}
}

func attackBadType(t *testing.T, addr string) {
	conn := dial(t, addr)
	defer conn.Close()
	_, _ = conn.Write([]byte{0x00, 'M', 'G'})
	awaitClosed(t, conn, 5*time.Second, "bad connection type")
}

func attackTruncatedHandshake(t *testing.T, addr string) {
	for _, hello := range [][]byte{
		{wireLink},
		{wireLink, 40, '1', '2'},
		{wireGossip, 9, '1', '2', '7'},
		{wireLink, 0},
		{'S', 9, '1'},
	} {
		conn := dial(t, addr)
		_, _ = conn.Write(hello)
		awaitClosed(t, conn, 5*time.Second, fmt.Sprintf("truncated handshake %q", hello))
		conn.Close()
	}
}

func attackTruncatedFrame(t *testing.T, addr string) {
	for range 5 {
		conn := link(t, addr)
		frame := linkFrame(frameCallReq, 1, 0, 1, uint64(time.Second), []byte("the whole request"))
		_, _ = conn.Write(frame[:len(frame)-5]) // the rest never comes
		awaitClosed(t, conn, 5*time.Second, "truncated frame")
		conn.Close()
	}
}

func attackHugePrefix(t *testing.T, addr string) {
	for _, n := range []uint32{0xFFFFFFFF, 1 << 31, 65 << 20} {
		conn := link(t, addr)
		frame := linkFrame(frameCallReq, 1, 0, 1, uint64(time.Second), nil)
		binary.BigEndian.PutUint32(frame, n)
		_, _ = conn.Write(frame)
		awaitClosed(t, conn, 5*time.Second, fmt.Sprintf("length prefix %d", n))
		conn.Close()
	}
}

// attackRaftGarbage sends Raft requests whose bodies are random bytes, for groups the node
// hosts, does not host, and cannot have: each is refused, or its link closed.
func attackRaftGarbage(t *testing.T, addr string) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, group := range []uint32{0, 1, 5, cluster.DefaultPartitions, 1 << 31} {
		for kind := byte(0); kind <= 6; kind++ {
			conn := link(t, addr)
			junk := make([]byte, 1+rng.IntN(2048))
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			_, _ = conn.Write(linkFrame(frameRaftReq, kind, group, 1, rng.Uint64(), junk))
			// An answer (a refusal) or the link's end, whichever comes first.
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			var answer [frameHeader]byte
			if _, err := io.ReadFull(conn, answer[:]); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("raft garbage for group %d, kind %d: neither answered nor closed in 5s", group, kind)
				}
			}
			conn.Close()
		}
	}
}

// attackSlowSender trickles a handshake, and a frame on a link, one byte at a time, slower
// than the node's one-second ReadTimeout allows for either.
func attackSlowSender(t *testing.T, addr string) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		conn := dial(t, addr)
		defer conn.Close()
		hello := []byte{wireLink, 9, '1', '2', '7', '.', '0', '.', '0', '.', '1'}
		start := time.Now()
		for _, b := range hello {
			if _, err := conn.Write([]byte{b}); err != nil {
				break // closed: what we want
			}
			time.Sleep(300 * time.Millisecond)
		}
		awaitClosed(t, conn, 5*time.Second, "slow handshake")
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("slow handshake lasted %v", d)
		}
	}()
	go func() {
		defer wg.Done()
		conn := link(t, addr)
		defer conn.Close()
		start := time.Now()
		for _, b := range linkFrame(frameCallReq, 1, 0, 1, uint64(time.Second), []byte("slow")) {
			if _, err := conn.Write([]byte{b}); err != nil {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		awaitClosed(t, conn, 5*time.Second, "slow frame")
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("slow frame lasted %v", d)
		}
	}()
	wg.Wait()
}

func attackUDP(t *testing.T, addr string) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		junk := make([]byte, 1+rng.IntN(1400))
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		_, _ = conn.Write(junk)
	}
}

// attackFlood opens n connections at once and holds them for two seconds: far more than the
// node's MaxInbound. It refuses the excess at once and closes the rest after ReadTimeout.
func attackFlood(t *testing.T, addr string, n int) {
	conns := make([]net.Conn, 0, n)
	for range n {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			continue // the backlog may be full: that is part of a flood
		}
		conns = append(conns, conn)
	}
	time.Sleep(2 * time.Second)
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			awaitClosed(t, conn, 5*time.Second, "flood connection")
		}()
	}
	wg.Wait()
}
