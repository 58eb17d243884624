package proxy

import (
	"sync"
	"time"
)

// Refusals that happen before a session exists (a connection limit, a failed
// TLS handshake) cost a flood nothing to cause, so they must not cost the
// audit trail a record each: a flood would fill the disk, and with the audit
// failing closed that is an outage for everyone. refusalLog writes the first
// refusal per (listener, rule, key) at once, then at most one summary per
// interval with the number of refusals it stands for.
type refusalLog struct {
	interval time.Duration
	emit     func(PolicyEvent)
	onPanic  func(any)

	mu      sync.Mutex
	windows map[refusalKey]*refusalWindow
	timer   *time.Timer // armed while windows is not empty
}

type refusalKey struct {
	listener string
	rule     Rule
	key      string
}

// refusalWindow is one key's current interval: the refusals since its last
// record, and the latest of them, whose detail and value the summary repeats.
type refusalWindow struct {
	start  time.Time
	count  int
	latest PolicyEvent
}

// maxRefusalKeys bounds the table; refusals for further keys share the key
// "*", so that many source addresses cost no more than one.
const maxRefusalKeys = 1000

// overflowKey stands for every key beyond maxRefusalKeys.
const overflowKey = "*"

func newRefusalLog(interval time.Duration, emit func(PolicyEvent), onPanic func(any)) *refusalLog {
	return &refusalLog{interval: interval, emit: emit, onPanic: onPanic, windows: map[refusalKey]*refusalWindow{}}
}

// record notes one refusal, writing it at once if it is the first for its key
// in an interval.
func (rl *refusalLog) record(e PolicyEvent) {
	k := refusalKey{e.Listener, e.Rule, e.Key}
	rl.mu.Lock()
	w := rl.windows[k]
	if w == nil && len(rl.windows) >= maxRefusalKeys {
		k.key, e.Key = overflowKey, overflowKey
		w = rl.windows[k]
	}
	if w != nil {
		w.count++
		w.latest = e
		rl.mu.Unlock()
		return
	}
	rl.windows[k] = &refusalWindow{start: time.Now()}
	if rl.timer == nil {
		rl.timer = time.AfterFunc(rl.interval, rl.tick)
	}
	rl.mu.Unlock()
	e.Count = 1
	rl.emit(e)
}

// tick writes the summaries of the windows that are over. A window with
// refusals in it starts again, so a flood that goes on is summarised once per
// interval; an empty one is forgotten, so the next refusal is written at once.
func (rl *refusalLog) tick() {
	defer rl.contain()
	now := time.Now()
	var due []PolicyEvent
	rl.mu.Lock()
	for k, w := range rl.windows {
		if now.Sub(w.start) < rl.interval {
			continue
		}
		if w.count == 0 {
			delete(rl.windows, k)
			continue
		}
		e := w.latest
		e.Count = w.count
		due = append(due, e)
		*w = refusalWindow{start: now}
	}
	rl.timer = nil
	if len(rl.windows) > 0 {
		rl.timer = time.AfterFunc(rl.interval/4, rl.tick)
	}
	rl.mu.Unlock()
	for _, e := range due {
		rl.emit(e)
	}
}

// flush writes every pending summary now (at shutdown).
func (rl *refusalLog) flush() {
	defer rl.contain()
	var due []PolicyEvent
	rl.mu.Lock()
	if rl.timer != nil {
		rl.timer.Stop()
		rl.timer = nil
	}
	for k, w := range rl.windows {
		if w.count > 0 {
			e := w.latest
			e.Count = w.count
			due = append(due, e)
		}
		delete(rl.windows, k)
	}
	rl.mu.Unlock()
	for _, e := range due {
		rl.emit(e)
	}
}

// contain keeps a panic in the Auditor from taking the process down.
func (rl *refusalLog) contain() {
	if r := recover(); r != nil {
		rl.onPanic(r)
	}
}
