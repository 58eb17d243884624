package proxyproto

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pp "github.com/pires/go-proxyproto"

	"github.com/popproxy/popproxy/internal/ratelimit"
)

// served is what the test server saw of one connection it accepted.
type served struct {
	remote, local string
	local0        bool // the header was LOCAL
	line          string
}

// testServer is a POP3-like server behind a Listener: it greets every
// connection Accept returns at once, before reading anything, so a client
// that receives nothing proves that Accept never returned its connection.
type testServer struct {
	ln      *Listener
	addr    string
	served  chan served
	rejects chan error
}

func startServer(t *testing.T, trusted string, timeout time.Duration) *testServer {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nets, err := ratelimit.ParseNetworks([]string{trusted})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{
		addr:    inner.Addr().String(),
		served:  make(chan served, 10),
		rejects: make(chan error, 10),
	}
	s.ln = Listen(inner, nets, timeout).(*Listener)
	s.ln.OnReject = func(_ net.Addr, err error) {
		select {
		case s.rejects <- err:
		default: // must not block; a failed test stops draining
		}
	}
	go s.acceptLoop()
	t.Cleanup(func() { s.ln.Close() })
	return s
}

func (s *testServer) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serve(c)
	}
}

func (s *testServer) serve(c net.Conn) {
	defer c.Close()
	fmt.Fprintf(c, "+OK ready\r\n")
	sv := served{remote: c.RemoteAddr().String(), local: c.LocalAddr().String(),
		local0: c.(*Conn).Header().Command.IsLocal()}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	sv.line, _ = bufio.NewReader(c).ReadString('\n')
	s.served <- sv
}

// dial connects from the loopback address from (127.0.0.1 or 127.0.0.2).
func dial(t *testing.T, from, to string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectGreeting reads the server's greeting.
func expectGreeting(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if line != "+OK ready\r\n" {
		t.Fatalf("greeting = %q, %v", line, err)
	}
}

// expectClosed checks that the server closed c without writing anything.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Fatalf("server wrote %q", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open")
	}
}

func (s *testServer) expectServed(t *testing.T) served {
	t.Helper()
	select {
	case sv := <-s.served:
		return sv
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no connection")
		return served{}
	}
}

func (s *testServer) expectReject(t *testing.T, want string) {
	t.Helper()
	select {
	case err := <-s.rejects:
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reject reason %q does not contain %q", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnReject not called")
	}
}

func (s *testServer) expectNothingServed(t *testing.T) {
	t.Helper()
	select {
	case sv := <-s.served:
		t.Fatalf("Accept returned a connection: %+v", sv)
	default:
	}
}

func v2(t *testing.T, cmd pp.ProtocolVersionAndCommand, src, dst string) []byte {
	t.Helper()
	h := &pp.Header{Version: 2, Command: cmd, TransportProtocol: pp.UNSPEC}
	if cmd == pp.PROXY {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		h.TransportProtocol = pp.TCPv4
		if s.Addr().Is6() {
			h.TransportProtocol = pp.TCPv6
		}
		h.SourceAddr, h.DestinationAddr = net.TCPAddrFromAddrPort(s), net.TCPAddrFromAddrPort(d)
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTrustedHeader(t *testing.T) {
	s := startServer(t, "127.0.0.1/32", 5*time.Second)
	tests := []struct {
		name         string
		header       []byte
		remote, addr string
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\n"), "192.0.2.1:51234", "198.51.100.1:110"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 51234 995\r\n"), "[2001:db8::1]:51234", "[2001:db8::2]:995"},
		{"v2 TCP4", v2(t, pp.PROXY, "192.0.2.1:51234", "198.51.100.1:110"), "192.0.2.1:51234", "198.51.100.1:110"},
		{"v2 TCP6", v2(t, pp.PROXY, "[2001:db8::1]:51234", "[2001:db8::2]:995"), "[2001:db8::1]:51234", "[2001:db8::2]:995"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, "127.0.0.1", s.addr)
			// The header and the first command in one segment: the command
			// must reach the server intact.
			c.Write(append(tt.header, "CAPA\r\n"...))
			expectGreeting(t, c)
			sv := s.expectServed(t)
			if sv.remote != tt.remote || sv.local != tt.addr || sv.local0 {
				t.Errorf("server saw %+v, want remote %s local %s", sv, tt.remote, tt.addr)
			}
			if sv.line != "CAPA\r\n" {
				t.Errorf("first line after the header = %q", sv.line)
			}
		})
	}
}

