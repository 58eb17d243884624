package proxy_test

import (
	"strings"
	"testing"

	"github.com/popproxy/popproxy/internal/pop3test"
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
