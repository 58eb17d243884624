package proxy

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/popproxy/popproxy/internal/pop3"
)

// cmdChain records the instance ids of the popproxies in front of this one.
// A client can only make its own session refuse upstreams.
func (s *session) cmdChain(cmd pop3.Command) error {
	if len(cmd.Args) == 0 || len(cmd.Args) > maxChain {
		return s.refuse(refused(RuleSyntax, cmd.Verb, "usage: XPOPPROXY id..."))
	}
	s.chain = cmd.Args
	return s.reply(true, "")
}

// tlsMissing reports whether this connection must do STLS before a login.
func (s *session) tlsMissing() bool {
	return s.lc.RequireTLS && s.tls == nil
}

// refuseWithoutTLS is the answer to a login attempt before STLS when TLS is
// required (RFC 2595 §4, RFC 8314).
func (s *session) refuseWithoutTLS(verb string) error {
	return s.refuse(refused(RuleTLSRequired, verb, "[AUTH] TLS required: send STLS first"))
}

func (s *session) cmdUser(cmd pop3.Command) error {
	if s.tlsMissing() {
		return s.refuseWithoutTLS(cmd.Verb)
	}
	if len(cmd.Args) != 1 {
		return s.refuse(refused(RuleSyntax, cmd.Verb, "usage: USER name"))
	}
	s.pendingUser = cmd.Args[0]
	s.startPredial(s.pendingUser)
	return s.reply(true, "send PASS")
}

func (s *session) cmdPass(cmd pop3.Command) error {
	if s.tlsMissing() {
		return s.refuseWithoutTLS(cmd.Verb)
	}
	if s.pendingUser == "" {
		return s.refuse(refused(RuleWrongState, cmd.Verb, "send USER first"))
	}
	if cmd.Tail == "" {
		return s.refuse(refused(RuleSyntax, cmd.Verb, "usage: PASS password"))
	}
	user := s.pendingUser
	s.pendingUser = ""
	return s.login(credentials{user: user, pass: cmd.Tail, mech: "USER"})
}

// mechanisms are the SASL mechanisms offered on this connection: the
// configured ones, but OAuth's only under TLS, since a bearer token is as
// good as a password to whoever reads it.
func (s *session) mechanisms() []string {
	if s.tls != nil {
		return s.srv.opts.Mechanisms
	}
	var out []string
	for _, m := range s.srv.opts.Mechanisms {
		if !pop3.IsOAuth(m) {
			out = append(out, m)
		}
	}
	return out
}

// cmdAuth implements RFC 5034: PLAIN and LOGIN, with or without an initial
// response, "=" for an empty one and "*" to cancel; OAUTHBEARER and XOAUTH2
// are relayed (see authOAuth).
func (s *session) cmdAuth(cmd pop3.Command) error {
	if len(cmd.Args) == 0 {
		// De facto: AUTH without arguments lists the mechanisms.
		w := s.writer()
		w.WriteString("+OK\r\n")
		for _, m := range s.mechanisms() {
			w.WriteString(m + "\r\n")
		}
		return s.writeLine(".")
	}
	if len(cmd.Args) > 2 {
		return s.refuse(refused(RuleSyntax, cmd.Verb, "usage: AUTH mechanism [initial-response]"))
	}
	if s.tlsMissing() {
		return s.refuseWithoutTLS(cmd.Verb)
	}
	s.dropPredial() // AUTH instead of PASS: USER's dial is of no use
	var initial *string
	if len(cmd.Args) == 2 {
		initial = &cmd.Args[1]
	}
	mech := strings.ToUpper(cmd.Args[0])
	if !slices.Contains(s.mechanisms(), mech) {
		if slices.Contains(s.srv.opts.Mechanisms, mech) && s.lc.TLSMode == TLSStartTLS {
			return s.refuseWithoutTLS(cmd.Verb) // offered after STLS
		}
		return s.refuse(refused(RuleUnsupported, cmd.Verb, "unsupported authentication mechanism"))
	}
	switch mech {
	case "OAUTHBEARER", "XOAUTH2":
		return s.authOAuth(mech, initial)
	case "PLAIN":
		msg, err := s.saslStep("", initial)
		if err != nil {
			return err
		}
		if msg == nil {
			return nil
		}
		authzid, user, pass, perr := pop3.ParsePlain(msg)
		if perr != nil {
			return s.refuse(refused(RuleSyntax, cmd.Verb, perr.Error()))
		}
		return s.login(credentials{authzid: authzid, user: user, pass: pass, mech: mech})
	case "LOGIN":
		user, err := s.saslStep("VXNlcm5hbWU6", initial) // "Username:"
		if err != nil || user == nil {
			return err
		}
		pass, err := s.saslStep("UGFzc3dvcmQ6", nil) // "Password:"
		if err != nil || pass == nil {
			return err
		}
		return s.login(credentials{user: string(user), pass: string(pass), mech: mech})
	}
	return s.refuse(refused(RuleUnsupported, cmd.Verb, "unsupported authentication mechanism"))
}

