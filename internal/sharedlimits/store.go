package sharedlimits

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/ratelimit"
)

// ErrUnavailable wraps every error of a store that did not answer in time,
// or that was skipped after a recent failure.
var ErrUnavailable = errors.New("shared limits store unavailable")

// Defaults for the zero Config fields.
const (
	DefaultPrefix  = "popproxy:"
	DefaultTimeout = 50 * time.Millisecond
	DefaultLease   = 30 * time.Second
)

// retryAfter is how long a failed store is skipped before it is tried again,
// so that a dead store costs the logins nothing while it stays dead.
const retryAfter = time.Second

// foreverWindow stands in for a failed-login window of zero (forget only on
// success): the store's keys must expire, so such failures are forgotten a
// day after the last one.
const foreverWindow = 24 * time.Hour

// Config configures a Store.
type Config struct {
	// Address is the store's host:port.
	Address string
	// Password authenticates to the store (AUTH); empty: none.
	Password string
	// TLS, if not nil, wraps the connection (the store's tls-port).
	TLS *tls.Config
	// Prefix starts every key, so that a store can serve other programs or
	// several fleets. Empty: DefaultPrefix.
	Prefix string
	// Timeout bounds each round trip, connecting included. Zero: DefaultTimeout.
	Timeout time.Duration
	// Lease is how long a registered session holds its slot without being
	// renewed. Zero: DefaultLease.
	Lease time.Duration
}

