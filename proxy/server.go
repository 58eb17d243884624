// Package proxy is popproxy's engine: it accepts POP3 clients, answers the
// AUTHORIZATION state itself, logs in to the upstream server with the client's
// credentials, and from then on parses every command, relays it in canonical form
// and streams the reply back unchanged.
// See the package example for typical use.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/popproxy/popproxy/internal/route"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Options configure a Server. Zero values get the defaults named per field.
type Options struct {
	// Router chooses an upstream per user among Upstreams (by name) and
	// rewrites the login name. The addresses dialled are the router's
	// (reloadable); Upstreams gives the rest of each upstream's settings.
	// If nil, no user is routed: every login is refused.
	Router    *route.Router
	Upstreams map[string]Upstream
	// Breaker skips failing upstream addresses while another can serve. If
	// nil, one with route's defaults is used.
	Breaker *route.Breaker
	// DialAttempts bounds the addresses tried per login. Default 3.
	DialAttempts int
	// LoginTimeout is the silence allowed before login. Default 60s.
	LoginTimeout time.Duration
	// IdleTimeout is the silence allowed after login. Default 10m, RFC 1939 §3's
	// minimum.
	IdleTimeout time.Duration
	// MaxBadCommands ends a session after that many refused commands. Default 10.
	MaxBadCommands int
	// Mechanisms are the SASL mechanisms offered to clients (RFC 5034), in
	// CAPA's order: PLAIN and LOGIN, which the proxy decodes, and
	// OAUTHBEARER (RFC 7628) and XOAUTH2, which it relays to the server
	// with the client's bearer token, only over TLS. If nil, PLAIN and
	// LOGIN.
	Mechanisms []string
	// Extensions are commands relayed after login beyond RFC 1939's.
	Extensions []Extension
	// ResolveUIDs makes the proxy ask the server "UIDL n" and "LIST n"
	// before relaying RETR n, TOP n or DELE n whose unique id or size it has
	// not seen, so that the audit names and measures every message retrieved
	// or deleted.
	ResolveUIDs bool
	// CheckpointInterval is how often a long session's running totals are
	// audited (between commands). Zero means never.
	CheckpointInterval time.Duration
	// AuditFailOpen keeps serving while the Auditor reports a failure. By
	// default (false) new sessions are refused with -ERR [SYS/TEMP] and
	// running ones end at their next command.
	AuditFailOpen bool
	// Limits bound sessions, logins, commands and bandwidth; see Limits.
	// SetLimits changes them later.
	Limits Limits
	// Shared, if not nil, holds the failed logins, per-user sessions,
	// LOGIN-DELAY and per-address connection rate for a fleet of proxies;
	// the other limits stay this proxy's. While it does not answer, the
	// proxy applies its own limits instead, or, if SharedFailClosed,
	// refuses logins with [SYS/TEMP].
	Shared           SharedLimits
	SharedFailClosed bool
	// Auditor receives audit events. If nil, nothing is audited.
	Auditor Auditor
	// RefusalInterval is how often refused connections (connection limits,
	// failed implicit-TLS handshakes) are summarised in the audit: the first
	// refusal per listener, rule and address is audited at once, the rest
	// as one record with a count per interval. Default 10s.
	RefusalInterval time.Duration
	// Logger is the operational log. If nil, slog.Default() is used.
	Logger *slog.Logger
}

// TLSMode says how a connection is secured.
type TLSMode int

// TLS modes of a listener or of the upstream connection.
const (
	TLSNone     TLSMode = iota
	TLSStartTLS         // plain until STLS (RFC 2595)
	TLSImplicit         // TLS from the first byte (RFC 8314)
)

func (m TLSMode) String() string {
	switch m {
	case TLSStartTLS:
		return "starttls"
	case TLSImplicit:
		return "implicit"
	}
	return "none"
}

// Listener describes where clients connect.
type Listener struct {
	// Name identifies the listener in audit events.
	Name    string
	TLSMode TLSMode
	// TLSConfig serves TLSStartTLS and TLSImplicit; it is consulted at every
	// handshake, so a GetCertificate callback sees reloaded certificates.
	TLSConfig *tls.Config
	// RequireTLS refuses USER, PASS and AUTH before STLS and leaves them
	// out of CAPA.
	RequireTLS bool
	// APOP passes APOP through (RFC 1939 §7): each session connects to the
	// default route's upstream before the greeting and shows that server's
	// timestamp in its own. USER/PASS and AUTH of users routed there use
	// that connection too. Without a default route, or if the server is
	// down or has no timestamp, the greeting has none and APOP is refused.
	APOP bool
}

// ProxyHeader says how the upstream learns the client's address.
type ProxyHeader int

// Ways to tell the upstream the client's address.
const (
	SendNothing ProxyHeader = iota
	SendProxyV1             // HAProxy PROXY protocol, text
	SendProxyV2             // HAProxy PROXY protocol, binary
	SendXClient             // Dovecot's XCLIENT, only if the greeting offers [XCLIENT]
)

