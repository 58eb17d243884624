package route

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func fakeBreaker(failures int, cooldown, maxCooldown time.Duration) (*Breaker, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := NewBreaker(failures, cooldown, maxCooldown)
	b.now = clk.Now
	return b, clk
}

func TestBreakerOpensAfterFailures(t *testing.T) {
	b, clk := fakeBreaker(3, 10*time.Second, 2*time.Minute)
	const a = "10.0.0.1:110"
	for i := range 2 {
		if !b.Allow(a) {
			t.Fatalf("refused after %d failures", i)
		}
		b.Failure(a)
	}
	b.Success(a) // resets the count: failures must be consecutive
	for i := range 3 {
		if !b.Allow(a) {
			t.Fatalf("refused after %d consecutive failures", i)
		}
		b.Failure(a)
	}
	if b.Allow(a) {
		t.Fatal("allowed after 3 consecutive failures")
	}
	clk.Advance(9 * time.Second)
	if b.Allow(a) {
		t.Fatal("allowed 9 s into a 10 s cool-down")
	}
	if !b.Allow("10.0.0.2:110") {
		t.Fatal("another address is refused")
	}
	if got, want := b.States(), []State{{a, true, 3}, {"10.0.0.2:110", false, 0}}; !slices.Equal(got, want) {
		t.Errorf("States = %v, want %v", got, want)
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	b, clk := fakeBreaker(1, 10*time.Second, 35*time.Second)
	const a = "10.0.0.1:110"
	b.Failure(a)

	// The cool-down doubles while the trials fail: 10, 20, 35 (the cap), 35.
	for _, cooldown := range []time.Duration{10, 20, 35, 35} {
		cooldown *= time.Second
		clk.Advance(cooldown - time.Nanosecond)
		if b.Allow(a) {
			t.Fatalf("allowed before the end of a %v cool-down", cooldown)
		}
		clk.Advance(time.Nanosecond)
		if !b.Allow(a) {
			t.Fatalf("no trial after a %v cool-down", cooldown)
		}
		if b.Allow(a) {
			t.Fatal("a second trial while the first is in flight")
		}
		b.Failure(a) // the trial failed
		if b.Allow(a) {
			t.Fatal("allowed right after a failed trial")
		}
	}

	// A successful trial closes the circuit and resets the cool-down.
	clk.Advance(35 * time.Second)
	if !b.Allow(a) {
		t.Fatal("no trial")
	}
	b.Success(a)
	for range 3 {
		if !b.Allow(a) {
			t.Fatal("refused after a successful trial")
		}
	}
	if got := b.States(); got[0].Open || got[0].Failures != 0 {
		t.Errorf("States after success = %v", got)
	}
	b.Failure(a)
	clk.Advance(10 * time.Second)
	if !b.Allow(a) {
		t.Error("the cool-down did not go back to 10 s")
	}
}

func TestBreakerLostTrial(t *testing.T) {
	b, clk := fakeBreaker(1, 10*time.Second, time.Minute)
	const a = "10.0.0.1:110"
	b.Failure(a)
	clk.Advance(10 * time.Second)
	if !b.Allow(a) {
		t.Fatal("no trial")
	}
	// The trial never reports. Another is allowed one cool-down later.
	clk.Advance(9 * time.Second)
	if b.Allow(a) {
		t.Fatal("second trial too early")
	}
	clk.Advance(time.Second)
	if !b.Allow(a) {
		t.Fatal("a lost trial blocks the address for good")
	}

	// A late failure from a dial that began before the circuit opened does
	// not lengthen the cool-down.
	b2, clk2 := fakeBreaker(1, 10*time.Second, time.Minute)
	b2.Failure(a)
	b2.Failure(a)
	clk2.Advance(10 * time.Second)
	if !b2.Allow(a) {
		t.Error("a failure while open lengthened the cool-down")
	}
}

func TestNewBreakerDefaults(t *testing.T) {
	b := NewBreaker(0, 0, 0)
	if b.failures != 3 || b.cooldown != 10*time.Second || b.maxCooldown != 2*time.Minute {
		t.Errorf("defaults = %d, %v, %v", b.failures, b.cooldown, b.maxCooldown)
	}
	b = NewBreaker(1, time.Minute, time.Second)
	if b.maxCooldown != time.Minute {
		t.Errorf("maxCooldown below cooldown: %v", b.maxCooldown)
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// recordingDial dials TCP and records the addresses it was asked for.
type recordingDial struct {
	mu    sync.Mutex
	addrs []string
}

func (r *recordingDial) dial(ctx context.Context, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.addrs = append(r.addrs, addr)
	r.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func TestDialFailover(t *testing.T) {
	b := NewBreaker(2, time.Minute, time.Minute)
	dead, live := closedAddr(t), listen(t).Addr().String()
	addrs := []string{dead, live}
	ctx := context.Background()

	for i := range 2 {
		var rec recordingDial
		conn, addr, err := b.Dial(ctx, addrs, 3, rec.dial)
		if err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		conn.Close()
		if addr != live || !slices.Equal(rec.addrs, addrs) {
			t.Fatalf("Dial %d reached %s after trying %v; want %s after both", i, addr, rec.addrs, live)
		}
	}
	// Two failures opened the dead address's circuit: it is skipped now.
	var rec recordingDial
	conn, addr, err := b.Dial(ctx, addrs, 3, rec.dial)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if addr != live || !slices.Equal(rec.addrs, []string{live}) {
		t.Errorf("with the first circuit open: reached %s after trying %v", addr, rec.addrs)
	}
	want := []State{{dead, true, 2}, {live, false, 0}}
	slices.SortFunc(want, func(x, y State) int { return strings.Compare(x.Address, y.Address) })
	if got := b.States(); !slices.Equal(got, want) {
		t.Errorf("States = %v, want %v", got, want)
	}
}

func TestDialMaxAttempts(t *testing.T) {
	b := NewBreaker(5, time.Minute, time.Minute)
	dead := closedAddr(t)
	addrs := []string{dead, dead, dead, listen(t).Addr().String()}
	var rec recordingDial
	_, _, err := b.Dial(context.Background(), addrs, 2, rec.dial)
	if err == nil {
		t.Fatal("Dial reached the 4th address with maxAttempts 2")
	}
	if len(rec.addrs) != 2 {
		t.Errorf("dialled %d times, want 2", len(rec.addrs))
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, ErrAllOpen) {
		t.Errorf("error = %v; want it to wrap ECONNREFUSED and not ErrAllOpen", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "stopped after 2 attempts") {
		t.Errorf("error = %q; want one line saying it stopped", msg)
	}

	// maxAttempts <= 0: one per address.
	rec = recordingDial{}
	conn, _, err := b.Dial(context.Background(), addrs, 0, rec.dial)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if len(rec.addrs) != 4 {
		t.Errorf("maxAttempts 0: dialled %d times, want 4", len(rec.addrs))
	}
}

func TestDialAllOpen(t *testing.T) {
	b, clk := fakeBreaker(1, time.Minute, time.Minute)
	addrs := []string{"10.0.0.1:110", "10.0.0.2:110"}
	for _, a := range addrs {
		b.Failure(a)
	}
	called := false
	_, _, err := b.Dial(context.Background(), addrs, 5, func(context.Context, string) (net.Conn, error) {
		called = true
		return nil, errors.New("unreachable")
	})
	if !errors.Is(err, ErrAllOpen) || called {
		t.Fatalf("Dial = %v (dial called: %v); want ErrAllOpen without dialling", err, called)
	}

	// One circuit half-open: its trial is dialled, fails, and the error is
	// not ErrAllOpen (something was tried).
	b.Success(addrs[1])
	b.Failure(addrs[1])
	clk.Advance(time.Minute)
	_, _, err = b.Dial(context.Background(), addrs, 5, func(context.Context, string) (net.Conn, error) {
		return nil, errors.New("refused")
	})
	if err == nil || errors.Is(err, ErrAllOpen) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Dial = %v", err)
	}

	if _, _, err := b.Dial(context.Background(), nil, 1, nil); err == nil {
		t.Error("Dial with no addresses succeeded")
	}
}

func TestDialCancel(t *testing.T) {
	b, clk := fakeBreaker(1, time.Minute, time.Minute)
	const a = "10.0.0.1:110"
	ctx, cancel := context.WithCancel(context.Background())
	_, _, err := b.Dial(ctx, []string{a, "10.0.0.2:110"}, 2, func(ctx context.Context, addr string) (net.Conn, error) {
		cancel()
		return nil, ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want context.Canceled", err)
	}
	if !b.Allow(a) {
		t.Error("a cancelled dial counted as a failure")
	}

	// A cancelled half-open trial gives the trial back.
	b.Failure(a)
	clk.Advance(time.Minute)
	ctx, cancel = context.WithCancel(context.Background())
	b.Dial(ctx, []string{a}, 1, func(ctx context.Context, addr string) (net.Conn, error) {
		cancel()
		return nil, ctx.Err()
	})
	if !b.Allow(a) {
		t.Error("a cancelled trial kept the circuit from trying again")
	}

	// Already cancelled: nothing is dialled.
	_, _, err = b.Dial(ctx, []string{"10.0.0.3:110"}, 1, func(context.Context, string) (net.Conn, error) {
		t.Error("dialled with a cancelled context")
		return nil, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Dial = %v", err)
	}
}

// TestBreakerConcurrent is for -race.
func TestBreakerConcurrent(t *testing.T) {
	b := NewBreaker(2, time.Millisecond, 4*time.Millisecond)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 500 {
				a := []string{"a:1", "b:1"}[j%2]
				if b.Allow(a) {
					if (i+j)%3 == 0 {
						b.Success(a)
					} else {
						b.Failure(a)
					}
				}
				b.States()
			}
		})
	}
	wg.Wait()
}
