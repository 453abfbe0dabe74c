package transport

import (
	"testing"
	"time"
)

// A pooled timer that fired without anyone receiving must not deliver that old tick to its
// next user: the pool relies on Go 1.23's timer channels, which Stop and Reset clear (the
// go.mod's go version selects them).
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
