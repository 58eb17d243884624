package proxy

import (
	"testing"
	"time"
)

// SetPredialHold makes a predialled connection wait d for PASS until the
// test ends. Call it before starting the proxy: the variable is not guarded.
func SetPredialHold(t testing.TB, d time.Duration) {
	old := predialHold
	predialHold = d
	t.Cleanup(func() { predialHold = old })
}
