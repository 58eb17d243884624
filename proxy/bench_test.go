package proxy_test

import (
	"strings"
	"testing"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/proxy"
)

// BenchmarkNOOP measures one NOOP round trip through the proxy, and directly
// against the same in-process upstream, in the same run.
func BenchmarkNOOP(b *testing.B) {
	up := startMaildrop(b).Addr().String()
	addr, _, _ := startProxy(b, up, nil)
	for _, target := range []struct{ name, addr string }{{"direct", up}, {"proxy", addr}} {
		b.Run(target.name, func(b *testing.B) {
			c := pop3test.Dial(b, target.addr)
			c.Login("alice", "secret")
			for b.Loop() {
				c.Cmd("NOOP", "+OK*")
			}
		})
	}
}

// BenchmarkSession measures a whole short session, connect, USER/PASS and
// QUIT, through the proxy and directly against the same in-process upstream.
func BenchmarkSession(b *testing.B) {
	up := startMaildrop(b).Addr().String()
	// No recorder: it keeps every close event.
	addr, _, _ := startProxy(b, up, func(o *proxy.Options) { o.Auditor = nil })
	for _, target := range []struct{ name, addr string }{{"direct", up}, {"proxy", addr}} {
		b.Run(target.name, func(b *testing.B) {
			for b.Loop() {
				c := pop3test.Dial(b, target.addr)
				c.Login("alice", "secret")
				c.Cmd("QUIT", "+OK*")
				c.Conn.Close()
			}
		})
	}
}

// BenchmarkRETR measures relaying a 1 MB message.
func BenchmarkRETR(b *testing.B) {
	body := strings.Repeat(strings.Repeat("y", 78)+"\r\n", 12_800)
	up := acceptingUpstream(b, body)
	addr, _, _ := startProxy(b, up, nil)
	c := pop3test.Dial(b, addr)
	c.Login("alice", "pw")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		c.Send("RETR 1\r\n")
		c.Expect("+OK")
		c.Body()
	}
}