// saslStep returns the client's decoded response: the initial one if given,
// else the answer to a "+ challenge" line. It returns nil and no error when the
// exchange ended (cancelled or malformed) with the client already answered.
func (s *session) saslStep(challenge string, initial *string) ([]byte, error) {
	resp, ok, err := s.saslResponse(challenge, initial)
	if !ok {
		return nil, err
	}
	msg, err := pop3.DecodeSASL(resp)
	if err != nil {
		return nil, s.refuse(refused(RuleSyntax, "AUTH", err.Error()))
	}
	return msg, nil
}

// saslResponse returns the client's response as sent: the initial one if
// given, else the answer to a "+ challenge" line. ok is false when the
// exchange ended (cancelled with "*", or see challenge) with the client
// already answered; err is then the session's end, if it ends.
func (s *session) saslResponse(challenge string, initial *string) (resp string, ok bool, err error) {
	if initial != nil {
		resp = *initial
	} else if resp, ok, err = s.challenge(challenge); !ok {
		return "", false, err
	}
	if resp == "*" {
		return "", false, s.reply(false, "authentication cancelled")
	}
	return resp, true, nil
}

// challenge sends "+ challenge" (RFC 5034 §4) and returns the client's
// answer as sent. ok is false when the exchange is over: the client is gone
// (err), or sent a line with a control character inside, which is refused
// (Go's base64 decoder would skip CR and LF, and a relayed line would be cut
// upstream); err is then the session's end, if the refusal ends it.
func (s *session) challenge(challenge string) (line string, ok bool, err error) {
	if err := s.writeLine("+ " + challenge); err != nil {
		return "", false, err
	}
	if err := s.flush(); err != nil {
		return "", false, &endError{reason: CloseClientGone, err: err}
	}
	b, err := s.readLine()
	if err != nil {
		return "", false, s.readFailed(err)
	}
	if err := pop3.CheckLine(b); err != nil {
		return "", false, s.refuse(refused(RuleSyntax, "AUTH", err.Error()))
	}
	return string(b), true, nil
}

// login relays credentials upstream, in steps, each returning what the next
// needs: identity (the names the client gave), admission of its address,
// route (the upstream, and the names it will see), admission of the user,
// dial and secure, authenticate, claim the mailbox, start the session. The
// client stays in AUTHORIZATION on any failure and may try again.
//
// Admission comes in two parts: a blocked address learns nothing, not even
// whether its name routes; a user's block is keyed on the name the upstream
// sees, which only the route knows.
//
// A step that returns nil has answered the client; its error is then the
// session's end, if it ends.
func (s *session) login(c credentials) error {
	// Unless the dial took it, USER's predial is of no use after this.
	defer s.dropPredial()
	id, err := s.identify(c)
	if id == nil {
		return err
	}
	if r := s.addressBlocked(); r != nil {
		return s.refuseLogin(id.ev, r)
	}
	t, err := s.routeLogin(id)
	if t == nil {
		return err
	}
	if r := s.userBlocked(t.tried); r != nil {
		return s.refuseLogin(t.ev, r)
	}
	u, err := s.dialLogin(t)
	if u == nil {
		return err
	}
	if ok, err := s.authenticate(t, u); !ok {
		return err
	}
	// The credentials are good: only now may the proxy say anything about the
	// mailbox (in use, logged in too recently) without revealing that it exists.
	if r := s.claimMailbox(t.tried, t.mailbox); r != nil {
		u.close() // no QUIT: nothing may be committed on this login's behalf
		return s.refuseLogin(t.ev, r)
	}
	return s.startSession(t, u)
}

// identity is a login's names as the client gave them, and its audit
// record, which the later steps complete.
type identity struct {
	c     credentials // authzid empty when the client acts as itself
	typed string      // the user name the client typed
	ev    AuthEvent
}

