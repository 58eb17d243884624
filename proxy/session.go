package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/pop3"
)

type state int

const (
	stateAuthorization state = iota
	stateTransaction
)

const (
	// clientBufferSize holds a few pipelined commands of RFC 2449's 255 octets.
	clientBufferSize = 1024
	// maxSASLLine bounds AUTH lines and SASL continuation lines, which
	// may carry OAuth bearer tokens of several KiB beyond the 255-octet
	// command limit; other lines that long are refused once read.
	maxSASLLine = 16 << 10
	// lingerTime and lingerBytes bound lingerClose.
	lingerTime  = 2 * time.Second
	lingerBytes = 2 << 20
)

// endError ends a session. reason goes to the audit log; farewell, if set, is
// sent to the client first.
type endError struct {
	reason   CloseReason
	farewell string
	err      error
}

func (e *endError) Error() string {
	if e.err != nil {
		return string(e.reason) + ": " + e.err.Error()
	}
	return string(e.reason)
}

func (e *endError) Unwrap() error { return e.err }

// session is one client connection, served by one goroutine in lockstep: read
// a command, check it, relay it, relay the reply, audit, repeat.
type session struct {
	srv    *Server
	id     string
	lc     *Listener
	remote netip.AddrPort // the client (as a trusted PROXY header says, if any)
	local  netip.AddrPort // the proxy's address it connected to
	start  time.Time

	// loginDeadline ends the AUTHORIZATION state however busy the client
	// keeps it: a client sending CAPA every few seconds must not hold a
	// session slot forever.
	loginDeadline time.Time

	raw    net.Conn     // the TCP connection
	client *timeoutConn // raw, or TLS over raw
	cr     *bufio.Reader
	cw     *bufio.Writer        // borrowed from writerPool while output is pending
	wire   []byte               // the last command sent upstream, reused
	tls    *tls.ConnectionState // nil until TLS is up

	mu sync.Mutex // guards client, up and stopped against stop()
	// up is the upstream: nil until login, except on an APOP passthrough
	// listener, which opens it before the greeting (see preopen).
	up      *upstream
	stopped bool
	// timestamp is the APOP timestamp of the greeting while up, opened
	// before it, is unused; preopenDial is how long opening it took.
	timestamp   string
	preopenDial time.Duration

	ctx    context.Context // cancelled by stop: ends waits on limits
	cancel context.CancelFunc
	lim    sessionLimits

	state       state
	pendingUser string   // from USER, until PASS
	early       *predial // USER's dial for PASS, if any (see predial.go)
	chain       []string // popproxies in front of this one (XPOPPROXY)
	// upCaps are the upstream capabilities CAPA lists, once upCapsFixed:
	// at the first CAPA before login, else at login (see sessionCaps).
	upCaps      capBits
	upCapsFixed bool
	user        string // the user logged in, or last tried; never the password
	badCommands int

	msgs  messages
	stats stats
}

// stats are a session's running totals, for its checkpoint and close
// records, and what became of its deletions.
type stats struct {
	lastCheckpoint time.Time
	retr, top      int
	dele           int
	marked         []int // messages marked deleted, in the order DELE marked them
	committed      bool
	commitUnknown  string // why committed is unknown, if it is
	incomplete     bool   // a response was cut short
}

// sessionLimits is what a session holds against the limits: the slots it
// was admitted to, with their keys, and after login its own limiters.
type sessionLimits struct {
	admitted  admission
	userRate  *rate.Limiter // the user's shared bandwidth, if limited
	sessRate  *rate.Limiter // this session's bandwidth, if limited
	cmdRate   *rate.Limiter // this session's command rate, if limited
	throttled bool          // the command rate has held this session back
}

func newSession(srv *Server, c net.Conn, lc *Listener) *session {
	s := &session{
		srv:   srv,
		id:    newSessionID(),
		lc:    lc,
		start: time.Now(),
		raw:   c,
	}
	s.loginDeadline = s.start.Add(srv.opts.LoginTimeout)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.attach(c)
	s.remote = addrPort(c.RemoteAddr())
	s.local = addrPort(c.LocalAddr())
	return s
}

// attach makes c the connection commands are read from, with a fresh buffer:
// after STLS nothing read before the handshake may be used (RFC 2595 §4).
func (s *session) attach(c net.Conn) {
	tc := &timeoutConn{Conn: c, writeTimeout: s.srv.opts.IdleTimeout}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.client; old != nil {
		tc.in, tc.out = old.in, old.out
	}
	if s.stopped {
		tc.stop()
	}
	s.client = tc
	if s.cr == nil {
		s.cr = bufio.NewReaderSize(tc, clientBufferSize)
	} else {
		s.cr.Reset(tc)
	}
}

