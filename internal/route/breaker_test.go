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

func fakeBreaker(cfg BreakerConfig) (*Breaker, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := NewBreaker(cfg)
	b.now = clk.Now
	return b, clk
}

// errRefused is a fast failure; errHung is what a dial that waited for its
// deadline returns.
var (
	errRefused = errors.New("connection refused")
	errHung    = context.DeadlineExceeded
)

// script is a fake dial: each address answers as up says (nil: a
// connection), and every call is recorded with the time its ctx allowed.
type script struct {
	mu    sync.Mutex
	up    map[string]error
	calls []call
}

type call struct {
	addr   string
	budget time.Duration // until ctx's deadline; 0 if none
}

func newScript(up map[string]error) *script { return &script{up: up} }

func (s *script) set(addr string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up[addr] = err
}

func (s *script) dial(ctx context.Context, addr string) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := call{addr: addr}
	if d, ok := ctx.Deadline(); ok {
		c.budget = time.Until(d)
	}
	s.calls = append(s.calls, c)
	if err := s.up[addr]; err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

// dialled returns the addresses dialled since the last call.
func (s *script) dialled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var addrs []string
	for _, c := range s.calls {
		addrs = append(addrs, c.addr)
	}
	s.calls = nil
	return addrs
}

// login is one Dial by a client; it returns the address reached, or "".
func login(t *testing.T, b *Breaker, s *script, addrs ...string) (string, error) {
	t.Helper()
	conn, addr, err := b.Dial(context.Background(), addrs, 3, s.dial)
	if err == nil {
		conn.Close()
	}
	return addr, err
}

func TestBreakerOpensAfterRefusalsOrATimeout(t *testing.T) {
	b, _ := fakeBreaker(BreakerConfig{})
	const a, z = "10.0.0.1:110", "10.0.0.9:110"
	for range 2 {
		b.failure(a, false)
	}
	b.success(a) // resets the count
	for range 2 {
		b.failure(a, false)
	}
	if s := b.States(); s[0].Open {
		t.Fatalf("open after 2 refusals: %+v", s)
	}
	b.failure(a, false)
	b.failure(z, true)
	want := []State{{Address: a, Open: true, Refusals: 3}, {Address: z, Open: true, Timeouts: 1}}
	if got := b.States(); !slices.Equal(got, want) {
		t.Errorf("States = %+v, want %+v", got, want)
	}
}

// TestBreakerLetsTheFirstLoginThrough is the single upstream that restarts:
// while it refuses, every login still tries it (a refusal costs nothing),
// and the first login after it is back gets through. The old breaker
// skipped it for 10 s after 3 refusals.
func TestBreakerLetsTheFirstLoginThrough(t *testing.T) {
	b, clk := fakeBreaker(BreakerConfig{})
	const a = "10.0.0.1:110"
	s := newScript(map[string]error{a: errRefused})
	for i := range 10 {
		if _, err := login(t, b, s, a); err == nil || errors.Is(err, ErrAllOpen) {
			t.Fatalf("login %d while down: %v", i, err)
		}
		clk.Advance(10 * time.Millisecond)
	}
	if got := s.dialled(); len(got) != 10 {
		t.Fatalf("while every circuit is open after refusals, %d of 10 logins dialled", len(got))
	}
	if st := b.States(); !st[0].Open || st[0].Refusals != 10 {
		t.Errorf("States = %+v, want open after 10 refusals", st)
	}
	s.set(a, nil)
	if addr, err := login(t, b, s, a); err != nil || addr != a {
		t.Fatalf("first login after the server is back: %q, %v", addr, err)
	}
	if st := b.States(); st[0].Open {
		t.Errorf("the first success did not close the circuit: %+v", st)
	}
}