// Store is the fleet's shared limit state. It is safe for concurrent use.
type Store struct {
	rdb     *redis.Client
	prefix  string
	timeout time.Duration
	lease   time.Duration
	log     *slog.Logger
	owner   string // names this process's sessions in the registry

	mu      sync.Mutex
	fp      *ratelimit.Fingerprinter // nil until fetched from the store
	fpKey   string
	held    map[string]string // session member -> its mailbox's sessions key
	down    bool
	retryAt time.Time

	requests, failures atomic.Int64
	rtt                atomic.Int64 // nanoseconds, summed

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a Store for cfg; it does not connect until first used, so a
// store that is down at start is no different from one that fails later.
// logger gets one line when the store fails and one when it is back.
func New(cfg Config, logger *slog.Logger) *Store {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	st := &Store{
		rdb: redis.NewClient(&redis.Options{
			Addr: cfg.Address, Password: cfg.Password, TLSConfig: cfg.TLS,
			DialTimeout: cfg.Timeout, ReadTimeout: cfg.Timeout, WriteTimeout: cfg.Timeout,
			PoolTimeout: cfg.Timeout, ContextTimeoutEnabled: true,
			MaxRetries: -1, // a retry would take a second timeout: fall back instead
			// The store's CLIENT SETINFO, sent on connect, is one round trip
			// more, and old servers refuse it.
			DisableIdentity: true,
		}),
		prefix: cfg.Prefix, timeout: cfg.Timeout, lease: cfg.Lease, log: logger,
		owner: randomHex(8), held: make(map[string]string),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go st.renewLoop()
	return st
}

// Close stops renewing leases and closes the connections. The sessions
// still registered are left to expire. Calls after the first do nothing.
func (st *Store) Close() error {
	var err error
	st.closeOnce.Do(func() {
		close(st.stop)
		<-st.done
		err = st.rdb.Close()
	})
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b)
}

// do runs one round trip against the store within the timeout, or fails at
// once while the store is being skipped.
func (st *Store) do(ctx context.Context, f func(ctx context.Context) error) error {
	st.mu.Lock()
	skip := st.down && time.Now().Before(st.retryAt)
	st.mu.Unlock()
	if skip {
		return ErrUnavailable
	}
	// The caller's cancellation is ignored: a guesser who hangs up during
	// the delay must still have its failure counted. The timeout bounds it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), st.timeout)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	st.requests.Add(1)
	st.rtt.Add(int64(time.Since(start)))
	st.record(err)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// record notes the outcome of a round trip, logging the first failure of a
// streak and the recovery that ends it.
func (st *Store) record(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		st.failures.Add(1)
		st.retryAt = time.Now().Add(retryAfter)
		if !st.down {
			st.down = true
			st.log.Error("shared limits: store unavailable; applying limits.shared.on_unavailable until it answers", "err", err)
		}
		return
	}
	if st.down {
		st.down = false
		st.log.Info("shared limits: store available again")
	}
}

// Stats is what the metrics export: round trips, failed ones among them,
// their summed duration, and whether the store is being skipped.
type Stats struct {
	Requests, Failures int64
	RoundTrip          time.Duration
	Unavailable        bool
}

// Stats returns the counts since New.
func (st *Store) Stats() Stats {
	st.mu.Lock()
	down := st.down
	st.mu.Unlock()
	return Stats{Requests: st.requests.Load(), Failures: st.failures.Load(),
		RoundTrip: time.Duration(st.rtt.Load()), Unavailable: down}
}

func (st *Store) key(kind, key string) string { return st.prefix + kind + ":" + key }

// Blocked returns how much longer key is blocked after failed logins, zero
// if it is not.
func (st *Store) Blocked(ctx context.Context, key string) (time.Duration, error) {
	var left time.Duration
	err := st.do(ctx, func(ctx context.Context) error {
		d, err := st.rdb.PTTL(ctx, st.key("block", key)).Result()
		left = max(d, 0) // -1 and -2: no block
		return err
	})
	return left, err
}

// Fail counts a failed login against the address and the user keys, each
// under its configuration, as ratelimit.Failures does, and returns the delay
// before the refusal: the larger of the two. secret is what the failure's
// fingerprint is made of (the user and the password); only distinct
// fingerprints count.
func (st *Store) Fail(ctx context.Context, addr string, addrCfg ratelimit.FailureConfig, user string, userCfg ratelimit.FailureConfig, secret ...string) (time.Duration, error) {
	keys := []string{st.key("fingerprint-key", "")}
	args := []any{"", "", ratelimit.RecentSecrets}
	cfgs := []ratelimit.FailureConfig{addrCfg, userCfg}
	for i, k := range []string{addr, user} {
		c := cfgs[i]
		keys = append(keys, st.key("failures", k), st.key("secrets", k), st.key("block", k))
		window := c.Window
		if window <= 0 {
			window = foreverWindow
		}
		args = append(args, window.Milliseconds(), c.MaxFailures, c.Block.Milliseconds())
	}
	for attempt := 0; ; attempt++ {
		fp, key, err := st.fingerprinter(ctx, attempt > 0)
		if err != nil {
			return 0, err
		}
		args[0], args[1] = key, strconv.FormatUint(uint64(fp.Of(secret...)), 16)
		var out []int64
		err = st.do(ctx, func(ctx context.Context) error {
			out, err = failScript.Run(ctx, st.rdb, keys, args...).Int64Slice()
			return err
		})
		if err != nil {
			return 0, err
		}
		if len(out) == 4 {
			return max(addrCfg.Delay(int(out[0])), userCfg.Delay(int(out[2]))), nil
		}
		if attempt > 0 {
			return 0, fmt.Errorf("%w: the fleet's fingerprint key keeps changing", ErrUnavailable)
		}
	}
}

// fingerprinter returns the fleet's Fingerprinter and its key, fetching them
// from the store the first time or when refresh is set.
func (st *Store) fingerprinter(ctx context.Context, refresh bool) (*ratelimit.Fingerprinter, string, error) {
	st.mu.Lock()
	fp, key := st.fp, st.fpKey
	st.mu.Unlock()
	if fp != nil && !refresh {
		return fp, key, nil
	}
	err := st.do(ctx, func(ctx context.Context) error {
		var err error
		key, err = fingerprintKeyScript.Run(ctx, st.rdb, []string{st.key("fingerprint-key", "")}, randomHex(32)).Text()
		return err
	})
	if err != nil {
		return nil, "", err
	}
	raw, err := hex.DecodeString(key)
	if err != nil || len(raw) < 16 {
		return nil, "", fmt.Errorf("%w: %s is not a fingerprint key", ErrUnavailable, st.key("fingerprint-key", ""))
	}
	fp = ratelimit.NewFingerprinterKey(raw)
	st.mu.Lock()
	st.fp, st.fpKey = fp, key
	st.mu.Unlock()
	return fp, key, nil
}

// Login follows a good login of the user tried to mailbox: it forgets tried's
// failed logins, then registers session against mailbox's maxSessions
// (0: no limit) and claims its LOGIN-DELAY interval (0: none), both or
// neither. It returns the sessions in use if they are all taken, or the wait
// left of the interval, or zeros if the session may go on. A registered
// session holds its slot until EndSession, or a lease after its process died.
func (st *Store) Login(ctx context.Context, tried, mailbox, session string, maxSessions int, interval time.Duration) (inUse int, wait time.Duration, err error) {
	sessions, member := st.key("sessions", mailbox), st.owner+"/"+session
	keys := []string{st.key("failures", tried), st.key("secrets", tried), st.key("block", tried), sessions, st.key("last-login", mailbox)}
	var out []int64
	err = st.do(ctx, func(ctx context.Context) error {
		out, err = loginScript.Run(ctx, st.rdb, keys, member, maxSessions, st.lease.Milliseconds(), interval.Milliseconds()).Int64Slice()
		return err
	})
	switch {
	case err != nil:
		return 0, 0, err
	case len(out) != 2:
		return 0, 0, fmt.Errorf("%w: login script answered %v", ErrUnavailable, out)
	case out[0] == 1:
		return int(out[1]), 0, nil
	case out[0] == 2:
		return 0, time.Duration(out[1]) * time.Millisecond, nil
	}
	if maxSessions > 0 {
		st.mu.Lock()
		st.held[member] = sessions
		st.mu.Unlock()
	}
	return 0, 0, nil
}

// EndSession frees the slot session took in Login, if it took one. If the
// store does not answer, the lease frees it.
func (st *Store) EndSession(mailbox, session string) {
	member := st.owner + "/" + session
	st.mu.Lock()
	sessions, ok := st.held[member]
	delete(st.held, member)
	st.mu.Unlock()
	if ok {
		st.do(context.Background(), func(ctx context.Context) error {
			return st.rdb.ZRem(ctx, sessions, member).Err()
		})
	}
}

// renewBatch bounds the sessions renewed in one round trip.
const renewBatch = 1000

// renewLoop renews the leases of the sessions held, every third of a lease,
// so that a lease outlives two missed renewals.
func (st *Store) renewLoop() {
	defer close(st.done)
	t := time.NewTicker(st.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-st.stop:
			return
		case <-t.C:
			st.renew()
		}
	}
}