// startTLS runs the server side of a TLS handshake after STLS and attaches
// the result.
func (s *session) startTLS() error {
	if err := s.handshake(); err != nil {
		return s.refuse(refusal{PolicyEvent: PolicyEvent{Rule: RuleTLSHandshake, Verb: "STLS", Detail: describeHandshakeError(err)},
			end: &endError{reason: CloseTLSFailed, err: err}})
	}
	s.auditTLS(TLSStartTLS)
	return nil
}

// handshake runs the server side of a TLS handshake on the raw connection,
// within the login deadline, and attaches the result. crypto/tls's calls
// are deep: run on the session's goroutine they would leave it a stack of
// 8 KiB for the rest of the session (see onOwnStack).
func (s *session) handshake() error {
	tc := tls.Server(s.raw, s.lc.TLSConfig)
	s.raw.SetDeadline(s.loginDeadline)
	err := onOwnStack(tc.Handshake)
	s.raw.SetDeadline(time.Time{})
	if err != nil {
		return err
	}
	cs := tc.ConnectionState()
	s.attach(tc)
	s.tls = &cs
	return nil
}

func (s *session) auditTLS(mode TLSMode) {
	cs := s.tls
	s.srv.opts.Auditor.TLS(s.id, TLSEvent{
		Mode:        mode.String(),
		Version:     tls.VersionName(cs.Version),
		CipherSuite: tls.CipherSuiteName(cs.CipherSuite),
		ServerName:  cs.ServerName,
		ALPN:        cs.NegotiatedProtocol,
		Resumed:     cs.DidResume,
	})
}

// acmeTLSALPN is the ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
const acmeTLSALPN = "acme-tls/1"

