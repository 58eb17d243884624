package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"
)

// opTimeout bounds every exchange, so that a stuck server fails the run
// instead of hanging it.
const opTimeout = 60 * time.Second

// client is a minimal POP3 client written for measuring: one command at a
// time, each reply read to its end and checked for +OK, bodies counted and
// discarded. It shares no code with the proxy, so a relay bug cannot hide
// behind the same bug in the client.
//
// It is not internal/pop3test's client on purpose: that one is for
// transcripts (it keeps each line and body in memory, matches patterns and
// fails a test), while this one measures, so it allocates nothing per line,
// takes the read buffer size as a parameter and returns errors to the run.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	line []byte // command buffer, reused
}

// dial connects to t with a read buffer of bufSize bytes and reads the
// greeting.
func dial(t target, bufSize int) (*client, error) {
	conn, err := t.dial()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.name, err)
	}
	c := &client{conn: conn, r: bufio.NewReaderSize(conn, bufSize)}
	conn.SetDeadline(time.Now().Add(opTimeout))
	if _, err := c.status(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: greeting: %w", t.name, err)
	}
	return c, nil
}

// dialLogin dials t and logs in as user.
func dialLogin(t target, bufSize int, user string) (*client, error) {
	c, err := dial(t, bufSize)
	if err != nil {
		return nil, err
	}
	if err := c.login(user, password); err != nil {
		c.conn.Close()
		return nil, fmt.Errorf("%s: %w", t.name, err)
	}
	return c, nil
}

// deadline gives the following exchanges d in all.
func (c *client) deadline(d time.Duration) { c.conn.SetDeadline(time.Now().Add(d)) }

// cmd sends a command line (without CRLF) and reads a +OK status line.
func (c *client) cmd(verb string, args ...string) ([]byte, error) {
	c.line = append(c.line[:0], verb...)
	for _, a := range args {
		c.line = append(c.line, ' ')
		c.line = append(c.line, a...)
	}
	c.line = append(c.line, "\r\n"...)
	if _, err := c.conn.Write(c.line); err != nil {
		return nil, err
	}
	line, err := c.status()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	return line, nil
}

// retr sends RETR n and reads the reply to its end; it returns the octets of
// the status line and of the body, terminator included.
func (c *client) retr(n int) (status, body int64, err error) {
	c.line = append(c.line[:0], "RETR "...)
	c.line = strconv.AppendInt(c.line, int64(n), 10)
	c.line = append(c.line, "\r\n"...)
	if _, err := c.conn.Write(c.line); err != nil {
		return 0, 0, err
	}
	line, err := c.status()
	if err != nil {
		return 0, 0, fmt.Errorf("RETR %d: %w", n, err)
	}
	status = int64(len(line))
	body, err = c.body()
	if err != nil {
		return status, body, fmt.Errorf("RETR %d: body: %w", n, err)
	}
	return status, body, nil
}

// status reads one status line, CRLF included, and turns -ERR into an error.
// The line is valid until the next read.
func (c *client) status() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(line, []byte("+OK")) {
		return nil, fmt.Errorf("server said %q", bytes.TrimRight(line, "\r\n"))
	}
	return line, nil
}

// body reads a multi-line body up to and including the line "." that ends it,
// and returns its length in octets, terminator included.
func (c *client) body() (int64, error) {
	sc := endScanner{matched: 2} // the status line's CRLF has been read
	var n int64
	for {
		if _, err := c.r.Peek(1); err != nil {
			return n, err
		}
		p, _ := c.r.Peek(c.r.Buffered())
		if end := sc.scan(p); end >= 0 {
			c.r.Discard(end)
			return n + int64(end), nil
		}
		c.r.Discard(len(p))
		n += int64(len(p))
	}
}

func (c *client) login(user, pass string) error {
	if _, err := c.cmd("USER", user); err != nil {
		return err
	}
	_, err := c.cmd("PASS", pass)
	return err
}

// quit sends QUIT, reads the reply and closes the connection.
func (c *client) quit() error {
	_, err := c.cmd("QUIT")
	if cerr := c.conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// terminator ends a multi-line body (RFC 1939 §3): a line holding only ".",
// that is CRLF "." CRLF counting the CRLF that ends the line before it.
const terminator = "\r\n.\r\n"

// endScanner finds the terminator in a body that arrives in pieces. matched
// is how many leading bytes of the terminator the bytes seen so far end with.
type endScanner struct{ matched int }

// scan returns the length of p's prefix up to and including the terminator,
// or -1 if p does not complete it.
func (s *endScanner) scan(p []byte) int {
	for i := 0; i < len(p); {
		if s.matched == 0 {
			// A terminator can only start at a CR.
			j := bytes.IndexByte(p[i:], '\r')
			if j < 0 {
				return -1
			}
			i += j
		}
		c := p[i]
		i++
		switch {
		case c == terminator[s.matched]:
			s.matched++
			if s.matched == len(terminator) {
				return i
			}
		case c == '\r':
			s.matched = 1 // CR is the terminator's first byte
		default:
			s.matched = 0
		}
	}
	return -1
}

// quickAck returns t with its connections acknowledging every segment at
// once: TCP_QUICKACK, re-armed after every read because the kernel leaves
// quick-ACK mode again on its own. A sender that holds back a short last
// segment until its previous one is acknowledged (Nagle) then never waits
// for a delayed ACK (40 ms and more).
func quickAck(t target) target {
	dial := t.dial
	t.dial = func() (net.Conn, error) {
		conn, err := dial()
		if err != nil {
			return nil, err
		}
		sc, ok := conn.(syscall.Conn)
		if !ok {
			conn.Close()
			return nil, fmt.Errorf("quick ACK: %T has no socket", conn)
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			conn.Close()
			return nil, err
		}
		q := &quickAckConn{Conn: conn, raw: raw}
		q.arm = q.setQuickAck
		if err := q.rearm(); err != nil {
			conn.Close()
			return nil, err
		}
		return q, nil
	}
	return t
}

// quickAckConn is a TCP connection that re-arms TCP_QUICKACK after every
// read.
type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
	arm func(fd uintptr) // setQuickAck, bound once so that Read allocates nothing
	err error            // of the last setsockopt
}

func (q *quickAckConn) Read(p []byte) (int, error) {
	n, err := q.Conn.Read(p)
	if aerr := q.rearm(); err == nil {
		err = aerr
	}
	return n, err
}

func (q *quickAckConn) rearm() error {
	if err := q.raw.Control(q.arm); err != nil {
		return err
	}
	return q.err
}

func (q *quickAckConn) setQuickAck(fd uintptr) {
	q.err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}
