package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// UserLimiters hands out one *rate.Limiter per key, shared by all of that
// key's sessions: for instance bytes per second per user, for a Writer. The
// zero UserLimiters is not usable; call NewUserLimiters.
//
// A limiter is kept while any session holds it (between Acquire and
// Release) and then for idle, which NewUserLimiters raises to at least the
// refill time of a burst, so a user who reconnects does not get a fresh
// burst early. When the table holds maxKeys limiters, a new key evicts the
// least recently released limiter that nobody holds. If every limiter is
// held, the new key gets a limiter of its own that is not tracked: its
// sessions are not shared with each other and Update does not reach it, but
// per-session limiters still apply. Keep maxKeys above the number of
// sessions (a Gauge) and that never happens.
type UserLimiters[K comparable] struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	idle  time.Duration
	t     lru[K, userLimiter]
	clk   clock
}

type userLimiter struct {
	lim  *rate.Limiter
	refs int
}

// NewUserLimiters returns a set of limiters allowing limit tokens per second
// with bursts of burst (less than 1 means 1) per key, tracking at most
// maxKeys keys (less than 1 means DefaultMaxKeys) and forgetting one unused
// for idle. For bytes, make burst at least the writes' usual size (say
// 16–64 KiB); a limit of rate.Inf is unlimited.
func NewUserLimiters[K comparable](limit rate.Limit, burst, maxKeys int, idle time.Duration) *UserLimiters[K] {
	u := &UserLimiters[K]{clk: newClock(nil)}
	u.t.init(maxKeys)
	u.Update(limit, burst, maxKeys, idle)
	return u
}

// Acquire returns key's limiter, creating it if needed, and holds it until
// Release. It does not allocate unless key is new.
func (u *UserLimiters[K]) Acquire(key K) *rate.Limiter {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, now := u.clk.read()
	e, fresh := u.t.get(key, now)
	if e == nil { // every limiter is held
		return rate.NewLimiter(u.limit, u.burst)
	}
	if fresh {
		e.val.lim = rate.NewLimiter(u.limit, u.burst)
	}
	e.val.refs++
	e.expires = never
	u.t.pin(e)
	return e.val.lim
}

// Release ends a hold taken by Acquire; lim is what Acquire returned. A
// release of an untracked limiter, or one that does not match, does nothing.
func (u *UserLimiters[K]) Release(key K, lim *rate.Limiter) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.t.m[key]
	if e == nil || e.val.lim != lim || e.val.refs < 1 {
		return
	}
	if e.val.refs--; e.val.refs == 0 {
		_, now := u.clk.read()
		e.used = now
		e.expires = after(now, u.idle)
		u.t.unpin(e)
	}
}

// Update changes the limits; the arguments are NewUserLimiters's. Every
// tracked limiter, held or not, adopts the new rate and burst at once.
// Lowering maxKeys evicts limiters nobody holds.
func (u *UserLimiters[K]) Update(limit rate.Limit, burst, maxKeys int, idle time.Duration) {
	burst = max(burst, 1)
	idle = max(idle, refillTime(float64(limit), burst))
	u.mu.Lock()
	defer u.mu.Unlock()
	_, now := u.clk.read()
	u.limit, u.burst, u.idle = limit, burst, idle
	u.t.setMax(maxKeys)
	for _, e := range u.t.m {
		// Not the injected clock: holders wait on these with WaitN, which
		// reads time.Now.
		e.val.lim.SetLimit(limit)
		e.val.lim.SetBurst(burst)
		if !e.pinned {
			e.expires = after(e.used, idle)
		}
	}
	u.t.shrink(now)
}

// Len returns the number of keys tracked, expired ones not yet dropped included.
func (u *UserLimiters[K]) Len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.t.m)
}
