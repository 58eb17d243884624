package proxy

import (
	"net"
	"syscall"
)

// ackNow sends the acknowledgement of what c has received at once, if the
// kernel was delaying it (TCP_QUICKACK, which also leaves the
// delayed-ACK "pingpong" mode for the next segments).
func ackNow(c net.Conn) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn() // under TLS
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
