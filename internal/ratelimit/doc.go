// Package ratelimit holds popproxy's limits: per-address and per-user token
// buckets, concurrent-session counters, failed-login penalties, the RFC 2449
// LOGIN-DELAY interval and a bandwidth-shaping io.Writer.
//
// Every keyed type is generic over a comparable key, so a key costs no
// allocation: use [IPKey] (a [netip.Prefix]: the address for IPv4, its /64 for
// IPv6) for per-address limits and the user name (a string) for per-user ones.
// Keep per-address and per-user limits in separate values (Mailu's lesson).
//
// Memory is bounded. The keyed tables [Buckets], [Failures], [Interval] and
// [UserLimiters] hold at most maxKeys entries, forget an entry once it has been
// idle long enough that forgetting changes nothing, and when full make room by
// evicting the least recently used entry. (maddy's BucketSet, the model, reaps
// stale buckets only when full and then refuses; each type's doc says why
// eviction is the safer failure here.)
// There is no sweeper goroutine and nothing to Close: each call drops a few
// expired entries from the least recently used end, and a lookup treats an
// expired entry as absent, so expiry is exact even when the memory is
// reclaimed later. [Counter] holds only keys with live sessions.
//
// For sizing maxKeys: measured on Go 1.26 under a flood of new keys, a
// Buckets entry keyed by netip.Prefix takes about 350 bytes and a Failures
// entry about 150 bytes plus its key string and 8 bytes for each of the up to
// [RecentSecrets] secrets it remembers. A small table that churns for
// long can take up to twice that: Go's map settles at several times its
// fresh size under deletions (see memory_test.go).
//
// All types are safe for concurrent use. Each has an Update method taking the
// constructor's arguments, so limits can change on SIGHUP: existing entries
// adopt the new limits and no session is dropped.
//
// Typical usage, in a proxy:
//
//	// At start (and Update on SIGHUP):
//	trusted, err := ratelimit.ParseNetworks(cfg.TrustedNetworks)
//	conns := ratelimit.NewBuckets[netip.Prefix](rate.Every(time.Second), 10, 100000, time.Minute)
//	perIP := ratelimit.NewCounter[netip.Prefix](20)
//	total := ratelimit.NewGauge(5000)
//	ipFails := ratelimit.NewFailures[netip.Prefix](ratelimit.FailureConfig{
//		MaxFailures: 10, Window: 10 * time.Minute, BaseDelay: time.Second,
//		MaxDelay: 15 * time.Second, Block: 15 * time.Minute, MaxKeys: 100000})
//	userFails := ratelimit.NewFailures[string](...)
//	loginDelay := ratelimit.NewInterval[string](5*time.Minute, 100000)
//	userBytes := ratelimit.NewUserLimiters[string](1<<20, 64<<10, 10000, time.Minute)
//
//	// At accept:
//	ip := ratelimit.IPKey(remote.Addr(), 64)
//	if !trusted.Contains(remote.Addr()) && !conns.Allow(ip) { refuse }
//	if ok, _ := total.Acquire(); !ok { refuse }
//	defer total.Release()
//	if ok, _ := perIP.Acquire(ip); !ok { refuse }
//	defer perIP.Release(ip)
//
//	// At login:
//	if blocked, _ := ipFails.Blocked(ip); blocked { -ERR [SYS/TEMP] }
//	if blocked, _ := userFails.Blocked(user); blocked { -ERR [SYS/TEMP] }
//	if upstream refused {
//		secret := fingerprints.Of(user, password) // a NewFingerprinter made at start
//		ipFails.Fail(ip, secret)
//		userFails.Fail(user, secret)
//		sleep(max(ipFails.Delay(ip), userFails.Delay(user)))
//		-ERR [AUTH]
//	}
//	userFails.Reset(user) // never ipFails.Reset: see Failures.Reset
//	if ok, wait := loginDelay.Claim(user); !ok { -ERR [LOGIN-DELAY] }
//
//	// In TRANSACTION:
//	lim := userBytes.Acquire(user)
//	defer userBytes.Release(user, lim)
//	out := ratelimit.WriterContext(ctx, client, sessionLimiter, lim)
package ratelimit
