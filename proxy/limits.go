package proxy

import (
	"io"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/route"
)

// Limits bound what clients may do. A zero field switches that limit off; the
// zero Limits limits nothing. Server.SetLimits changes them while running.
//
// The per-user limits (FailuresPerUser, PerUserSessions, LoginDelay,
// UserBandwidth) are keyed on the upstream and the login sent there, after
// the route's rewriting: with strip_domain, alice@a.example and
// alice@b.example are one user, "alice" on that upstream.
type Limits struct {
	// MaxSessions caps concurrent sessions in all.
	MaxSessions int
	// Trusted networks are exempt from the per-address limits and from
	// failed-login accounting (a webmail front end, a monitoring host).
	Trusted ratelimit.Networks
	// IPv6Prefix groups IPv6 clients for per-address limits. Default 64.
	IPv6Prefix int
	// PerIPSessions caps concurrent sessions per client address.
	PerIPSessions int
	// PerIPRate and PerIPBurst bound new connections per client address.
	PerIPRate  rate.Limit
	PerIPBurst int
	// FailuresPerIP and FailuresPerUser turn failed logins into a growing
	// delay before the -ERR and then a temporary block, counted apart so
	// that a shared NAT does not lock everyone out of one account and a
	// botnet does not get unlimited tries at one account.
	FailuresPerIP, FailuresPerUser ratelimit.FailureConfig
	// PerUserSessions caps concurrent sessions per user (-ERR [IN-USE]).
	PerUserSessions int
	// LoginDelay is the least time between two logins of a user
	// (RFC 2449 LOGIN-DELAY, advertised in CAPA, -ERR [LOGIN-DELAY]).
	LoginDelay time.Duration
	// CommandRate and CommandBurst bound commands per session after login.
	CommandRate  rate.Limit
	CommandBurst int
	// SessionBandwidth and UserBandwidth bound the octets per second of
	// retrieved messages per session and per user.
	SessionBandwidth, UserBandwidth int
	// MaxRetrievals caps RETR and TOP commands per session.
	MaxRetrievals int
	// KeepUsernameCase keys the per-user limits on the login exactly as
	// sent. By default ASCII case is folded, as most servers ignore it, so
	// that ALICE gets no budget of its own next to alice.
	KeepUsernameCase bool
}

// Table sizes: bounded, so that many source addresses or user names cannot
// exhaust memory; the least recently used entries go first.
const (
	maxLimiterKeys = 100_000
	limiterIdle    = time.Hour
)

// limiter holds the shared state behind Limits.
type limiter struct {
	cfg           atomic.Pointer[Limits]
	sessions      *ratelimit.Gauge
	ipSessions    *ratelimit.Counter[netip.Prefix]
	ipRate        *ratelimit.Buckets[netip.Prefix]
	ipFailures    *ratelimit.Failures[netip.Prefix]
	userFailures  *ratelimit.Failures[userKey]
	userSessions  *ratelimit.Counter[userKey]
	loginInterval *ratelimit.Interval[userKey]
	userBandwidth *ratelimit.UserLimiters[userKey]
	// fingerprints tell a password tried again from a new one, so that only
	// distinct wrong passwords count as failed logins.
	fingerprints *ratelimit.Fingerprinter
}

func newLimiter(l Limits) *limiter {
	lm := &limiter{
		sessions:      ratelimit.NewGauge(0),
		ipSessions:    ratelimit.NewCounter[netip.Prefix](0),
		ipRate:        ratelimit.NewBuckets[netip.Prefix](rate.Inf, 1, maxLimiterKeys, limiterIdle),
		ipFailures:    ratelimit.NewFailures[netip.Prefix](ratelimit.FailureConfig{}),
		userFailures:  ratelimit.NewFailures[userKey](ratelimit.FailureConfig{}),
		userSessions:  ratelimit.NewCounter[userKey](0),
		loginInterval: ratelimit.NewInterval[userKey](0, maxLimiterKeys),
		userBandwidth: ratelimit.NewUserLimiters[userKey](rate.Inf, 1, maxLimiterKeys, limiterIdle),
		fingerprints:  ratelimit.NewFingerprinter(),
	}
	lm.update(l)
	return lm
}

