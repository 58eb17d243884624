package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	pp "github.com/pires/go-proxyproto"

	"github.com/popproxy/popproxy/internal/ratelimit"
)

// DefaultTimeout is how long a Listener waits for a header when its Timeout
// is not positive.
const DefaultTimeout = 10 * time.Second

// maxPending bounds the connections a Listener holds between accepting them
// and returning them from Accept (reading their header, or waiting for the
// caller). When it is reached the Listener stops accepting until one is done,
// and new connections wait in the kernel's backlog.
const maxPending = 1024

// maxV1Len is the longest v1 header, CRLF included (HAProxy spec §2.1).
const maxV1Len = 107

// PanicError is passed to OnReject when reading a header panicked: the
// connection was closed, the Listener goes on.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("proxyproto: panic reading the header: %v", e.Value)
}

// ErrUntrusted is passed to OnReject for a connection from outside the
// trusted networks.
var ErrUntrusted = errors.New("proxyproto: connection from an untrusted address")

// Listen returns a Listener on l that requires a PROXY header (v1 or v2)
// from every connection from trusted and refuses all others. See Listener.
func Listen(l net.Listener, trusted ratelimit.Networks, timeout time.Duration) net.Listener {
	return &Listener{Listener: l, Trusted: trusted, Timeout: timeout}
}

// Listener wraps a listener whose peers are load balancers sending the PROXY
// protocol (HAProxy spec; Dovecot's haproxy_trusted_networks).
//
// A connection from outside Trusted is closed as soon as it is accepted,
// before anything is read or written: a header from there would let anyone
// pick the address that rate limits and the audit log see. A connection from
// Trusted must start with a v1 or v2 header within Timeout; if the header is
// missing, malformed, longer than 107 bytes (v1), or describes anything but
// TCP over IPv4 or IPv6, the connection is closed. A header may arrive in
// several pieces.
//
// Accept returns only connections whose header was good, as a *Conn whose
// RemoteAddr and LocalAddr are the header's (the client and the address it
// connected to), or the socket's for a v2 LOCAL command or a v1 UNKNOWN
// header (a health check from the load balancer itself). Headers are read in
// the background, one goroutine per connection, so Accept never waits for a
// slow peer while a good connection is ready.
//
// Set the fields before the first Accept and do not change them after.
// Close closes the underlying listener and every connection not yet returned
// by Accept, and waits for the background goroutines to end.
type Listener struct {
	// Listener is the listener wrapped. Only TCP listeners make sense: a
	// peer whose address is not an IP address is never trusted.
	Listener net.Listener
	// Trusted are the networks of the load balancers. The zero Networks
	// trusts nobody: every connection is refused.
	Trusted ratelimit.Networks
	// Timeout bounds the wait for the whole header, from accept. If not
	// positive, DefaultTimeout is used.
	Timeout time.Duration
	// OnReject, if not nil, is called for every connection closed without
	// being returned by Accept, with its socket's remote address and why
	// (ErrUntrusted, or what was wrong with the header). It is called from
	// the Listener's goroutines and must not block. It is not called once
	// Close has begun.
	OnReject func(remote net.Addr, err error)

	initOnce  sync.Once
	ready     chan accepted // header read, waiting for Accept
	done      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the accept loop ends by itself
	stopErr   error         // why; written before stopped is closed
	slots     chan struct{} // one per pending connection, up to maxPending
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{} // reading their header
}

type accepted struct {
	conn net.Conn
	err  error
}

func (l *Listener) init() {
	l.initOnce.Do(func() {
		l.ready = make(chan accepted)
		l.done = make(chan struct{})
		l.stopped = make(chan struct{})
		l.slots = make(chan struct{}, maxPending)
		l.pending = make(map[net.Conn]struct{})
		l.wg.Add(1)
		go l.acceptLoop()
	})
}

// Accept returns the next connection whose header has been read and
// checked. Errors from the wrapped listener's Accept are passed on; after
// Close, or once the wrapped listener is closed, the error satisfies
// errors.Is(err, net.ErrClosed).
func (l *Listener) Accept() (net.Conn, error) {
	l.init()
	select {
	case a := <-l.ready:
		return a.conn, a.err
	case <-l.stopped:
		return nil, l.stopErr
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// Close closes the wrapped listener and the connections whose header is
// still being read or that wait for Accept, and waits for the Listener's
// goroutines to end. Connections already returned by Accept stay open.
func (l *Listener) Close() error {
	l.init()
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			c.Close()
		}
		l.pending = nil
		l.mu.Unlock()
	})
	l.wg.Wait()
	return l.closeErr
}

// Addr returns the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.Listener.Addr() }

func (l *Listener) timeout() time.Duration {
	if l.Timeout <= 0 {
		return DefaultTimeout
	}
	return l.Timeout
}

// acceptLoop accepts connections, closes untrusted ones and starts a header
// read for each trusted one.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return
		}
		raw, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			if l.isClosed() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				l.stopErr = err
				close(l.stopped)
				return
			}
			// Pass it on and let the caller decide (net/http sleeps and
			// retries on EMFILE); its pace is ours, as ready is unbuffered.
			select {
			case l.ready <- accepted{err: err}:
			case <-l.done:
				return
			}
			continue
		}
		if ap := addrPort(raw.RemoteAddr()); !ap.IsValid() || !l.Trusted.Contains(ap.Addr()) {
			raw.Close()
			<-l.slots
			l.reject(raw.RemoteAddr(), ErrUntrusted)
			continue
		}
		if !l.track(raw) {
			raw.Close()
			<-l.slots
			return
		}
		l.wg.Add(1)
		go l.handshake(raw)
	}
}

