// Package audit writes popproxy's audit trail: one JSON line per event, encoded
// by zerolog. It implements proxy.Auditor; the proxy never hands it a password
// or a SASL payload.
//
// Every record carries the time, the event name and the session id, and the
// session's listener and client address, so that each line can be read on its
// own. With Options.Chain, records are hash-chained and Verify detects a
// record that was edited, removed or moved. docs/audit.md describes the
// schema.
//
// Typical usage:
//
//	log, err := audit.OpenFile("/var/log/popproxy/audit.jsonl", audit.Options{Chain: true, Logger: logger})
//	if err != nil {
//		return err
//	}
//	defer log.Close()
//	srv := proxy.New(proxy.Options{Auditor: log})
//	...
//	log.Reopen() // on SIGHUP, after logrotate renamed the file
package audit

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/popproxy/popproxy/proxy"
)

var _ proxy.Auditor = (*Log)(nil)

// Event names, the "event" field of every record.
const (
	EventSessionOpen  = "session.open"
	EventTLS          = "tls"
	EventAuth         = "auth"
	EventCommand      = "command"
	EventPolicy       = "policy"
	EventCheckpoint   = "session.checkpoint"
	EventSessionClose = "session.close"
	// EventTooLarge stands in for a record longer than MaxRecord.
	EventTooLarge = "record.too_large"
	// EventChainStart begins a new chain segment where OpenFile found the
	// end of the file damaged, and says what it found.
	EventChainStart = "chain.start"
)

// Events are every event name a record may carry.
var Events = []string{
	EventSessionOpen, EventTLS, EventAuth, EventCommand, EventPolicy, EventCheckpoint, EventSessionClose,
	EventTooLarge, EventChainStart,
}

// Field names of records; docs/audit.md describes each one.
const (
	keyTime     = "time"
	keyEvent    = "event"
	keySession  = "session"
	keyListener = "listener"
	keyClient   = "client"
	keyLocal    = "local"

	keyMode    = "mode"
	keyVersion = "version"
	keyCipher  = "cipher"
	keySNI     = "sni"
	keyALPN    = "alpn"
	keyResumed = "resumed"

	keyUser      = "user"
	keyAuthzid   = "authzid"
	keyMechanism = "mechanism"
	keyOK        = "ok"
	keyUpstream  = "upstream"
	keyRoute     = "route"
	keyCode      = "code"
	keyReason    = "reason"

	keyVerb       = "verb"
	keyArgs       = "args"
	keyOctets     = "octets"
	keyDuration   = "duration_ms"
	keySize       = "size"
	keyUIDL       = "uidl"
	keyMessageID  = "message_id"
	keyIncomplete = "incomplete"

	keyRule   = "rule"
	keyDetail = "detail"
	keyKey    = "key"
	keyValue  = "value"
	keyCount  = "count"
	keyStart  = "start"

	keyBytesIn       = "bytes_in"
	keyBytesOut      = "bytes_out"
	keyRetr          = "retr"
	keyTop           = "top"
	keyDele          = "dele"
	keyMarked        = "marked"
	keyMarkedOmitted = "marked_omitted"
	keyUIDLs         = "uidls"
	keyUIDLsOmitted  = "uidls_omitted"
	keyLoggedIn      = "logged_in"
	keyCommitted     = "committed"
	keyCommitUnknown = "commit_unknown"

	// Added by the chain, see sink.
	keySeq   = "seq"
	keyPrev  = "prev"
	keyChain = "chain"

	keyFound    = "found"
	keyLastSeq  = "last_seq"
	keyLastHash = "last_hash"
)

// TimeFormat is the layout of the "time" field: RFC 3339 in UTC, with
// microseconds.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// ErrClosed is the write error of events recorded after Close.
var ErrClosed = errors.New("audit: log closed")

// errDisabled is recorded when zerolog drops the event: only
// zerolog.SetGlobalLevel(zerolog.Disabled) does that to level-less events.
var errDisabled = errors.New("audit: zerolog's global level is Disabled, records are dropped")