// identify checks the credentials' syntax, one rule for every login path,
// and notes the user for the close record, even if this login fails.
func (s *session) identify(c credentials) (*identity, error) {
	// A bearer token is the server's to judge; its user was checked alike
	// when it was read (authOAuth).
	if err := pop3.CheckCredentials(c.authzid, c.user, c.pass); err != nil && !pop3.IsOAuth(c.mech) {
		return nil, s.refuse(refused(RuleSyntax, "AUTH", err.Error()))
	}
	if c.authzid == c.user {
		c.authzid = "" // acting as oneself is an ordinary login
	}
	s.user = c.user
	return &identity{c: c, typed: c.user, ev: AuthEvent{User: c.user, Authzid: c.authzid, Mechanism: c.mech}}, nil
}

// target is where a login goes: the upstream, the credentials as it will
// see them, and the per-user limit keys.
type target struct {
	*identity // c rewritten for the upstream
	up        Upstream
	plain     bool   // the upstream logs in with AUTH PLAIN
	login     string // the mailbox's name as the upstream sees it
	// tried is the key failures count against, the name whose password is
	// tried; mailbox is the key of sessions and LOGIN-DELAY.
	tried, mailbox userKey
}

// routeLogin finds the upstream and rewrites the names for it. The mailbox
// is the authorization identity's, if there is one (a master user logging
// in to it): that name is routed and rewritten, and the master user's goes
// upstream as given.
func (s *session) routeLogin(id *identity) (*target, error) {
	t, err := s.srv.routed(id)
	if err != nil {
		// Answered and counted like refused credentials: whether a name is
		// routable is none of the client's business. With no upstream, the
		// client's name is the user's key.
		id.ev.Code, id.ev.Reason = "AUTH", err.Error()
		s.srv.opts.Auditor.Auth(s.id, id.ev)
		s.loginFailed(s.srv.limits.userKey("", id.typed), id.c.pass)
		return nil, s.refuse(refused(RuleRoute, "AUTH", "[AUTH] authentication failed"))
	}
	id.ev.Route = t.up.Name
	if id.c.authzid != "" && !t.plain {
		id.ev.Reason = "authorization identity needs upstream.login: plain"
		s.srv.opts.Auditor.Auth(s.id, id.ev)
		return nil, s.refuse(refused(RuleUnsupported, "AUTH", "authorization identity not supported"))
	}
	return t, nil
}

// routed is routeLogin without a word to the client or the audit: the
// target, or the router's error.
func (srv *Server) routed(id *identity) (*target, error) {
	lm := srv.limits
	owner := id.c.user
	if id.c.authzid != "" {
		owner = id.c.authzid
	}
	up, login, err := srv.route(owner)
	if err != nil {
		return nil, err
	}
	t := &target{identity: id, up: up, plain: up.LoginPlain, login: login}
	if id.c.authzid != "" {
		id.c.authzid = login
	} else {
		id.c.user = login
	}
	// The per-user limits are keyed on the names the upstream sees, however
	// the client spelt them (alice@a.example, alice@b.example with
	// strip_domain). Failures count against the name whose password is
	// tried; sessions and LOGIN-DELAY against the mailbox.
	t.tried, t.mailbox = lm.userKey(up.Name, id.c.user), lm.userKey(up.Name, login)
	return t, nil
}

// dialLogin connects to t's upstream, with the breaker, and sends what it
// is told of the client (PROXY, XCLIENT, XPOPPROXY) and STLS: see dial.
// A name that USER cannot carry is refused before.
func (s *session) dialLogin(t *target) (*upstream, error) {
	if !t.plain && strings.Contains(t.c.user, " ") {
		t.ev.Reason = "space in username"
		s.srv.opts.Auditor.Auth(s.id, t.ev)
		return nil, s.refuse(refused(RuleSyntax, "AUTH", "invalid username"))
	}
	u, err := s.dial(t)
	if err == errAPOPRoute {
		// Nothing was tried: not a failed login.
		t.ev.Code, t.ev.Reason = "AUTH", err.Error()
		s.srv.opts.Auditor.Auth(s.id, t.ev)
		return nil, s.refuse(refused(RuleRoute, t.c.mech, "[AUTH] authentication failed"))
	}
	if err != nil {
		s.srv.log.Warn("upstream unavailable", "session", s.id, "err", err)
		t.ev.Upstream = strings.Join(t.up.Addresses, ",")
		t.ev.Code, t.ev.Reason, t.ev.DialFailed = "SYS/TEMP", err.Error(), true
		s.srv.opts.Auditor.Auth(s.id, t.ev)
		return nil, s.reply(false, "[SYS/TEMP] mail server unavailable, try again later")
	}
	t.ev.Upstream = u.addr
	return u, nil
}

