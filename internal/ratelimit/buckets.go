package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Buckets is a set of token buckets, one per key, created on first use: for
// instance connections per second per address. The zero Buckets is not
// usable; call NewBuckets.
//
// A key's bucket is forgotten once unused for idle, which NewBuckets raises
// to at least the time an empty bucket takes to refill: by then the bucket
// is full again, so forgetting it gives the key nothing.
//
// When the table holds maxKeys buckets and a new key arrives, the least
// recently used bucket is evicted (it has had the longest to refill, so
// this gives least away). Neither alternative fails safe: denying new keys would lock out
// everyone new while the table is full, and allowing them untracked would let
// a flood of addresses bypass the limit altogether. An attacker can get a key
// evicted only by sending maxKeys other keys in between, and one who holds
// that many addresses has that many buckets anyway. Pair a per-address
// Buckets with a global *rate.Limiter to bound the total.
type Buckets[K comparable] struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	idle  time.Duration
	t     lru[K, *rate.Limiter]
	clk   clock
}

// NewBuckets returns buckets allowing limit events per second per key with
// bursts of burst (less than 1 means 1), tracking at most maxKeys keys (less
// than 1 means DefaultMaxKeys) and forgetting a key unused for idle. A limit
// of rate.Inf allows everything and a limit of 0 or less allows nothing;
// neither keeps any state.
func NewBuckets[K comparable](limit rate.Limit, burst, maxKeys int, idle time.Duration) *Buckets[K] {
	b := &Buckets[K]{clk: newClock(nil)}
	b.t.init(maxKeys)
	b.Update(limit, burst, maxKeys, idle)
	return b
}

// Allow reports whether an event for key may happen now, and if so counts it.
// It does not allocate unless key is new.
func (b *Buckets[K]) Allow(key K) bool {
	ok, _ := b.Take(key)
	return ok
}

// Take is Allow that also says, when it returns false, how long until key
// has a token again (rate.InfDuration if never), e.g. for a "try again in"
// message. A refused event costs nothing.
func (b *Buckets[K]) Take(key K) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.limit == rate.Inf:
		return true, 0
	case b.limit <= 0:
		return false, rate.InfDuration
	}
	t, now := b.clk.read()
	e, fresh := b.t.get(key, now) // not nil: Buckets pins nothing
	if fresh {
		e.val = rate.NewLimiter(b.limit, b.burst)
	}
	e.expires = after(now, b.idle)
	if e.val.AllowN(t, 1) {
		return true, 0
	}
	missing := 1 - e.val.TokensAt(t)
	return false, time.Duration(missing / float64(b.limit) * float64(time.Second))
}

// Update changes the limits; the arguments are NewBuckets's. Existing buckets
// keep their tokens and adopt the new rate and burst. Lowering maxKeys
// evicts the least recently used buckets. A limit of rate.Inf or 0 drops all
// buckets.
func (b *Buckets[K]) Update(limit rate.Limit, burst, maxKeys int, idle time.Duration) {
	burst = max(burst, 1)
	idle = max(idle, refillTime(float64(limit), burst))
	b.mu.Lock()
	defer b.mu.Unlock()
	t, now := b.clk.read()
	b.limit, b.burst, b.idle = limit, burst, idle
	b.t.setMax(maxKeys)
	if limit == rate.Inf || limit <= 0 {
		b.t.clear()
		return
	}
	for _, e := range b.t.m {
		e.val.SetLimitAt(t, limit)
		e.val.SetBurstAt(t, burst)
		e.expires = after(e.used, idle)
	}
	b.t.shrink(now)
}

// Len returns the number of keys tracked, expired ones not yet dropped included.
func (b *Buckets[K]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.t.m)
}
