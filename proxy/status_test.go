package proxy_test

import (
	"strings"
	"testing"
)

// TestUpstreamResponseCodes checks that a response code reaches the client
// only if it is valid, and that no control character does, on every path that
// relays an upstream's status: a refused login, a command, QUIT.
func TestUpstreamResponseCodes(t *testing.T) {
	up := fakeUpstream(t, func(c *fakeConn) {
		c.send("+OK fake ready\r\n")
		for {
			switch c.line() {
			case "USER bad":
				c.send("+OK\r\n")
			case "PASS code":
				c.send("-ERR [AUTH\x1b[2J] go away\r\n")
			case "USER u":
				c.send("+OK\r\n")
			case "PASS p":
				c.send("+OK logged in\r\n")
			case "NOOP":
				c.send("-ERR [IN-USE\r+OK] locked\r\n")
			case "RSET":
				c.send("+OK [sys/temp] [X-" + strings.Repeat("A", 70) + "] [SYS/TEMP] kept\r\n")
			case "QUIT":
				c.send("+OK [BYE\x00] bye\r\n")
				return
			default:
				return
			}
		}
	})
	addr, _, _ := startProxy(t, up, nil)
	c := dial(t, addr)
	c.cmd("USER bad", "+OK*")
	c.cmd("PASS code", "-ERR go away") // the invalid code dropped, none invented
	c.login("u", "p")
	c.cmd("NOOP", "-ERR locked")
	c.cmd("RSET", "+OK [SYS/TEMP] kept")
	c.cmd("QUIT", "+OK bye")
	c.closed()
}