// Options configure a Log. The zero value is valid.
type Options struct {
	// Chain makes the log tamper-evident: each record carries "seq" and
	// "prev", the SHA-256 of the previous record's line, checked by Verify.
	// The first record of a chain also has "chain":"start"; the first one
	// written after Reopen, or after OpenFile found a file ending with a
	// chained record, "chain":"continued". If OpenFile finds the end of the
	// file damaged, a new chain begins with a chain.start record saying what
	// it found.
	Chain bool
	// Logger is the operational log, where sink failures are reported (never
	// the audit stream). If nil, slog.Default() is used.
	Logger *slog.Logger
	// HeadInterval, with Chain, is how often the chain's head (the seq and
	// hash of the last record) is written to Logger, if it moved since it
	// was last written: a copy outside the audit file, against which the
	// end of the file can be checked. Reopen and Close write it too. If 0,
	// only they do.
	HeadInterval time.Duration
}

// Log is an audit log. Its methods are safe for concurrent use.
//
// A write that fails never fails the session: it is counted (Failures), its
// error kept until a later write succeeds (Err), and the first failure of a
// streak is reported to the operational log, as is the recovery.
type Log struct {
	zl   zerolog.Logger
	sink *sink

	mu       sync.Mutex
	sessions map[string]peer // open sessions, from SessionOpen to SessionClose
}

// peer is what every record of a session repeats.
type peer struct {
	listener, client string
}

// New returns a Log writing to w, for example os.Stdout, with one Write call
// per record. Close does not close w.
func New(w io.Writer, opts Options) *Log {
	return newLog(newSink(w, "writer", opts))
}

func newLog(s *sink) *Log {
	if s.chain && s.headInterval > 0 {
		go s.logHeads()
	}
	return &Log{zl: zerolog.New(s), sink: s, sessions: make(map[string]peer)}
}

// Reopen reopens a file sink's path, so that logrotate can rename the file and
// signal popproxy (SIGHUP) to write to a new one; the chain continues in the
// new file. If the path cannot be opened, writing goes on to the old file and
// the error is returned. For other sinks Reopen does nothing.
func (l *Log) Reopen() error { return l.sink.reopen() }

// Close closes the file or syslog connection. Records are not buffered, so
// nothing is lost. Events after Close fail with ErrClosed. If a record was
// written since the Log was opened, Close writes the chain's head to the
// operational log; a Log closed unused, as after a failed start, says
// nothing.
func (l *Log) Close() error { return l.sink.close() }

// Err returns the error of the last failed write, or nil once a later write
// has succeeded.
func (l *Log) Err() error { return l.sink.error() }

// Failures returns the number of records that could not be written.
func (l *Log) Failures() int64 { return l.sink.failureCount() }

// event starts a record with the fields every record has.
func (l *Log) event(name, id string) *zerolog.Event {
	ev := l.zl.Log()
	if ev == nil {
		l.sink.fail(errDisabled)
		return nil
	}
	ev.Str(keyTime, now()).Str(keyEvent, name).Str(keySession, id)
	l.mu.Lock()
	p, ok := l.sessions[id]
	l.mu.Unlock()
	if ok {
		ev.Str(keyListener, p.listener).Str(keyClient, p.client)
	}
	return ev
}

// SessionOpen records a new client connection, and remembers its listener
// and client for the session's later records.
func (l *Log) SessionOpen(s proxy.SessionInfo) {
	l.mu.Lock()
	l.sessions[s.ID] = peer{listener: s.Listener, client: addrString(s.Client)}
	l.mu.Unlock()
	ev := l.event(EventSessionOpen, s.ID)
	if local := addrString(s.Local); local != "" {
		ev.Str(keyLocal, local)
	}
	ev.Send()
}

// TLS records a completed TLS handshake with the client.
func (l *Log) TLS(id string, e proxy.TLSEvent) {
	l.event(EventTLS, id).Str(keyMode, e.Mode).Str(keyVersion, e.Version).Str(keyCipher, e.CipherSuite).
		Str(keySNI, e.ServerName).Str(keyALPN, e.ALPN).Bool(keyResumed, e.Resumed).Send()
}

// Auth records a login attempt; on failure with its response code and reason.
// It has no password field.
func (l *Log) Auth(id string, e proxy.AuthEvent) {
	ev := l.event(EventAuth, id).Str(keyUser, e.User)
	if e.Authzid != "" {
		ev.Str(keyAuthzid, e.Authzid)
	}
	ev.Str(keyMechanism, e.Mechanism).Bool(keyOK, e.OK).Str(keyUpstream, e.Upstream)
	if e.Route != "" {
		ev.Str(keyRoute, e.Route)
	}
	if !e.OK {
		ev.Str(keyCode, e.Code).Str(keyReason, e.Reason)
	}
	ev.Send()
}

