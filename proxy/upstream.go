package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/popproxy/popproxy/internal/pop3"
	"github.com/popproxy/popproxy/internal/proxyproto"
)

// relayBufferSize is the size of the pooled buffers a response passes through.
// Large enough that a bulk RETR moves in few system calls; borrowed only for
// the length of one exchange, so idle sessions do not hold them.
const relayBufferSize = 32 << 10

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, relayBufferSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, relayBufferSize) }}
)

// errUnsolicited reports bytes from the upstream that answer no command.
var errUnsolicited = errors.New("upstream sent data nobody asked for")

// upstream is the proxy's connection to the POP3 server for one session.
type upstream struct {
	route string // the Upstream's name
	addr  string
	conn  *timeoutConn
	br    *bufio.Reader // borrowed from readerPool during an exchange, else nil
	caps  []string      // CAPA under TLS, read after STLS; else nil
	// timestamp is the APOP timestamp of the greeting (RFC 1939 §7), if any.
	timestamp string
	// peer is the instance id of a popproxy upstream, or "".
	peer string
}

// credentials are held only for the length of a login attempt. For OAuth,
// pass is the bearer token (what a failed login fingerprints) and initial
// the client's initial response, relayed as sent.
type credentials struct {
	authzid, user, pass string
	mech                string
	initial             string
}

// dialInfo is what the upstream may be told about the client.
type dialInfo struct {
	client, local netip.AddrPort
	session       string
	chain         []string // instance ids of the popproxies before this one
}

// errLoop means the upstream is this proxy, or one of the popproxies the
// client came through.
var errLoop = errors.New("upstream is a popproxy this session already passed (loop)")

// greetingPrefix starts popproxy's greeting; the instance id follows, and on
// an APOP passthrough listener the upstream's timestamp after it.
const greetingPrefix = "popproxy ready "

// capPopproxy is the capability by which popproxy lists its instance id in
// CAPA before login ("XPOPPROXY <id>"), where a popproxy in front finds it
// after STLS.
const capPopproxy = "XPOPPROXY"

// offers is what an upstream announced about itself: in its greeting, or,
// after STLS, in CAPA under TLS.
type offers struct {
	xclient  bool   // Dovecot's XCLIENT
	popproxy string // the instance id of a popproxy, or ""
}

// greetingOffers reads offers from the greeting: Dovecot's "[XCLIENT]"
// response code (which ParseStatus has taken out of the text) and
// popproxy's "popproxy ready <id>", which an APOP timestamp may follow.
func greetingOffers(st pop3.Status) offers {
	var id string
	if rest, ok := strings.CutPrefix(st.Text, greetingPrefix); ok {
		id, _, _ = strings.Cut(rest, " ")
	}
	return offers{xclient: strings.EqualFold(st.Code, "XCLIENT"), popproxy: id}
}

// capaOffers reads offers from CAPA's lines. Dovecot 2.3 lists XCLIENT only
// in its greeting, never in CAPA (pop3-login's client.c), so behind STLS it
// gets no XCLIENT; a server that lists it does.
func capaOffers(caps []string) offers {
	_, xclient := capability(caps, "XCLIENT")
	id, _ := capability(caps, capPopproxy)
	return offers{xclient: xclient, popproxy: id}
}

// capability returns the parameters of capability name in CAPA's lines, and
// whether it is there.
func capability(caps []string, name string) (string, bool) {
	for _, c := range caps {
		tag, params, _ := strings.Cut(c, " ")
		if strings.EqualFold(tag, name) {
			return params, true
		}
	}
	return "", false
}

// maxChain bounds the popproxies one session may pass through.
const maxChain = 8

// dialUpstream connects to the first of up's addresses that answers, with
// failover and the circuit breaker, secures the connection as up says, tells
// it the client's address if configured, and reads the greeting, which must be
// +OK. It never returns a connection on which TLS was required but is not up.
// Cancelling ctx abandons the dial.
func (srv *Server) dialUpstream(ctx context.Context, up Upstream, info dialInfo) (*upstream, error) {
	var u *upstream
	ctx, cancel := context.WithTimeout(ctx, time.Duration(srv.opts.DialAttempts)*up.DialTimeout)
	defer cancel()
	_, _, err := srv.opts.Breaker.Dial(ctx, up.Addresses, srv.opts.DialAttempts, func(ctx context.Context, addr string) (net.Conn, error) {
		var err error
		if u, err = srv.dialSecure(ctx, up, addr, info); err != nil {
			return nil, err // Dial names the address
		}
		return u.conn, nil
	})
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", up.Name, err)
	}
	u.conn.setReadTimeout(up.ResponseTimeout)
	u.route = up.Name
	return u, nil
}

