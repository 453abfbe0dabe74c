// Package faultnet is a controllable fake network for tests: it implements transport.Faults so
// that every node of an in-process cluster asks one Net whether a packet, dial, connection or
// write may pass between two nodes, and how long it is held first. Tests cut links one way or
// both ways, per traffic class, partition the nodes into groups, isolate a node, make links
// lossy or slow, and heal it all again.
//
// Nodes are named by their advertised host:port, the names transport passes to Allow.
package faultnet

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feellmoose/gridkv/transport"
)

// classes is a set of traffic classes, one bit per transport.Class.
type classes uint8

const allClasses classes = 1<<transport.ClassPacket | 1<<transport.ClassGossip | 1<<transport.ClassMux

func classSet(cs []transport.Class) classes {
	if len(cs) == 0 {
		return allClasses
	}
	var s classes
	for _, c := range cs {
		s |= 1 << c
	}
	return s
}

func (s classes) has(c transport.Class) bool { return s&(1<<c) != 0 }

// Link describes how one directed link, or every link (SetDefault), misbehaves for the classes
// it applies to. The zero Link is a perfect link. Each class of a link has its own rule, so
// gossip packets may be lossy while the same link's mux writes are merely slow.
type Link struct {
	// Drop is the probability in [0, 1] that Allow refuses one packet, dial or write.
	Drop float64
	// Delay is added to everything that passes; Jitter adds a uniformly random extra in
	// [0, Jitter).
	Delay, Jitter time.Duration
	// Classes are the traffic classes the rule applies to; empty means all. Other classes
	// keep their rule.
	Classes []transport.Class
}

type rule struct {
	drop          float64
	delay, jitter time.Duration
}

func (l Link) rule() rule { return rule{drop: l.Drop, delay: l.Delay, jitter: l.Jitter} }

type pair struct{ from, to string }

// classLink is one class of traffic on one directed link.
type classLink struct {
	pair
	class transport.Class
}

// numClasses sizes arrays indexed by transport.Class.
const numClasses = int(transport.ClassMux) + 1

// Net is the shared fault matrix. The zero value is not usable; call New. Every method is safe
// for concurrent use and none blocks beyond a short mutex hold: Allow only reports a delay, the
// transport does the waiting.
type Net struct {
	mu       sync.Mutex         // guards every field below
	rng      *rand.Rand         // seeded; drawn from under mu so a seed replays one sequence of draws
	cuts     map[pair]classes   // directed cuts
	isolated map[string]classes // node -> classes cut both ways between it and every other node
	links    map[classLink]rule // lossy or slow classes of directed links
	def      [numClasses]*rule  // per class: applies to every link without its own rule

	// Counters of decisions, by class (index transport.Class); they show a test that its
	// faults touched traffic at all.
	refused [numClasses]atomic.Int64
	delayed [numClasses]atomic.Int64
	allowed [numClasses]atomic.Int64
}

// New returns a perfect network whose random drops and jitter come from seed.
func New(seed uint64) *Net {
	return &Net{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		cuts:     make(map[pair]classes),
		isolated: make(map[string]classes),
		links:    make(map[classLink]rule),
	}
}

var _ transport.Faults = (*Net)(nil)

// Allow implements transport.Faults.
func (n *Net) Allow(from, to string, class transport.Class) (time.Duration, bool) {
	idx := int(class)
	if idx < 0 || idx >= len(n.refused) {
		idx = 0
	}
	n.mu.Lock()
	if n.cutLocked(from, to, class) {
		n.mu.Unlock()
		n.refused[idx].Add(1)
		return 0, false
	}
	r, ok := n.links[classLink{pair{from, to}, class}]
	if !ok && idx != 0 && n.def[idx] != nil {
		r, ok = *n.def[idx], true
	}
	if !ok || from == to {
		n.mu.Unlock()
		n.allowed[idx].Add(1)
		return 0, true
	}
	if r.drop > 0 && n.rng.Float64() < r.drop {
		n.mu.Unlock()
		n.refused[idx].Add(1)
		return 0, false
	}
	d := r.delay
	if r.jitter > 0 {
		d += time.Duration(n.rng.Int64N(int64(r.jitter)))
	}
	n.mu.Unlock()
	if d > 0 {
		n.delayed[idx].Add(1)
	} else {
		n.allowed[idx].Add(1)
	}
	return d, true
}

