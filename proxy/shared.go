package proxy

import (
	"cmp"
	"context"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/ratelimit"
)

// SharedLimits keeps the limits that a fleet of proxies applies as one:
// failed logins per address and per user, the per-user sessions, LOGIN-DELAY
// and the per-address connection rate. internal/sharedlimits implements it
// on Redis or Valkey. Keys are Limits.SharedAddressKey and SharedUserKey.
//
// Any error means the store did not answer in time: the proxy then applies
// its own limits, or refuses logins if Options.SharedFailClosed.
type SharedLimits interface {
	// Blocked returns how much longer key is blocked after failed logins.
	Blocked(ctx context.Context, key string) (time.Duration, error)
	// Fail counts a failed login against an address and a user, and returns
	// the delay before the refusal. Only distinct secrets count.
	Fail(ctx context.Context, addr string, addrCfg ratelimit.FailureConfig, user string, userCfg ratelimit.FailureConfig, secret ...string) (time.Duration, error)
	// Login follows a good login: it forgets the failures of the user tried,
	// then takes one of mailbox's maxSessions (0: no limit) for session and
	// claims its LOGIN-DELAY interval, both or neither. It returns the
	// sessions in use if none is free, or the wait left of the interval.
	Login(ctx context.Context, tried, mailbox, session string, maxSessions int, interval time.Duration) (inUse int, wait time.Duration, err error)
	// EndSession frees the slot session took in Login, if any.
	EndSession(mailbox, session string)
	// AllowConnection reports whether a new connection from the address
	// is within r per second with bursts of burst.
	AllowConnection(ctx context.Context, addr string, r rate.Limit, burst int) (bool, error)
}

// SharedAddressKey is the key of the per-address limits on addr in a
// SharedLimits: its IPv6Prefix group, as the proxy counts it.
func (l Limits) SharedAddressKey(addr netip.Addr) string {
	return sharedAddressKey(ratelimit.IPKey(addr, cmp.Or(l.IPv6Prefix, 64)))
}

// SharedUserKey is the key of the per-user limits on login, as sent to
// upstream, in a SharedLimits (see Limits on per-user keys).
func (l Limits) SharedUserKey(upstream, login string) string {
	return userKey{upstream, l.foldLogin(login)}.shared()
}

func sharedAddressKey(p netip.Prefix) string { return "ip:" + p.String() }

// shared is "user:upstream/login", and "user:/login" with no upstream.
func (k userKey) shared() string { return "user:" + k.upstream + "/" + k.login }

// sharedUnavailable is the verdict on a login while the shared store does not
// answer: none (apply the local limits) or, with SharedFailClosed, a refusal.
func (s *session) sharedUnavailable() *refusal {
	if !s.srv.opts.SharedFailClosed {
		return nil
	}
	return &refusal{PolicyEvent{Rule: RuleSharedUnavailable}, "SYS/TEMP", "login limits unavailable, try again later", nil}
}
