package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

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
		if f.Fail("u") {
			t.Fatal("blocked without MaxFailures")
		}
		if d := f.Delay("u"); d != w*time.Second {
			t.Errorf("after failure %d: Delay = %v, want %v", i+1, d, w*time.Second)
		}
	}
	for range 100 { // no overflow however many failures
		f.Fail("u")
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
		f.Fail("u")
		if d := f.Delay("u"); d != time.Second {
			t.Fatalf("Delay = %v, want a constant 1s", d)
		}
	}
}

func TestFailuresBlock(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](testFailureConfig))
	for i := 1; i < 5; i++ {
		if f.Fail("ip") {
			t.Fatalf("blocked after %d failures, MaxFailures 5", i)
		}
		if b, _ := f.Blocked("ip"); b {
			t.Fatalf("Blocked after %d failures", i)
		}
		c.Advance(time.Second)
	}
	if !f.Fail("ip") {
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
	if f.Fail("other") {
		t.Error("other key blocked at its first failure")
	}
	// A failure while blocked does not extend the block.
	c.Advance(30 * time.Minute)
	if !f.Fail("ip") {
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
		f.Fail("ip")
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
	if !f.Fail("ip") {
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
		if f.Fail("ip") {
			t.Fatalf("blocked after %d fresh failures", i)
		}
	}
}

func TestFailuresUnder(t *testing.T) {
	c := newFakeClock()
	f := fakeFailures(c, NewFailures[string](testFailureConfig))
	// One failure every Window never accumulates.
	for range 50 {
		if f.Fail("ip") {
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
		f.Fail("user")
		f.Fail("ip")
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
	f.Reset("nobody") // no-op
}

func TestFailuresNeverForget(t *testing.T) {
	c := newFakeClock()
	cfg := testFailureConfig
	cfg.Window = 0
	f := fakeFailures(c, NewFailures[string](cfg))
	for range 4 {
		f.Fail("ip")
		c.Advance(24 * time.Hour)
	}
	if !f.Fail("ip") {
		t.Error("Window 0 forgot failures")
	}
}

func TestFailuresEvictionKeepsBlocked(t *testing.T) {
	c := newFakeClock()
	cfg := testFailureConfig
	cfg.MaxKeys = 10
	f := fakeFailures(c, NewFailures[string](cfg))
	for range 5 {
		f.Fail("victim")
	}
	// A flood of single failures from new keys fills and churns the table.
	for i := range 1000 {
		f.Fail(fmt.Sprint("flood", i))
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
			f.Fail(fmt.Sprint("blocked", i))
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
		f.Fail("ip")
	}
	cfg := testFailureConfig
	cfg.MaxFailures = 4
	cfg.MaxDelay = 3 * time.Second
	f.Update(cfg)
	if d := f.Delay("ip"); d != 3*time.Second {
		t.Errorf("Delay = %v after Update, want the new cap 3s", d)
	}
	if !f.Fail("ip") {
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
				f.Fail(k)
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
