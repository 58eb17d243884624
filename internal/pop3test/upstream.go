package pop3test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FakeUpstream listens on a loopback port and serves each connection with
// script, in a goroutine of its own, for the faults a real server will not
// produce. It returns the address; the listener closes when the test ends.
// Loopback TCP rather than net.Pipe: a pipe is synchronous and can deadlock
// a proxy writing to both sides.
func FakeUpstream(t testing.TB, script func(c *UpstreamConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go acceptScripted(l, script)
	return l.Addr().String()
}

// acceptScripted runs script on every connection l accepts, until l closes.
func acceptScripted(l net.Listener, script func(c *UpstreamConn)) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go runScript(conn, script)
	}
}

func runScript(conn net.Conn, script func(c *UpstreamConn)) {
	defer conn.Close()
	script(&UpstreamConn{Conn: conn, R: bufio.NewReader(conn)})
}

// UpstreamConn is the server side of one connection to a FakeUpstream. Its
// methods never fail a test: a script runs outside the test's goroutine.
// Conn and R may be replaced together, for example after STLS.
type UpstreamConn struct {
	Conn net.Conn
	R    *bufio.Reader
}

// Line returns the next command line without its CRLF, or "" when the
// client has gone or said nothing for Timeout.
func (c *UpstreamConn) Line() string {
	c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	s, err := c.R.ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(s, "\r\n")
}

// Send writes s as it is; the script adds CRLF.
func (c *UpstreamConn) Send(s string) { io.WriteString(c.Conn, s) }

// Login plays the greeting, USER and PASS, accepting any user and password.
func (c *UpstreamConn) Login() {
	c.Send("+OK fake ready\r\n")
	c.Line()
	c.Send("+OK\r\n")
	c.Line()
	c.Send("+OK logged in\r\n")
}
