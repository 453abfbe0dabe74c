package transport

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func keyedOptions(key []byte) NetworkOptions {
	o := testOptions()
	o.ClusterKey = key
	o.ReadTimeout = time.Second
	return o
}

func TestClusterKeyAuth(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	a, _ := newTestTransport(t, keyedOptions(key))
	b, recB := newTestTransport(t, keyedOptions(key))
	b.Handle(kindEcho, echo)
	b.Gossip()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := a.Call(ctx, b.Addr(), kindEcho, []byte("hi")); err != nil || string(resp) != "hi" {
		t.Fatalf("Call with the same key = %q, %v", resp, err)
	}
	if c, err := a.Gossip().DialTimeout(b.Addr(), time.Second); err != nil {
		t.Fatalf("gossip dial with the same key: %v", err)
	} else {
		_ = c.Close()
		s := <-b.Gossip().StreamCh()
		_ = s.Close()
	}
	if n := b.AuthFailures(); n != 0 {
		t.Fatalf("AuthFailures = %d after good peers only", n)
	}

	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"wrong key", bytes.Repeat([]byte{8}, 32)},
		{"no key", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.AuthFailures()
			bad, _ := newTestTransport(t, keyedOptions(tc.key))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if _, err := bad.Call(ctx, b.Addr(), kindEcho, []byte("hi")); err == nil {
				t.Fatal("Call succeeded without the right key")
			}
			if c, err := bad.Gossip().DialTimeout(b.Addr(), time.Second); err == nil {
				// Without a key the dialer cannot tell it was refused until
				// it reads: B must close the stream instead of delivering it.
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				_, rerr := c.Read(make([]byte, 1))
				_ = c.Close()
				if tc.key != nil || rerr == nil {
					t.Fatalf("gossip stream without the right key stayed open (read: %v)", rerr)
				}
			}
			eventually(t, 5*time.Second, "B to count the refusal", func() bool { return b.AuthFailures() > before })
		})
	}
	if !recB.Contains("failed authentication") {
		t.Fatal("B did not log the refusal")
	}
}