// addrPort converts a net.Addr; the zero value if it is not an IP address.
func addrPort(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// serve runs the session from accept to close. A connection is admitted (and
// its implicit TLS handshake done) before anything is audited of it, so that a
// flood of refused connections costs only summaries (refusalLog). A panic
// anywhere, in the Auditor, a certificate callback or the proxy itself, ends
// this session only.
func (s *session) serve() {
	defer s.srv.remove(s)
	defer s.cancel()
	defer s.release()
	defer s.raw.Close()
	if refused := s.protect(s.admitConnection); refused != nil {
		s.protect(func() *endError { s.turnAway(refused); return nil })
		return
	}
	end := s.protect(s.open)
	if end == nil {
		end = s.protect(s.run)
	}
	s.protect(func() *endError { s.finish(end); return nil })
}

// protect runs f, turning a panic into the end of this session.
func (s *session) protect(f func() *endError) (end *endError) {
	defer func() {
		if r := recover(); r != nil {
			s.srv.panicked(r, "session", s.id)
			end = &endError{reason: CloseInternalError, farewell: "-ERR [SYS/TEMP] internal error", err: &panicError{r}}
		}
	}()
	return f()
}

// admitConnection applies the connection limits and, on an implicit-TLS
// listener, runs the handshake. A refusal is recorded in the refusal log, not
// as a session.
func (s *session) admitConnection() *endError {
	refuse := func(e PolicyEvent, end *endError) *endError {
		e.Listener = s.lc.Name
		s.srv.refusals.record(e)
		return end
	}
	key := s.ipKey().String()
	if rule, n := s.admit(); rule != "" {
		return refuse(PolicyEvent{Rule: rule, Key: key, Value: float64(n)},
			&endError{reason: closeLimit, farewell: "-ERR [SYS/TEMP] too many connections, try again later"})
	}
	if s.lc.TLSMode != TLSImplicit {
		return nil
	}
	if err := s.handshake(); err != nil {
		return refuse(PolicyEvent{Rule: RuleTLSHandshake, Key: key, Detail: describeHandshakeError(err)},
			&endError{reason: CloseTLSFailed, err: err})
	}
	if s.tls.NegotiatedProtocol == acmeTLSALPN {
		// An ACME TLS-ALPN-01 validation: the handshake was the whole point.
		return &endError{reason: closeACMEChallenge}
	}
	return nil
}

// turnAway tells a refused client why, if it can read plaintext, and closes.
func (s *session) turnAway(end *endError) {
	if end.farewell == "" || s.lc.TLSMode == TLSImplicit {
		return // an implicit-TLS client expects a handshake, not text
	}
	s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(s.raw, end.farewell+"\r\n")
}

// open writes the session's first records, and ends the session if they
// could not be written and the audit trail fails closed. (These writes are
// also what finds out that a failed audit trail works again.)
func (s *session) open() *endError {
	s.srv.opts.Auditor.SessionOpen(SessionInfo{ID: s.id, Listener: s.lc.Name, Client: s.remote, Local: s.local, TLSMode: s.lc.TLSMode.String(), Start: s.start})
	if s.tls != nil {
		s.auditTLS(TLSImplicit)
	}
	return s.auditUnavailable() // these were the first writes since it failed
}

// run serves commands until the session ends.
func (s *session) run() *endError {
	if s.lc.APOP {
		s.preopen()
	}
	s.reply(true, s.greeting())
	for {
		if err := s.next(); err != nil {
			var e *endError
			if !errors.As(err, &e) {
				e = &endError{reason: CloseInternalError, farewell: "-ERR [SYS/TEMP] internal error", err: err}
			}
			return e
		}
	}
}

// finish says goodbye if there is something to say, closes both sides and
// writes the close record.
func (s *session) finish(end *endError) {
	if end.farewell != "" {
		if s.client.isStopped() {
			// Shutdown: the session was idle, so nothing else is being written.
			s.client.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(s.client.Conn, end.farewell+"\r\n")
		} else {
			s.writeLine(end.farewell)
		}
	}
	s.flush()
	if s.cw != nil {
		s.cw.Reset(nil)
		s.cw = nil
	}
	s.dropPredial()
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if up != nil {
		up.close()
	}
	if s.tls != nil && !s.stats.incomplete {
		// Let the client see a proper close_notify (best effort, bounded).
		// Never after a cut response: a TLS client would take the close
		// for a clean end of a truncated message.
		s.raw.SetWriteDeadline(time.Now().Add(time.Second))
		s.client.Conn.(*tls.Conn).CloseWrite()
	}
	if end.reason == CloseLineTooLong || end.reason == CloseTooManyErrors {
		s.lingerClose()
	} else {
		s.raw.Close()
	}
	var pe *panicError // already logged with its stack
	if end.reason == CloseInternalError && !errors.As(end.err, &pe) {
		s.srv.log.Error("session failed", "session", s.id, "err", end.err)
	}
	s.srv.opts.Auditor.SessionClose(s.id, CloseEvent{
		Counters:      s.counters(),
		UIDLs:         s.msgs.uidls(s.stats.marked),
		Reason:        end.reason,
		Committed:     s.stats.committed,
		CommitUnknown: s.stats.commitUnknown,
		User:          s.user,
		LoggedIn:      s.state == stateTransaction,
		Incomplete:    s.stats.incomplete,
	})
}

// counters are the session's running totals for checkpoint and close events.
func (s *session) counters() Counters {
	return Counters{
		Duration: time.Since(s.start),
		BytesIn:  s.client.in,
		BytesOut: s.client.out,
		Retr:     s.stats.retr,
		Top:      s.stats.top,
		Dele:     s.stats.dele,
		Marked:   s.stats.marked,
	}
}

// lingerClose closes a connection whose client may still be sending, without
// a TCP reset destroying the farewell: it shuts down the sending side, then
// reads and discards, boundedly, until the client closes too.
func (s *session) lingerClose() {
	defer s.raw.Close()
	cw, ok := s.raw.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	s.raw.SetReadDeadline(time.Now().Add(lingerTime))
	io.CopyN(io.Discard, s.raw, lingerBytes)
}

// stop interrupts the session from another goroutine (Server.Shutdown).
func (s *session) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.cancel()
	s.client.stop()
	if s.up != nil {
		s.up.conn.stop()
	}
}

// auditUnavailable ends the session if the audit trail cannot be written and
// the proxy must not serve without it.
func (s *session) auditUnavailable() *endError {
	if err := s.srv.opts.Auditor.Err(); err != nil && !s.srv.opts.AuditFailOpen {
		return &endError{reason: CloseAuditFailed, farewell: "-ERR [SYS/TEMP] service temporarily unavailable", err: err}
	}
	return nil
}

// checkpoint audits a long session's running totals between commands.
func (s *session) checkpoint() {
	if every := s.srv.opts.CheckpointInterval; every > 0 && time.Since(s.stats.lastCheckpoint) >= every {
		s.stats.lastCheckpoint = time.Now()
		s.srv.opts.Auditor.Checkpoint(s.id, s.counters())
	}
}

// next reads and handles one command.
func (s *session) next() error {
	if s.state == stateTransaction {
		s.checkpoint()
	}
	if err := s.answer(); err != nil {
		return err
	}
	line, err := s.readLine()
	if err != nil {
		return s.readFailed(err)
	}
	if err := s.auditUnavailable(); err != nil {
		return err
	}
	if len(line)+2 > pop3.MaxCommandLine && !isAuth(line) {
		return s.refuse(refused(RuleLineTooLong, "", "command line too long"))
	}
	cmd, err := pop3.ParseCommand(line)
	if err != nil {
		return s.refuse(refused(RuleSyntax, "", err.Error()))
	}
	return s.dispatch(cmd)
}

