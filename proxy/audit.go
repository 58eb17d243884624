package proxy

import (
	"net/netip"
	"time"
)

// Auditor receives one call per audited event. Implementations must be safe for
// concurrent use and must not block for long: the session waits for them. The
// proxy never passes a password or SASL payload to an Auditor.
type Auditor interface {
	SessionOpen(SessionInfo)
	TLS(id string, e TLSEvent)
	Auth(id string, e AuthEvent)
	Command(id string, e CommandEvent)
	Policy(id string, e PolicyEvent)
	Checkpoint(id string, e Counters)
	SessionClose(id string, e CloseEvent)
	// Err returns the error of the last failed write, or nil once a write has
	// succeeded again. With Options.AuditFailOpen false, the proxy refuses
	// sessions while it is not nil.
	Err() error
}

// SessionInfo describes a new client connection.
type SessionInfo struct {
	ID       string
	Listener string
	Client   netip.AddrPort // the real client, as a trusted PROXY header says if there is one
	Local    netip.AddrPort // the proxy's address the client connected to
	TLSMode  string         // the listener's: "none", "starttls" or "implicit"
	Start    time.Time
}

// TLSEvent describes a completed TLS handshake with the client.
type TLSEvent struct {
	Mode        string // "implicit" or "starttls"
	Version     string // e.g. "TLS 1.3"
	CipherSuite string
	ServerName  string // SNI, if the client sent one
	ALPN        string
	Resumed     bool
}

// AuthEvent is one login attempt.
type AuthEvent struct {
	User string // the name whose password was given (SASL: the authentication identity)
	// Authzid is the SASL authorization identity when it is not User: a
	// master user logging in to another's mailbox. Empty otherwise.
	Authzid   string
	Mechanism string // USER, PLAIN, LOGIN, APOP, OAUTHBEARER or XOAUTH2
	OK        bool
	Upstream  string // the address that answered, or the addresses tried
	Route     string // the name of the upstream the user was routed to

	Code   string // RFC 2449/3206 response code of a failure, if any
	Reason string // the upstream's or the proxy's text on failure
	// Dial is how long connecting to the upstream took (TLS and greeting
	// included), zero if it was not contacted.
	Dial time.Duration
	// DialFailed means the upstream could not be reached or spoke wrongly.
	DialFailed bool
}

// CommandEvent is one TRANSACTION command and its outcome.
type CommandEvent struct {
	Verb     string
	Args     []string // canonical: numbers without leading zeros
	OK       bool
	Octets   int64 // response octets relayed to the client, status line included
	Duration time.Duration
	// For RETR, TOP and DELE: the message's size in octets as the server
	// reported it (in the +OK line, an earlier LIST or, with
	// Options.ResolveUIDs, LIST n asked of the server), else for a RETR
	// relayed whole as measured from the body without dot-stuffing, or -1 if
	// unknown; its unique id, if known (from the client's own UIDL or, with
	// Options.ResolveUIDs, asked of the server); and its Message-ID header,
	// read from the stream as it passed in this or an earlier RETR or TOP of
	// the session. Empty when unknown.
	Size      int64
	UIDL      string
	MessageID string
	// Incomplete means the response was cut short (the upstream failed).
	Incomplete bool
}

// PolicyEvent is something the proxy refused itself.
//
// Refusals of connections that never became sessions (a connection limit, a
// failed implicit-TLS handshake) come with an empty session id, their
// Listener, and Count: how many refusals of this rule and key the record
// stands for, at most one record per key and interval (Options.RefusalInterval).
type PolicyEvent struct {
	Rule   Rule
	Verb   string
	Detail string
	Key    string  // what a limit is keyed on (an address, a user), if any
	Value  float64 // the limit's current value, if any

	Listener string // only for refused connections
	Count    int    // only for refused connections: at least 1
}

// Counters are a session's running totals.
type Counters struct {
	Duration  time.Duration
	BytesIn   int64
	BytesOut  int64
	Retr, Top int
	Dele      int   // DELE commands answered +OK
	Marked    []int // messages marked with DELE and not unmarked by RSET
}

// CloseEvent ends every session exactly once, however it ended.
type CloseEvent struct {
	Counters
	// UIDLs maps the messages in Marked to their unique ids, where the
	// session knew them; nil if it knew none.
	UIDLs  map[int]string
	Reason CloseReason
	// User is the logged-in user or, if the session never logged in, the
	// last user whose login was tried; empty if none was.
	User      string
	LoggedIn  bool
	Committed bool // QUIT reached UPDATE with +OK, so Marked were deleted
	// CommitUnknown, if set, says why nobody knows whether Marked were
	// deleted (QUIT went upstream but its answer was lost); Committed is
	// then false.
	CommitUnknown string
	Incomplete    bool // a multi-line response was cut short
}

// nopAuditor is used when Options.Auditor is nil.
type nopAuditor struct{}

func (nopAuditor) SessionOpen(SessionInfo)         {}
func (nopAuditor) TLS(string, TLSEvent)            {}
func (nopAuditor) Auth(string, AuthEvent)          {}
func (nopAuditor) Command(string, CommandEvent)    {}
func (nopAuditor) Policy(string, PolicyEvent)      {}
func (nopAuditor) Checkpoint(string, Counters)     {}
func (nopAuditor) SessionClose(string, CloseEvent) {}
func (nopAuditor) Err() error                      { return nil }