func (st *Store) renew() {
	st.mu.Lock()
	keys := make([]string, 0, len(st.held))
	args := []any{st.lease.Milliseconds()}
	for member, sessions := range st.held {
		keys = append(keys, sessions)
		args = append(args, member)
	}
	st.mu.Unlock()
	for len(keys) > 0 {
		n := min(len(keys), renewBatch)
		batch := append([]any{args[0]}, args[1:n+1]...)
		st.do(context.Background(), func(ctx context.Context) error {
			return renewScript.Run(ctx, st.rdb, keys[:n], batch...).Err()
		})
		keys, args = keys[n:], append(args[:1], args[n+1:]...)
	}
}

// AllowConnection reports whether a new connection from the address key is
// within r per second with bursts of burst, counted fleet-wide.
func (st *Store) AllowConnection(ctx context.Context, key string, r rate.Limit, burst int) (bool, error) {
	if r == rate.Inf || r <= 0 {
		return true, nil
	}
	interval := int64(float64(time.Second/time.Microsecond) / float64(r))
	var ok int64
	err := st.do(ctx, func(ctx context.Context) error {
		var err error
		ok, err = connectScript.Run(ctx, st.rdb, []string{st.key("connections", key)}, max(interval, 1), max(burst, 1)).Int64()
		return err
	})
	return ok == 1, err
}

// State is what the store holds on one key, for `popproxy limits show`.
type State struct {
	// Failures counted in the current window, and the block left after them.
	Failures int
	Blocked  time.Duration
	// Sessions registered (users only), and the LOGIN-DELAY left.
	Sessions   int
	LoginDelay time.Duration
}

// Show returns the state of key.
func (st *Store) Show(ctx context.Context, key string) (State, error) {
	var s State
	err := st.do(ctx, func(ctx context.Context) error {
		p := st.rdb.Pipeline()
		n := p.Get(ctx, st.key("failures", key))
		block := p.PTTL(ctx, st.key("block", key))
		sessions := p.ZCount(ctx, st.key("sessions", key), "("+strconv.FormatInt(time.Now().UnixMilli(), 10), "+inf")
		delay := p.PTTL(ctx, st.key("last-login", key))
		if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		failures, _ := n.Int()
		s = State{Failures: failures, Blocked: max(block.Val(), 0), Sessions: int(sessions.Val()), LoginDelay: max(delay.Val(), 0)}
		return nil
	})
	return s, err
}

// Clear forgets key's failed logins, block, LOGIN-DELAY and connection
// rate. Registered sessions stay: they are live.
func (st *Store) Clear(ctx context.Context, key string) error {
	return st.do(ctx, func(ctx context.Context) error {
		return st.rdb.Del(ctx, st.key("failures", key), st.key("secrets", key), st.key("block", key),
			st.key("last-login", key), st.key("connections", key)).Err()
	})
}
