package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/popproxy/popproxy/internal/pop3"
)

// APOP passthrough (Listener.APOP). An APOP digest answers the timestamp in
// the greeting of the server that checks it (RFC 1939 §7), and the proxy
// cannot compute one for another server without the user's secret. So the
// listener connects to the default route's upstream before it greets, shows
// that server's timestamp in its own greeting, and relays APOP on that
// connection. Only the default route can work: the greeting goes out before
// any user name is known.

// errAPOPRoute means an APOP user is routed to another upstream than the one
// whose timestamp the client answered.
var errAPOPRoute = errors.New("APOP user routed to another upstream than the default")

// preopen connects to the default route's upstream for the greeting. If that
// fails, or the server's greeting has no timestamp, the session goes on
// without APOP (greeting without timestamp); USER/PASS and AUTH then dial at
// login as on any listener.
func (s *session) preopen() {
	up, err := s.srv.defaultRoute()
	if err != nil {
		s.srv.log.Warn("apop: no default route; greeting without APOP", "session", s.id, "err", err)
		return
	}
	start := time.Now()
	u, err := s.srv.dialUpstream(context.Background(), up, dialInfo{client: s.remote, local: s.local, session: s.id})
	s.preopenDial = time.Since(start)
	if err != nil {
		s.srv.log.Warn("apop: upstream unavailable; greeting without APOP", "session", s.id, "err", err)
		return
	}
	if u.timestamp == "" {
		s.srv.log.Warn("apop: upstream greeting has no timestamp; greeting without APOP", "session", s.id, "upstream", u.addr)
	}
	s.timestamp = u.timestamp
	s.setUpstream(u) // closed without QUIT by finish if no login takes it
}

// greeting is popproxy's greeting: the instance id, which a popproxy in front
// reads to find loops, then the upstream's APOP timestamp, if any.
func (s *session) greeting() string {
	g := greetingPrefix + s.srv.instance
	if s.timestamp != "" {
		g += " " + s.timestamp
	}
	return g
}

// cmdApop logs in with APOP on a passthrough listener. The digest goes
// upstream as sent; the user name is checked and routed as USER's is.
func (s *session) cmdApop(cmd pop3.Command) error {
	switch {
	case !s.lc.APOP:
		return s.refuse(refused(RuleUnsupported, cmd.Verb, "APOP is not supported; use USER/PASS or AUTH"))
	case s.tlsMissing():
		return s.refuseWithoutTLS(cmd.Verb)
	case len(cmd.Args) != 2 || !pop3.IsAPOPDigest(cmd.Args[1]):
		return s.refuse(refused(RuleSyntax, cmd.Verb, "usage: APOP name digest (32 hexadecimal digits)"))
	case s.timestamp == "":
		return s.refuse(refused(RuleUnsupported, cmd.Verb, "APOP is not available on this connection; use USER/PASS or AUTH"))
	}
	return s.login(credentials{user: cmd.Args[0], pass: cmd.Args[1], mech: "APOP"})
}

// connect returns the connection for a login to up: the one opened at
// connect if it goes to up, else a new one. APOP can use only the one whose
// timestamp the client saw. A popproxy in front may have named its chain
// since the connection was opened: it is checked and passed on as a dial
// would.
func (s *session) connect(up Upstream, apop bool, ev *AuthEvent) (*upstream, error) {
	if u := s.takePreopened(); u != nil {
		if u.route != up.Name {
			u.close() // nothing was sent on it but what a dial sends
		} else {
			ev.Dial = s.preopenDial
			err := s.srv.checkLoop(u.peer, s.chain)
			if err == nil && len(s.chain) > 0 {
				err = s.srv.joinChain(u, s.chain)
			}
			if err != nil {
				u.close()
				return nil, err
			}
			return u, nil
		}
	}
	if apop {
		return nil, errAPOPRoute
	}
	start := time.Now()
	u, err := s.srv.dialUpstream(context.Background(), up, dialInfo{client: s.remote, local: s.local, session: s.id, chain: s.chain})
	ev.Dial = time.Since(start)
	return u, err
}

// takePreopened hands over the connection opened at connect, if the session
// still holds one; its timestamp goes with it.
func (s *session) takePreopened() *upstream {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.up
	s.up, s.timestamp = nil, ""
	return u
}
