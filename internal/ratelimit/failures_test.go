package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lastSecret numbers the secrets newSecret makes.
var lastSecret atomic.Uint64

// newSecret returns a fingerprint no failure has had yet, for tests in which
// every failure counts.
func newSecret() Fingerprint { return Fingerprint(lastSecret.Add(1)) }

var testFailureConfig = FailureConfig{
	MaxFailures: 5,
	Window:      10 * time.Minute,
	BaseDelay:   2 * time.Second,
	MaxDelay:    15 * time.Second,
	Block:       time.Hour,
	MaxKeys:     100,
}

func TestFailuresDelays(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](FailureConfig{
		BaseDelay: 2 * time.Second, MaxDelay: 15 * time.Second, Window: time.Hour,
	}))
	if d := f.Delay("u"); d != 0 {
		t.Errorf("Delay with no failures = %v", d)
	}
	// Dovecot's sequence: 2, 4, 8, then capped at 15.
	want := []time.Duration{2, 4, 8, 15, 15, 15}
	for i, w := range want {
		if f.Fail("u", newSecret()) {
			t.Fatal("blocked without MaxFailures")
		}
		if d := f.Delay("u"); d != w*time.Second {
			t.Errorf("after failure %d: Delay = %v, want %v", i+1, d, w*time.Second)
		}
	}
	for range 100 { // no overflow however many failures
		f.Fail("u", newSecret())
	}
	if d := f.Delay("u"); d != 15*time.Second {
		t.Errorf("after 106 failures: Delay = %v", d)
	}
	if d := f.Delay("v"); d != 0 {
		t.Errorf("other key: Delay = %v", d)
	}
}

func TestFailuresConstantDelay(t *testing.T) {
	f := NewFailures[string](FailureConfig{BaseDelay: time.Second}) // MaxDelay 0 < BaseDelay
	for range 5 {
		f.Fail("u", newSecret())
		if d := f.Delay("u"); d != time.Second {
			t.Fatalf("Delay = %v, want a constant 1s", d)
		}
	}
}

func TestFailuresBlock(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](testFailureConfig))
	for i := 1; i < 5; i++ {
		if f.Fail("ip", newSecret()) {
			t.Fatalf("blocked after %d failures, MaxFailures 5", i)
		}
		if b, _ := f.Blocked("ip"); b {
			t.Fatalf("Blocked after %d failures", i)
		}
		c.Advance(time.Second)
	}
	if !f.Fail("ip", newSecret()) {
		t.Fatal("not blocked at MaxFailures")
	}
	blocked, left := f.Blocked("ip")
	if !blocked || left != time.Hour {
		t.Errorf("Blocked = %v, %v, want true, 1h", blocked, left)
	}
	// Per-key independence.
	if b, _ := f.Blocked("other"); b {
		t.Error("other key blocked")
	}
	if f.Fail("other", newSecret()) {
		t.Error("other key blocked at its first failure")
	}
	// A failure while blocked does not extend the block.
	c.Advance(30 * time.Minute)
	if !f.Fail("ip", newSecret()) {
		t.Error("Fail while blocked reported not blocked")
	}
	if _, left := f.Blocked("ip"); left != 30*time.Minute {
		t.Errorf("remaining = %v after a failure while blocked, want 30m", left)
	}
}

func TestFailuresBlockExpires(t *testing.T) {
	c := newFakeClock()
	cfg := testFailureConfig
	cfg.Block = 5 * time.Minute // shorter than Window
	f := fakeFailures(c, NewFailures[string](cfg))
	for range 5 {
		f.Fail("ip", newSecret())
	}
	c.Advance(5*time.Minute - 1)
	if b, _ := f.Blocked("ip"); !b {
		t.Fatal("block ended early")
	}
	c.Advance(1)
	if b, left := f.Blocked("ip"); b {
		t.Fatalf("still blocked after Block: %v left", left)
	}
	// Window has not passed since the last failure: the next one blocks again.
	if !f.Fail("ip", newSecret()) {
		t.Error("failure right after a block did not block again")
	}
	// Once Window passes without failures, everything is forgotten.
	c.Advance(cfg.Window + cfg.Block)
	if b, _ := f.Blocked("ip"); b {
		t.Error("blocked after Window and Block passed")
	}
	if d := f.Delay("ip"); d != 0 {
		t.Errorf("Delay = %v after Window passed, want 0", d)
	}
	for i := 1; i < 5; i++ {
		if f.Fail("ip", newSecret()) {
			t.Fatalf("blocked after %d fresh failures", i)
		}
	}
}

