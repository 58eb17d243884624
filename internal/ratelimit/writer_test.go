package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// chunkRecorder is an io.Writer that records the largest write it saw.
type chunkRecorder struct {
	n, writes, largest int
}

func (c *chunkRecorder) Write(p []byte) (int, error) {
	c.n += len(p)
	c.writes++
	c.largest = max(c.largest, len(p))
	return len(p), nil
}

// TestWriterRate is a measured check in real time: 1 MiB through a
// 2 MiB/s limiter takes at least about half a second.
func TestWriterRate(t *testing.T) {
	const total, bps, burst = 1 << 20, 2 << 20, 16 << 10
	lim := rate.NewLimiter(bps, burst)
	var rec chunkRecorder
	w := NewWriter(&rec, lim, nil)
	buf := make([]byte, 100<<10) // writes larger than the burst
	start := time.Now()
	for sent := 0; sent < total; {
		n, err := w.Write(buf[:min(len(buf), total-sent)])
		if err != nil {
			t.Fatal(err)
		}
		sent += n
	}
	elapsed := time.Since(start)
	// The first burst goes at once; the rest at the rate.
	want := time.Duration(float64(total-burst) / bps * float64(time.Second))
	// Faster than the rate is a broken limiter; slower may be a busy
	// machine, so only a limiter that sleeps four times too long fails.
	if elapsed < want*85/100 || elapsed > want*4 {
		t.Errorf("1 MiB at 2 MiB/s took %v, want %v (-15%%, +300%%)", elapsed, want)
	}
	if rec.n != total {
		t.Errorf("wrote %d bytes, want %d", rec.n, total)
	}
	if rec.largest > burst {
		t.Errorf("largest chunk %d exceeds the burst %d", rec.largest, burst)
	}
	t.Logf("%d bytes in %v (want %v), %d chunks, largest %d", rec.n, elapsed, want, rec.writes, rec.largest)
}

func TestWriterChunksSmallestBurst(t *testing.T) {
	fast := rate.NewLimiter(1e12, 1000)
	faster := rate.NewLimiter(1e12, 300)
	inf := rate.NewLimiter(rate.Inf, 0) // no wait, no split
	var rec chunkRecorder
	w := NewWriter(&rec, fast, inf, faster)
	n, err := w.Write(make([]byte, 10000))
	if err != nil || n != 10000 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if rec.largest != 300 || rec.writes != 34 {
		t.Errorf("largest chunk %d in %d writes, want 300 in 34", rec.largest, rec.writes)
	}

	// No limiters: straight through, one write.
	rec = chunkRecorder{}
	NewWriter(&rec).Write(make([]byte, 10000))
	if rec.writes != 1 {
		t.Errorf("unlimited Writer made %d writes, want 1", rec.writes)
	}
}

func TestWriterPassesBytes(t *testing.T) {
	var out bytes.Buffer
	in := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	w := NewWriter(&out, rate.NewLimiter(1e12, 7))
	if _, err := io.Copy(w, bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Error("bytes changed on the way through")
	}
}

func TestWriterCancel(t *testing.T) {
	lim := rate.NewLimiter(10, 10) // 10 B/s: a 100-byte write takes 9 s
	ctx, cancel := context.WithCancel(context.Background())
	var rec chunkRecorder
	w := WriterContext(ctx, &rec, lim)
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	n, err := w.Write(make([]byte, 100))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n != 10 || rec.n != 10 {
		t.Errorf("wrote %d (%d arrived), want only the first burst of 10", n, rec.n)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancel took %v", d)
	}

	// A zero rate lets nothing through until the context ends.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := WriterContext(ctx, &rec, rate.NewLimiter(0, 10)).Write([]byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("zero rate: err = %v", err)
	}
}

func TestWriterErrors(t *testing.T) {
	if _, err := NewWriter(io.Discard, rate.NewLimiter(1, 0)).Write([]byte("x")); !errors.Is(err, errZeroBurst) {
		t.Errorf("burst 0: err = %v", err)
	}
	short := writerFunc(func(p []byte) (int, error) { return len(p) - 1, nil })
	if n, err := NewWriter(short, rate.NewLimiter(1e9, 4)).Write([]byte("abcdefgh")); err != io.ErrShortWrite || n != 3 {
		t.Errorf("short write: %d, %v", n, err)
	}
	boom := errors.New("boom")
	calls := 0
	failing := writerFunc(func(p []byte) (int, error) {
		if calls++; calls == 2 {
			return 1, boom
		}
		return len(p), nil
	})
	if n, err := NewWriter(failing, rate.NewLimiter(1e9, 4)).Write([]byte("abcdefgh")); err != boom || n != 5 {
		t.Errorf("failing writer: %d, %v", n, err)
	}
}

