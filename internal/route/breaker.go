package route

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrAllOpen is returned (wrapped) by Breaker.Dial when every address had an
// open circuit, so nothing was dialled.
var ErrAllOpen = errors.New("route: every upstream address has an open circuit")

// Breaker defaults, used for arguments <= 0 to NewBreaker.
const (
	DefaultFailures    = 3
	DefaultCooldown    = 10 * time.Second
	DefaultMaxCooldown = 2 * time.Minute
)

// Breaker is a circuit breaker per upstream address (Stalwart's "host down",
// Dovecot's reconnect limit). An address's circuit is closed at first: every
// dial is allowed. After a number of consecutive failures it opens for a
// cool-down, during which Allow refuses at once. When the cool-down is over
// it is half-open: one trial dial is allowed; success closes the circuit,
// failure opens it again for twice the cool-down, up to the maximum. Any
// success closes the circuit and resets the cool-down.
//
// Circuits are kept for every address ever seen, which is bounded by the
// configuration. A Breaker is safe for concurrent use.
type Breaker struct {
	failures    int
	cooldown    time.Duration
	maxCooldown time.Duration
	now         func() time.Time // tests replace it

	mu       sync.Mutex
	circuits map[string]*circuit
}

type circuit struct {
	fails    int           // consecutive failures
	open     bool          // refusing, or half-open
	until    time.Time     // while open: refuse until then
	cooldown time.Duration // length of the current open period
	trial    time.Time     // when the half-open trial was let through, or zero
}

// State is one address's circuit, for metrics.
type State struct {
	Address string
	// Open is true from the moment the circuit opens until a success closes
	// it, including while it is half-open.
	Open bool
	// Failures is the number of consecutive failures.
	Failures int
}

// NewBreaker returns a Breaker that opens a circuit after failures
// consecutive failures, for cooldown at first, doubling up to maxCooldown
// while the trials fail. Values <= 0 mean the defaults (3, 10 s, 2 min); a
// maxCooldown below cooldown is raised to it.
func NewBreaker(failures int, cooldown, maxCooldown time.Duration) *Breaker {
	if failures <= 0 {
		failures = DefaultFailures
	}
	if cooldown <= 0 {
		cooldown = DefaultCooldown
	}
	if maxCooldown <= 0 {
		maxCooldown = DefaultMaxCooldown
	}
	return &Breaker{
		failures:    failures,
		cooldown:    cooldown,
		maxCooldown: max(maxCooldown, cooldown),
		now:         time.Now,
		circuits:    make(map[string]*circuit),
	}
}

// get returns addr's circuit, creating a closed one. b.mu must be held.
func (b *Breaker) get(addr string) *circuit {
	c := b.circuits[addr]
	if c == nil {
		c = &circuit{}
		b.circuits[addr] = c
	}
	return c
}

// Allow reports whether addr may be dialled now. While the circuit is open
// it returns false without waiting. Once the cool-down is over it returns
// true once, for the trial, and false to everyone else until that trial
// reports Success or Failure (or, should it never report, for another
// cool-down). A caller that gets true must report the outcome.
func (b *Breaker) Allow(addr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.get(addr)
	if !c.open {
		return true
	}
	now := b.now()
	if now.Before(c.until) {
		return false
	}
	if !c.trial.IsZero() && now.Before(c.trial.Add(c.cooldown)) {
		return false // a trial is in flight
	}
	c.trial = now
	return true
}

// Success records a successful dial (or session) with addr and closes its
// circuit.
func (b *Breaker) Success(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	*b.get(addr) = circuit{}
}

// Failure records a failed dial with addr. The failures-th consecutive one
// opens the circuit; a failed half-open trial opens it again for twice the
// previous cool-down. A failure while the circuit is open and no trial is in
// flight (a dial that began before it opened) changes nothing.
func (b *Breaker) Failure(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.get(addr)
	c.fails++
	now := b.now()
	switch {
	case !c.open:
		if c.fails >= b.failures {
			c.open = true
			c.cooldown = b.cooldown
			c.until = now.Add(c.cooldown)
		}
	case !c.trial.IsZero():
		c.cooldown = min(2*c.cooldown, b.maxCooldown)
		c.until = now.Add(c.cooldown)
		c.trial = time.Time{}
	}
}

// release gives back a half-open trial that ended without a verdict (the
// caller gave up), so that the next Allow may try at once.
func (b *Breaker) release(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(addr).trial = time.Time{}
}

// States returns every known address's circuit, sorted by address.
func (b *Breaker) States() []State {
	b.mu.Lock()
	defer b.mu.Unlock()
	states := make([]State, 0, len(b.circuits))
	for addr, c := range b.circuits {
		states = append(states, State{Address: addr, Open: c.open, Failures: c.fails})
	}
	slices.SortFunc(states, func(x, y State) int { return strings.Compare(x.Address, y.Address) })
	return states
}

// Dial tries addrs in order, skipping those whose circuit is open, calling
// dial for each until one succeeds, and records each outcome. It makes at
// most maxAttempts dials (maxAttempts <= 0 means one per address). It
// returns the connection and the address it reached.
//
// If nothing succeeds, the error lists each address's failure; it wraps
// ErrAllOpen if every address was open so that nothing was dialled. If ctx
// is cancelled, Dial stops and returns ctx's error, and the dial in progress
// is not counted against its address; a dial that fails because ctx's
// deadline passed is (the address was too slow).
func (b *Breaker) Dial(ctx context.Context, addrs []string, maxAttempts int,
	dial func(ctx context.Context, addr string) (net.Conn, error)) (net.Conn, string, error) {
	if len(addrs) == 0 {
		return nil, "", errors.New("route: dial: no upstream addresses")
	}
	if maxAttempts <= 0 {
		maxAttempts = len(addrs)
	}
	var errs []error
	attempts := 0
	for _, addr := range addrs {
		if attempts == maxAttempts {
			errs = append(errs, fmt.Errorf("stopped after %d attempts", attempts))
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, "", fmt.Errorf("route: dial: %w", dialErrors(append(errs, err)))
		}
		if !b.Allow(addr) {
			errs = append(errs, fmt.Errorf("%s: circuit open", addr))
			continue
		}
		attempts++
		conn, err := dial(ctx, addr)
		if err == nil && conn == nil {
			err = errors.New("dial returned no connection")
		}
		if err == nil {
			b.Success(addr)
			return conn, addr, nil
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			b.release(addr)
			return nil, "", fmt.Errorf("route: dial: %w", dialErrors(append(errs, ctx.Err())))
		}
		b.Failure(addr)
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	if attempts == 0 {
		return nil, "", fmt.Errorf("%w: %s", ErrAllOpen, strings.Join(addrs, ", "))
	}
	return nil, "", fmt.Errorf("route: dial: every upstream address failed or was open: %w", dialErrors(errs))
}

// dialErrors is one error per address, on one line (for the log), each
// still reachable with errors.Is and errors.As.
type dialErrors []error

func (e dialErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e dialErrors) Unwrap() []error { return e }
