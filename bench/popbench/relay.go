package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

// relayCommand is the first argument that makes popbench a relay.
const relayCommand = "relay"

// relayMain makes popbench a minimal TCP relay, the reference target of
// -relay: every connection to listen is relayed to upstream through a 32 KiB
// buffer in each direction, with no parsing, no deadlines and no audit. It is
// the cost of one more user-space hop (the same read and write system calls
// as popproxy's relay; io.Copy's splice is avoided on purpose), so the gap
// between it and popproxy is what popproxy's own work costs.
func relayMain(listen, upstream string) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go relayConn(c, upstream)
	}
}

func relayConn(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return
	}
	defer u.Close()
	done := make(chan struct{})
	go relayCopy(u, c, done)
	relayCopy(c, u, nil)
	<-done
}

// relayCopy copies src to dst until EOF, then half-closes dst.
func relayCopy(dst, src net.Conn, done chan<- struct{}) {
	buf := make([]byte, 32<<10)
	// Hide ReadFrom and WriteTo so that io.CopyBuffer uses buf.
	io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
	if done != nil {
		close(done)
	}
}
