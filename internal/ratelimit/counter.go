package ratelimit

import (
	"sync"
	"sync/atomic"
)

// Counter counts concurrent sessions per key (per address, per user) and
// refuses more than max at once. A key is dropped when its count returns to
// zero, so the table holds only keys with live sessions: bound those with a
// Gauge. The zero Counter is not usable; call NewCounter.
type Counter[K comparable] struct {
	mu  sync.Mutex
	max int
	m   map[K]int
}

// NewCounter returns a Counter allowing max concurrent sessions per key;
// max < 1 means no limit (sessions are still counted).
func NewCounter[K comparable](max int) *Counter[K] {
	return &Counter[K]{max: max, m: make(map[K]int)}
}

// Acquire counts a new session for key if key has fewer than max, and
// returns whether it did and key's count afterwards. Every successful
// Acquire must be matched by one Release. It does not allocate unless the
// table grows.
func (c *Counter[K]) Acquire(key K) (ok bool, current int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.m[key]
	if c.max > 0 && n >= c.max {
		return false, n
	}
	n++
	c.m[key] = n
	return true, n
}

// Release ends a session counted by Acquire. Releasing a key with no
// sessions does nothing.
func (c *Counter[K]) Release(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch n := c.m[key]; {
	case n > 1:
		c.m[key] = n - 1
	case n == 1:
		delete(c.m, key)
	}
}

// Count returns key's current number of sessions.
func (c *Counter[K]) Count(key K) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

// Len returns the number of keys with sessions.
func (c *Counter[K]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// Update changes the maximum; the argument is NewCounter's. Sessions above a
// lowered maximum are not dropped: new ones are refused until the count falls
// below it.
func (c *Counter[K]) Update(max int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.max = max
}

// Gauge counts all concurrent sessions and refuses more than max at once. It
// is lock-free. The zero Gauge counts without a limit.
type Gauge struct {
	n   atomic.Int64
	max atomic.Int64
}

// NewGauge returns a Gauge allowing max concurrent sessions; max < 1 means
// no limit (sessions are still counted).
func NewGauge(max int) *Gauge {
	g := new(Gauge)
	g.Update(max)
	return g
}

// Acquire counts a new session if there are fewer than max, and returns
// whether it did and the count afterwards. Every successful Acquire must be
// matched by one Release.
func (g *Gauge) Acquire() (ok bool, current int) {
	for {
		n, max := g.n.Load(), g.max.Load()
		if max > 0 && n >= max {
			return false, int(n)
		}
		if g.n.CompareAndSwap(n, n+1) {
			return true, int(n + 1)
		}
	}
}

// Release ends a session counted by Acquire. The count never goes below zero.
func (g *Gauge) Release() {
	for {
		n := g.n.Load()
		if n <= 0 || g.n.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// Current returns the number of sessions.
func (g *Gauge) Current() int { return int(g.n.Load()) }

// Update changes the maximum; the argument is NewGauge's. Sessions above a
// lowered maximum are not dropped.
func (g *Gauge) Update(max int) {
	g.max.Store(int64(max))
}
