// Package pop3test holds the POP3 test client and the scripted fake upstream
// that popproxy's tests share. It touches nothing but the sockets it is given.
//
// Typical usage:
//
//	c := pop3test.Dial(t, addr) // reads and checks the greeting
//	c.Login("alice", "secret")
//	c.Cmd("RETR 1", "+OK *")
//	body := c.Body() // as on the wire: dot-stuffed, CRLF, no terminator
//	c.Cmd("QUIT", "+OK*")
//	c.Closed()
//
// A Client fails the test on any surprise, so it belongs to the test's
// goroutine; Conn returns errors instead, for clients run in goroutines of
// their own.
package pop3test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Timeout bounds each read of a Client and of an UpstreamConn.
const Timeout = 5 * time.Second

// Match reports whether line matches pattern, in which "*" stands for any
// run of characters and every other character for itself. It is path.Match
// with only "*" special, and "*" crossing "/": status lines hold "/" and
// "[...]" ("-ERR [SYS/TEMP] ..."), which path.Match would read as a separator
// and a character class. It compiles nothing: benchmarks measure the
// server, not the client.
func Match(pattern, line string) bool {
	// Each * first matches nothing; on a mismatch the latest one takes one
	// more octet and matching resumes after it.
	p, l := 0, 0
	star, resume := -1, 0
	for l < len(line) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, resume = p, l
			p++
		case p < len(pattern) && pattern[p] == line[l]:
			p++
			l++
		case star >= 0:
			resume++
			p, l = star+1, resume
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Client is a POP3 client for transcripts: each method fails the test when
// the server does not answer as expected. Conn and R may be replaced
// together, for example by a TLS connection after STLS.
type Client struct {
	T        testing.TB
	Conn     net.Conn
	R        *bufio.Reader
	Greeting string // the greeting Dial read; empty after NewClient
}

// Dial connects to addr and expects a +OK greeting. The connection is closed
// when the test ends.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := NewClient(t, conn)
	c.Greeting = c.Expect("+OK *")
	return c
}

// NewClient wraps a connection the test has made, whose greeting has not been
// read. The test closes conn.
func NewClient(t testing.TB, conn net.Conn) *Client {
	return &Client{T: t, Conn: conn, R: bufio.NewReader(conn)}
}

// Send writes s as it is; the caller adds CRLF.
func (c *Client) Send(s string) {
	c.T.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		c.T.Fatalf("send %q: %v", s, err)
	}
}

// Line reads one line, which must end in CRLF, and returns it without.
func (c *Client) Line() string {
	c.T.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	line, err := c.R.ReadString('\n')
	if err != nil {
		c.T.Fatalf("read: %v (got %q)", err, line)
	}
	if !strings.HasSuffix(line, "\r\n") {
		c.T.Fatalf("line %q does not end in CRLF", line)
	}
	return strings.TrimSuffix(line, "\r\n")
}

// Expect reads a line and checks it against pattern (see Match).
func (c *Client) Expect(pattern string) string {
	c.T.Helper()
	line := c.Line()
	if !Match(pattern, line) {
		c.T.Fatalf("got %q, want %q", line, pattern)
	}
	return line
}

// Cmd sends a command line and expects a status line matching pattern.
func (c *Client) Cmd(command, pattern string) string {
	c.T.Helper()
	c.Send(command + "\r\n")
	return c.Expect(pattern)
}

// Body reads a multi-line body up to its terminating line and returns it as
// sent: still dot-stuffed, CRLF line ends, the terminator left out.
func (c *Client) Body() string {
	c.T.Helper()
	var b strings.Builder
	for {
		line := c.Line()
		if line == "." {
			return b.String()
		}
		b.WriteString(line + "\r\n")
	}
}

// Closed checks that the server closes the connection with nothing more to
// say.
func (c *Client) Closed() {
	c.T.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	rest, err := io.ReadAll(c.R)
	if err != nil {
		c.T.Fatalf("waiting for close: %v", err)
	}
	if len(rest) > 0 {
		c.T.Fatalf("unexpected bytes before close: %q", rest)
	}
}

// Login logs in with USER and PASS, expecting +OK to both.
func (c *Client) Login(user, pass string) {
	c.T.Helper()
	c.Cmd("USER "+user, "+OK*")
	c.Cmd("PASS "+pass, "+OK*")
}

// Conn is a POP3 client that returns errors instead of failing a test, for
// clients in goroutines of their own. Multi-line replies are kept as raw wire
// bytes, so what a proxy relays can be compared with what a server sends.
type Conn struct {
	conn net.Conn
	r    *bufio.Reader
}

// DialConn connects with d and reads a +OK greeting. The whole session must
// end within limit.
func DialConn(d *net.Dialer, addr string, limit time.Duration) (*Conn, error) {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(limit))
	c := &Conn{conn: conn, r: bufio.NewReader(conn)}
	if line, err := c.r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		conn.Close()
		return nil, fmt.Errorf("greeting %q: %v", line, err)
	}
	return c, nil
}

// Close closes the connection without QUIT.
func (c *Conn) Close() error { return c.conn.Close() }

// ReadLine reads one line, CRLF included: one the server sends unasked, such
// as a shutdown notice.
func (c *Conn) ReadLine() (string, error) { return c.r.ReadString('\n') }

// Login logs in with USER and PASS.
func (c *Conn) Login(user, pass string) error {
	if _, err := c.Cmd("USER " + user); err != nil {
		return err
	}
	_, err := c.Cmd("PASS " + pass)
	return err
}

// Cmd sends line and returns the status line, CRLF included; -ERR is an
// error. Errors name only the verb, never the arguments (a password).
func (c *Conn) Cmd(line string) (string, error) {
	verb, _, _ := strings.Cut(line, " ")
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return "", fmt.Errorf("%s: %w", verb, err)
	}
	status, err := c.r.ReadString('\n')
	if err != nil {
		return status, fmt.Errorf("%s: %w", verb, err)
	}
	if !strings.HasPrefix(status, "+OK") {
		return status, fmt.Errorf("%s: %q", verb, strings.TrimSpace(status))
	}
	return status, nil
}

// Multi is Cmd for a multi-line reply; the body is returned as sent,
// terminating line included.
func (c *Conn) Multi(line string) (string, []byte, error) {
	status, err := c.Cmd(line)
	if err != nil {
		return status, nil, err
	}
	var body []byte
	for {
		l, err := c.r.ReadBytes('\n')
		body = append(body, l...)
		if err != nil {
			return status, body, fmt.Errorf("%s: body cut after %d octets: %w", line, len(body), err)
		}
		if string(l) == ".\r\n" {
			return status, body, nil
		}
	}
}

// Mailbox is what a server sends for one mailbox, as raw wire bytes: the UIDL
// listing and each RETR's body, dot-stuffed, terminators included.
type Mailbox struct {
	UIDL   []byte
	Bodies [][]byte
}

// FetchAll lists the mailbox with UIDL and retrieves every message.
func (c *Conn) FetchAll() (Mailbox, error) {
	var m Mailbox
	_, uidl, err := c.Multi("UIDL")
	if err != nil {
		return m, err
	}
	m.UIDL = uidl
	n := strings.Count(string(uidl), "\n") - 1
	for i := 1; i <= n; i++ {
		_, body, err := c.Multi("RETR " + strconv.Itoa(i))
		if err != nil {
			return m, err
		}
		m.Bodies = append(m.Bodies, body)
	}
	return m, nil
}