// dialSecure connects to addr and gets it ready for a login, within
// up.DialTimeout or ctx's deadline (a breaker's trial), whichever is sooner.
func (srv *Server) dialSecure(ctx context.Context, up Upstream, addr string, info dialInfo) (*upstream, error) {
	deadline := time.Now().Add(up.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dialer := net.Dialer{Deadline: deadline}
	raw, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// A cancelled dial (a predial dropped) stops its exchanges too; they
	// keep to the deadline by themselves.
	unwatch := context.AfterFunc(ctx, func() {
		if ctx.Err() == context.Canceled {
			raw.Close()
		}
	})
	defer unwatch()
	if err := sendProxyHeader(raw, up.SendClient, info, deadline); err != nil {
		raw.Close()
		return nil, err
	}
	tlsConfig := up.tlsFor(addr)
	var c net.Conn = raw
	if up.TLSMode == TLSImplicit {
		if c, err = clientHandshake(raw, tlsConfig, deadline); err != nil {
			raw.Close()
			return nil, err
		}
	}
	u := &upstream{
		addr: addr,
		// Each read until the login may wait what is left, but never
		// without a deadline (a zero readTimeout would mean none).
		conn: &timeoutConn{Conn: c, readTimeout: max(time.Until(deadline), time.Millisecond), writeTimeout: up.ResponseTimeout},
	}
	_, st, err := u.readStatus()
	switch {
	case err != nil:
	case !st.OK:
		err = fmt.Errorf("greeting: -ERR %s", pop3.Sanitize(st.Text))
	default:
		err = u.release()
	}
	// After STLS nothing said in plaintext counts: a man in the middle may
	// have added or removed it (RFC 2595 §4). Only CAPA under TLS does.
	offered := greetingOffers(st)
	// The timestamp is kept even behind STLS: one changed on the way makes
	// the client's digest fail, it reveals nothing.
	u.timestamp, _ = pop3.Timestamp(st.Text)
	if err == nil && up.TLSMode == TLSStartTLS {
		offered, err = u.startTLS(raw, tlsConfig, deadline)
	}
	u.peer = offered.popproxy
	if err == nil {
		err = srv.checkLoop(u.peer, info.chain)
	}
	if err == nil && up.SendClient == SendXClient && offered.xclient {
		err = u.xclient(info)
	}
	if err == nil {
		err = srv.joinChain(u, info.chain)
	}
	if err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

// tlsFor returns up's TLS configuration for a connection to addr: unless it
// names the server, the certificate is checked against addr's own host, so
// that failing over to an address with another name checks that name.
func (up Upstream) tlsFor(addr string) *tls.Config {
	cfg := up.TLSConfig
	if cfg == nil || cfg.ServerName != "" {
		return cfg
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	c := cfg.Clone()
	c.ServerName = host
	return c
}

// sendProxyHeader writes a PROXY protocol header, the first bytes on the
// connection, if the upstream wants one.
func sendProxyHeader(c net.Conn, mode ProxyHeader, info dialInfo, deadline time.Time) error {
	version := map[ProxyHeader]int{SendProxyV1: 1, SendProxyV2: 2}[mode]
	if version == 0 {
		return nil
	}
	header, err := proxyproto.Header(version, info.client, info.local)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(deadline)
	_, err = c.Write(header)
	c.SetWriteDeadline(time.Time{})
	return err
}

// checkLoop refuses an upstream that is the popproxy peer (if not "") when
// that is this proxy or one in chain.
func (srv *Server) checkLoop(peer string, chain []string) error {
	if peer != "" && (peer == srv.instance || slices.Contains(chain, peer)) {
		return errLoop
	}
	return nil
}

// joinChain tells a popproxy upstream the popproxies the session came
// through, this one last; other upstreams are told nothing.
func (srv *Server) joinChain(u *upstream, chain []string) error {
	if u.peer == "" {
		return nil
	}
	return u.passChain(append(slices.Clone(chain), srv.instance))
}

// passChain tells an upstream popproxy which popproxies the session came
// through, so that it refuses to dial any of them: a loop of proxies is
// found at its second hop rather than nesting sessions until a limit.
func (u *upstream) passChain(chain []string) error {
	if len(chain) > maxChain {
		return fmt.Errorf("more than %d popproxies in a row", maxChain)
	}
	st, err := u.exchange("XPOPPROXY " + strings.Join(chain, " ") + "\r\n")
	if err == nil && !st.OK {
		err = fmt.Errorf("XPOPPROXY refused: %s", pop3.Sanitize(st.Text))
	}
	return err
}

// xclientTTL is the hop count given with XCLIENT: what a Dovecot proxy, which
// starts at 5, passes on to the next hop; a Dovecot proxy behind popproxy
// refuses to go on at 1 or less.
const xclientTTL = 4

// xclient tells a Dovecot-style upstream the client's address and session id
// (its log then shows the real client). A refusal aborts: the upstream would
// otherwise account the login to the proxy's address.
func (u *upstream) xclient(info dialInfo) error {
	line, err := proxyproto.XClient(info.client, info.session, xclientTTL)
	if err != nil {
		return err
	}
	st, err := u.exchange(line)
	if err == nil && !st.OK {
		err = fmt.Errorf("XCLIENT refused: %s", pop3.Sanitize(st.Text))
	}
	return err
}

// errNoSTLS means the upstream would not start TLS. The proxy then gives up:
// falling back to plaintext would send the client's credentials in clear.
var errNoSTLS = errors.New("upstream does not offer STLS")

// startTLS upgrades the connection with STLS (RFC 2595 §4): STLS must be in
// CAPA and answered +OK, and nothing may follow that +OK before the handshake
// (response injection: such bytes would be taken as sent under TLS). It
// returns what CAPA lists under TLS.
func (u *upstream) startTLS(raw net.Conn, cfg *tls.Config, deadline time.Time) (offers, error) {
	caps, err := u.capa()
	if err != nil {
		return offers{}, err
	}
	if _, ok := capability(caps, "STLS"); !ok {
		return offers{}, errNoSTLS
	}
	st, err := u.exchange("STLS\r\n")
	if err != nil {
		if err == errUnsolicited {
			return offers{}, errors.New("upstream sent data after its STLS response (response injection?)")
		}
		return offers{}, err
	}
	if !st.OK {
		return offers{}, fmt.Errorf("%w: STLS refused: %s", errNoSTLS, pop3.Sanitize(st.Text))
	}
	c, err := clientHandshake(raw, cfg, deadline)
	if err != nil {
		return offers{}, err
	}
	u.conn = &timeoutConn{Conn: c, readTimeout: u.conn.readTimeout, writeTimeout: u.conn.writeTimeout}
	if u.caps, err = u.capa(); err != nil {
		return offers{}, err
	}
	return capaOffers(u.caps), nil
}

// capa asks CAPA and returns its lines; none if the server does not know
// CAPA (RFC 1939 servers answer -ERR).
func (u *upstream) capa() ([]string, error) {
	st, err := u.command("CAPA\r\n")
	if err != nil {
		return nil, err
	}
	var caps []string
	if st.OK {
		if caps, err = u.readList(); err != nil {
			return nil, err
		}
	}
	return caps, u.release()
}

func clientHandshake(raw net.Conn, cfg *tls.Config, deadline time.Time) (*tls.Conn, error) {
	tc := tls.Client(raw, cfg)
	raw.SetDeadline(deadline)
	if err := onOwnStack(tc.Handshake); err != nil { // see session.handshake
		return nil, fmt.Errorf("TLS: %w", err)
	}
	raw.SetDeadline(time.Time{})
	return tc, nil
}

// errNoSASLPlain means upstream.login is plain but the server does not offer
// AUTH PLAIN: no login there can work, whatever the password.
var errNoSASLPlain = errors.New("the server's CAPA lists no SASL PLAIN, which upstream.login: plain needs")

// login authenticates with c and returns the server's verdict; an error means
// the exchange itself failed, or, with plain, that the server does not offer
// AUTH PLAIN (errNoSASLPlain): nothing was sent then, so its refusal cannot
// pass for a wrong password. USER and PASS go in one write if the server
// pipelines: pipelining says so, or its CAPA under TLS does.
func (u *upstream) login(c credentials, plain, pipelining bool) (pop3.Status, error) {
	if c.mech == "APOP" {
		// The digest answers this connection's timestamp: relayed as sent.
		return u.exchange("APOP " + c.user + " " + c.pass + "\r\n")
	}
	if plain {
		caps := u.caps
		if caps == nil {
			var err error
			if caps, err = u.capa(); err != nil {
				return pop3.Status{}, err
			}
		}
		if mechs, _ := capability(caps, "SASL"); !slices.ContainsFunc(strings.Fields(mechs), isPlain) {
			return pop3.Status{}, errNoSASLPlain
		}
		msg := c.authzid + "\x00" + c.user + "\x00" + c.pass
		st, err := u.exchange("AUTH PLAIN " + pop3.EncodeSASL([]byte(msg)) + "\r\n")
		return st, err
	}
	if _, ok := capability(u.caps, "PIPELINING"); ok || pipelining {
		return u.pipelinedLogin(c)
	}
	st, err := u.exchange("USER " + c.user + "\r\n")
	if err != nil || !st.OK {
		return st, err
	}
	return u.exchange("PASS " + c.pass + "\r\n")
}

// pipelinedLogin sends USER and PASS in one write and reads both replies
// (RFC 2449 §6.6), saving a round trip.
func (u *upstream) pipelinedLogin(c credentials) (pop3.Status, error) {
	user, err := u.command("USER " + c.user + "\r\nPASS " + c.pass + "\r\n")
	if err != nil {
		return user, err
	}
	// The server answers USER at once and PASS once checked, in two writes.
	// One that leaves Nagle's algorithm on (Dovecot) holds the second back
	// until the first is acknowledged, which this end, with nothing to
	// send, would delay by up to 40 ms: a login at half the speed of an
	// unpipelined one, at 8 clients. Acknowledge at once.
	ackNow(u.conn.Conn)
	_, pass, err := u.readStatus()
	if err == nil {
		err = u.release()
	}
	if !user.OK {
		// The verdict, as without pipelining; PASS's reply only followed it
		// (and the connection is closed after a refusal).
		return user, nil
	}
	return pass, err
}

func isPlain(mech string) bool { return strings.EqualFold(mech, "PLAIN") }

// exchange sends one line and reads a single-line reply.
func (u *upstream) exchange(line string) (pop3.Status, error) {
	st, err := u.command(line)
	if err != nil {
		return st, err
	}
	return st, u.release()
}

// command sends one line and reads the status line of the reply; the caller
// reads any body and releases.
func (u *upstream) command(line string) (pop3.Status, error) {
	if _, err := u.conn.Write([]byte(line)); err != nil {
		return pop3.Status{}, err
	}
	_, st, err := u.readStatus()
	return st, err
}

// maxListLines bounds a list read into memory (CAPA), whatever the server sends.
const maxListLines = 200

// readList reads a short multi-line body (CAPA) into lines, keeping at most
// maxListLines and skipping over-long ones, up to the terminator.
func (u *upstream) readList() ([]string, error) {
	var lines []string
	for {
		line, err := pop3.ReadLine(u.br, pop3.MaxResponseLine)
		if err == pop3.ErrLineTooLong {
			continue
		}
		if err != nil {
			return nil, err
		}
		if string(line) == "." {
			return lines, nil
		}
		if len(lines) < maxListLines {
			lines = append(lines, string(line))
		}
	}
}

// readStatus borrows a reader and reads a status line. The caller relays any
// body and then calls release.
func (u *upstream) readStatus() ([]byte, pop3.Status, error) {
	line, err := u.readLine(pop3.MaxResponseLine)
	if err != nil {
		return nil, pop3.Status{}, err
	}
	st, err := pop3.ParseStatus(line)
	return line, st, err
}

// readLine borrows a reader and reads a line of at most max octets.
func (u *upstream) readLine(max int) ([]byte, error) {
	if u.br == nil {
		u.br = readerPool.Get().(*bufio.Reader)
		u.br.Reset(u.conn)
	}
	return pop3.ReadLine(u.br, max)
}

// release returns the reader after a complete response. POP3 is lockstep, so
// anything still buffered is a protocol violation (or an injection attempt).
func (u *upstream) release() error {
	if u.br == nil {
		return nil
	}
	if u.br.Buffered() > 0 {
		return errUnsolicited
	}
	u.br.Reset(nil)
	readerPool.Put(u.br)
	u.br = nil
	return nil
}

// close drops the connection without QUIT: only a client's own QUIT may take
// the upstream into the UPDATE state and commit deletions (RFC 1939 §6).
func (u *upstream) close() {
	u.conn.Close()
	if u.br != nil {
		u.br.Reset(nil)
		u.br = nil // not pooled: it may hold unread bytes
	}
}