// dial returns the connection for t: for PASS, the one USER started, if it
// went to t's upstream; else connect's. A predial that failed is this
// login's failed dial: it is not tried again.
func (s *session) dial(t *target) (*upstream, error) {
	if t.c.mech == "USER" {
		if r := s.takePredial(t.up); r != nil {
			t.ev.Dial = r.dial
			return r.u, r.err
		}
	}
	return s.connect(t.up, t.c.mech == "APOP", &t.ev)
}

// authenticate logs in to u: OAuth relayed, whatever upstream.login says,
// else as the upstream logs in (USER/PASS, AUTH PLAIN, APOP passthrough). A
// refusal counts as a failed login when the password was at fault (see
// countsAsFailedLogin). ok is false if the login failed, u closed and the
// client answered.
func (s *session) authenticate(t *target, u *upstream) (ok bool, err error) {
	var st pop3.Status
	_, has := s.srv.upstreamCapabilities(t.up)
	if pop3.IsOAuth(t.c.mech) {
		st, err = s.relayOAuth(u, t.c)
	} else {
		st, err = u.login(t.c, t.plain, has&capPipelining != 0)
	}
	var broken *brokenOff
	if errors.As(err, &broken) {
		u.close() // no QUIT: the server is mid-exchange
		t.ev.Reason = broken.reason
		s.srv.opts.Auditor.Auth(s.id, t.ev)
		// The server had refused the token: else a guesser would hang
		// up at the refusal and never be counted.
		s.loginFailed(t.tried, t.c.pass)
		return false, broken.end
	}
	if err != nil {
		u.close()
		if errors.Is(err, errNoSASLPlain) {
			// A configuration error, not the user's: -ERR [SYS/TEMP], and
			// no failed login counted.
			s.srv.log.Error("upstream login impossible: set login: user for this upstream, or offer AUTH PLAIN on the server",
				"session", s.id, "upstream", t.up.Name, "address", u.addr, "err", err)
		} else {
			s.srv.log.Warn("upstream login failed", "session", s.id, "err", err)
		}
		t.ev.Code, t.ev.Reason, t.ev.DialFailed = "SYS/TEMP", err.Error(), true
		s.srv.opts.Auditor.Auth(s.id, t.ev)
		return false, s.reply(false, "[SYS/TEMP] mail server error, try again later")
	}
	t.ev.OK, t.ev.Code, t.ev.Reason = st.OK, st.Code, pop3.Sanitize(st.Text)
	if st.OK {
		return true, nil
	}
	u.exchange("QUIT\r\n") // harmless in AUTHORIZATION: no UPDATE state
	u.close()
	s.srv.opts.Auditor.Auth(s.id, t.ev)
	if countsAsFailedLogin(st.Code, has&capAuthRespCode != 0) {
		// For APOP the digest stands for the password. It changes with
		// every timestamp, so each failed APOP counts, a stale
		// client's as much as a guesser's.
		s.loginFailed(t.tried, t.c.pass)
	}
	if t.c.mech == "APOP" {
		// The timestamp the client answered was this connection's.
		return false, &endError{reason: CloseAPOPFailed, farewell: st.Line()}
	}
	s.badCommands++
	// The server's own verdict, code and all or none: a client drops
	// the saved password on [AUTH] (RFC 3206 §4), so the proxy never
	// adds one the server did not give.
	if s.badCommands >= s.srv.opts.MaxBadCommands {
		return false, &endError{reason: CloseTooManyErrors, farewell: st.Line()}
	}
	return false, s.writeLine(st.Line())
}

// startSession audits the login, makes u the session's upstream, learns
// what is not yet known of its capabilities, and enters TRANSACTION with
// the session limits started.
func (s *session) startSession(t *target, u *upstream) error {
	s.srv.opts.Auditor.Auth(s.id, t.ev)
	s.setUpstream(u)
	if err := s.learnCapabilities(t.up); err != nil {
		return err
	}
	if !s.upCapsFixed {
		known, has := s.srv.upstreamCapabilities(t.up)
		s.upCaps, s.upCapsFixed = known&has, true
	}
	s.state = stateTransaction
	s.stats.lastCheckpoint = time.Now()
	s.startTransactionLimits()
	return s.reply(true, t.ev.Reason)
}