// TestBreakerTimeoutsProbeEverySecond: once an address timed out and is
// the only one, one login a second tries it with the caller's full timeout
// and the others fail at once; the first success closes the circuit.
func TestBreakerTimeoutsProbeEverySecond(t *testing.T) {
	b, clk := fakeBreaker(BreakerConfig{})
	const a = "10.0.0.1:110"
	s := newScript(map[string]error{a: errHung})
	if _, err := login(t, b, s, a); err == nil {
		t.Fatal("login to a hung server succeeded")
	}
	s.dialled()
	for range 3 {
		clk.Advance(999 * time.Millisecond)
		if _, err := login(t, b, s, a); !errors.Is(err, ErrAllOpen) {
			t.Fatalf("within a second of a timeout: %v, want ErrAllOpen", err)
		}
		if got := s.dialled(); len(got) != 0 {
			t.Fatalf("within a second of a timeout, dialled %v", got)
		}
		clk.Advance(time.Millisecond)
		if _, err := login(t, b, s, a); err == nil || errors.Is(err, ErrAllOpen) {
			t.Fatalf("the trial: %v", err)
		}
		if got := s.dialled(); len(got) != 1 {
			t.Fatalf("a second after a timeout, dialled %v, want one trial", got)
		}
	}
	clk.Advance(time.Second)
	s.set(a, nil)
	if _, err := login(t, b, s, a); err != nil {
		t.Fatal(err)
	}
	if _, err := login(t, b, s, a); err != nil {
		t.Fatalf("after a successful trial: %v", err)
	}
}

// TestBreakerCountsRefusalsAndTimeoutsApart: a server that timed out but
// now refuses is cheap to try again, so every login tries it; one that
// refused but now hangs is tried once a second.
func TestBreakerCountsRefusalsAndTimeoutsApart(t *testing.T) {
	b, clk := fakeBreaker(BreakerConfig{})
	const a = "10.0.0.1:110"
	s := newScript(map[string]error{a: errHung})
	login(t, b, s, a)
	clk.Advance(time.Second)
	s.set(a, errRefused)
	login(t, b, s, a) // the trial, refused
	for range 3 {
		login(t, b, s, a)
	}
	if got := s.dialled(); len(got) != 5 {
		t.Fatalf("after a timeout then refusals: %d dials of 5 logins", len(got))
	}
	if st := b.States(); st[0].Refusals != 4 || st[0].Timeouts != 1 {
		t.Errorf("States = %+v, want 4 refusals and 1 timeout", st)
	}
	s.set(a, errHung)
	login(t, b, s, a)
	login(t, b, s, a)
	if got := s.dialled(); len(got) != 1 {
		t.Errorf("once it hangs again: %d dials of 2 logins, want 1", len(got))
	}
}

// TestBreakerSkipsWhileAnotherServes: with a closed alternative, an open
// address is skipped but for one trial a second, bounded by ProbeTimeout;
// when that trial succeeds the address is used again.
func TestBreakerSkipsWhileAnotherServes(t *testing.T) {
	b, clk := fakeBreaker(BreakerConfig{ProbeTimeout: 300 * time.Millisecond})
	const a, z = "10.0.0.1:110", "10.0.0.2:110"
	s := newScript(map[string]error{a: errRefused})
	for range 3 {
		if addr, err := login(t, b, s, a, z); addr != z {
			t.Fatalf("failover: %q, %v", addr, err)
		}
	}
	s.dialled()
	if addr, _ := login(t, b, s, a, z); addr != z || !slices.Equal(s.dialled(), []string{z}) {
		t.Fatal("an open address was dialled while another serves")
	}
	clk.Advance(time.Second)
	if addr, _ := login(t, b, s, a, z); addr != z {
		t.Fatal("the failed trial did not fall over")
	}
	calls := s.calls
	if len(calls) != 2 || calls[0].addr != a || calls[0].budget <= 0 || calls[0].budget > 300*time.Millisecond {
		t.Fatalf("trial calls %+v; want %s within 300ms, then %s", calls, a, z)
	}
	if calls[1].budget != 0 {
		t.Errorf("the closed address was given a deadline: %+v", calls[1])
	}
	s.dialled()
	s.set(a, nil)
	if addr, _ := login(t, b, s, a, z); addr != z {
		t.Error("a second trial within the probe interval")
	}
	clk.Advance(time.Second)
	if addr, _ := login(t, b, s, a, z); addr != a {
		t.Errorf("after a successful trial, login reached %q", addr)
	}
	if st := b.States(); st[0].Open {
		t.Errorf("States = %+v", st)
	}
}