// update applies new limits in place: open sessions keep going under them.
func (lm *limiter) update(l Limits) {
	if l.IPv6Prefix == 0 {
		l.IPv6Prefix = 64
	}
	lm.sessions.Update(l.MaxSessions)
	lm.ipSessions.Update(l.PerIPSessions)
	connRate := l.PerIPRate
	if connRate == 0 {
		connRate = rate.Inf
	}
	lm.ipRate.Update(connRate, max(l.PerIPBurst, 1), maxLimiterKeys, limiterIdle)
	l.FailuresPerIP.MaxKeys, l.FailuresPerUser.MaxKeys = maxLimiterKeys, maxLimiterKeys
	lm.ipFailures.Update(l.FailuresPerIP)
	lm.userFailures.Update(l.FailuresPerUser)
	lm.userSessions.Update(l.PerUserSessions)
	lm.loginInterval.Update(l.LoginDelay, maxLimiterKeys)
	lm.userBandwidth.Update(bytesPerSecond(l.UserBandwidth), burstFor(l.UserBandwidth), maxLimiterKeys, limiterIdle)
	lm.cfg.Store(&l)
}

func (lm *limiter) limits() *Limits { return lm.cfg.Load() }

// bytesPerSecond turns a configured rate (0: off) into a limit.
func bytesPerSecond(n int) rate.Limit {
	if n <= 0 {
		return rate.Inf
	}
	return rate.Limit(n)
}

// burstFor lets a bandwidth limiter pass 16 KiB at once, or a tenth of a
// second's worth if that is more, so writes stay large without bursting far
// beyond the rate.
func burstFor(n int) int { return max(16<<10, n/10) }

// userKey is what the per-user limits are keyed on: the upstream and the login
// sent there. The names a route rewrites to one login share a budget; one name
// on two upstreams, two mailboxes, does not.
type userKey struct {
	upstream, login string
}

// String is the key as audited: "upstream/login", or the login alone when
// no upstream was chosen.
func (k userKey) String() string {
	if k.upstream == "" {
		return k.login
	}
	return k.upstream + "/" + k.login
}

// userKey returns the key of login on upstream, ASCII case folded unless the
// limits keep case. Only ASCII, as case-insensitive servers do: Unicode
// folding would merge names a server tells apart (the Kelvin sign lowers to k).
func (lm *limiter) userKey(upstream, login string) userKey {
	return userKey{upstream, lm.limits().foldLogin(login)}
}

// foldLogin is login as the per-user limits key it.
func (l *Limits) foldLogin(login string) string {
	if l.KeepUsernameCase {
		return login
	}
	return route.LowerASCII(login)
}

// SetLimits replaces the limits; open sessions are not dropped and the state
// (counts, penalties) is kept.
func (srv *Server) SetLimits(l Limits) { srv.limits.update(l) }

// admission is what a session holds against the limits, each slot with the
// key it was taken under, so that release gives back exactly what was taken
// whatever SetLimits has changed since (limits.ipv6_prefix regroups addresses).
type admission struct {
	global  bool
	perIP   bool
	ip      netip.Prefix // the per-address key, while perIP
	perUser bool
	shared  bool    // the session slot is in Options.Shared, not perUser
	user    userKey // the per-user key of the session slot and bandwidth, while perUser or shared
}

// admit checks a new connection against the connection limits. It returns the
// refusal's rule and the value that tripped it, or "".
func (s *session) admit() (rule Rule, value int) {
	lm := s.srv.limits
	l := lm.limits()
	ok, n := lm.sessions.Acquire()
	if !ok {
		return RuleMaxSessions, n
	}
	s.lim.admitted.global = true
	addr := s.remote.Addr()
	if l.Trusted.Contains(addr) {
		return "", 0
	}
	key := s.ipKey()
	if !s.connectionAllowed(key) {
		return RuleIPConnectionRate, 0
	}
	if ok, n := lm.ipSessions.Acquire(key); !ok {
		return RuleIPSessions, n
	}
	s.lim.admitted.perIP, s.lim.admitted.ip = true, key
	return "", 0
}

// connectionAllowed applies the per-address connection rate: fleet-wide if
// there is a shared store and it answers, else this proxy's own.
func (s *session) connectionAllowed(key netip.Prefix) bool {
	l := s.srv.limits.limits()
	if sh := s.srv.opts.Shared; sh != nil && l.PerIPRate > 0 {
		if ok, err := sh.AllowConnection(s.ctx, sharedAddressKey(key), l.PerIPRate, max(l.PerIPBurst, 1)); err == nil {
			return ok
		}
	}
	return s.srv.limits.ipRate.Allow(key)
}

