// Package audit writes popproxy's audit trail: one JSON line per event, through
// zerolog. It implements proxy.Auditor; the proxy never hands it a password or a
// SASL payload.
//
// Typical usage:
//
//	log := audit.New(os.Stdout)
//	srv := proxy.New(proxy.Options{Auditor: log})
package audit

import (
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/popproxy/popproxy/proxy"
)

// Event names, the "event" field of every record.
const (
	EventSessionOpen  = "session.open"
	EventTLS          = "tls"
	EventAuth         = "auth"
	EventCommand      = "command"
	EventPolicy       = "policy"
	EventSessionClose = "session.close"
)

// Log is an audit log. Its methods are safe for concurrent use: zerolog writes
// each event with a single Write call.
type Log struct {
	zl zerolog.Logger
}

// New returns a Log writing JSON lines to w. w must be safe for concurrent
// writes of whole lines (an *os.File is).
func New(w io.Writer) *Log {
	return &Log{zl: zerolog.New(w).With().Timestamp().Logger()}
}

func (l *Log) event(name, session string) *zerolog.Event {
	return l.zl.Log().Str("event", name).Str("session", session)
}

// SessionOpen records a new client connection.
func (l *Log) SessionOpen(s proxy.SessionInfo) {
	l.event(EventSessionOpen, s.ID).Str("listener", s.Listener).Str("client", s.Client.String()).Send()
}

// TLS records a completed TLS handshake with the client.
func (l *Log) TLS(id string, e proxy.TLSEvent) {
	l.event(EventTLS, id).Str("mode", e.Mode).Str("version", e.Version).Str("cipher", e.CipherSuite).
		Str("sni", e.ServerName).Str("alpn", e.ALPN).Bool("resumed", e.Resumed).Send()
}

// Auth records a login attempt: never the password.
func (l *Log) Auth(id string, e proxy.AuthEvent) {
	ev := l.event(EventAuth, id).Str("user", e.User).Str("mechanism", e.Mechanism).
		Bool("ok", e.OK).Str("upstream", e.Upstream)
	if !e.OK {
		ev = ev.Str("code", e.Code).Str("reason", e.Reason)
	}
	ev.Send()
}

// Command records one TRANSACTION command.
func (l *Log) Command(id string, e proxy.CommandEvent) {
	l.event(EventCommand, id).Str("verb", e.Verb).Strs("args", e.Args).Bool("ok", e.OK).
		Int64("octets", e.Octets).Dur("duration_ms", e.Duration).Send()
}

// Policy records something the proxy refused.
func (l *Log) Policy(id string, e proxy.PolicyEvent) {
	l.event(EventPolicy, id).Str("rule", e.Rule).Str("verb", e.Verb).Str("detail", e.Detail).Send()
}

// SessionClose records the end of a session, with its counters and whether
// its deletions were committed.
func (l *Log) SessionClose(id string, e proxy.CloseEvent) {
	marked := e.Marked
	if marked == nil {
		marked = []int{}
	}
	l.event(EventSessionClose, id).Str("reason", e.Reason).Str("user", e.User).Bool("logged_in", e.LoggedIn).
		Dur("duration_ms", e.Duration).Int64("bytes_in", e.BytesIn).Int64("bytes_out", e.BytesOut).
		Int("retr", e.Retr).Int("top", e.Top).Ints("deleted", marked).Bool("committed", e.Committed).
		Bool("incomplete", e.Incomplete).Send()
}

// Checkpoint records a long session's running totals.
func (l *Log) Checkpoint(id string, c proxy.Counters) {
	l.event("session.checkpoint", id).Int("retr", c.Retr).Send()
}

// Err is nil: this writer does not detect failures yet.
func (l *Log) Err() error { return nil }

// TimeFormat is the timestamp layout of audit records: RFC 3339, UTC, with
// sub-second precision. Set by SetGlobals, since zerolog keeps it globally.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// SetGlobals configures zerolog's process-wide settings for audit records.
// main calls it once.
func SetGlobals() {
	zerolog.TimeFieldFormat = TimeFormat
	zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
}
