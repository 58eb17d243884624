package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

// relays are the reference targets of -relay: popbench itself, started with
// command LISTEN UPSTREAM.
//
// epoll-relay (epoll.go) is tcp-relay on one thread over raw epoll, as nginx runs:
// what it gains on tcp-relay is the cost of Go's netpoller and scheduler, not of popproxy's work.
var relays = []struct {
	command, target string
	main            func(listen, upstream string) error
}{
	{"relay", "tcp-relay", relayMain},
	{"epoll-relay", "epoll-relay", epollRelayMain},
}

// relayMain makes popbench a minimal TCP relay, tcp-relay: every connection
// to listen is relayed to upstream through a 32 KiB buffer in each
// direction, with no parsing, no deadlines and no audit. It is the cost of
// one more user-space hop (the same read and write system calls as
// popproxy's relay; io.Copy's splice is avoided on purpose), so the gap
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