func TestFailuresUnder(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](testFailureConfig))
	// One failure every Window never accumulates.
	for range 50 {
		if f.Fail("ip", newSecret()) {
			t.Fatal("blocked although failures were a Window apart")
		}
		if d := f.Delay("ip"); d != testFailureConfig.BaseDelay {
			t.Fatalf("Delay = %v, want BaseDelay", d)
		}
		c.Advance(testFailureConfig.Window)
	}
}

func TestFailuresReset(t *testing.T) {
	f := NewFailures[string](testFailureConfig)
	for range 5 {
		f.Fail("user", newSecret())
		f.Fail("ip", newSecret())
	}
	if n := f.Count("user"); n != 5 {
		t.Errorf("Count = %d, want 5", n)
	}
	f.Reset("user") // a successful login: the caller resets the per-user key only
	if b, _ := f.Blocked("user"); b {
		t.Error("user still blocked after Reset")
	}
	if d := f.Delay("user"); d != 0 {
		t.Errorf("user Delay = %v after Reset", d)
	}
	if b, _ := f.Blocked("ip"); !b {
		t.Error("Reset of one key unblocked another")
	}
	if n, m := f.Count("user"), f.Count("nobody"); n != 0 || m != 0 {
		t.Errorf("Count after Reset = %d, of an unknown key %d; want 0", n, m)
	}
	f.Reset("nobody") // no-op
}

func TestFailuresNeverForget(t *testing.T) {
	c := newFakeClock()
	cfg := testFailureConfig
	cfg.Window = 0
	f := fakeFailures(c, NewFailures[string](cfg))
	for range 4 {
		f.Fail("ip", newSecret())
		c.Advance(24 * time.Hour)
	}
	if !f.Fail("ip", newSecret()) {
		t.Error("Window 0 forgot failures")
	}
}

func TestFailuresEvictionKeepsBlocked(t *testing.T) {
	c := newFakeClock()
	cfg := testFailureConfig
	cfg.MaxKeys = 10
	f := fakeFailures(c, NewFailures[string](cfg))
	for range 5 {
		f.Fail("victim", newSecret())
	}
	// A flood of single failures from new keys fills and churns the table.
	for i := range 1000 {
		f.Fail(fmt.Sprint("flood", i), newSecret())
		if f.Len() > cfg.MaxKeys {
			t.Fatalf("Len = %d > MaxKeys", f.Len())
		}
	}
	if b, _ := f.Blocked("victim"); !b {
		t.Error("a flood of unblocked keys evicted a blocked key")
	}
	// A table of nothing but blocked keys still admits new ones.
	for i := range 20 {
		for range 5 {
			f.Fail(fmt.Sprint("blocked", i), newSecret())
		}
	}
	if f.Len() > cfg.MaxKeys {
		t.Errorf("Len = %d > MaxKeys", f.Len())
	}
	if b, _ := f.Blocked("blocked19"); !b {
		t.Error("newest blocked key missing")
	}
}

func TestFailuresUpdate(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](testFailureConfig))
	for range 3 {
		f.Fail("ip", newSecret())
	}
	cfg := testFailureConfig
	cfg.MaxFailures = 4
	cfg.MaxDelay = 3 * time.Second
	f.Update(cfg)
	if d := f.Delay("ip"); d != 3*time.Second {
		t.Errorf("Delay = %v after Update, want the new cap 3s", d)
	}
	if !f.Fail("ip", newSecret()) {
		t.Error("4th failure did not block under the new MaxFailures 4")
	}
}

