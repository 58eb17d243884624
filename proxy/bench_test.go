package proxy_test

import (
	"strings"
	"testing"
)

// BenchmarkNOOP measures one NOOP round trip through the proxy, and directly
// against the same in-process upstream, in the same run.
func BenchmarkNOOP(b *testing.B) {
	up := startMaildrop(b).Addr().String()
	addr, _, _ := startProxy(b, up, nil)
	for _, target := range []struct{ name, addr string }{{"direct", up}, {"proxy", addr}} {
		b.Run(target.name, func(b *testing.B) {
			c := dial(b, target.addr)
			c.login("alice", "secret")
			for b.Loop() {
				c.cmd("NOOP", "+OK*")
			}
		})
	}
}

// BenchmarkRETR measures relaying a 1 MB message.
func BenchmarkRETR(b *testing.B) {
	body := strings.Repeat(strings.Repeat("y", 78)+"\r\n", 12_800)
	up := acceptingUpstream(b, body)
	addr, _, _ := startProxy(b, up, nil)
	c := dial(b, addr)
	c.login("alice", "pw")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		c.send("RETR 1\r\n")
		c.expect("+OK")
		c.body()
	}
}