// Upstream is a POP3 server behind the proxy.
type Upstream struct {
	// Name identifies the upstream in routes and audit events.
	Name string
	// Addresses of one mail store, tried in order: on a failure the next
	// one is tried (Options.DialAttempts at most), and a failing address is
	// skipped while another serves (Options.Breaker). They are the
	// router's: in Options.Upstreams they are ignored.
	Addresses []string
	// SendClient tells the upstream the real client's address.
	SendClient ProxyHeader
	// TLSMode secures the connection: implicit TLS, or STLS, which must be
	// offered and must succeed before any credential is sent.
	TLSMode TLSMode
	// TLSConfig verifies the server (and may present a client certificate).
	// If its ServerName is empty, each address's certificate is checked
	// against that address's host.
	TLSConfig *tls.Config
	// DialTimeout bounds connecting and reading the greeting. Default 10s.
	DialTimeout time.Duration
	// ResponseTimeout is the silence allowed while waiting for a response. Default 60s.
	ResponseTimeout time.Duration
	// LoginPlain logs in with AUTH PLAIN instead of USER/PASS. The server
	// must list SASL PLAIN in CAPA; if it does not, logins are answered
	// -ERR [SYS/TEMP] and an error is logged.
	LoginPlain bool
	// Capabilities, if not nil, are the server's among TOP and UIDL (RFC
	// 2449 §6), which CAPA then announces, and PIPELINING, which sends USER
	// and PASS together, instead of what the proxy learns from the server
	// on the first logins: its CAPA, or, without CAPA, whether UIDL and TOP
	// work. Empty means none.
	Capabilities []string
}

func (up Upstream) withDefaults(name string) Upstream {
	if up.Name == "" {
		up.Name = name
	}
	if up.DialTimeout <= 0 {
		up.DialTimeout = 10 * time.Second
	}
	if up.ResponseTimeout <= 0 {
		up.ResponseTimeout = 60 * time.Second
	}
	return up
}

// Extension is a command relayed without knowing its syntax.
type Extension struct {
	Verb      string // upper case
	MaxArgs   int
	Multiline bool // a +OK reply is followed by a dot-terminated body
}

// Server accepts POP3 clients on any number of listeners.
type Server struct {
	opts     Options
	log      *slog.Logger
	instance string // in the greeting, to recognise a loop back to this proxy
	limits   *limiter
	refusals *refusalLog
	panics   atomic.Int64
	caps     capMemory // what was learnt of each upstream's capabilities

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closing   bool
	wg        sync.WaitGroup
}

// New returns a Server with opts' zero values defaulted.
func New(opts Options) *Server {
	if opts.LoginTimeout <= 0 {
		opts.LoginTimeout = 60 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.MaxBadCommands <= 0 {
		opts.MaxBadCommands = 10
	}
	if opts.Mechanisms == nil {
		opts.Mechanisms = []string{"PLAIN", "LOGIN"}
	}
	upstreams := make(map[string]Upstream, len(opts.Upstreams))
	for name, up := range opts.Upstreams {
		upstreams[name] = up.withDefaults(name)
	}
	opts.Upstreams = upstreams
	if opts.Auditor == nil {
		opts.Auditor = nopAuditor{}
	}
	if opts.Router == nil {
		opts.Router, _ = route.New(route.Config{}) // routes nobody; cannot fail
	}
	if opts.Breaker == nil {
		opts.Breaker = route.NewBreaker(route.BreakerConfig{})
	}
	if opts.DialAttempts <= 0 {
		opts.DialAttempts = 3
	}
	if opts.RefusalInterval <= 0 {
		opts.RefusalInterval = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	srv := &Server{
		instance:  newSessionID(),
		opts:      opts,
		log:       log,
		limits:    newLimiter(opts.Limits),
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
	}
	srv.refusals = newRefusalLog(opts.RefusalInterval,
		func(e PolicyEvent) { srv.opts.Auditor.Policy("", e) },
		func(r any) { srv.panicked(r, "in", "refusal summary") })
	return srv
}

// Serve accepts connections on l as lc describes until l fails or the server
// shuts down; then it returns ErrServerClosed.
func (srv *Server) Serve(l net.Listener, lc Listener) error {
	if lc.TLSMode != TLSNone && lc.TLSConfig == nil {
		return fmt.Errorf("proxy: listener %s: TLS mode %s without a TLS configuration", lc.Name, lc.TLSMode)
	}
	if !srv.track(l) {
		return ErrServerClosed
	}
	defer srv.untrack(l)
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if srv.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				srv.log.Warn("accept failed; retrying", "listener", lc.Name, "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s := newSession(srv, c, &lc)
		if !srv.add(s) {
			c.Close()
			return ErrServerClosed
		}
		go s.serve()
	}
}

func (srv *Server) track(l net.Listener) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return false
	}
	srv.listeners[l] = struct{}{}
	return true
}

func (srv *Server) untrack(l net.Listener) {
	srv.mu.Lock()
	delete(srv.listeners, l)
	srv.mu.Unlock()
}

func (srv *Server) add(s *session) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return false
	}
	srv.sessions[s] = struct{}{}
	srv.wg.Add(1)
	return true
}

func (srv *Server) remove(s *session) {
	srv.mu.Lock()
	delete(srv.sessions, s)
	srv.mu.Unlock()
	srv.wg.Done()
}

// Sessions returns the number of open sessions, including connections still
// being admitted.
func (srv *Server) Sessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

func (srv *Server) isClosing() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closing
}

// Shutdown stops accepting, lets open sessions run until their clients quit,
// and when ctx ends stops the rest: an idle client is told
// "-ERR [SYS/TEMP] server shutting down", a transfer in progress is cut without
// its terminator. No session sends QUIT upstream on its client's behalf.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.closeListeners()
	done := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(done)
	}()
	defer srv.refusals.flush()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		srv.stopSessions()
		<-done
		return ctx.Err()
	}
}

// Close is Shutdown with no grace period.
func (srv *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Shutdown(ctx); err != context.Canceled {
		return err
	}
	return nil
}

func (srv *Server) closeListeners() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.closing = true
	for l := range srv.listeners {
		l.Close()
	}
}

func (srv *Server) stopSessions() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for s := range srv.sessions {
		s.stop()
	}
}
