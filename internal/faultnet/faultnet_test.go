package faultnet

import (
	"sync"
	"testing"
	"time"

	"github.com/feellmoose/gridkv/transport"
)

func allowed(n *Net, from, to string, c transport.Class) bool {
	_, ok := n.Allow(from, to, c)
	return ok
}

func TestCutsIsolationAndHeal(t *testing.T) {
	n := New(1)
	n.CutOneWay("a", "b", transport.ClassMux)
	if allowed(n, "a", "b", transport.ClassMux) || !allowed(n, "b", "a", transport.ClassMux) || !allowed(n, "a", "b", transport.ClassPacket) {
		t.Fatal("a one-way mux cut must stop only a -> b mux traffic")
	}
	n.Partition([]string{"a"}, []string{"b", "c"})
	if allowed(n, "c", "a", transport.ClassGossip) || !allowed(n, "b", "c", transport.ClassGossip) {
		t.Fatal("a partition cuts across groups only")
	}
	n.Heal()
	n.Isolate("c", transport.ClassPacket)
	if allowed(n, "a", "c", transport.ClassPacket) || allowed(n, "c", "new", transport.ClassPacket) || !allowed(n, "a", "c", transport.ClassMux) {
		t.Fatal("isolation cuts the given classes to every node, later ones included")
	}
	n.Forget("c")
	if !allowed(n, "a", "c", transport.ClassPacket) {
		t.Fatal("Forget lifts isolation")
	}
	n.Cut("a", "b")
	n.Mend("a", "b", transport.ClassMux)
	if !allowed(n, "a", "b", transport.ClassMux) || allowed(n, "b", "a", transport.ClassGossip) {
		t.Fatal("Mend restores only the given classes")
	}
}

func TestLossyLinksAreSeededAndPerClass(t *testing.T) {
	draw := func() []bool {
		n := New(42)
		n.SetDefault(Link{Drop: 0.5, Classes: []transport.Class{transport.ClassPacket}})
		n.SetLink("a", "b", Link{Delay: time.Millisecond, Jitter: time.Millisecond, Classes: []transport.Class{transport.ClassMux}})
		var out []bool
		for range 200 {
			out = append(out, allowed(n, "a", "b", transport.ClassPacket))
			if d, ok := n.Allow("a", "b", transport.ClassMux); !ok || d < time.Millisecond || d >= 2*time.Millisecond {
				t.Fatalf("mux: delay %v, ok %v", d, ok)
			}
			if d, ok := n.Allow("a", "b", transport.ClassGossip); !ok || d != 0 {
				t.Fatalf("gossip has no rule: delay %v, ok %v", d, ok)
			}
		}
		return out
	}
	first, second := draw(), draw()
	dropped := 0
	for i := range first {
		if first[i] != second[i] {
			t.Fatal("the same seed gave different drops")
		}
		if !first[i] {
			dropped++
		}
	}
	if dropped < 50 || dropped > 150 {
		t.Fatalf("%d of 200 packets dropped at p=0.5", dropped)
	}
}

func TestConcurrentUse(t *testing.T) {
	n := New(7)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				switch (i + w) % 4 {
				case 0:
					n.Cut("a", "b")
				case 1:
					n.SetDefault(Link{Drop: 0.1})
				case 2:
					n.Heal()
				}
				n.Allow("a", "b", transport.ClassMux)
			}
		}()
	}
	wg.Wait()
}