func (n *Net) cutLocked(from, to string, class transport.Class) bool {
	if from == to {
		return false // a node always reaches itself
	}
	if n.cuts[pair{from, to}].has(class) {
		return true
	}
	return n.isolated[from].has(class) || n.isolated[to].has(class)
}

// CutOneWay stops traffic from one node to another (not the reverse) for the given classes,
// or all classes if none are given. Cuts add up: cutting a class twice is the same as once.
func (n *Net) CutOneWay(from, to string, cs ...transport.Class) {
	n.mu.Lock()
	n.cuts[pair{from, to}] |= classSet(cs)
	n.mu.Unlock()
}

// Cut stops traffic both ways between a and b for the given classes (all if none).
func (n *Net) Cut(a, b string, cs ...transport.Class) {
	n.mu.Lock()
	s := classSet(cs)
	n.cuts[pair{a, b}] |= s
	n.cuts[pair{b, a}] |= s
	n.mu.Unlock()
}

// Mend restores traffic both ways between a and b for the given classes (all if none),
// undoing Cut and CutOneWay on that pair. It leaves isolation and lossy links alone.
func (n *Net) Mend(a, b string, cs ...transport.Class) {
	n.mu.Lock()
	s := classSet(cs)
	for _, p := range []pair{{a, b}, {b, a}} {
		if left := n.cuts[p] &^ s; left != 0 {
			n.cuts[p] = left
		} else {
			delete(n.cuts, p)
		}
	}
	n.mu.Unlock()
}

// Partition cuts every link, both ways and for every class, between nodes of different groups.
// Links inside a group are not touched, nor links to nodes in no group.
func (n *Net) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, g := range groups {
		for j, h := range groups {
			if i == j {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					n.cuts[pair{a, b}] = allClasses
				}
			}
		}
	}
}

// Isolate cuts node off from every other node, both ways, for the given classes (all if none),
// including nodes that start later.
func (n *Net) Isolate(node string, cs ...transport.Class) {
	n.mu.Lock()
	n.isolated[node] |= classSet(cs)
	n.mu.Unlock()
}

// Rejoin undoes Isolate for node (every class).
func (n *Net) Rejoin(node string) {
	n.mu.Lock()
	delete(n.isolated, node)
	n.mu.Unlock()
}

// Forget removes every cut, isolation and link rule that names node, as if it never had any:
// for a node that restarts on the same address.
func (n *Net) Forget(node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.isolated, node)
	for p := range n.cuts {
		if p.from == node || p.to == node {
			delete(n.cuts, p)
		}
	}
	for l := range n.links {
		if l.from == node || l.to == node {
			delete(n.links, l)
		}
	}
}

// SetLink makes l.Classes of the directed link from -> to lossy or slow as l says, replacing
// their earlier rule. It overrides SetDefault for those classes of that link.
func (n *Net) SetLink(from, to string, l Link) {
	r := l.rule()
	n.mu.Lock()
	for _, c := range classList(l.Classes) {
		n.links[classLink{pair{from, to}, c}] = r
	}
	n.mu.Unlock()
}

// SetDefault makes l.Classes of every link without its own rule behave as l says.
func (n *Net) SetDefault(l Link) {
	r := l.rule()
	n.mu.Lock()
	for _, c := range classList(l.Classes) {
		n.def[c] = &r
	}
	n.mu.Unlock()
}

func classList(cs []transport.Class) []transport.Class {
	if len(cs) == 0 {
		return []transport.Class{transport.ClassPacket, transport.ClassGossip, transport.ClassMux}
	}
	var out []transport.Class
	for _, c := range cs {
		if c >= transport.ClassPacket && c <= transport.ClassMux {
			out = append(out, c)
		}
	}
	return out
}

// Heal makes the network perfect again: no cuts, no isolation, no lossy or slow links.
func (n *Net) Heal() {
	n.mu.Lock()
	clear(n.cuts)
	clear(n.isolated)
	clear(n.links)
	n.def = [numClasses]*rule{}
	n.mu.Unlock()
}

// Stats counts Allow's decisions for one class since New.
type Stats struct {
	Allowed, Delayed, Refused int64
}

// Stats returns the decisions made so far for class.
func (n *Net) Stats(class transport.Class) Stats {
	i := int(class)
	if i < 0 || i >= len(n.refused) {
		return Stats{}
	}
	return Stats{Allowed: n.allowed[i].Load(), Delayed: n.delayed[i].Load(), Refused: n.refused[i].Load()}
}