// release gives back what admit and login took.
func (s *session) release() {
	lm := s.srv.limits
	if s.lim.admitted.global {
		lm.sessions.Release()
	}
	if s.lim.admitted.perIP {
		lm.ipSessions.Release(s.lim.admitted.ip)
	}
	if s.lim.admitted.perUser {
		lm.userSessions.Release(s.lim.admitted.user)
	}
	if s.lim.admitted.shared {
		s.srv.opts.Shared.EndSession(s.lim.admitted.user.shared(), s.id)
	}
	if s.lim.userRate != nil {
		lm.userBandwidth.Release(s.lim.admitted.user, s.lim.userRate)
	}
}

func (s *session) ipKey() netip.Prefix {
	return ratelimit.IPKey(s.remote.Addr(), s.srv.limits.limits().IPv6Prefix)
}

// trusted reports whether the client is in a trusted network.
func (s *session) trusted() bool {
	return s.srv.limits.limits().Trusted.Contains(s.remote.Addr())
}

// Blocks after too many failed logins are answered [AUTH] (RFC 3206 §4): they
// follow failed credentials, and a client should ask its user rather than
// retry on its own as it would after [SYS/TEMP].
const blockedText = "too many failed logins, try again later"

// addressBlocked reports the block, if any, on the client's address.
func (s *session) addressBlocked() *refusal {
	if s.trusted() {
		return nil
	}
	ip := s.ipKey()
	left, r := s.blockLeft(sharedAddressKey(ip), func() (bool, time.Duration) { return s.srv.limits.ipFailures.Blocked(ip) })
	if r == nil && left > 0 {
		r = &refusal{PolicyEvent{Rule: RuleFailedLoginsIP, Key: ip.String(), Value: left.Seconds()}, "AUTH", blockedText, nil}
	}
	return r
}

// userBlocked reports the block, if any, on user.
func (s *session) userBlocked(user userKey) *refusal {
	if s.trusted() {
		return nil
	}
	left, r := s.blockLeft(user.shared(), func() (bool, time.Duration) { return s.srv.limits.userFailures.Blocked(user) })
	if r == nil && left > 0 {
		r = &refusal{PolicyEvent{Rule: RuleFailedLoginsUser, Key: user.String(), Value: left.Seconds()}, "AUTH", blockedText, nil}
	}
	return r
}

// blockLeft returns the block left on a key: the fleet's if there is a shared
// store and it answers, else the one local reports. A store that does not
// answer may refuse the login instead (sharedUnavailable).
func (s *session) blockLeft(key string, local func() (bool, time.Duration)) (time.Duration, *refusal) {
	if sh := s.srv.opts.Shared; sh != nil {
		left, err := sh.Blocked(s.ctx, key)
		if err == nil {
			return left, nil
		}
		if r := s.sharedUnavailable(); r != nil {
			return 0, r
		}
	}
	_, left := local()
	return left, nil
}

// loginFailed counts a refused login with password against the address and
// the user, and makes the client wait, progressively longer, before it hears
// so. Only distinct passwords count: per user, a password tried again adds
// nothing; per address, each user and password pair counts once, so that
// trying one password on many users (spraying) counts for each user. With a
// shared store that answers, the counts are the fleet's.
func (s *session) loginFailed(user userKey, password string) {
	if s.trusted() {
		return
	}
	lm := s.srv.limits
	ip := s.ipKey()
	if sh := s.srv.opts.Shared; sh != nil {
		l := lm.limits()
		d, err := sh.Fail(s.ctx, sharedAddressKey(ip), l.FailuresPerIP, user.shared(), l.FailuresPerUser, user.upstream, user.login, password)
		if err == nil {
			s.sleep(d)
			return
		}
	}
	secret := lm.fingerprints.Of(user.upstream, user.login, password)
	lm.ipFailures.Fail(ip, secret)
	lm.userFailures.Fail(user, secret)
	s.sleep(max(lm.ipFailures.Delay(ip), lm.userFailures.Delay(user)))
}

