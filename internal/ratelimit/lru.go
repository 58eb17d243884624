package ratelimit

import (
	"math"
	"time"
)

// DefaultMaxKeys is the table size used when a constructor is given maxKeys < 1.
const DefaultMaxKeys = 65536

const (
	// sweepPerCall is how many expired entries a call may drop from the
	// least recently used end. More than one, so expired entries drain
	// faster than calls (which add at most one each) can create them.
	sweepPerCall = 4
	// victimScan is how far from the least recently used end eviction looks
	// for an entry that is not held (a blocked Failures key) before taking
	// the least recently used one anyway. Bounded, so eviction is O(1).
	victimScan = 16
	// never is a clock reading that is never reached.
	never = math.MaxInt64
)

// clock reads the time as nanoseconds since base, monotonic when now is
// time.Now. Tests replace now with a fake.
type clock struct {
	now  func() time.Time
	base time.Time
}

func newClock(now func() time.Time) clock {
	if now == nil {
		now = time.Now
	}
	return clock{now: now, base: now()}
}

// read returns the time and the matching clock reading.
func (c *clock) read() (time.Time, int64) {
	t := c.now()
	return t, int64(t.Sub(c.base))
}

// after returns the reading d after t, saturating at never.
func after(t int64, d time.Duration) int64 {
	if d <= 0 {
		return t
	}
	if t > never-int64(d) {
		return never
	}
	return t + int64(d)
}

// refillTime is how long a bucket of burst tokens takes to fill at limit:
// after that long unused, a bucket is as good as new and may be forgotten.
func refillTime(limit float64, burst int) time.Duration {
	if limit <= 0 {
		return time.Duration(never)
	}
	d := float64(burst) / limit * float64(time.Second)
	if d >= float64(never) {
		return time.Duration(never)
	}
	return time.Duration(d)
}

// entry is one key of an lru.
type entry[K comparable, V any] struct {
	prev, next *entry[K, V] // nil while pinned
	key        K
	used       int64 // clock reading at the last use
	expires    int64 // from this reading on, the entry counts as absent
	hold       int64 // until this reading, eviction for room prefers other entries
	pinned     bool  // in use: not in the list, never evicted
	val        V
}

// lru is a map of at most max entries with a list in order of use, the core
// of the keyed types. It is not safe for concurrent use: its owner holds a
// mutex. Every operation is O(1) apart from update loops in the owners.
type lru[K comparable, V any] struct {
	m    map[K]*entry[K, V]
	root entry[K, V] // list sentinel: root.next is the most recently used
	max  int
}

func (l *lru[K, V]) init(max int) {
	l.m = make(map[K]*entry[K, V])
	l.root.next, l.root.prev = &l.root, &l.root
	l.setMax(max)
}

func (l *lru[K, V]) setMax(max int) {
	if max < 1 {
		max = DefaultMaxKeys
	}
	l.max = max
}

// peek returns the live entry for k, or nil, without marking it used.
func (l *lru[K, V]) peek(k K, now int64) *entry[K, V] {
	e := l.m[k]
	if e == nil || e.expires <= now {
		return nil
	}
	return e
}

// get returns the entry for k marked as used at now. If k was absent or
// expired, the entry is zeroed and fresh is true; the caller sets expires.
// When the table is full get evicts an entry to make room; it returns nil
// only if every entry is pinned.
func (l *lru[K, V]) get(k K, now int64) (e *entry[K, V], fresh bool) {
	l.sweep(now)
	if e = l.m[k]; e != nil {
		if e.expires <= now {
			l.reset(e)
			fresh = true
		}
		if !e.pinned {
			l.unlink(e)
			l.pushFront(e)
		}
		e.used = now
		return e, fresh
	}
	if len(l.m) >= l.max {
		if e = l.victim(now); e == nil {
			return nil, false
		}
		l.unlink(e)
		delete(l.m, e.key)
		l.reset(e)
	} else {
		e = new(entry[K, V])
	}
	e.key, e.used = k, now
	l.m[k] = e
	l.pushFront(e)
	return e, true
}

// reset zeroes e's state but keeps its key and list position.
func (l *lru[K, V]) reset(e *entry[K, V]) {
	var zero V
	e.val = zero
	e.expires, e.hold = 0, 0
}

// victim picks the entry to evict for room: the least recently used one that
// is not held, looking at most victimScan entries, else the least recently
// used. It is nil if the list is empty (no entries, or all pinned).
func (l *lru[K, V]) victim(now int64) *entry[K, V] {
	e := l.root.prev
	for i := 0; i < victimScan && e != &l.root; i++ {
		if e.hold <= now || e.expires <= now {
			return e
		}
		e = e.prev
	}
	if l.root.prev == &l.root {
		return nil
	}
	return l.root.prev
}

// sweep drops up to sweepPerCall expired entries from the least recently
// used end.
func (l *lru[K, V]) sweep(now int64) {
	for i := 0; i < sweepPerCall; i++ {
		e := l.root.prev
		if e == &l.root || e.expires > now {
			return
		}
		l.remove(e)
	}
}

// shrink evicts entries until the table fits max (after max was lowered).
func (l *lru[K, V]) shrink(now int64) {
	for len(l.m) > l.max {
		e := l.victim(now)
		if e == nil {
			return
		}
		l.remove(e)
	}
}

func (l *lru[K, V]) remove(e *entry[K, V]) {
	if !e.pinned {
		l.unlink(e)
	}
	delete(l.m, e.key)
}

func (l *lru[K, V]) clear() {
	clear(l.m)
	l.root.next, l.root.prev = &l.root, &l.root
}

// pin takes e off the list: it is in use and must not be evicted.
func (l *lru[K, V]) pin(e *entry[K, V]) {
	if !e.pinned {
		l.unlink(e)
		e.pinned = true
	}
}

// unpin puts e back on the list as the most recently used entry.
func (l *lru[K, V]) unpin(e *entry[K, V]) {
	if e.pinned {
		e.pinned = false
		l.pushFront(e)
	}
}

func (l *lru[K, V]) unlink(e *entry[K, V]) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (l *lru[K, V]) pushFront(e *entry[K, V]) {
	e.prev = &l.root
	e.next = l.root.next
	e.next.prev = e
	l.root.next = e
}
