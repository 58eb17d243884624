package route

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrAllOpen is returned (wrapped) by Breaker.Dial when nothing was dialled:
// every address's circuit was open after a timeout, and each had already been
// tried within the probe interval.
var ErrAllOpen = errors.New("route: every upstream address has an open circuit")

// Breaker defaults, used for fields of BreakerConfig that are <= 0.
const (
	DefaultRefusals      = 3
	DefaultTimeouts      = 1
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = time.Second
)

// BreakerConfig tunes a Breaker. Fields <= 0 get the defaults.
type BreakerConfig struct {
	// Refusals is how many fast failures since the last success open an
	// address's circuit: connection refused or reset, a bad greeting, a failed
	// handshake. A refusal costs the client next to nothing, and a server
	// that restarts refuses for a moment, so the default is 3.
	Refusals int
	// Timeouts is how many dials that ran out of time since the last
	// success open it.
	// Each cost a client the whole dial timeout, so the default is 1.
	Timeouts int
	// ProbeInterval is how often an open address is tried again while it
	// is skipped. Default 1 s.
	ProbeInterval time.Duration
	// ProbeTimeout bounds that trial while another address could serve
	// the login instead, so that the login moves on quickly. Default 1 s.
	ProbeTimeout time.Duration
}

// Breaker is a circuit breaker per upstream address (Stalwart's "host down",
// Dovecot's reconnect limit). Its job is to keep logins from waiting on a
// dead address when another could serve them, and never to keep them from
// an address that is back up.
//
// An address's circuit opens after Refusals fast failures, or Timeouts dials
// that ran out of time, since its last success; its first success closes it.
// While it is open, Dial
//
//   - skips it if another address of the same list is closed, except for one
//     trial per ProbeInterval, bounded by ProbeTimeout;
//   - otherwise, when every address is open, dials it on every login if its
//     last failure was fast (a refused connect costs nothing, and the first
//     login after the server is back gets through), and once per
//     ProbeInterval with the full dial timeout if it was a timeout (the other
//     logins fail at once instead of each waiting on a server that does not
//     answer).
//
// Circuits are kept for every address ever seen, which is bounded by the
// configuration. A Breaker is safe for concurrent use.
type Breaker struct {
	cfg BreakerConfig
	now func() time.Time // tests replace it

	mu       sync.Mutex
	circuits map[string]*circuit
}

type circuit struct {
	refusals  int  // fast failures since the last success
	timeouts  int  // timeouts since the last success
	open      bool // until the next success
	slow      bool // the last failure was a timeout
	nextTrial time.Time
}

// State is one address's circuit, for metrics.
type State struct {
	Address string
	// Open is true from the moment the circuit opens until a success
	// closes it.
	Open bool
	// Refusals and Timeouts count the failures since the last success.
	Refusals, Timeouts int
}

// NewBreaker returns a Breaker configured by cfg.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if cfg.Refusals <= 0 {
		cfg.Refusals = DefaultRefusals
	}
	if cfg.Timeouts <= 0 {
		cfg.Timeouts = DefaultTimeouts
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	return &Breaker{cfg: cfg, now: time.Now, circuits: make(map[string]*circuit)}
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

// admission is what Dial does with one address.
type admission int

const (
	admitNone  admission = iota
	admitDial            // with the caller's timeout
	admitTrial           // within ProbeTimeout
)

// anyClosed reports whether one of addrs may be dialled without a trial.
func (b *Breaker) anyClosed(addrs []string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.ContainsFunc(addrs, func(a string) bool { return !b.get(a).open })
}

// admit decides about addr; fallback says whether a closed address is in
// the list. A trial it grants moves the next one a probe interval away.
func (b *Breaker) admit(addr string, fallback bool) admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.get(addr)
	now := b.now()
	switch {
	case !c.open:
		return admitDial
	case !fallback && !c.slow:
		return admitDial
	case now.Before(c.nextTrial):
		return admitNone
	}
	c.nextTrial = now.Add(b.cfg.ProbeInterval)
	if fallback {
		return admitTrial
	}
	return admitDial
}

// success closes addr's circuit.
func (b *Breaker) success(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	*b.get(addr) = circuit{}
}

// failure counts a failed dial of addr; timeout says it ran out of time.
func (b *Breaker) failure(addr string, timeout bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.get(addr)
	if timeout {
		c.timeouts++
	} else {
		c.refusals++
	}
	c.slow = timeout
	if !c.open && (c.refusals >= b.cfg.Refusals || c.timeouts >= b.cfg.Timeouts) {
		c.open = true
		c.nextTrial = b.now().Add(b.cfg.ProbeInterval)
	}
}

// release gives back a trial that ended without a verdict (the caller gave
// up), so that the next login may try at once.
func (b *Breaker) release(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(addr).nextTrial = time.Time{}
}

// States returns every known address's circuit, sorted by address.
func (b *Breaker) States() []State {
	b.mu.Lock()
	defer b.mu.Unlock()
	states := make([]State, 0, len(b.circuits))
	for addr, c := range b.circuits {
		states = append(states, State{Address: addr, Open: c.open, Refusals: c.refusals, Timeouts: c.timeouts})
	}
	slices.SortFunc(states, func(x, y State) int { return strings.Compare(x.Address, y.Address) })
	return states
}

// Dial tries addrs in order, as the circuits allow (see Breaker), calling
// dial for each until one succeeds, and records each outcome. It makes at
// most maxAttempts dials (maxAttempts <= 0 means one per address). It
// returns the connection and the address it reached.
//
// dial must give up when its ctx is done: that is how a trial is bounded.
// The connection it returns must not depend on ctx afterwards.
//
// If nothing succeeds, the error lists each address's failure; it wraps
// ErrAllOpen if nothing was dialled. If ctx is cancelled, Dial stops and
// returns ctx's error, and the dial in progress is not counted against its
// address; a dial that fails because ctx's deadline passed is (the address
// was too slow).
func (b *Breaker) Dial(ctx context.Context, addrs []string, maxAttempts int,
	dial func(ctx context.Context, addr string) (net.Conn, error)) (net.Conn, string, error) {
	if len(addrs) == 0 {
		return nil, "", errors.New("route: dial: no upstream addresses")
	}
	if maxAttempts <= 0 {
		maxAttempts = len(addrs)
	}
	fallback := b.anyClosed(addrs)
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
		how := b.admit(addr, fallback)
		if how == admitNone {
			errs = append(errs, fmt.Errorf("%s: circuit open", addr))
			continue
		}
		attempts++
		conn, err := b.dialOne(ctx, addr, how, dial)
		if err == nil {
			b.success(addr)
			return conn, addr, nil
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			b.release(addr)
			return nil, "", fmt.Errorf("route: dial: %w", dialErrors(append(errs, ctx.Err())))
		}
		b.failure(addr, isTimeout(err))
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	if attempts == 0 {
		return nil, "", fmt.Errorf("%w: %s", ErrAllOpen, strings.Join(addrs, ", "))
	}
	return nil, "", fmt.Errorf("route: dial: every upstream address failed or was open: %w", dialErrors(errs))
}

// dialOne calls dial, within ProbeTimeout for a trial.
func (b *Breaker) dialOne(ctx context.Context, addr string, how admission,
	dial func(ctx context.Context, addr string) (net.Conn, error)) (net.Conn, error) {
	if how == admitTrial {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.ProbeTimeout)
		defer cancel()
	}
	conn, err := dial(ctx, addr)
	if err == nil && conn == nil {
		err = errors.New("dial returned no connection")
	}
	return conn, err
}

// isTimeout reports whether a dial failed by running out of time, rather
// than by being refused.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
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
