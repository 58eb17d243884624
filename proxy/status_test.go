package proxy_test

import (
	"strings"
	"testing"

	"github.com/popproxy/popproxy/internal/pop3test"
)

// TestUpstreamResponseCodes checks that a response code reaches the client
// only if it is valid, and that no control character does, on every path that
// relays an upstream's status: a refused login, a command, QUIT.
func TestUpstreamResponseCodes(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK fake ready\r\n")
		for {
			switch c.Line() {
			case "USER bad":
				c.Send("+OK\r\n")
			case "PASS code":
				c.Send("-ERR [AUTH\x1b[2J] go away\r\n")
			case "USER u":
				c.Send("+OK\r\n")
			case "PASS p":
				c.Send("+OK logged in\r\n")
			case "NOOP":
				c.Send("-ERR [IN-USE\r+OK] locked\r\n")
			case "RSET":
				c.Send("+OK [sys/temp] [X-" + strings.Repeat("A", 70) + "] [SYS/TEMP] kept\r\n")
			case "QUIT":
				c.Send("+OK [BYE\x00] bye\r\n")
				return
			default:
				return
			}
		}
	})
	addr, _, _ := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER bad", "+OK*")
	c.Cmd("PASS code", "-ERR go away") // the invalid code dropped, none invented
	c.Login("u", "p")
	c.Cmd("NOOP", "-ERR locked")
	c.Cmd("RSET", "+OK [SYS/TEMP] kept")
	c.Cmd("QUIT", "+OK bye")
	c.Closed()
}
