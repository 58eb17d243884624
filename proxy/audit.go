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
	SessionClose(id string, e CloseEvent)
}

// SessionInfo describes a new client connection.
type SessionInfo struct {
	ID       string
	Listener string
	Client   netip.AddrPort
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

// AuthEvent is one login attempt relayed upstream.
type AuthEvent struct {
	User      string
	Mechanism string // USER, PLAIN or LOGIN
	OK        bool
	Upstream  string
	Code      string // RFC 2449/3206 response code of a failure, if any
	Reason    string // the upstream's or the proxy's text on failure
}

// CommandEvent is one TRANSACTION command and its outcome.
type CommandEvent struct {
	Verb     string
	Args     []string
	OK       bool
	Octets   int64 // response octets relayed to the client
	Duration time.Duration
}

// PolicyEvent is a command or connection the proxy refused itself.
type PolicyEvent struct {
	Rule   string // e.g. "wrong_state", "syntax", "line_too_long"
	Verb   string
	Detail string
}

// CloseEvent ends every session, however it ended.
type CloseEvent struct {
	Reason     string
	Duration   time.Duration
	BytesIn    int64
	BytesOut   int64
	Retr, Top  int
	Marked     []int // messages marked with DELE and not unmarked by RSET
	Committed  bool  // QUIT reached UPDATE with +OK, so Marked were deleted
	User       string
	LoggedIn   bool
	Incomplete bool // a multi-line response was cut short
}

// nopAuditor is used when Options.Auditor is nil.
type nopAuditor struct{}

func (nopAuditor) SessionOpen(SessionInfo)         {}
func (nopAuditor) TLS(string, TLSEvent)            {}
func (nopAuditor) Auth(string, AuthEvent)          {}
func (nopAuditor) Command(string, CommandEvent)    {}
func (nopAuditor) Policy(string, PolicyEvent)      {}
func (nopAuditor) SessionClose(string, CloseEvent) {}
