package transport

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// linkFaults is a Faults for tests: links are cut or delayed per direction,
// for every class of traffic.
type linkFaults struct {
	mu     sync.Mutex // protects cut and delay
	cut    map[[2]string]bool
	delay  map[[2]string]time.Duration
	counts map[Class]int // decisions asked for, by class; guarded by mu
}

func newLinkFaults() *linkFaults {
	return &linkFaults{cut: map[[2]string]bool{}, delay: map[[2]string]time.Duration{}, counts: map[Class]int{}}
}

func (f *linkFaults) Allow(from, to string, class Class) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[class]++
	k := [2]string{from, to}
	return f.delay[k], !f.cut[k]
}

func (f *linkFaults) setCut(from, to string, cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut[[2]string{from, to}] = cut
}

func (f *linkFaults) setDelay(from, to string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay[[2]string{from, to}] = d
}

func (f *linkFaults) asked(class Class) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[class]
}

// faultPair returns two transports sharing one linkFaults, both serving echo.
func faultPair(t *testing.T) (a, b *Transport, f *linkFaults) {
	t.Helper()
	f = newLinkFaults()
	opts := testOptions()
	opts.Faults = f
	a, _ = newTestTransport(t, opts)
	b, _ = newTestTransport(t, opts)
	a.Handle(kindEcho, echo)
	b.Handle(kindEcho, echo)
	return a, b, f
}

// callOK reports whether from can Call to within a short timeout.
func callOK(from, to *Transport) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := from.Call(ctx, to.Addr(), kindEcho, []byte("ping"))
	return err == nil
}

func TestFaultsCutAndHealCalls(t *testing.T) {
	a, b, f := faultPair(t)
	if !callOK(a, b) || !callOK(b, a) {
		t.Fatal("calls fail on a perfect network")
	}

	// Two-way cut: both directions fail, over the sessions already open
	// (their next flush closes them) and over new dials.
	f.setCut(a.Addr(), b.Addr(), true)
	f.setCut(b.Addr(), a.Addr(), true)
	for range 3 {
		if callOK(a, b) {
			t.Fatal("A->B call succeeded across a two-way cut")
		}
		if callOK(b, a) {
			t.Fatal("B->A call succeeded across a two-way cut")
		}
	}

	// One-way cut A->B: B's requests reach A but the responses cannot
	// come back, so calls fail in both directions.
	f.setCut(b.Addr(), a.Addr(), false)
	if callOK(b, a) {
		t.Fatal("B->A call succeeded although A's responses to B are cut")
	}
	if callOK(a, b) {
		t.Fatal("A->B call succeeded across a cut")
	}

	// Heal: the next calls redial and succeed.
	f.setCut(a.Addr(), b.Addr(), false)
	eventually(t, 10*time.Second, "A->B calls after heal", func() bool { return callOK(a, b) })
	eventually(t, 10*time.Second, "B->A calls after heal", func() bool { return callOK(b, a) })
	if f.asked(ClassMux) == 0 {
		t.Fatal("the hook was never asked about mux traffic")
	}
}

func TestFaultsDelayCalls(t *testing.T) {
	a, b, f := faultPair(t)
	if !callOK(a, b) {
		t.Fatal("call fails on a perfect network")
	}
	const delay = 150 * time.Millisecond
	f.setDelay(a.Addr(), b.Addr(), delay)
	start := time.Now()
	if _, err := a.Call(context.Background(), b.Addr(), kindEcho, []byte("x")); err != nil {
		t.Fatalf("delayed call: %v", err)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("call took %v, want at least the %v delay", took, delay)
	}
	// The response direction is not delayed on its own: B->A is perfect.
	f.setDelay(a.Addr(), b.Addr(), 0)
	if _, err := b.Call(context.Background(), a.Addr(), kindEcho, []byte("x")); err != nil {
		t.Fatalf("call after removing the delay: %v", err)
	}
}

// recvPacket waits briefly for a gossip packet on tr.
func recvPacket(tr *Transport, wait time.Duration) ([]byte, bool) {
	select {
	case p := <-tr.Gossip().PacketCh():
		return p.Buf, true
	case <-time.After(wait):
		return nil, false
	}
}

func TestFaultsPackets(t *testing.T) {
	a, b, f := faultPair(t)
	ga, gb := a.Gossip(), b.Gossip()
	send := func(from interface {
		WriteTo([]byte, string) (time.Time, error)
	}, to *Transport, msg string) {
		t.Helper()
		if _, err := from.WriteTo([]byte(msg), to.Addr()); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
	}

	send(ga, b, "hello")
	if p, ok := recvPacket(b, 2*time.Second); !ok || string(p) != "hello" {
		t.Fatalf("packet on a perfect network: got %q, %v", p, ok)
	}

	// One-way cut A->B: A's packets are dropped (by A on send, and by B on
	// receipt), B's still arrive.
	f.setCut(a.Addr(), b.Addr(), true)
	send(ga, b, "dropped")
	if p, ok := recvPacket(b, 300*time.Millisecond); ok {
		t.Fatalf("packet %q crossed a cut link", p)
	}
	send(gb, a, "back")
	if p, ok := recvPacket(a, 2*time.Second); !ok || string(p) != "back" {
		t.Fatalf("packet on the uncut direction: got %q, %v", p, ok)
	}

	// Inbound drop alone: a packet sent from outside the hook (straight
	// from A's socket) is still dropped by B.
	if err := a.writePacket([]byte("raw"), b.Addr()); err != nil {
		t.Fatal(err)
	}
	if p, ok := recvPacket(b, 300*time.Millisecond); ok {
		t.Fatalf("B accepted packet %q from a cut source", p)
	}

	// Delay: the sender is not held up, the packet arrives late.
	f.setCut(a.Addr(), b.Addr(), false)
	const delay = 200 * time.Millisecond
	f.setDelay(a.Addr(), b.Addr(), delay)
	start := time.Now()
	send(ga, b, "late")
	if took := time.Since(start); took >= delay {
		t.Fatalf("WriteTo blocked for %v", took)
	}
	p, ok := recvPacket(b, 3*time.Second)
	if !ok || string(p) != "late" {
		t.Fatalf("delayed packet: got %q, %v", p, ok)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("delayed packet arrived after %v, want at least %v", took, delay)
	}
}

func TestFaultsGossipStreams(t *testing.T) {
	a, b, f := faultPair(t)
	ga := a.Gossip()
	b.Gossip() // B has a memberlist listening, so only the hook can refuse

	// Dial side: a cut link refuses the dial.
	f.setCut(a.Addr(), b.Addr(), true)
	if c, err := ga.DialTimeout(b.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Fatal("gossip dial across a cut link succeeded")
	}

	// Accept side: a dialer whose own hook allows the link (here: none at
	// all) is still refused by B, which knows it from the advertised
	// address in the stream header.
	plain, _ := newTestTransport(t, testOptions())
	f.setCut(plain.Addr(), b.Addr(), true)
	if c, err := plain.Gossip().DialTimeout(b.Addr(), time.Second); err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var buf [1]byte
		_, err := c.Read(buf[:])
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("B kept a gossip stream from a cut peer open (read: %v)", err)
		}
	}

	// Healed: the stream reaches memberlist's channel.
	f.setCut(a.Addr(), b.Addr(), false)
	c, err := ga.DialTimeout(b.Addr(), time.Second)
	if err != nil {
		t.Fatalf("gossip dial: %v", err)
	}
	defer c.Close()
	select {
	case s := <-b.Gossip().StreamCh():
		_ = s.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("B did not deliver the gossip stream")
	}
}
