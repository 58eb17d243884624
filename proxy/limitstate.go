package proxy

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/popproxy/popproxy/internal/ratelimit"
)

// LimitState is what this proxy's own limits hold on one key, for an
// operator: the fields of the shared store's answer, without a store.
type LimitState struct {
	// Key is spelt as Limits.SharedAddressKey and SharedUserKey spell it.
	Key string
	// Failures are the failed logins counted and not yet forgotten.
	Failures int
	// Blocked is how much longer the key is blocked; 0 if it is not.
	Blocked time.Duration
	// Sessions are the sessions open (per address, or per mailbox).
	Sessions int
	// LoginDelay is the wait before the user's next login; 0 for an address.
	LoginDelay time.Duration
}

// LimitState returns what this proxy's own limits (not a SharedLimits) hold
// on name: a client address, grouped as Limits.IPv6Prefix says, or a user
// under every key its failures, sessions and LOGIN-DELAY may be counted on:
// as routed now, under its own name on each upstream, and unrouted.
func (srv *Server) LimitState(name string) []LimitState {
	lm := srv.limits
	if addr, err := netip.ParseAddr(name); err == nil {
		ip := ratelimit.IPKey(addr, lm.limits().IPv6Prefix)
		_, left := lm.ipFailures.Blocked(ip)
		return []LimitState{{Key: sharedAddressKey(ip), Failures: lm.ipFailures.Count(ip), Blocked: left, Sessions: lm.ipSessions.Count(ip)}}
	}
	var out []LimitState
	for _, k := range srv.userKeys(name) {
		_, left := lm.userFailures.Blocked(k)
		_, wait := lm.loginInterval.Check(k)
		out = append(out, LimitState{Key: k.shared(), Failures: lm.userFailures.Count(k), Blocked: left, Sessions: lm.userSessions.Count(k), LoginDelay: wait})
	}
	return out
}

// ClearLimits forgets the failed logins, block and LOGIN-DELAY that this
// proxy's own limits hold on name (as in LimitState), so that a blocked user
// or address is free at once; open sessions stay. It returns the keys.
func (srv *Server) ClearLimits(name string) []string {
	lm := srv.limits
	if addr, err := netip.ParseAddr(name); err == nil {
		ip := ratelimit.IPKey(addr, lm.limits().IPv6Prefix)
		lm.ipFailures.Reset(ip)
		return []string{sharedAddressKey(ip)}
	}
	var keys []string
	for _, k := range srv.userKeys(name) {
		lm.userFailures.Reset(k)
		lm.loginInterval.Forget(k)
		keys = append(keys, k.shared())
	}
	return keys
}

// userKeys returns the per-user keys of name: as routed now, under its own
// name on each upstream, and unrouted (a login no route took).
func (srv *Server) userKeys(name string) []userKey {
	lm := srv.limits
	var keys []userKey
	add := func(k userKey) {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	if up, login, err := srv.route(name); err == nil {
		add(lm.userKey(up.Name, login))
	}
	for _, up := range slices.Sorted(maps.Keys(srv.opts.Upstreams)) {
		add(lm.userKey(up, name))
	}
	add(lm.userKey("", name))
	return keys
}
