package transport

import (
	"testing"
	"time"
)

// A timer that fired without anyone receiving must not deliver that old tick to the next user
// of the pool, under either timer semantics: the host program's go.mod, or
// GODEBUG=asynctimerchan=1, may select the ones from before Go 1.23, whose channels keep a
// tick past Stop.
func TestPooledTimerHasNoStaleTick(t *testing.T) {
	first := getTimer(time.Millisecond)
	time.Sleep(20 * time.Millisecond) // it fires; nobody receives
	putTimer(first)
	for range 10 { // the pool may hand back the same timer or a new one
		tm := getTimer(time.Hour)
		select {
		case <-tm.C:
			t.Fatal("a reused timer delivered a tick from its previous use")
		case <-time.After(5 * time.Millisecond):
		}
		putTimer(tm)
	}
}