// TestWriterBurstLowered checks that a burst lowered between chunks (an
// Update on SIGHUP) cuts the next chunk rather than failing the write.
func TestWriterBurstLowered(t *testing.T) {
	lim := rate.NewLimiter(1e12, 1000)
	var rec chunkRecorder
	calls := 0
	w := NewWriter(writerFunc(func(p []byte) (int, error) {
		if calls++; calls == 1 {
			lim.SetBurst(10)
		}
		return rec.Write(p)
	}), lim)
	if n, err := w.Write(make([]byte, 2000)); err != nil || n != 2000 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if rec.writes != 1+100 {
		t.Errorf("%d writes, want one of 1000 then 100 of 10", rec.writes)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestUserLimitersShared(t *testing.T) {
	c := newFakeClock()
	u := fakeUserLimiters(c, NewUserLimiters[string](1000, 100, 10, time.Minute))
	a1 := u.Acquire("alice")
	a2 := u.Acquire("alice")
	b := u.Acquire("bob")
	if a1 != a2 {
		t.Error("two sessions of one user got different limiters")
	}
	if a1 == b {
		t.Error("two users share a limiter")
	}
	if a1.Limit() != 1000 || a1.Burst() != 100 {
		t.Errorf("limiter = %v/%d", a1.Limit(), a1.Burst())
	}
	// Held limiters are never forgotten, however long the session.
	c.Advance(24 * time.Hour)
	u.Acquire("carol") // sweeps
	if got := u.Acquire("alice"); got != a1 {
		t.Error("held limiter was forgotten")
	}
	u.Release("alice", a1)
	u.Release("alice", a1)
	u.Release("alice", a1) // one too many: ignored
	// Released, the limiter lingers for idle, then goes.
	c.Advance(30 * time.Second)
	if got := u.Acquire("alice"); got != a1 {
		t.Error("limiter forgotten before idle")
	}
	u.Release("alice", a1)
	c.Advance(time.Minute)
	if got := u.Acquire("alice"); got == a1 {
		t.Error("limiter kept after idle")
	}
	u.Release("bob", a1) // not bob's: ignored
	if got := u.Acquire("bob"); got != b {
		t.Error("a mismatched Release freed bob's limiter")
	}
}

func TestUserLimitersBound(t *testing.T) {
	c := newFakeClock()
	u := fakeUserLimiters(c, NewUserLimiters[int](1000, 100, 3, time.Hour))
	held := make([]*rate.Limiter, 3)
	for i := range held {
		held[i] = u.Acquire(i)
	}
	// All held: a fourth user gets an untracked limiter.
	extra := u.Acquire(3)
	if u.Len() != 3 || extra == nil || extra.Limit() != 1000 {
		t.Errorf("full table: Len = %d, extra = %v", u.Len(), extra)
	}
	u.Release(3, extra) // untracked: no-op
	u.Release(0, held[0])
	u.Acquire(4) // evicts 0, the only one not held
	if u.Len() != 3 {
		t.Errorf("Len = %d", u.Len())
	}
	if got := u.Acquire(1); got != held[1] {
		t.Error("held limiter evicted")
	}
	if got := u.Acquire(0); got == held[0] {
		t.Error("released limiter not evicted for room")
	}
}

func TestUserLimitersUpdate(t *testing.T) {
	u := NewUserLimiters[string](1000, 100, 10, time.Minute)
	held := u.Acquire("alice")
	idle := u.Acquire("bob")
	u.Release("bob", idle)
	u.Update(500, 50, 10, time.Minute)
	for _, l := range []*rate.Limiter{held, idle} {
		if l.Limit() != 500 || l.Burst() != 50 {
			t.Errorf("after Update: %v/%d, want 500/50", l.Limit(), l.Burst())
		}
	}
	if l := u.Acquire("carol"); l.Limit() != 500 || l.Burst() != 50 {
		t.Errorf("new limiter after Update: %v/%d", l.Limit(), l.Burst())
	}
}

func TestUserLimitersConcurrent(t *testing.T) {
	u := NewUserLimiters[int](1e9, 1<<20, 8, time.Millisecond)
	done := make(chan struct{})
	for w := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 2000 {
				k := (i + w) % 16
				l := u.Acquire(k)
				w := NewWriter(io.Discard, l)
				w.Write(make([]byte, 64))
				u.Release(k, l)
			}
		}()
	}
	for range 8 {
		<-done
	}
	if u.Len() > 8 {
		t.Errorf("Len = %d > maxKeys", u.Len())
	}
}
