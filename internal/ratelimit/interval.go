package ratelimit

import (
	"sync"
	"time"
)

// Interval enforces a minimum time between logins per user: RFC 2449's
// LOGIN-DELAY capability. The zero Interval is not usable; call NewInterval.
//
// RFC 2449 §8.1.1 recommends answering [LOGIN-DELAY] only after the user has
// authenticated, so as not to reveal which users exist: authenticate
// upstream first, then Claim.
//
// A key is forgotten once min has passed since its mark. When the table
// holds maxKeys keys, a new mark evicts the oldest one, whose wait is the
// nearest to ending; only users with valid credentials create keys.
type Interval[K comparable] struct {
	mu  sync.Mutex
	min time.Duration
	t   lru[K, struct{}]
	clk clock
}

// NewInterval returns an Interval requiring min between logins of one key,
// tracking at most maxKeys keys (less than 1 means DefaultMaxKeys). A min of
// zero or less allows everything and keeps no state.
func NewInterval[K comparable](min time.Duration, maxKeys int) *Interval[K] {
	iv := &Interval[K]{clk: newClock(nil)}
	iv.t.init(maxKeys)
	iv.Update(min, maxKeys)
	return iv
}

// Check reports whether key may log in now, and if not, how long until it
// may. It records nothing; see Mark and Claim.
func (iv *Interval[K]) Check(key K) (ok bool, wait time.Duration) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	_, now := iv.clk.read()
	return iv.check(key, now)
}

// Claim is Check followed, if ok, by Mark, atomically, so that two
// concurrent logins of one user cannot both pass.
func (iv *Interval[K]) Claim(key K) (ok bool, wait time.Duration) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	_, now := iv.clk.read()
	if ok, wait = iv.check(key, now); ok {
		iv.mark(key, now)
	}
	return ok, wait
}

// Forget drops key's mark, so that its next login is allowed at once.
func (iv *Interval[K]) Forget(key K) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if e := iv.t.m[key]; e != nil {
		iv.t.remove(e)
	}
}

// Update changes the interval and table size; the arguments are
// NewInterval's. Existing marks are measured against the new interval.
func (iv *Interval[K]) Update(min time.Duration, maxKeys int) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	_, now := iv.clk.read()
	iv.min = min
	iv.t.setMax(maxKeys)
	if min <= 0 {
		iv.t.clear()
		return
	}
	for _, e := range iv.t.m {
		e.expires = after(e.used, min)
	}
	iv.t.shrink(now)
}

// Len returns the number of keys tracked, expired ones not yet dropped included.
func (iv *Interval[K]) Len() int {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	return len(iv.t.m)
}

func (iv *Interval[K]) check(key K, now int64) (bool, time.Duration) {
	if iv.min <= 0 {
		return true, 0
	}
	e := iv.t.peek(key, now)
	if e == nil {
		return true, 0
	}
	return false, time.Duration(e.expires - now)
}

func (iv *Interval[K]) mark(key K, now int64) {
	if iv.min <= 0 {
		return
	}
	e, _ := iv.t.get(key, now) // not nil: Interval pins nothing
	e.expires = after(now, iv.min)
}
