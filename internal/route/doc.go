// Package route chooses the upstream POP3 server for each user and dials it
// with failover and a circuit breaker per address.
//
// A [Router] maps a user name to a configured upstream: first by exact user
// name, then by the domain after the last '@' (ASCII case-insensitive), then
// to the default. The user name is only ever a lookup key: it is checked
// (no control characters, no white space, valid UTF-8, 1..255 octets) and can
// select nothing but an upstream named in the configuration. The login sent
// upstream may be rewritten (StripDomain, AddDomain).
//
// A [Breaker] remembers which upstream addresses are failing, so that logins
// do not wait on a dead address while another could serve them: an address
// that timed out, or refused a few times, is skipped but for one trial a
// second. When every address is failing, those that refuse are still tried
// on every login (a refusal costs nothing), so the first login after a
// restart gets through, and those that time out once a second.
//
// Typical usage, in a proxy:
//
//	// At start (and Router.Update on SIGHUP):
//	users, domains, def, err := route.LoadMap("/etc/popproxy/users.map", upstreams...)
//	router, err := route.New(route.Config{Upstreams: upstreams, Users: users,
//		Domains: domains, Default: def, StripDomain: true})
//	breaker := route.NewBreaker(route.BreakerConfig{}) // the defaults
//
//	// At USER (or AUTH):
//	t, err := router.Route(user)
//	switch {
//	case errors.Is(err, route.ErrBadUser): -ERR and count a bad command
//	case errors.Is(err, route.ErrNoRoute): fail the login after PASS, exactly as for
//		a wrong password, so that USER does not tell who exists
//	}
//	// Dial records a success as soon as dial returns a connection, so let
//	// dial include the TLS handshake and the "+OK" greeting: a server that
//	// accepts TCP but never greets then counts as failing.
//	dial := func(ctx context.Context, addr string) (net.Conn, error) {
//		// dialer.Timeout bounds one attempt; ctx, a shorter trial.
//		c, err := dialer.DialContext(ctx, "tcp", addr)
//		... handshake, read the greeting, close c and return an error if it is not +OK
//	}
//	conn, addr, err := breaker.Dial(ctx, t.Addresses, 3, dial)
//	if err != nil { -ERR [SYS/TEMP] } // errors.Is(err, route.ErrAllOpen): every address timed out within the last second
//	// send "USER " + t.Login upstream
package route