func TestFailuresConcurrent(t *testing.T) {
	f := NewFailures[string](FailureConfig{MaxFailures: 1000000, Window: time.Hour, MaxKeys: 50, BaseDelay: time.Millisecond, MaxDelay: time.Second})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := fmt.Sprint("k", (i+w)%100)
				f.Fail(k, newSecret())
				f.Delay(k)
				f.Blocked(k)
				if i%50 == 0 {
					f.Reset(k)
				}
			}
		}()
	}
	wg.Wait()
	if f.Len() > 50 {
		t.Errorf("Len = %d > MaxKeys", f.Len())
	}
}

// count returns key's failures as counted, 0 if none.
func (f *Failures[K]) count(key K) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.t.m[key]; e != nil {
		return int(e.val.count)
	}
	return 0
}

func TestFailuresRepeatedSecret(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](testFailureConfig))
	stale := newSecret()
	// A client retrying one password every minute, for longer than Window:
	// counted once, then again once forgotten, never blocked.
	for i := range 30 {
		if f.Fail("u", stale) {
			t.Fatalf("blocked after %d tries of one password", i+1)
		}
		if n := f.count("u"); n != 1 {
			t.Fatalf("try %d: count %d, want 1", i+1, n)
		}
		if d := f.Delay("u"); d != testFailureConfig.BaseDelay {
			t.Fatalf("try %d: Delay = %v, want BaseDelay", i+1, d)
		}
		c.Advance(time.Minute)
	}
	// Now Window has passed since the stale password was last counted.
	// Distinct passwords count as before: MaxFailures 5 blocks at the fifth.
	var last Fingerprint
	for i := 1; i <= 5; i++ {
		last = newSecret()
		blocked := f.Fail("u", last)
		if blocked != (i == 5) {
			t.Fatalf("distinct password %d: blocked = %v", i, blocked)
		}
	}
	// The last one again, while blocked: not counted, still blocked.
	if !f.Fail("u", last) || f.count("u") != 5 {
		t.Errorf("repeat while blocked: count %d, want 5 and blocked", f.count("u"))
	}
	// Another key's record is its own: the same secret counts there.
	if f.Fail("v", stale); f.count("v") != 1 {
		t.Errorf("other key: count %d, want 1", f.count("v"))
	}
}

func TestFailuresRecentSecretsBounded(t *testing.T) {
	cfg := testFailureConfig
	cfg.MaxFailures = 0 // count only
	f := NewFailures[string](cfg)
	secrets := make([]Fingerprint, RecentSecrets+1)
	for i := range secrets {
		secrets[i] = newSecret()
	}
	// Cycling through one more than RecentSecrets: each has been forgotten
	// by the time it comes back, so every failure counts.
	for round := range 3 {
		for i, s := range secrets {
			f.Fail("u", s)
			if want := round*len(secrets) + i + 1; f.count("u") != want {
				t.Fatalf("round %d, secret %d: count %d, want %d", round, i, f.count("u"), want)
			}
		}
	}
	// The last RecentSecrets are remembered.
	for _, s := range secrets[1:] {
		f.Fail("u", s)
	}
	if want := 3 * len(secrets); f.count("u") != want {
		t.Errorf("count %d after repeating the recent secrets, want %d", f.count("u"), want)
	}
}

func TestFailuresForgottenSecrets(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](testFailureConfig))
	s := newSecret()
	f.Fail("u", s)
	f.Fail("u", newSecret())
	c.Advance(testFailureConfig.Window)
	// Window passed: the failures and their secrets are forgotten.
	f.Fail("u", s)
	if n := f.count("u"); n != 1 {
		t.Errorf("count %d after Window, want 1", n)
	}
	f.Reset("u")
	f.Fail("u", s)
	if n := f.count("u"); n != 1 {
		t.Errorf("count %d after Reset, want 1", n)
	}
}
