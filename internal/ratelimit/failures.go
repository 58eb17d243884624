package ratelimit

import (
	"math"
	"slices"
	"sync"
	"time"
)

// FailureConfig configures Failures. The zero FailureConfig records failures
// but never delays or blocks.
type FailureConfig struct {
	// MaxFailures is the number of failures, counted as Window says, at which
	// a key is blocked for Block. Less than 1: never block.
	MaxFailures int
	// Window: a key's failures are forgotten once Window passes without
	// another one (Dovecot's penalty timeout). An attacker who waits Window
	// between attempts is never blocked, so it caps the guessing rate at
	// about one per Window. Zero or less: failures are forgotten only by
	// Reset, or when the table is full and the key is evicted.
	Window time.Duration
	// BaseDelay is the delay after the first failure; each further failure
	// doubles it (Dovecot: 2, 4, 8, 15 s). Zero: no delay.
	BaseDelay time.Duration
	// MaxDelay caps the doubling. If it is less than BaseDelay, every
	// failure gets BaseDelay.
	MaxDelay time.Duration
	// Block is how long a key stays blocked once it reaches MaxFailures.
	// When the block ends, the key's failures are still counted if Window
	// has not passed since the last one, so the next failure blocks again:
	// a persistent guesser gets one try per Block. Zero: no block.
	Block time.Duration
	// MaxKeys bounds the number of keys tracked; less than 1 means
	// DefaultMaxKeys.
	MaxKeys int
}

// Failures tracks failed logins per key and turns them into a growing delay
// and then a temporary block, like Dovecot's auth penalty. Successes are not
// recorded and do not consume the failure budget (Mailu's lesson): only
// Fail counts. Keep one Failures per address and another per user; they are
// independent. The zero Failures is not usable; call NewFailures.
//
// Only distinct secrets count: a failure with a secret among the key's last
// RecentSecrets counted ones adds nothing. A guesser trying passwords is
// counted for each, while a client retrying a stale password every minute,
// or the right one while the server cannot serve the mailbox, is counted
// once and never blocked. Cycling through more than RecentSecrets
// passwords counts them all again.
//
// A blocked key ends its block only by time, Reset or eviction. When the
// table is full, a new key evicts the least recently failed key that is not
// blocked (looking a bounded distance from the least recently used end), and
// only if there is none the least recently failed blocked key. So flooding
// the table with new keys frees a blocked key only after the flood has
// blocked its own keys, at MaxFailures failures each.
//
// Beware that a per-user block can be set off by anyone who knows the user
// name: keep Block short for per-user keys, or exempt trusted networks.
type Failures[K comparable] struct {
	mu  sync.Mutex
	cfg FailureConfig
	t   lru[K, failState]
	clk clock
}

// RecentSecrets is how many of a key's latest counted secrets Failures
// remembers. It costs 8 bytes each per key, allocated as they come.
const RecentSecrets = 16

// failState is one key's record.
type failState struct {
	count  int32         // failures not yet forgotten
	last   int64         // clock reading of the last counted failure
	until  int64         // blocked before this clock reading
	recent []Fingerprint // the secrets of the latest counted failures, oldest first
}

// remember adds fp to the recent secrets, dropping the oldest when full.
func (s *failState) remember(fp Fingerprint) {
	if len(s.recent) == RecentSecrets {
		copy(s.recent, s.recent[1:])
		s.recent = s.recent[:RecentSecrets-1]
	}
	s.recent = append(s.recent, fp)
}

// NewFailures returns a Failures configured by cfg.
func NewFailures[K comparable](cfg FailureConfig) *Failures[K] {
	f := &Failures[K]{clk: newClock(nil)}
	f.t.init(cfg.MaxKeys)
	f.Update(cfg)
	return f
}

// Fail records a failed login for key with the secret whose fingerprint is
// secret, and reports whether key is now blocked (by this failure or an
// earlier one). If secret is among the key's recent secrets, the failure is
// not counted: the count, the delay and the time failures are forgotten
// stay as they were. A failure while blocked is counted but does not extend
// the block.
func (f *Failures[K]) Fail(key K, secret Fingerprint) (blocked bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, now := f.clk.read()
	e, _ := f.t.get(key, now) // not nil: Failures pins nothing
	s := &e.val
	if f.forgotten(s, now) {
		s.count, s.recent = 0, s.recent[:0]
	}
	if slices.Contains(s.recent, secret) {
		return s.until > now
	}
	s.remember(secret)
	if s.count < math.MaxInt32 {
		s.count++
	}
	s.last = now
	if f.cfg.MaxFailures > 0 && int(s.count) >= f.cfg.MaxFailures && f.cfg.Block > 0 && s.until <= now {
		s.until = after(now, f.cfg.Block)
	}
	f.setExpiry(e)
	return s.until > now
}

// Delay returns how long to wait before answering key's latest failure:
// zero with no failures counted, BaseDelay after one, doubling with each
// further failure up to MaxDelay. Take the larger of the per-address and
// per-user delays, and wait without holding anything.
func (f *Failures[K]) Delay(key K) time.Duration {
	return f.cfg.Delay(f.Count(key))
}

// Blocked reports whether key is blocked, and for how much longer.
func (f *Failures[K]) Blocked(key K) (blocked bool, remaining time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, now := f.clk.read()
	e := f.t.peek(key, now)
	if e == nil || e.val.until <= now {
		return false, 0
	}
	return true, time.Duration(e.val.until - now)
}

// Count returns key's failures not yet forgotten: 0 if none.
func (f *Failures[K]) Count(key K) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, now := f.clk.read()
	e := f.t.peek(key, now)
	if e == nil || f.forgotten(&e.val, now) {
		return 0
	}
	return int(e.val.count)
}

// Reset forgets key's failures and ends its block. The caller decides when:
// after a successful login, Reset the per-user key (the user proved who
// they are), but not the per-address key, since an attacker with one valid
// account could otherwise interleave logins to it with guesses at others and
// never be blocked.
func (f *Failures[K]) Reset(key K) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.t.m[key]; e != nil {
		f.t.remove(e)
	}
}

// Update changes the configuration; the argument is NewFailures's. Existing
// records are kept and judged by the new settings; blocks already set keep
// their end. Lowering MaxKeys evicts as Failures describes.
func (f *Failures[K]) Update(cfg FailureConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, now := f.clk.read()
	f.cfg = cfg
	f.t.setMax(cfg.MaxKeys)
	for _, e := range f.t.m {
		f.setExpiry(e)
	}
	f.t.shrink(now)
}

// Len returns the number of keys tracked, expired ones not yet dropped included.
func (f *Failures[K]) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.t.m)
}

// forgotten reports whether Window has passed since s's last failure.
func (f *Failures[K]) forgotten(s *failState, now int64) bool {
	return f.cfg.Window > 0 && now-s.last >= int64(f.cfg.Window)
}

// setExpiry makes e live while its failures count or its block lasts, and
// holds it against eviction while blocked.
func (f *Failures[K]) setExpiry(e *entry[K, failState]) {
	s := &e.val
	e.expires = never
	if f.cfg.Window > 0 {
		e.expires = max(after(s.last, f.cfg.Window), s.until)
	}
	e.hold = s.until
}

// Delay is the delay after n failures counted: zero for none, BaseDelay
// after one, doubling with each further failure up to MaxDelay.
func (c FailureConfig) Delay(n int) time.Duration {
	d, top := c.BaseDelay, c.MaxDelay
	if n < 1 || d <= 0 {
		return 0
	}
	for i := 1; i < n && d < top; i++ {
		if d > top/2 {
			return top
		}
		d *= 2
	}
	return d
}
