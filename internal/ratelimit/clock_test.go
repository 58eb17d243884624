package ratelimit

import (
	"sync"
	"time"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
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

// The constructors read the real clock; these swap in a fake one before use.

func fakeBuckets[K comparable](c *fakeClock, b *Buckets[K]) *Buckets[K] {
	b.clk = newClock(c.Now)
	return b
}

func fakeFailures[K comparable](c *fakeClock, f *Failures[K]) *Failures[K] {
	f.clk = newClock(c.Now)
	return f
}

func fakeInterval[K comparable](c *fakeClock, iv *Interval[K]) *Interval[K] {
	iv.clk = newClock(c.Now)
	return iv
}

func fakeUserLimiters[K comparable](c *fakeClock, u *UserLimiters[K]) *UserLimiters[K] {
	u.clk = newClock(c.Now)
	return u
}