func TestNewBreakerDefaults(t *testing.T) {
	b := NewBreaker(BreakerConfig{})
	want := BreakerConfig{Refusals: 3, Timeouts: 1, ProbeInterval: time.Second, ProbeTimeout: time.Second}
	if b.cfg != want {
		t.Errorf("defaults = %+v, want %+v", b.cfg, want)
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
	b := NewBreaker(BreakerConfig{Refusals: 2, ProbeInterval: time.Minute})
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
	// Two refusals opened the dead address's circuit: it is skipped now.
	var rec recordingDial
	conn, addr, err := b.Dial(ctx, addrs, 3, rec.dial)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if addr != live || !slices.Equal(rec.addrs, []string{live}) {
		t.Errorf("with the first circuit open: reached %s after trying %v", addr, rec.addrs)
	}
	want := []State{{Address: dead, Open: true, Refusals: 2}, {Address: live}}
	slices.SortFunc(want, func(x, y State) int { return strings.Compare(x.Address, y.Address) })
	if got := b.States(); !slices.Equal(got, want) {
		t.Errorf("States = %v, want %v", got, want)
	}
}

func TestDialMaxAttempts(t *testing.T) {
	b := NewBreaker(BreakerConfig{Refusals: 5})
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

// TestDialTrialTimesOut: a trial of a hung address, while another serves,
// costs the login ProbeTimeout, not the caller's timeout, and counts as a
// timeout.
func TestDialTrialTimesOut(t *testing.T) {
	b, clk := fakeBreaker(BreakerConfig{Refusals: 1, ProbeTimeout: 50 * time.Millisecond})
	hung := "10.0.0.1:110"
	live := listen(t).Addr().String()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == hung {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	b.failure(hung, false)
	clk.Advance(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	conn, addr, err := b.Dial(ctx, []string{hung, live}, 2, dial)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if el := time.Since(start); addr != live || el > 5*time.Second {
		t.Errorf("reached %s after %v; want %s after about 50ms", addr, el, live)
	}
	if st := b.States(); st[0].Address != hung || st[0].Timeouts != 1 {
		t.Errorf("States = %+v, want the trial counted as a timeout", st)
	}
}

func TestDialCancel(t *testing.T) {
	b, clk := fakeBreaker(BreakerConfig{Timeouts: 1})
	const a = "10.0.0.1:110"
	ctx, cancel := context.WithCancel(context.Background())
	_, _, err := b.Dial(ctx, []string{a, "10.0.0.2:110"}, 2, func(ctx context.Context, addr string) (net.Conn, error) {
		cancel()
		return nil, ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want context.Canceled", err)
	}
	if st := b.States(); st[0].Open || st[0].Refusals+st[0].Timeouts != 0 {
		t.Errorf("a cancelled dial counted as a failure: %+v", st)
	}

	// A cancelled trial gives the trial back.
	b.failure(a, true)
	clk.Advance(time.Second)
	ctx, cancel = context.WithCancel(context.Background())
	b.Dial(ctx, []string{a}, 1, func(ctx context.Context, addr string) (net.Conn, error) {
		cancel()
		return nil, ctx.Err()
	})
	if b.admit(a, false) == admitNone {
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
	if _, _, err := b.Dial(context.Background(), nil, 1, nil); err == nil {
		t.Error("Dial with no addresses succeeded")
	}
}

// TestBreakerConcurrent is for -race.
func TestBreakerConcurrent(t *testing.T) {
	b := NewBreaker(BreakerConfig{Refusals: 2, ProbeInterval: time.Millisecond})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 500 {
				addrs := []string{"a:1", "b:1"}
				conn, _, _ := b.Dial(context.Background(), addrs, 2, func(context.Context, string) (net.Conn, error) {
					switch (i + j) % 3 {
					case 0:
						a, c := net.Pipe()
						c.Close()
						return a, nil
					case 1:
						return nil, errRefused
					}
					return nil, errHung
				})
				if conn != nil {
					conn.Close()
				}
				b.States()
			}
		})
	}
	wg.Wait()
}