func TestHeaderSplit(t *testing.T) {
	s := startServer(t, "127.0.0.1/32", 5*time.Second)
	for name, header := range map[string][]byte{
		"v1": []byte("PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\n"),
		"v2": v2(t, pp.PROXY, "192.0.2.1:51234", "198.51.100.1:110"),
	} {
		for _, cut := range []int{1, 5, 13, 20, len(header) - 1} {
			c := dial(t, "127.0.0.1", s.addr)
			c.Write(header[:cut])
			time.Sleep(50 * time.Millisecond) // the server reads the first piece alone
			c.Write(header[cut:])
			c.Write([]byte("NOOP\r\n"))
			expectGreeting(t, c)
			if sv := s.expectServed(t); sv.remote != "192.0.2.1:51234" || sv.line != "NOOP\r\n" {
				t.Errorf("%s cut at %d: server saw %+v", name, cut, sv)
			}
		}
	}
}

func TestLocalKeepsSocketAddress(t *testing.T) {
	s := startServer(t, "127.0.0.1/32", 5*time.Second)
	for name, header := range map[string][]byte{
		"v2 LOCAL":   v2(t, pp.LOCAL, "", ""),
		"v1 UNKNOWN": []byte("PROXY UNKNOWN\r\n"),
	} {
		c := dial(t, "127.0.0.1", s.addr)
		c.Write(append(header, "QUIT\r\n"...))
		expectGreeting(t, c)
		sv := s.expectServed(t)
		if sv.remote != c.LocalAddr().String() || sv.local != s.addr || !sv.local0 {
			t.Errorf("%s: server saw %+v, want the socket's %s -> %s", name, sv, c.LocalAddr(), s.addr)
		}
		if sv.line != "QUIT\r\n" {
			t.Errorf("%s: first line = %q", name, sv.line)
		}
	}
}

func TestUntrusted(t *testing.T) {
	for _, tt := range []struct{ trusted, from string }{
		{"127.0.0.2/32", "127.0.0.1"},
		{"127.0.0.1/32", "127.0.0.2"},
		{"2001:db8::/32", "127.0.0.1"},
	} {
		s := startServer(t, tt.trusted, 5*time.Second)
		c := dial(t, tt.from, s.addr)
		c.Write([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\n"))
		expectClosed(t, c)
		s.expectReject(t, "untrusted")
		s.expectNothingServed(t)

		// The trusted address still gets through.
		other := map[string]string{"127.0.0.1": "127.0.0.2", "127.0.0.2": "127.0.0.1"}[tt.from]
		if strings.HasPrefix(tt.trusted, other) {
			c := dial(t, other, s.addr)
			c.Write([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\n"))
			expectGreeting(t, c)
		}
	}

	// The zero Networks trusts nobody.
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(inner, ratelimit.Networks{}, time.Second)
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("+OK\r\n"))
		}
	}()
	c := dial(t, "127.0.0.1", inner.Addr().String())
	c.Write([]byte("PROXY UNKNOWN\r\n"))
	expectClosed(t, c)
}

func TestBadHeader(t *testing.T) {
	s := startServer(t, "127.0.0.1/32", 300*time.Millisecond)
	long := "PROXY TCP6 " + strings.Repeat("f", 90) + " ::1 1 2\r\n" // 109 bytes
	v2bad := v2(t, pp.PROXY, "192.0.2.1:51234", "198.51.100.1:110")
	v2bad[15] = 200 // length no longer matches TCP4
	v2udp := v2(t, pp.PROXY, "192.0.2.1:51234", "198.51.100.1:110")
	v2udp[13] = byte(pp.UDPv4)
	tests := []struct {
		name, send, reason string
	}{
		{"no header", "CAPA\r\n", "not present"},
		{"nothing (timeout)", "", "no header"},
		{"partial v1 (timeout)", "PROXY TCP4 192.0.2.1", "bad header"},
		{"garbled v1", "PROXY TCP4 192.0.2.1 garbage 1 2\r\n", "bad header"},
		{"v1 without CR", "PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\n", "bad header"},
		{"v1 wrong family", "PROXY TCP4 2001:db8::1 198.51.100.1 51234 110\r\n", "bad header"},
		{"v1 bad port", "PROXY TCP4 192.0.2.1 198.51.100.1 70000 110\r\n", "bad header"},
		{"v1 longer than 107", long + "CAPA\r\n", "107 bytes"},
		{"v1 no LF in 107", "PROXY " + strings.Repeat("x", 200), "107 bytes"},
		{"v2 bad length", string(v2bad), "bad header"},
		{"v2 UDP", string(v2udp), "not TCP"},
		{"v2 signature only", string(pp.SIGV2), "bad header"},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not present"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, "127.0.0.1", s.addr)
			if tt.send != "" {
				c.Write([]byte(tt.send))
			}
			expectClosed(t, c)
			s.expectReject(t, tt.reason)
			s.expectNothingServed(t)
		})
	}
}