// readLine reads one client line, which must arrive whole before the login
// deadline, or after login within the idle timeout: a deadline per line, not
// per read, so that a client dripping a byte at a time cannot hold the session
// forever.
func (s *session) readLine() ([]byte, error) {
	if s.state == stateTransaction {
		s.client.readWithin(s.srv.opts.IdleTimeout)
	} else {
		s.client.setReadDeadline(s.loginDeadline)
	}
	return pop3.ReadLine(s.cr, maxSASLLine)
}

// lineBuffered reports whether a whole command line is already buffered, so
// reading it will not wait for the client.
func (s *session) lineBuffered() bool {
	b, _ := s.cr.Peek(s.cr.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

func isAuth(line []byte) bool {
	return len(line) > 5 && strings.EqualFold(string(line[:5]), "AUTH ")
}

// readFailed turns a failed client read into the session's end.
func (s *session) readFailed(err error) error {
	var ne net.Error
	switch {
	case s.client.isStopped():
		return &endError{reason: CloseShutdown, farewell: "-ERR [SYS/TEMP] server shutting down", err: err}
	case err == pop3.ErrLineTooLong:
		return s.refuse(refusal{PolicyEvent: PolicyEvent{Rule: RuleLineTooLong},
			end: &endError{reason: CloseLineTooLong, farewell: "-ERR line too long", err: err}})
	case errors.As(err, &ne) && ne.Timeout() && s.state == stateAuthorization:
		return &endError{reason: CloseLoginTimeout, farewell: "-ERR [SYS/TEMP] login not completed in time", err: err}
	case errors.As(err, &ne) && ne.Timeout():
		return &endError{reason: CloseTimeout, farewell: "-ERR disconnected for inactivity", err: err}
	case err == io.EOF:
		return &endError{reason: CloseClientClosed}
	default:
		return &endError{reason: CloseClientGone, err: err}
	}
}

// refusal is what the proxy will not do, a rule's or a limit's verdict: what
// to audit and what to tell the client.
type refusal struct {
	PolicyEvent
	code string // RFC 2449/3206 response code, if any
	text string
	// end, if set, ends the session instead of answering -ERR text.
	end *endError
}

// refused is a refusal by rule of a command, verb if known, for the reason
// text, which the client is told and the audit records.
func refused(rule Rule, verb, text string) refusal {
	return refusal{PolicyEvent: PolicyEvent{Rule: rule, Verb: verb, Detail: text}, text: text}
}

func (r *refusal) reply() string {
	if r.code == "" {
		return r.text
	}
	return "[" + r.code + "] " + r.text
}

// refuse is the one way to refuse: it audits r, then ends the session if r
// says so, or answers -ERR and ends the session once the client has made
// too many mistakes.
func (s *session) refuse(r refusal) error {
	s.srv.opts.Auditor.Policy(s.id, r.PolicyEvent)
	if r.end != nil {
		return r.end
	}
	s.badCommands++
	if s.badCommands >= s.srv.opts.MaxBadCommands {
		return &endError{reason: CloseTooManyErrors, farewell: "-ERR " + r.reply() + "; too many errors, closing"}
	}
	return s.reply(false, r.reply())
}

// reply writes a status line.
func (s *session) reply(ok bool, text string) error {
	status := "-ERR"
	if ok {
		status = "+OK"
	}
	if text != "" {
		status += " " + text
	}
	return s.writeLine(status)
}

func (s *session) writeLine(line string) error {
	w := s.writer()
	w.WriteString(line)
	if _, err := w.WriteString("\r\n"); err != nil {
		return &endError{reason: CloseClientGone, err: err}
	}
	return nil
}

// writer borrows the output buffer until the next flush.
func (s *session) writer() *bufio.Writer {
	if s.cw == nil {
		s.cw = writerPool.Get().(*bufio.Writer)
		s.cw.Reset(s.client)
	}
	return s.cw
}

// answer sends pending output, if any, unless the client's next command is
// already buffered: answers to pipelined commands go out together, but never
// wait for input.
func (s *session) answer() error {
	if s.cw == nil || s.lineBuffered() {
		return nil
	}
	if err := s.flush(); err != nil {
		return &endError{reason: CloseClientGone, err: err}
	}
	return nil
}

// flush sends pending output and gives the buffer back.
func (s *session) flush() error {
	if s.cw == nil {
		return nil
	}
	err := s.cw.Flush()
	if err == nil {
		s.cw.Reset(nil)
		writerPool.Put(s.cw)
		s.cw = nil
	}
	return err
}

func (s *session) setUpstream(u *upstream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up = u
	if s.stopped {
		u.conn.stop()
	}
}
