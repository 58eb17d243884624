package proxy

import (
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/ratelimit"
)

// Limits bound what clients may do. A zero field switches that limit off; the
// zero Limits limits nothing. Server.SetLimits changes them while running.
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
	userFailures  *ratelimit.Failures[string]
	userSessions  *ratelimit.Counter[string]
	loginInterval *ratelimit.Interval[string]
	userBandwidth *ratelimit.UserLimiters[string]
}

func newLimiter(l Limits) *limiter {
	lm := &limiter{
		sessions:      ratelimit.NewGauge(0),
		ipSessions:    ratelimit.NewCounter[netip.Prefix](0),
		ipRate:        ratelimit.NewBuckets[netip.Prefix](rate.Inf, 1, maxLimiterKeys, limiterIdle),
		ipFailures:    ratelimit.NewFailures[netip.Prefix](ratelimit.FailureConfig{}),
		userFailures:  ratelimit.NewFailures[string](ratelimit.FailureConfig{}),
		userSessions:  ratelimit.NewCounter[string](0),
		loginInterval: ratelimit.NewInterval[string](0, maxLimiterKeys),
		userBandwidth: ratelimit.NewUserLimiters[string](rate.Inf, 1, maxLimiterKeys, limiterIdle),
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

// userKey folds a username for limits, so that case variants of one mailbox
// share a budget.
func userKey(user string) string { return strings.ToLower(user) }

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
	user    string // the per-user key of the session slot and bandwidth, while perUser
}

// admit checks a new connection against the connection limits. It returns the
// refusal's rule and the value that tripped it, or "".
func (s *session) admit() (rule string, value int) {
	lm := s.srv.limits
	l := lm.limits()
	ok, n := lm.sessions.Acquire()
	if !ok {
		return "limit.max_sessions", n
	}
	s.admitted.global = true
	addr := s.remote.Addr()
	if l.Trusted.Contains(addr) {
		return "", 0
	}
	key := s.ipKey()
	if !lm.ipRate.Allow(key) {
		return "limit.ip_connection_rate", 0
	}
	if ok, n := lm.ipSessions.Acquire(key); !ok {
		return "limit.ip_sessions", n
	}
	s.admitted.perIP, s.admitted.ip = true, key
	return "", 0
}

// release gives back what admit and login took.
func (s *session) release() {
	lm := s.srv.limits
	if s.admitted.global {
		lm.sessions.Release()
	}
	if s.admitted.perIP {
		lm.ipSessions.Release(s.admitted.ip)
	}
	if s.admitted.perUser {
		lm.userSessions.Release(s.admitted.user)
	}
	if s.userRate != nil {
		lm.userBandwidth.Release(s.admitted.user, s.userRate)
	}
}

func (s *session) ipKey() netip.Prefix {
	return ratelimit.IPKey(s.remote.Addr(), s.srv.limits.limits().IPv6Prefix)
}

// trusted reports whether the client is in a trusted network.
func (s *session) trusted() bool {
	return s.srv.limits.limits().Trusted.Contains(s.remote.Addr())
}

// refusal is a limit's verdict: what to audit and what to tell the client.
type refusal struct {
	PolicyEvent
	code string // RFC 2449/3206 response code
	text string
}

func (r *refusal) reply() string { return "[" + r.code + "] " + r.text }

// loginBlocked reports the block, if any, on the client's address or on user
// after too many failed logins.
// Blocks are answered [AUTH] (RFC 3206 §4): they follow failed credentials,
// and a client should ask its user rather than retry on its own as it would
// after [SYS/TEMP].
func (s *session) loginBlocked(user string) *refusal {
	if s.trusted() {
		return nil
	}
	const text = "too many failed logins, try again later"
	lm := s.srv.limits
	if blocked, left := lm.ipFailures.Blocked(s.ipKey()); blocked {
		return &refusal{PolicyEvent{Rule: "limit.failed_logins_ip", Key: s.ipKey().String(), Value: left.Seconds()}, "AUTH", text}
	}
	if blocked, left := lm.userFailures.Blocked(userKey(user)); blocked {
		return &refusal{PolicyEvent{Rule: "limit.failed_logins_user", Key: user, Value: left.Seconds()}, "AUTH", text}
	}
	return nil
}

// loginFailed counts a refused login against the address and the user and
// makes the client wait, progressively longer, before it hears so.
func (s *session) loginFailed(user string) {
	if s.trusted() {
		return
	}
	lm := s.srv.limits
	ip, u := s.ipKey(), userKey(user)
	lm.ipFailures.Fail(ip)
	lm.userFailures.Fail(u)
	s.sleep(max(lm.ipFailures.Delay(ip), lm.userFailures.Delay(u)))
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

// claimMailbox takes the user's session slot and login interval after a
// successful upstream login, or says which limit refuses.
func (s *session) claimMailbox(user string) *refusal {
	lm := s.srv.limits
	key := userKey(user)
	// A success clears the user's failures but never the address's: one
	// valid account must not reset a guesser's count (Mailu's lesson).
	lm.userFailures.Reset(key)
	if ok, n := lm.userSessions.Acquire(key); !ok {
		return &refusal{PolicyEvent{Rule: "limit.user_sessions", Key: user, Value: float64(n)}, "IN-USE", "mailbox in use by another session"}
	}
	s.admitted.perUser, s.admitted.user = true, key
	if ok, wait := lm.loginInterval.Claim(key); !ok {
		lm.userSessions.Release(key)
		s.admitted.perUser = false
		secs := int(wait.Seconds() + 0.999)
		return &refusal{PolicyEvent{Rule: "limit.login_delay", Key: user, Value: float64(secs)},
			"LOGIN-DELAY", "wait " + strconv.Itoa(secs) + " seconds before logging in again"}
	}
	return nil
}

// startTransactionLimits sets up the per-session limiters at login.
func (s *session) startTransactionLimits() {
	l := s.srv.limits.limits()
	if l.CommandRate > 0 {
		s.cmdRate = rate.NewLimiter(l.CommandRate, max(l.CommandBurst, 1))
	}
	if l.SessionBandwidth > 0 {
		s.sessRate = rate.NewLimiter(bytesPerSecond(l.SessionBandwidth), burstFor(l.SessionBandwidth))
	}
	if l.UserBandwidth > 0 {
		s.userRate = s.srv.limits.userBandwidth.Acquire(s.admitted.user)
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
	if s.cmdRate != nil {
		r := s.cmdRate.Reserve()
		wait := r.Delay()
		if wait > maxCommandWait {
			r.Cancel()
			return &refusal{PolicyEvent{Rule: "limit.command_rate", Verb: verb, Key: s.user, Value: float64(s.cmdRate.Limit())},
				"SYS/TEMP", "too many commands, slow down"}
		}
		if wait > 0 {
			if !s.throttled {
				s.throttled = true
				s.policyEvent(PolicyEvent{Rule: "limit.command_rate.throttled", Verb: verb, Key: s.user, Value: float64(s.cmdRate.Limit())})
			}
			s.sleep(wait)
		}
	}
	if max := s.srv.limits.limits().MaxRetrievals; max > 0 && (verb == "RETR" || verb == "TOP") && s.retr+s.top >= max {
		return &refusal{PolicyEvent{Rule: "limit.max_retrievals", Verb: verb, Key: s.user, Value: float64(s.retr + s.top)},
			"SYS/PERM", "retrieval limit for this session reached"}
	}
	return nil
}

// shaped wraps w in the session's and the user's bandwidth limits, if any.
func (s *session) shaped(w io.Writer) io.Writer {
	if s.sessRate == nil && s.userRate == nil {
		return w
	}
	return ratelimit.WriterContext(s.ctx, w, s.sessRate, s.userRate)
}
