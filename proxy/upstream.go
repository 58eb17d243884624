package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"

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

// dialUpstream connects and reads the greeting, which must be +OK.
func dialUpstream(opts Upstream) (*upstream, error) {
	c, err := net.DialTimeout("tcp", opts.Address, opts.DialTimeout)
	if err != nil {
		return nil, err
	}
	setNoDelay(c)
	u := &upstream{
		addr: opts.Address,
		conn: &timeoutConn{Conn: c, readTimeout: opts.DialTimeout, writeTimeout: opts.ResponseTimeout},
	}
	_, st, err := u.readStatus()
	if err == nil && !st.OK {
		err = fmt.Errorf("greeting: -ERR %s", pop3.Sanitize(st.Text))
	}
	if err != nil {
		u.close()
		return nil, fmt.Errorf("upstream %s: %w", opts.Address, err)
	}
	u.release()
	u.conn.setReadTimeout(opts.ResponseTimeout)
	return u, nil
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
	if _, err := u.conn.Write([]byte(line)); err != nil {
		return pop3.Status{}, err
	}
	_, st, err := u.readStatus()
	if err != nil {
		return st, err
	}
	return st, u.release()
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