// Command records one TRANSACTION command, with what is known of the
// message it names (RETR, TOP, DELE): size (unless negative), uidl and
// message_id (unless empty). "incomplete" appears only when true.
func (l *Log) Command(id string, e proxy.CommandEvent) {
	ev := l.event(EventCommand, id).Str(keyVerb, e.Verb).Strs(keyArgs, e.Args).Bool(keyOK, e.OK).
		Int64(keyOctets, e.Octets).Float64(keyDuration, ms(e.Duration))
	if e.Size >= 0 {
		ev.Int64(keySize, e.Size)
	}
	if e.UIDL != "" {
		ev.Str(keyUIDL, e.UIDL)
	}
	if e.MessageID != "" {
		ev.Str(keyMessageID, e.MessageID)
	}
	if e.Incomplete {
		ev.Bool(keyIncomplete, true)
	}
	ev.Send()
}

// Policy records something the proxy refused itself. Empty fields, and a
// zero value, are left out; rule is always there. A refused connection, which
// never became a session, has an empty session id, its listener, and the
// number of refusals the record stands for.
func (l *Log) Policy(id string, e proxy.PolicyEvent) {
	ev := l.event(EventPolicy, id)
	if id == "" && e.Listener != "" {
		ev.Str(keyListener, e.Listener)
	}
	ev.Str(keyRule, string(e.Rule))
	if e.Verb != "" {
		ev.Str(keyVerb, e.Verb)
	}
	if e.Detail != "" {
		ev.Str(keyDetail, e.Detail)
	}
	if e.Key != "" {
		ev.Str(keyKey, e.Key)
	}
	if e.Value != 0 {
		ev.Float64(keyValue, e.Value)
	}
	if e.Count > 0 {
		ev.Int(keyCount, e.Count)
	}
	ev.Send()
}

// Checkpoint records a long session's running totals.
func (l *Log) Checkpoint(id string, c proxy.Counters) {
	counters(l.event(EventCheckpoint, id), c).Send()
}

// SessionClose records the end of a session: its totals, the unique ids of
// the marked messages where known, and whether its deletions were committed:
// true, false, or null with "commit_unknown" saying why nobody knows. It
// forgets the session's listener and client.
func (l *Log) SessionClose(id string, e proxy.CloseEvent) {
	ev := l.event(EventSessionClose, id).Str(keyReason, string(e.Reason)).Str(keyUser, e.User).Bool(keyLoggedIn, e.LoggedIn)
	counters(ev, e.Counters)
	if len(e.UIDLs) > 0 {
		uidls, omitted := uidlDict(e.UIDLs)
		ev.Dict(keyUIDLs, uidls)
		if omitted > 0 {
			ev.Int(keyUIDLsOmitted, omitted)
		}
	}
	if e.CommitUnknown != "" {
		ev.Interface(keyCommitted, nil).Str(keyCommitUnknown, e.CommitUnknown)
	} else {
		ev.Bool(keyCommitted, e.Committed)
	}
	ev.Bool(keyIncomplete, e.Incomplete).Send()
	l.mu.Lock()
	delete(l.sessions, id)
	l.mu.Unlock()
}

// counters adds a session's totals, the marked messages as ranges.
func counters(ev *zerolog.Event, c proxy.Counters) *zerolog.Event {
	marked, omitted := markedRanges(c.Marked)
	ev.Float64(keyDuration, ms(c.Duration)).Int64(keyBytesIn, c.BytesIn).Int64(keyBytesOut, c.BytesOut).
		Int(keyRetr, c.Retr).Int(keyTop, c.Top).Int(keyDele, c.Dele).Str(keyMarked, marked)
	if omitted > 0 {
		ev.Int(keyMarkedOmitted, omitted)
	}
	return ev
}

// now is the time of a record, from zerolog.TimestampFunc but formatted
// here, so that the audit schema does not depend on zerolog's global formats.
func now() string {
	return zerolog.TimestampFunc().UTC().Format(TimeFormat)
}

// ms is d in milliseconds, whatever zerolog.DurationFieldUnit says.
func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// addrString is ap as "ip:port", or "" if ap is the zero value.
func addrString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

// SetGlobals configures zerolog's process-wide settings for popproxy's
// operational log: timestamps in RFC 3339, UTC, with microseconds, and
// durations in milliseconds as floats. main calls it once. Audit records do
// not depend on these settings.
func SetGlobals() {
	zerolog.TimeFieldFormat = TimeFormat
	zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
}
