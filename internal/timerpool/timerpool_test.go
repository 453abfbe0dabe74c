package timerpool

import (
	"testing"
	"time"
)

// A timer that fired without anyone receiving must not deliver that old tick to the next user
// of the pool, under either timer semantics. GODEBUG is read again when it changes, so the
// old semantics apply to the timers made after t.Setenv.
func TestNoStaleTick(t *testing.T) {
	for _, godebug := range []string{"asynctimerchan=0", "asynctimerchan=1"} {
		t.Run(godebug, func(t *testing.T) {
			t.Setenv("GODEBUG", godebug)
			first := time.NewTimer(time.Millisecond) // made under this semantics
			time.Sleep(20 * time.Millisecond)        // it fires; nobody receives
			Put(first)
			for range 10 { // the pool may hand back that timer or another
				tm := Get(time.Hour)
				select {
				case <-tm.C:
					t.Fatal("a reused timer delivered a tick from its previous use")
				case <-time.After(5 * time.Millisecond):
				}
				Put(tm)
			}
		})
	}
}