// handshake reads raw's header and hands the connection to Accept, or
// closes it.
func (l *Listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.slots }()
	defer func() {
		// A bug in header parsing closes this connection, not the process.
		if r := recover(); r != nil {
			l.untrack(raw)
			raw.Close()
			l.reject(raw.RemoteAddr(), &PanicError{Value: r, Stack: debug.Stack()})
		}
	}()
	c, err := readHeader(raw, l.timeout())
	l.untrack(raw)
	if err != nil {
		raw.Close()
		l.reject(raw.RemoteAddr(), err)
		return
	}
	select {
	case l.ready <- accepted{conn: c}:
	case <-l.done:
		raw.Close()
	}
}

func (l *Listener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *Listener) reject(remote net.Addr, err error) {
	if l.OnReject != nil && !l.isClosed() {
		l.OnReject(remote, err)
	}
}

// track records c as reading its header, so that Close can abort the read.
// It reports false if the Listener is closed.
func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *Listener) untrack(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, c)
}

// addrPort returns a's address, or the zero AddrPort if it is not an IP one.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// readHeader reads and checks raw's PROXY header, within timeout.
func readHeader(raw net.Conn, timeout time.Duration) (*Conn, error) {
	if err := raw.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("proxyproto: %w", err)
	}
	prefix, err := readV1Line(raw)
	if err != nil {
		return nil, fmt.Errorf("proxyproto: no header: %w", err)
	}
	pr := bytes.NewReader(prefix)
	rest := io.MultiReader(pr, raw)
	br := bufio.NewReaderSize(rest, 256)
	h, err := pp.Read(br)
	if err != nil {
		return nil, fmt.Errorf("proxyproto: bad header: %w", err)
	}
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	if err := raw.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("proxyproto: %w", err)
	}
	c := &Conn{conn: raw, br: br, rest: rest, header: h, remote: raw.RemoteAddr(), local: raw.LocalAddr()}
	if pr.Len() == 0 {
		c.rest = raw // the prefix is all in br: skip the MultiReader
	}
	if h.Command.IsProxy() {
		c.remote, c.local = h.SourceAddr, h.DestinationAddr
	}
	return c, nil
}

// readV1Line reads what a v1 header needs before go-proxyproto parses it.
//
// go-proxyproto refuses a v1 header that it cannot take from its buffer in
// one read (its guard against slow senders), so a header split across two
// TCP segments fails whenever the second is late. The HAProxy spec
// recommends tolerating partial headers; the timeout already bounds a slow
// sender. So if the data starts with 'P', read up to the first LF, or 107
// bytes, or the deadline, and hand the parser all of it at once. This only
// frames the line; go-proxyproto still parses it. Any other first byte (a
// v2 header, or no header) is left to the parser, which reads v2 in as many
// pieces as it comes.
func readV1Line(raw net.Conn) ([]byte, error) {
	buf := make([]byte, 0, maxV1Len)
	for {
		n, err := raw.Read(buf[len(buf):maxV1Len])
		buf = buf[:len(buf)+n]
		if len(buf) > 0 && (buf[0] != 'P' || bytes.IndexByte(buf, '\n') >= 0 || len(buf) == maxV1Len) {
			return buf, nil
		}
		if err != nil {
			if len(buf) > 0 {
				return buf, nil // let the parser say what is wrong
			}
			return nil, err
		}
	}
}

// checkHeader refuses what a POP3 listener cannot use: a PROXY command for
// anything but TCP over IPv4 or IPv6 (UDP, Unix sockets). LOCAL, and v1
// UNKNOWN, which go-proxyproto reports as LOCAL, keep the socket's addresses.
func checkHeader(h *pp.Header) error {
	if h.Command.IsLocal() {
		return nil
	}
	if h.TransportProtocol == pp.TCPv4 || h.TransportProtocol == pp.TCPv6 {
		if _, _, ok := h.TCPAddrs(); ok {
			return nil
		}
	}
	return fmt.Errorf("proxyproto: header is for transport %#x, not TCP", byte(h.TransportProtocol))
}

// Conn is a connection returned by Listener.Accept. Reads return what
// followed the header.
type Conn struct {
	conn          net.Conn
	br            *bufio.Reader // bytes read past the header, until drained
	rest          io.Reader     // then this
	header        *pp.Header
	remote, local net.Addr
}

var _ net.Conn = (*Conn)(nil)

// Read reads the data that followed the header.
func (c *Conn) Read(b []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(b)
		}
		c.br = nil
	}
	return c.rest.Read(b)
}

// Write writes to the socket.
func (c *Conn) Write(b []byte) (int, error) { return c.conn.Write(b) }

// Close closes the socket.
func (c *Conn) Close() error { return c.conn.Close() }

// RemoteAddr returns the client's address from the header (a *net.TCPAddr),
// or the socket's peer for a LOCAL header.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the address the client connected to, from the header,
// or the socket's own for a LOCAL header.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// SetDeadline sets the socket's deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the socket's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the socket's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// Header returns the header the connection started with, with its TLVs
// (v2). It is never nil. Use Header().Command.IsLocal() to tell a health
// check from a proxied client.
func (c *Conn) Header() *pp.Header { return c.header }
