package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/popproxy/popproxy/internal/pop3"
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
	addr string
	conn *timeoutConn
	br   *bufio.Reader // borrowed from readerPool during an exchange, else nil
}

// credentials are held only for the length of a login attempt.
type credentials struct {
	authzid, user, pass string
	mech                string
}

// dialUpstream connects, secures the connection as opts say and reads the
// greeting, which must be +OK. It never returns a connection on which TLS was
// required but is not up.
func dialUpstream(opts Upstream) (*upstream, error) {
	u, err := dialSecure(opts)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", opts.Address, err)
	}
	u.conn.setReadTimeout(opts.ResponseTimeout)
	return u, nil
}

func dialSecure(opts Upstream) (*upstream, error) {
	deadline := time.Now().Add(opts.DialTimeout)
	raw, err := net.DialTimeout("tcp", opts.Address, opts.DialTimeout)
	if err != nil {
		return nil, err
	}
	setNoDelay(raw)
	var c net.Conn = raw
	if opts.TLSMode == TLSImplicit {
		if c, err = clientHandshake(raw, opts.TLSConfig, deadline); err != nil {
			raw.Close()
			return nil, err
		}
	}
	u := &upstream{
		addr: opts.Address,
		conn: &timeoutConn{Conn: c, readTimeout: opts.DialTimeout, writeTimeout: opts.ResponseTimeout},
	}
	_, st, err := u.readStatus()
	if err == nil && !st.OK {
		err = fmt.Errorf("greeting: -ERR %s", pop3.Sanitize(st.Text))
	}
	if err == nil {
		err = u.release()
	}
	if err == nil && opts.TLSMode == TLSStartTLS {
		err = u.startTLS(raw, opts.TLSConfig, deadline)
	}
	if err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

// errNoSTLS means the upstream would not start TLS. The proxy then gives up:
// falling back to plaintext would send the client's credentials in clear.
var errNoSTLS = errors.New("upstream does not offer STLS")

// startTLS upgrades the connection with STLS (RFC 2595 §4): STLS must be in
// CAPA and answered +OK, and nothing may follow that +OK before the handshake
// (response injection: such bytes would be taken as sent under TLS).
func (u *upstream) startTLS(raw net.Conn, cfg *tls.Config, deadline time.Time) error {
	st, err := u.command("CAPA\r\n")
	if err != nil {
		return err
	}
	offered := false
	if st.OK {
		caps, err := u.readList()
		if err != nil {
			return err
		}
		for _, c := range caps {
			tag, _, _ := strings.Cut(c, " ")
			offered = offered || strings.EqualFold(tag, "STLS")
		}
	}
	if err := u.release(); err != nil {
		return err
	}
	if !offered {
		return errNoSTLS
	}
	if st, err = u.exchange("STLS\r\n"); err != nil {
		if err == errUnsolicited {
			return errors.New("upstream sent data after its STLS response (response injection?)")
		}
		return err
	}
	if !st.OK {
		return fmt.Errorf("%w: STLS refused: %s", errNoSTLS, pop3.Sanitize(st.Text))
	}
	c, err := clientHandshake(raw, cfg, deadline)
	if err != nil {
		return err
	}
	u.conn = &timeoutConn{Conn: c, readTimeout: u.conn.readTimeout, writeTimeout: u.conn.writeTimeout}
	return nil
}

func clientHandshake(raw net.Conn, cfg *tls.Config, deadline time.Time) (*tls.Conn, error) {
	tc := tls.Client(raw, cfg)
	raw.SetDeadline(deadline)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	raw.SetDeadline(time.Time{})
	return tc, nil
}

// login authenticates with c and returns the server's verdict; an error means
// the exchange itself failed.
func (u *upstream) login(c credentials, plain bool) (pop3.Status, error) {
	if plain {
		msg := c.authzid + "\x00" + c.user + "\x00" + c.pass
		st, err := u.exchange("AUTH PLAIN " + pop3.EncodeSASL([]byte(msg)) + "\r\n")
		return st, err
	}
	st, err := u.exchange("USER " + c.user + "\r\n")
	if err != nil || !st.OK {
		return st, err
	}
	return u.exchange("PASS " + c.pass + "\r\n")
}

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
	if u.br == nil {
		u.br = readerPool.Get().(*bufio.Reader)
		u.br.Reset(u.conn)
	}
	line, err := pop3.ReadLine(u.br, pop3.MaxResponseLine)
	if err != nil {
		return nil, pop3.Status{}, err
	}
	st, err := pop3.ParseStatus(line)
	return line, st, err
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

// setNoDelay makes sure small replies are never held back by Nagle's
// algorithm waiting for a delayed ACK (Go's default, made explicit).
func setNoDelay(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
}
