// Package timerpool reuses the timers of waits on GridKV's busy paths: every call and raft RPC
// of the transport, every term check's hedge. Each would otherwise allocate a timer.
//
// Only a timer stopped before it fired goes back to the pool, so no pooled timer holds a tick
// from its previous use whichever timer semantics the host program runs with: a go.mod below
// Go 1.23, or GODEBUG=asynctimerchan=1, keeps a fired timer's tick in its channel past Stop.
package timerpool

import (
	"sync"
	"time"
)

var pool sync.Pool // of *time.Timer, stopped before they fired

// Get returns a timer that fires after d; give it back with Put.
func Get(d time.Duration) *time.Timer {
	if t, ok := pool.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// Put stops t and keeps it for reuse unless it already fired. Nothing may receive from t
// afterwards.
func Put(t *time.Timer) {
	if t.Stop() {
		pool.Put(t)
	}
}
