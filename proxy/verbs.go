package proxy

import (
	"slices"
	"strconv"

	"github.com/popproxy/popproxy/internal/pop3"
)

// verbs is everything the proxy knows about each command it handles or
// speaks upstream itself. What is derived from it, so that a verb is added
// here only:
//   - dispatch: in which state a verb is answered, by which handler, after
//     which argument check, and otherwise why it is refused;
//   - ReservedVerbs: what the configuration may not relay as an Extension;
//   - TransactionVerbs: the verbs the metrics label on their own;
//   - relayableCapability: the server CAPA lines kept after login;
//   - namesMessage: which command events name a message.
//
// It is filled in init: its handlers lead back to it (through
// relayableCapability, namesMessage), a cycle a package variable's
// initializer may not have.
var verbs map[string]verb

func init() {
	verbs = map[string]verb{
		// RFC 1939 §4, RFC 2449, RFC 2595, RFC 5034: AUTHORIZATION, answered by
		// the proxy itself.
		"USER": {in: inAuthorization, auth: (*session).cmdUser, args: ownArgs, capa: "USER", audit: auditLogin},
		// RFC 1939: the password is the rest of the line and may contain spaces.
		"PASS": {in: inAuthorization, auth: (*session).cmdPass, args: ownArgs, capa: "USER", audit: auditLogin},
		"APOP": {in: inAuthorization, auth: (*session).cmdApop, args: ownArgs, audit: auditLogin},
		// De facto: AUTH without arguments lists the mechanisms, multi-line.
		"AUTH": {in: inAuthorization, auth: (*session).cmdAuth, args: ownArgs, audit: auditLogin},
		"STLS": {in: inAuthorization, auth: (*session).cmdStls, args: ownArgs, audit: auditTLS},
		// XPOPPROXY ids... : the popproxies a session came through (see
		// upstream.passChain); not advertised, useful only between popproxies.
		"XPOPPROXY": {in: inAuthorization, auth: (*session).cmdChain, args: ownArgs, audit: auditNothing},
		// XCLIENT is spoken to upstreams only: a client would tell the server a
		// forged address.
		"XCLIENT": {audit: auditNothing},

		// Both states, a handler in each.
		"CAPA": {in: inAuthorization | inTransaction, auth: (*session).cmdCapaBeforeLogin, transaction: (*session).cmdCapaAfterLogin, args: anyArgs, multi: alwaysMulti, audit: auditNothing},
		"QUIT": {in: inAuthorization | inTransaction, auth: (*session).cmdQuitBeforeLogin, transaction: (*session).cmdQuit, args: anyArgs, audit: auditCommand},

		// RFC 1939 §5: TRANSACTION, relayed upstream once checked. Every
		// argument is a number; the first is a message number (at least 1).
		"STAT": {in: inTransaction, args: numbers(0, 0), multi: singleLine, audit: auditCommand},
		"LIST": {in: inTransaction, args: numbers(0, 1), multi: multiWithoutArgs, audit: auditCommand},
		"RETR": {in: inTransaction, args: numbers(1, 1), multi: alwaysMulti, audit: auditMessage},
		"DELE": {in: inTransaction, args: numbers(1, 1), multi: singleLine, audit: auditMessage},
		"NOOP": {in: inTransaction, args: numbers(0, 0), multi: singleLine, audit: auditCommand},
		"RSET": {in: inTransaction, args: numbers(0, 0), multi: singleLine, audit: auditCommand},
		"TOP":  {in: inTransaction, args: numbers(2, 2), multi: alwaysMulti, capa: "TOP", audit: auditMessage},
		"UIDL": {in: inTransaction, args: numbers(0, 1), multi: multiWithoutArgs, capa: "UIDL", audit: auditCommand},
	}
}

// verb is one entry of the verb table.
type verb struct {
	in states // where a client may send it; none: the proxy's own, upstream only
	// auth and transaction answer the verb in each state it is allowed in;
	// nil for a verb allowed in TRANSACTION: relayed upstream (relayVerb).
	auth, transaction func(*session, pop3.Command) error
	args              argRule
	multi             multiLine // whether a +OK reply has a body
	// capa is the capability (RFC 2449 §6) a server announces the verb
	// with, kept from its CAPA list; "" if the proxy announces its own.
	capa  string
	audit audited
}

// states is a set of session states.
type states uint8

const (
	inAuthorization states = 1 << iota
	inTransaction
)

func (in states) has(st state) bool {
	if st == stateTransaction {
		return in&inTransaction != 0
	}
	return in&inAuthorization != 0
}

// handler returns what answers v in st; nil for a verb relayed upstream.
func (v verb) handler(st state) func(*session, pop3.Command) error {
	if st == stateTransaction {
		return v.transaction
	}
	return v.auth
}

// argRule is the syntax of a verb's arguments.
type argRule struct {
	checked  bool // if not, the handler checks them, or ignores them
	min, max int  // how many numbers; the first is a message number
}

var (
	// ownArgs: the handler checks them itself, after its state checks
	// (TLS required, USER before PASS).
	ownArgs = argRule{}
	// anyArgs: the arguments are ignored.
	anyArgs = argRule{}
)