// countsAsFailedLogin reports whether a server's -ERR to a login, with
// response code code, counts as a failed login against the user and the
// address (see loginFailed).
//
// [AUTH] does (RFC 3206 §4), and so does -ERR with a code the proxy does not
// know (RFC 2449 §8: a client ignores it), or without a code from a server
// that does not list AUTH-RESP-CODE (marksAuth false): RFC 1939 servers
// such as popa3d answer every refusal so, a wrong password or a mailbox they
// cannot open, and only distinct passwords count, so the right one refused
// during a server fault counts once and never blocks. [SYS/TEMP],
// [SYS/PERM] (any SYS/...), [IN-USE] and [LOGIN-DELAY] say the server would
// not serve the mailbox whatever the password (RFC 2449 §8, RFC 3206 §5), so
// they do not count.
func countsAsFailedLogin(code string, marksAuth bool) bool {
	if code == "" && marksAuth {
		// A server that marks refused credentials [AUTH] says by leaving
		// the code out that the password was not the problem ("-ERR
		// Shutting down" from a restarting Dovecot): counting it would
		// lock out every client of an address after an upstream restart.
		return false
	}
	top, _, _ := strings.Cut(code, "/")
	switch top {
	case "SYS", "IN-USE", "LOGIN-DELAY":
		return false
	}
	return true
}

// refuseLogin audits a login that a limit refused and answers it.
func (s *session) refuseLogin(ev AuthEvent, r *refusal) error {
	ev.OK, ev.Code, ev.Reason = false, r.code, string(r.Rule)
	s.srv.opts.Auditor.Auth(s.id, ev)
	return s.refuse(*r)
}

// cmdCapaBeforeLogin answers from what this proxy supports on this connection
// and what the upstreams it may log in to are known to support (RFC 2449 §5).
func (s *session) cmdCapaBeforeLogin(cmd pop3.Command) error {
	caps := sharedCaps(s.sessionCaps(), !s.tlsMissing(), s.mechanisms())
	if s.lc.TLSMode == TLSStartTLS && s.tls == nil {
		caps = append(caps, "STLS")
	}
	caps = append(caps, capPopproxy+" "+s.srv.instance)
	if d := s.srv.limits.limits().LoginDelay; d > 0 {
		caps = append(caps, "LOGIN-DELAY "+strconv.Itoa(int(d.Seconds())))
	}
	return s.writeCapa(caps)
}

// cmdStls upgrades the connection (RFC 2595 §4). Anything the client sent
// after the STLS line and before the handshake would be plaintext smuggled into
// the TLS session (the STARTTLS command injection attack), so the session ends
// if any such byte has arrived; bytes still in flight break the handshake.
func (s *session) cmdStls(cmd pop3.Command) error {
	switch {
	case s.lc.TLSMode != TLSStartTLS:
		return s.refuse(refused(RuleUnknownCommand, cmd.Verb, "unknown command"))
	case len(cmd.Args) > 0:
		return s.refuse(refused(RuleSyntax, cmd.Verb, "STLS takes no arguments"))
	case s.tls != nil:
		return s.refuse(refused(RuleWrongState, cmd.Verb, "TLS already active"))
	}
	if s.cr.Buffered() > 0 {
		return s.refuse(refusal{PolicyEvent: PolicyEvent{Rule: RuleSTLSInjection, Verb: cmd.Verb, Detail: "data after STLS before the TLS handshake"},
			end: &endError{reason: CloseSTLSInjection, farewell: "-ERR commands after STLS before TLS; closing"}})
	}
	if err := s.reply(true, "begin TLS negotiation"); err != nil {
		return err
	}
	if err := s.flush(); err != nil {
		return &endError{reason: CloseClientGone, err: err}
	}
	// What the client said before TLS counts for nothing after it.
	s.pendingUser, s.chain = "", nil
	s.dropPredial()
	return s.startTLS()
}

func (s *session) writeCapa(caps []string) error {
	w := s.writer()
	w.WriteString("+OK capability list follows\r\n")
	for _, c := range caps {
		w.WriteString(c + "\r\n")
	}
	return s.writeLine(".")
}

// cmdQuitBeforeLogin ends the session; there is no UPDATE state before login.
func (s *session) cmdQuitBeforeLogin(cmd pop3.Command) error {
	return &endError{reason: CloseQuit, farewell: "+OK popproxy signing off"}
}
