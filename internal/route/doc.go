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
// A [Breaker] remembers which upstream addresses keep failing: after a few
// consecutive failures an address is skipped for a cool-down that doubles
// while the failures continue, so a dead server is not hammered and sessions
// fail over to the next address at once.
//
// Typical usage, in a proxy:
//
//	// At start (and Router.Update on SIGHUP):
//	users, domains, def, err := route.LoadMap("/etc/popproxy/users.map", upstreams...)
//	router, err := route.New(route.Config{Upstreams: upstreams, Users: users,
//		Domains: domains, Default: def, StripDomain: true})
//	breaker := route.NewBreaker(0, 0, 0) // defaults: 3 failures, 10 s, 2 min
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
//		c, err := dialer.DialContext(ctx, "tcp", addr) // dialer.Timeout bounds one attempt
//		... handshake, read the greeting, close c and return an error if it is not +OK
//	}
//	conn, addr, err := breaker.Dial(ctx, t.Addresses, 3, dial)
//	if err != nil { -ERR [SYS/TEMP] } // errors.Is(err, route.ErrAllOpen): nothing was even tried
//	// send "USER " + t.Login upstream
package route