// numbers is between min and max numbers, the first a message number.
func numbers(min, max int) argRule { return argRule{checked: true, min: min, max: max} }

// check returns why args do not fit r, or "".
func (r argRule) check(args []string) string {
	if !r.checked {
		return ""
	}
	if len(args) < r.min || len(args) > r.max {
		return "wrong number of arguments"
	}
	for i, a := range args {
		n, err := pop3.ParseNumber(a)
		if err != nil {
			return "invalid number"
		}
		if i == 0 && n == 0 {
			return "no such message"
		}
	}
	return ""
}

// multiLine says when a +OK reply to a command has a body.
type multiLine int

const (
	singleLine multiLine = iota + 1
	alwaysMulti
	multiWithoutArgs // LIST and UIDL: a listing without argument, one line with
)

// with reports whether a +OK reply to a command with args has a body.
func (m multiLine) with(args []string) bool {
	return m == alwaysMulti || m == multiWithoutArgs && len(args) == 0
}

// audited is what the audit records of a verb.
type audited int

const (
	auditNothing audited = iota
	auditCommand         // a CommandEvent: the verb, its arguments, the octets relayed
	auditMessage         // a CommandEvent naming the message: size, unique id, Message-ID
	auditLogin           // an AuthEvent; the arguments never (they hold secrets)
	auditTLS             // a TLSEvent
)

// dispatch answers one command in the session's current state.
func (s *session) dispatch(cmd pop3.Command) error {
	if s.state == stateTransaction {
		if r := s.commandRefused(cmd.Verb); r != nil {
			return s.refuse(*r)
		}
	}
	v, ok := verbs[cmd.Verb]
	if !ok || !v.in.has(s.state) {
		return s.notHere(cmd, v)
	}
	if msg := v.args.check(cmd.Args); msg != "" {
		return s.refuse(refused(RuleSyntax, cmd.Verb, msg))
	}
	if h := v.handler(s.state); h != nil {
		return h(s, cmd)
	}
	return s.relayVerb(cmd, v)
}

// notHere answers a command not in the table for the session's state: an
// Extension after login, or a refusal.
func (s *session) notHere(cmd pop3.Command, v verb) error {
	ext := s.srv.extension(cmd.Verb)
	if s.state == stateTransaction {
		if ext != nil {
			return s.relayExtension(cmd, ext)
		}
		if v.in != 0 {
			return s.refuse(refused(RuleWrongState, cmd.Verb, "already logged in"))
		}
	} else if v.in != 0 || ext != nil {
		return s.refuse(refused(RuleWrongState, cmd.Verb, "not logged in"))
	}
	return s.refuse(refused(RuleUnknownCommand, cmd.Verb, "unknown command"))
}

// relayVerb relays a checked TRANSACTION command, its numbers written
// without leading zeros.
func (s *session) relayVerb(cmd pop3.Command, v verb) error {
	canonical := pop3.Command{Verb: cmd.Verb, Args: canonicalNumbers(cmd.Args)}
	return s.relay(canonical, v.multi.with(cmd.Args))
}

// canonicalNumbers rewrites checked numbers without leading zeros.
func canonicalNumbers(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		n, _ := pop3.ParseNumber(a)
		out[i] = strconv.Itoa(n)
	}
	return out
}

// namesMessage reports whether verb's first argument is a message number
// whose message its audit event names: RETR and TOP read it, DELE deletes it.
func namesMessage(verb string) bool {
	return verbs[verb].audit == auditMessage
}

// protocolCaps are the capabilities (RFC 2449 §6 and its registry) that name
// no verb and are kept from a server's CAPA list. STLS, SASL, UTF8 and LANG
// belong to AUTHORIZATION, which the proxy answers itself; IMPLEMENTATION
// would fingerprint the server behind the proxy; anything unknown is dropped
// because the proxy would refuse its commands anyway.
var protocolCaps = []string{"RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE", "LOGIN-DELAY"}

// relayableCapability reports whether a server's capability tag (upper
// case) is kept from its CAPA list: a verb's in the table, or one of
// protocolCaps.
func relayableCapability(tag string) bool {
	if slices.Contains(protocolCaps, tag) {
		return true
	}
	for _, v := range verbs {
		if v.capa != "" && v.capa == tag {
			return true
		}
	}
	return false
}

// filterCapability is pop3.FilterCapability with the capabilities the verb
// table keeps.
func filterCapability(line string) (string, bool) {
	return pop3.FilterCapability(line, relayableCapability)
}

// ReservedVerbs returns, sorted, the verbs the proxy answers or speaks to
// upstreams itself. None of them can be relayed as an Extension.
func ReservedVerbs() []string {
	return verbNames(func(verb) bool { return true })
}

// TransactionVerbs returns, sorted, the verbs a logged-in client may send
// besides Extensions.
func TransactionVerbs() []string {
	return verbNames(func(v verb) bool { return v.in&inTransaction != 0 })
}

func verbNames(keep func(verb) bool) []string {
	var out []string
	for name, v := range verbs {
		if keep(v) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
