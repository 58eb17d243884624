// Package sharedlimits keeps the limits a fleet of popproxy instances shares
// in Redis or Valkey: failed logins per address and per user (counts, windows,
// blocks, the progressive delay), the per-user session registry, LOGIN-DELAY
// and the per-address connection rate. With it, N instances defend like one.
//
// Each decision is one round trip: an atomic Lua script, so that two
// instances never race in a read-modify-write. Time is the store's (Redis
// TIME), so the instances' clocks need not agree. Every key expires on its own,
// so the store's memory stays bounded without a sweeper.
//
// A store that is slow or down is reported as ErrUnavailable within the
// timeout; the caller decides what to do instead (popproxy falls back to its
// own limits, or refuses logins). The Store logs once per streak of failures,
// skips the store for a second after a failure rather than waiting on it for
// every login, and counts round trips and errors for the metrics.
//
// Sessions are leases: a registered session is renewed every third of the
// lease while it lives, so the sessions of an instance that crashed are freed
// within one lease, and EndSession frees one at once.
//
// Typical usage:
//
//	st, err := sharedlimits.New(sharedlimits.Config{Address: "redis:6379"}, logger)
//	defer st.Close()
//	if left, err := st.Blocked(ctx, "ip:192.0.2.1/32"); err == nil && left > 0 { refuse }
//	delay, err := st.Fail(ctx, "ip:192.0.2.1/32", perIP, "user:mail/alice", perUser, "mail", "alice", password)
//	inUse, wait, err := st.Login(ctx, "user:mail/alice", "user:mail/alice", sessionID, 4, 5*time.Minute)
//	defer st.EndSession("user:mail/alice", sessionID)
package sharedlimits