// TestSlowPeer checks that a peer which does not send its header delays
// nobody else.
func TestSlowPeer(t *testing.T) {
	s := startServer(t, "127.0.0.1/32", 10*time.Second)
	silent := dial(t, "127.0.0.1", s.addr)
	partial := dial(t, "127.0.0.1", s.addr)
	partial.Write([]byte("PROXY TCP4 192.0.2.9"))
	v2partial := dial(t, "127.0.0.1", s.addr)
	v2partial.Write(pp.SIGV2[:8])
	time.Sleep(50 * time.Millisecond) // all three are accepted and waiting

	start := time.Now()
	c := dial(t, "127.0.0.1", s.addr)
	c.Write([]byte("PROXY TCP4 192.0.2.1 198.51.100.1 51234 110\r\n"))
	expectGreeting(t, c)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a good connection waited %v behind slow ones", d)
	}
	if sv := s.expectServed(t); sv.remote != "192.0.2.1:51234" {
		t.Errorf("served %+v", sv)
	}

	// Close aborts the header reads at once and returns.
	done := make(chan error, 1)
	go func() { done <- s.ln.Close() }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close waited for the slow peers")
	}
	for _, c := range []net.Conn{silent, partial, v2partial} {
		expectClosed(t, c)
	}
	if _, err := s.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
}

// TestInnerClosed checks that closing the wrapped listener ends Accept.
func TestInnerClosed(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(inner, ratelimit.Networks{}, time.Second)
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	inner.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept still blocked after the wrapped listener closed")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Accept = %v", err)
	}
}

// TestNotIP checks that a peer without an IP address is never trusted.
func TestNotIP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Skip("no Unix sockets:", err)
	}
	nets, _ := ratelimit.ParseNetworks([]string{"0.0.0.0/0", "::/0"})
	ln := &Listener{Listener: inner, Trusted: nets}
	rejects := make(chan error, 1)
	ln.OnReject = func(_ net.Addr, err error) { rejects <- err }
	defer ln.Close()
	go ln.Accept()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("PROXY UNKNOWN\r\n"))
	expectClosed(t, c)
	if err := <-rejects; !errors.Is(err, ErrUntrusted) {
		t.Errorf("reject = %v", err)
	}
}

// TestOutboundThroughListener sends Header's output to a Listener.
func TestOutboundThroughListener(t *testing.T) {
	s := startServer(t, "127.0.0.1/32", 5*time.Second)
	for _, version := range []int{1, 2} {
		for _, pair := range [][2]string{
			{"192.0.2.1:51234", "198.51.100.1:995"},
			{"[2001:db8::1]:51234", "[2001:db8::2]:110"},
		} {
			h, err := Header(version, netip.MustParseAddrPort(pair[0]), netip.MustParseAddrPort(pair[1]))
			if err != nil {
				t.Fatal(err)
			}
			c := dial(t, "127.0.0.1", s.addr)
			c.Write(append(h, "USER x\r\n"...))
			expectGreeting(t, c)
			if sv := s.expectServed(t); sv.remote != pair[0] || sv.local != pair[1] || sv.line != "USER x\r\n" {
				t.Errorf("v%d %v: server saw %+v", version, pair, sv)
			}
		}
	}
}

// oneConnListener returns conn once, then blocks until closed.
type oneConnListener struct {
	net.Listener // for Addr
	conns        chan net.Conn
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}

func (l *oneConnListener) Close() error {
	defer func() { recover() }() // closed twice
	close(l.conns)
	return nil
}

// panickyConn panics when read, standing in for a bug in header parsing.
type panickyConn struct{ net.Conn }

func (panickyConn) Read([]byte) (int, error)        { panic("boom in Read") }
func (panickyConn) RemoteAddr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }
func (panickyConn) SetReadDeadline(time.Time) error { return nil }
func (c panickyConn) Close() error                  { return nil }

// TestPanicInHandshakeIsContained: a panic while reading one peer's header
// closes that connection, is reported with its stack, and the listener goes on.
func TestPanicInHandshakeIsContained(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	fake := &oneConnListener{Listener: inner, conns: make(chan net.Conn, 1)}
	nets, _ := ratelimit.ParseNetworks([]string{"127.0.0.1"})
	rejected := make(chan error, 1)
	ln := &Listener{Listener: fake, Trusted: nets, Timeout: time.Second,
		OnReject: func(_ net.Addr, err error) { rejected <- err }}
	defer ln.Close()
	go ln.Accept()
	fake.conns <- panickyConn{}
	select {
	case err := <-rejected:
		var pe *PanicError
		if !errors.As(err, &pe) || len(pe.Stack) == 0 {
			t.Fatalf("OnReject got %v, want a *PanicError with a stack", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no rejection reported")
	}
}
