package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
)

// epollEvents is what every relayed socket is watched for, edge-triggered:
// each readiness is reported once, so a socket left ready (EOF seen, or
// waiting for its peer to drain) cannot make EpollWait spin.
const epollEvents = syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | syscall.EPOLLET&0xffffffff

// epollRelayMain makes popbench the second reference target of -relay: the
// same job as relayMain (32 KiB per direction, no parsing, TCP_NODELAY as Go
// sets it), done by one OS thread over raw epoll and non-blocking sockets,
// the way nginx runs, with no netpoller or goroutine scheduler in between.
func epollRelayMain(listen, upstream string) error {
	runtime.LockOSThread()
	la, err := sockaddr(listen)
	if err != nil {
		return err
	}
	ua, err := sockaddr(upstream)
	if err != nil {
		return err
	}
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return err
	}
	if err := syscall.Bind(lfd, la); err != nil {
		return fmt.Errorf("bind %s: %w", listen, err)
	}
	if err := syscall.Listen(lfd, syscall.SOMAXCONN); err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	// The listener stays level-triggered: accept drains it anyway.
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return err
	}
	r := &epollRelay{ep: ep, lfd: lfd, upstream: ua, conns: map[int32]*epollConn{}}
	return r.loop()
}

// sockaddr parses an IPv4 host:port.
func sockaddr(hostport string) (*syscall.SockaddrInet4, error) {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return nil, err
	}
	if !ap.Addr().Is4() {
		return nil, fmt.Errorf("%s: not IPv4", hostport)
	}
	return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
}

// epollRelay is the relay's state; only its thread touches it.
type epollRelay struct {
	ep, lfd  int
	upstream *syscall.SockaddrInet4
	conns    map[int32]*epollConn
	// closing are descriptors to close once the current batch of events is
	// handled, so that accept cannot reuse one that a later event names.
	closing []int
}

// epollConn is one socket of a relayed pair. Its buf holds what was read
// from it and not yet written to peer: one buffer per direction.
type epollConn struct {
	fd         int
	peer       *epollConn
	buf        []byte
	start, end int  // buf[start:end] waits for peer
	readable   bool // no EAGAIN from read since the last edge
	writable   bool // no EAGAIN from write since the last edge
	connecting bool // upstream: connect not yet complete
	eof        bool // read returned 0
	shut       bool // shut for writing: all its peer sent has been written
}

func (r *epollRelay) loop() error {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(r.ep, events, -1)
		if err == syscall.EINTR { // the Go runtime's signals
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == r.lfd {
				if err := r.accept(); err != nil {
					return err
				}
				continue
			}
			c := r.conns[ev.Fd]
			if c == nil {
				continue // closed earlier in this batch
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				c.readable = true
			}
			if ev.Events&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				c.writable = true
			}
			r.pump(c)
		}
		for _, fd := range r.closing {
			syscall.Close(fd)
		}
		r.closing = r.closing[:0]
	}
}

// accept takes every pending client and connects it to the upstream.
func (r *epollRelay) accept() error {
	for {
		fd, _, err := syscall.Accept4(r.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch {
		case err == syscall.EAGAIN:
			return nil
		case err == syscall.EINTR || err == syscall.ECONNABORTED:
			continue
		case err != nil:
			return fmt.Errorf("accept: %w", err)
		}
		if err := r.open(fd); err != nil {
			fmt.Fprintln(os.Stderr, "epoll relay:", err)
		}
	}
}

// open starts connecting client socket cfd's upstream and watches both.
func (r *epollRelay) open(cfd int) error {
	ufd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		syscall.Close(cfd)
		return err
	}
	// A new socket's send buffer is empty: the client is writable.
	client := &epollConn{fd: cfd, buf: make([]byte, 32<<10), writable: true}
	up := &epollConn{fd: ufd, buf: make([]byte, 32<<10), connecting: true}
	client.peer, up.peer = up, client
	r.conns[int32(cfd)], r.conns[int32(ufd)] = client, up
	if err := syscall.Connect(ufd, r.upstream); err != nil && err != syscall.EINPROGRESS {
		r.closePair(client)
		return fmt.Errorf("connect upstream: %w", err)
	}
	for _, c := range [2]*epollConn{client, up} {
		if err := syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
			r.closePair(client)
			return err
		}
		ev := syscall.EpollEvent{Events: epollEvents, Fd: int32(c.fd)}
		if err := syscall.EpollCtl(r.ep, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
			r.closePair(client)
			return err
		}
	}
	return nil
}

// pump moves what it can in both directions of c's pair, and closes the
// pair once both directions are shut or on an error.
func (r *epollRelay) pump(c *epollConn) {
	pair := [2]*epollConn{c, c.peer}
	for _, x := range pair {
		if !x.connecting || !x.writable {
			continue
		}
		soErr, err := syscall.GetsockoptInt(x.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err == nil && soErr != 0 {
			err = syscall.Errno(soErr)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "epoll relay: connect upstream:", err)
			r.closePair(c)
			return
		}
		x.connecting = false
	}
	for _, src := range pair {
		if err := relayAvailable(src, src.peer); err != nil {
			// A client that closes without waiting is no news.
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ENOTCONN) {
				fmt.Fprintln(os.Stderr, "epoll relay:", err)
			}
			r.closePair(c)
			return
		}
	}
	if c.shut && c.peer.shut {
		r.closePair(c)
	}
}

// relayAvailable copies from src to dst until one would block, and shuts
// dst for writing once src's EOF and everything before it are through.
func relayAvailable(src, dst *epollConn) error {
	for {
		if src.start < src.end {
			if dst.connecting || !dst.writable {
				return nil
			}
			n, err := syscall.Write(dst.fd, src.buf[src.start:src.end])
			switch {
			case err == syscall.EAGAIN:
				dst.writable = false // EPOLLOUT comes when there is room
				return nil
			case err == syscall.EINTR:
				continue
			case err != nil:
				return fmt.Errorf("write: %w", err)
			}
			if src.start += n; src.start == src.end {
				src.start, src.end = 0, 0
			}
			continue
		}
		if src.eof {
			if dst.shut || dst.connecting {
				return nil
			}
			dst.shut = true
			if err := syscall.Shutdown(dst.fd, syscall.SHUT_WR); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			return nil
		}
		if !src.readable {
			return nil
		}
		n, err := syscall.Read(src.fd, src.buf)
		switch {
		case err == syscall.EAGAIN:
			src.readable = false // EPOLLIN comes with more data
			return nil
		case err == syscall.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case n == 0:
			src.eof = true
		default:
			src.end = n
		}
	}
}

// closePair forgets c and its peer and closes both after the batch.
func (r *epollRelay) closePair(c *epollConn) {
	for _, x := range [2]*epollConn{c, c.peer} {
		if r.conns[int32(x.fd)] == x {
			delete(r.conns, int32(x.fd))
			r.closing = append(r.closing, x.fd)
		}
	}
}
