package sharedlimits

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/testredis"
)

// pair returns two Stores on one private redis-server: two instances of a fleet.
func pair(t *testing.T, cfg Config) (*testredis.Instance, *Store, *Store) {
	t.Helper()
	r := testredis.New(t, cfg.Password)
	cfg.Address = r.Addr()
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second // the race detector on a busy machine
	}
	a, b := New(cfg, discard()), New(cfg, discard())
	t.Cleanup(func() { a.Close(); b.Close() })
	return r, a, b
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var ctx = context.Background()

func TestFailuresAreFleetWide(t *testing.T) {
	_, a, b := pair(t, Config{Password: "store-secret"})
	perIP := ratelimit.FailureConfig{MaxFailures: 10, Window: time.Minute, BaseDelay: time.Second, MaxDelay: 8 * time.Second, Block: time.Minute}
	perUser := ratelimit.FailureConfig{MaxFailures: 3, Window: time.Minute, BaseDelay: time.Second, MaxDelay: 8 * time.Second, Block: time.Minute}
	fail := func(s *Store, pass string) time.Duration {
		t.Helper()
		d, err := s.Fail(ctx, "ip:192.0.2.1/32", perIP, "user:mail/alice", perUser, "mail", "alice", pass)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := fail(a, "one"); d != time.Second {
		t.Errorf("first failure: delay %v, want 1s", d)
	}
	if d := fail(b, "one"); d != time.Second {
		t.Errorf("the same password on the other instance: delay %v, want 1s (not counted again)", d)
	}
	if d := fail(b, "two"); d != 2*time.Second {
		t.Errorf("second distinct password: delay %v, want 2s", d)
	}
	if left, _ := a.Blocked(ctx, "user:mail/alice"); left != 0 {
		t.Errorf("blocked after 2 of 3 failures: %v", left)
	}
	fail(a, "three")
	for _, s := range []*Store{a, b} {
		if left, err := s.Blocked(ctx, "user:mail/alice"); err != nil || left <= 0 || left > time.Minute {
			t.Errorf("after 3 failures: block %v, %v; want up to a minute", left, err)
		}
	}
	if inUse, wait, err := b.Login(ctx, "user:mail/alice", "user:mail/alice", "s1", 0, 0); inUse != 0 || wait != 0 || err != nil {
		t.Fatalf("Login = %d, %v, %v", inUse, wait, err)
	}
	if left, _ := a.Blocked(ctx, "user:mail/alice"); left != 0 {
		t.Errorf("a good login left the user blocked for %v", left)
	}
	if s, _ := a.Show(ctx, "ip:192.0.2.1/32"); s.Failures != 3 {
		t.Errorf("address failures after a good login: %d, want 3 (never reset by a success)", s.Failures)
	}
	if err := b.Clear(ctx, "ip:192.0.2.1/32"); err != nil {
		t.Fatal(err)
	}
	if s, _ := a.Show(ctx, "ip:192.0.2.1/32"); s.Failures != 0 {
		t.Errorf("address failures after Clear: %d", s.Failures)
	}
}

func TestSessionsAreLeases(t *testing.T) {
	_, a, b := pair(t, Config{Lease: 900 * time.Millisecond})
	login := func(s *Store, id string) int {
		t.Helper()
		inUse, _, err := s.Login(ctx, "user:mail/bob", "user:mail/bob", id, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		return inUse
	}
	if n := login(a, "a1"); n != 0 {
		t.Fatalf("first session refused: %d in use", n)
	}
	time.Sleep(1500 * time.Millisecond) // beyond the lease: renewals keep it
	if n := login(b, "b1"); n != 1 {
		t.Fatalf("second session: %d in use, want refused with 1", n)
	}
	a.EndSession("user:mail/bob", "a1")
	if n := login(b, "b1"); n != 0 {
		t.Fatalf("after EndSession: %d in use", n)
	}
	// b dies without ending its session: the lease frees it.
	b.Close()
	if n := login(a, "a2"); n != 1 {
		t.Fatalf("right after b died: %d in use, want 1", n)
	}
	time.Sleep(time.Second)
	if n := login(a, "a2"); n != 0 {
		t.Fatalf("a lease after b died: %d in use, want 0", n)
	}
}

func TestLoginDelayIsFleetWide(t *testing.T) {
	_, a, b := pair(t, Config{})
	if _, wait, err := a.Login(ctx, "user:mail/carol", "user:mail/carol", "a1", 0, 10*time.Second); wait != 0 || err != nil {
		t.Fatalf("first login: wait %v, %v", wait, err)
	}
	_, wait, err := b.Login(ctx, "user:mail/carol", "user:mail/carol", "b1", 0, 10*time.Second)
	if err != nil || wait <= 9*time.Second || wait > 10*time.Second {
		t.Fatalf("second login on the other instance: wait %v, %v; want about 10s", wait, err)
	}
	if s, _ := a.Show(ctx, "user:mail/carol"); s.LoginDelay <= 0 {
		t.Errorf("Show: no LOGIN-DELAY")
	}
	b.Clear(ctx, "user:mail/carol")
	if _, wait, _ := b.Login(ctx, "user:mail/carol", "user:mail/carol", "b1", 0, 10*time.Second); wait != 0 {
		t.Errorf("after Clear: wait %v", wait)
	}
}

func TestLoginDelayRefusalTakesNoSlot(t *testing.T) {
	_, a, b := pair(t, Config{})
	a.Login(ctx, "user:mail/dan", "user:mail/dan", "a1", 2, time.Minute)
	if _, wait, _ := b.Login(ctx, "user:mail/dan", "user:mail/dan", "b1", 2, time.Minute); wait == 0 {
		t.Fatal("LOGIN-DELAY not applied")
	}
	if s, _ := a.Show(ctx, "user:mail/dan"); s.Sessions != 1 {
		t.Errorf("sessions: %d, want 1", s.Sessions)
	}
}

func TestConnectionRateIsFleetWide(t *testing.T) {
	_, a, b := pair(t, Config{})
	var allowed int
	for i := range 6 {
		s := []*Store{a, b}[i%2]
		ok, err := s.AllowConnection(ctx, "ip:192.0.2.7/32", 0.1, 3)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("allowed %d of 6 connections at 0.1/s, burst 3; want 3", allowed)
	}
}

func TestUnavailableStoreFailsFast(t *testing.T) {
	r, a, _ := pair(t, Config{Timeout: 50 * time.Millisecond})
	// The store answers; on a loaded machine a first answer may take more
	// than the 50 ms, which is what the rest of the test is about.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(retryAfter) {
		_, err := a.Blocked(ctx, "ip:192.0.2.1/32")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	r.Stop()
	start := time.Now()
	_, err := a.Blocked(ctx, "ip:192.0.2.1/32")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("store stopped: err %v, want ErrUnavailable", err)
	}
	if _, err := a.Fail(ctx, "ip:x", ratelimit.FailureConfig{}, "user:y", ratelimit.FailureConfig{}, "p"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Fail while stopped: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("two calls to a stopped store took %v", d)
	}
	if st := a.Stats(); !st.Unavailable || st.Failures == 0 {
		t.Errorf("stats while stopped: %+v", st)
	}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.Stats().Unavailable || err != nil {
		if time.Now().After(deadline) {
			t.Fatalf("store back, but still unavailable: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		_, err = a.Fail(ctx, "ip:x", ratelimit.FailureConfig{}, "user:y", ratelimit.FailureConfig{}, "p")
	}
}

// After a restart the store has lost the fleet's fingerprint key; the first
// instance to fail a login sets it again, and the others follow.
func TestFingerprintKeyAfterRestart(t *testing.T) {
	r, a, b := pair(t, Config{})
	cfg := ratelimit.FailureConfig{Window: time.Minute}
	a.Fail(ctx, "ip:x", cfg, "user:z", cfg, "p")
	r.Stop()
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(retryAfter) // a's connections broke: skipped for a while
	for _, s := range []*Store{b, a, b, a} {
		for range 3 { // a first call may meet a broken pooled connection
			if _, err := s.Fail(ctx, "ip:x", cfg, "user:z", cfg, "same"); err == nil {
				break
			}
			time.Sleep(retryAfter)
		}
	}
	if s, _ := a.Show(ctx, "user:z"); s.Failures != 1 {
		t.Errorf("one password on both instances after a restart: %d failures, want 1", s.Failures)
	}
}
