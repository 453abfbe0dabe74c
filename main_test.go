package gridkv_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's run if any goroutine outlives its tests: Close must stop every
// goroutine the library started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
