package proxy_test

import (
	"net"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/proxy"
)

// TestPipelinedLoginNotHeldByNagle: a server that answers a pipelined USER
// and PASS in two writes with Nagle's algorithm on (Dovecot) holds the
// second until the first is acknowledged. The proxy must acknowledge at
// once, not delay its ACK (20-40 ms on Linux) on every login. The best of
// three logins is taken, so that a busy machine does not fail the test: the
// stall would be in every one.
func TestPipelinedLoginNotHeldByNagle(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Conn.(*net.TCPConn).SetNoDelay(false)
		c.Send("+OK ready\r\n")
		if c.Line() == "" || c.Line() == "" { // USER, PASS
			return
		}
		c.Send("+OK\r\n")
		c.Send("+OK logged in\r\n")
		for line := c.Line(); line != ""; line = c.Line() {
			if line == "QUIT" {
				c.Send("+OK bye\r\n")
				return
			}
			c.Send("+OK\r\n")
		}
	})
	addr, _, _ := startProxy(t, up, func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = []string{"TOP", "UIDL", "PIPELINING"} })
	})
	best := time.Hour
	for range 3 {
		c := pop3test.Dial(t, addr)
		c.Cmd("USER alice", "+OK*")
		start := time.Now()
		c.Cmd("PASS secret", "+OK logged in")
		best = min(best, time.Since(start))
		c.Cmd("QUIT", "+OK*")
	}
	if best > 10*time.Millisecond {
		t.Errorf("the fastest of 3 pipelined logins took %v: the server's second reply waited for a delayed ACK", best)
	}
}