// sleep waits for d, or until the session is stopped.
func (s *session) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// claimMailbox takes the mailbox's session slot and login interval after a
// successful upstream login as tried, or says which limit refuses: the
// fleet's if there is a shared store and it answers, else this proxy's.
func (s *session) claimMailbox(tried, mailbox userKey) *refusal {
	lm := s.srv.limits
	// A success clears the user's failures but never the address's: one
	// valid account must not reset a guesser's count (Mailu's lesson).
	lm.userFailures.Reset(tried)
	if sh := s.srv.opts.Shared; sh != nil {
		l := lm.limits()
		inUse, wait, err := sh.Login(s.ctx, tried.shared(), mailbox.shared(), s.id, l.PerUserSessions, l.LoginDelay)
		switch {
		case err != nil:
			if r := s.sharedUnavailable(); r != nil {
				return r
			}
		case inUse > 0:
			return mailboxInUse(mailbox, inUse)
		case wait > 0:
			return loginTooSoon(mailbox, wait)
		default:
			s.lim.admitted.shared, s.lim.admitted.user = true, mailbox
			return nil
		}
	}
	if ok, n := lm.userSessions.Acquire(mailbox); !ok {
		return mailboxInUse(mailbox, n)
	}
	s.lim.admitted.perUser, s.lim.admitted.user = true, mailbox
	if ok, wait := lm.loginInterval.Claim(mailbox); !ok {
		lm.userSessions.Release(mailbox)
		s.lim.admitted.perUser = false
		return loginTooSoon(mailbox, wait)
	}
	return nil
}

func mailboxInUse(mailbox userKey, sessions int) *refusal {
	return &refusal{PolicyEvent{Rule: RuleUserSessions, Key: mailbox.String(), Value: float64(sessions)}, "IN-USE", "mailbox in use by another session", nil}
}

func loginTooSoon(mailbox userKey, wait time.Duration) *refusal {
	secs := int(wait.Seconds() + 0.999)
	return &refusal{PolicyEvent{Rule: RuleLoginDelay, Key: mailbox.String(), Value: float64(secs)},
		"LOGIN-DELAY", "wait " + strconv.Itoa(secs) + " seconds before logging in again", nil}
}

// startTransactionLimits sets up the per-session limiters at login.
func (s *session) startTransactionLimits() {
	l := s.srv.limits.limits()
	if l.CommandRate > 0 {
		s.lim.cmdRate = rate.NewLimiter(l.CommandRate, max(l.CommandBurst, 1))
	}
	if l.SessionBandwidth > 0 {
		s.lim.sessRate = rate.NewLimiter(bytesPerSecond(l.SessionBandwidth), burstFor(l.SessionBandwidth))
	}
	if l.UserBandwidth > 0 {
		s.lim.userRate = s.srv.limits.userBandwidth.Acquire(s.lim.admitted.user)
	}
}

// maxCommandWait bounds how long a command is held back by the command rate;
// a client that would have to wait longer is refused instead.
const maxCommandWait = 5 * time.Second

// commandRefused applies the per-session command limits after login. The
// command rate paces rather than refuses: a client fetching a big mailbox as
// fast as it can is slowed down, not broken; the first time a session is held
// back is audited.
func (s *session) commandRefused(verb string) *refusal {
	if s.lim.cmdRate != nil {
		r := s.lim.cmdRate.Reserve()
		wait := r.Delay()
		if wait > maxCommandWait {
			r.Cancel()
			return &refusal{PolicyEvent{Rule: RuleCommandRate, Verb: verb, Key: s.user, Value: float64(s.lim.cmdRate.Limit())},
				"SYS/TEMP", "too many commands, slow down", nil}
		}
		if wait > 0 {
			if !s.lim.throttled {
				s.lim.throttled = true
				// Not a refusal: the command goes on, held back.
				s.srv.opts.Auditor.Policy(s.id, PolicyEvent{Rule: RuleCommandThrottled, Verb: verb, Key: s.user, Value: float64(s.lim.cmdRate.Limit())})
			}
			s.sleep(wait)
		}
	}
	if max := s.srv.limits.limits().MaxRetrievals; max > 0 && (verb == "RETR" || verb == "TOP") && s.stats.retr+s.stats.top >= max {
		return &refusal{PolicyEvent{Rule: RuleMaxRetrievals, Verb: verb, Key: s.user, Value: float64(s.stats.retr + s.stats.top)},
			"SYS/PERM", "retrieval limit for this session reached", nil}
	}
	return nil
}

// shaped wraps w in the session's and the user's bandwidth limits, if any.
func (s *session) shaped(w io.Writer) io.Writer {
	if s.lim.sessRate == nil && s.lim.userRate == nil {
		return w
	}
	return ratelimit.WriterContext(s.ctx, w, s.lim.sessRate, s.lim.userRate)
}
