package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/maildrop"
	"github.com/popproxy/popproxy/proxy"
)

// recorder is an Auditor that keeps every event.
type recorder struct {
	mu          sync.Mutex
	tls         []proxy.TLSEvent
	auths       []proxy.AuthEvent
	cmds        []proxy.CommandEvent
	policy      []proxy.PolicyEvent
	closes      []proxy.CloseEvent
	checkpoints []proxy.Counters
	err         error
	closed      chan struct{} // one value per SessionClose
}

var _ proxy.Auditor = (*recorder)(nil)

func newRecorder() *recorder { return &recorder{closed: make(chan struct{}, 100)} }

func (r *recorder) SessionOpen(proxy.SessionInfo) {}
func (r *recorder) TLS(_ string, e proxy.TLSEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tls = append(r.tls, e)
}
func (r *recorder) Auth(_ string, e proxy.AuthEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auths = append(r.auths, e)
}
func (r *recorder) Command(_ string, e proxy.CommandEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, e)
}
func (r *recorder) Policy(_ string, e proxy.PolicyEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.policy = append(r.policy, e)
}
func (r *recorder) Checkpoint(_ string, c proxy.Counters) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checkpoints = append(r.checkpoints, c)
}
func (r *recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *recorder) setErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// command returns the audited events for verb.
func (r *recorder) commands(verb string) []proxy.CommandEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []proxy.CommandEvent
	for _, c := range r.cmds {
		if c.Verb == verb {
			out = append(out, c)
		}
	}
	return out
}
func (r *recorder) SessionClose(_ string, e proxy.CloseEvent) {
	r.mu.Lock()
	r.closes = append(r.closes, e)
	r.mu.Unlock()
	r.closed <- struct{}{}
}

// waitClose returns the next session's close event.
func (r *recorder) waitClose(t *testing.T) proxy.CloseEvent {
	t.Helper()
	select {
	case <-r.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("no session.close event")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closes[len(r.closes)-1]
}

func (r *recorder) policyRules() []proxy.Rule {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rules []proxy.Rule
	for _, p := range r.policy {
		rules = append(rules, p.Rule)
	}
	return rules
}

// startProxy serves a plain proxy in front of upstream on a loopback port.
func startProxy(t testing.TB, upstream string, configure func(*proxy.Options)) (string, *proxy.Server, *recorder) {
	t.Helper()
	return startListener(t, upstream, proxy.Listener{Name: "test"}, configure)
}

// startListener is startProxy with a listener of the caller's choice. The
// upstream's capabilities are configured, so that the proxy sends no probe a
// scripted upstream would not expect; a test of learning sets them nil.
func startListener(t testing.TB, upstream string, lc proxy.Listener, configure func(*proxy.Options)) (string, *proxy.Server, *recorder) {
	t.Helper()
	rec := newRecorder()
	opts := proxy.Options{
		Upstream: proxy.Upstream{Addresses: []string{upstream}, DialTimeout: 2 * time.Second, ResponseTimeout: 2 * time.Second,
			Capabilities: []string{"TOP", "UIDL"}},
		Auditor: rec,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if configure != nil {
		configure(&opts)
	}
	srv := proxy.New(opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l, lc)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), srv, rec
}

// tap records what a server's clients sent it.
type tap struct {
	net.Listener
	mu    sync.Mutex
	buf   bytes.Buffer
	conns int
}

func (l *tap) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns++
	l.mu.Unlock()
	return &tapConn{Conn: c, tap: l}, nil
}

func (l *tap) received() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *tap) connections() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns
}

type tapConn struct {
	net.Conn
	tap *tap
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.tap.mu.Lock()
	c.tap.buf.Write(p[:n])
	c.tap.mu.Unlock()
	return n, err
}

// sampleMessages is what the maildrop upstream serves in these tests.
var sampleMessages = []maildrop.Message{
	{Data: []byte("Subject: one\r\nMessage-ID: <1@test>\r\n\r\nfirst\r\n")},
	{Data: []byte("Subject: two\r\n\r\n.\r\n.leading dot\r\n..\r\n")},
	{Data: []byte("Subject: three\r\n\r\nthird\r\n")},
}

// startMaildrop serves the sample mailbox for alice/secret and bob/hunter2 and
// records what it receives.
func startMaildrop(t testing.TB) *tap {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &tap{Listener: l}
	drop := maildrop.New(map[string]string{"alice": "secret", "bob": "hunter2"}, sampleMessages)
	go drop.Serve(tl)
	t.Cleanup(func() { drop.Close() })
	return tl
}

// client is a POP3 client for transcripts.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("+OK *")
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

func (c *client) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, line)
	}
	if !strings.HasSuffix(line, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", line)
	}
	return strings.TrimSuffix(line, "\r\n")
}

// expect reads a line and matches it against pattern, in which "*" stands for
// any text.
func (c *client) expect(pattern string) string {
	c.t.Helper()
	line := c.line()
	if !match(pattern, line) {
		c.t.Fatalf("got %q, want %q", line, pattern)
	}
	return line
}

// cmd sends a command line and expects a status matching pattern.
func (c *client) cmd(command, pattern string) string {
	c.t.Helper()
	c.send(command + "\r\n")
	return c.expect(pattern)
}

// body reads a multi-line body up to its terminator and returns it raw.
func (c *client) body() string {
	c.t.Helper()
	var b strings.Builder
	for {
		line := c.line()
		if line == "." {
			return b.String()
		}
		b.WriteString(line + "\r\n")
	}
}

// closed asserts that the server closed the connection with nothing more to say.
func (c *client) closed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.r)
	if err != nil {
		c.t.Fatalf("waiting for close: %v", err)
	}
	if len(rest) > 0 {
		c.t.Fatalf("unexpected bytes before close: %q", rest)
	}
}

func (c *client) login(user, pass string) {
	c.t.Helper()
	c.cmd("USER "+user, "+OK*")
	c.cmd("PASS "+pass, "+OK*")
}

// loginWhenUnlocked logs in as user right after another session of the same
// mailbox ended: the mail drop unlocks a mailbox when it sees the proxy's
// side close, which may take a moment ([IN-USE] until then).
func (c *client) loginWhenUnlocked(user, pass string) {
	c.t.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.cmd("USER "+user, "+OK*")
		reply := c.cmd("PASS "+pass, "*")
		if strings.HasPrefix(reply, "+OK") {
			return
		}
		if !strings.HasPrefix(reply, "-ERR [IN-USE]") || time.Now().After(deadline) {
			c.t.Fatalf("login: %q", reply)
		}
	}
}

// fakeUpstream serves each connection with script, for faults a real server
// will not produce.
func fakeUpstream(t testing.TB, script func(c *fakeConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				script(&fakeConn{conn: conn, r: bufio.NewReader(conn)})
			}()
		}
	}()
	return l.Addr().String()
}

type fakeConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// line returns the next command, or "" when the proxy has gone.
func (c *fakeConn) line() string {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(s, "\r\n")
}

func (c *fakeConn) send(s string) { io.WriteString(c.conn, s) }

// login plays greeting, USER and PASS, accepting anything.
func (c *fakeConn) login() {
	c.send("+OK fake ready\r\n")
	c.line()
	c.send("+OK\r\n")
	c.line()
	c.send("+OK logged in\r\n")
}

// match reports whether s matches pattern, where "*" matches any run of bytes.
func match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return s == ""
}

// dialRaw connects without reading the greeting.
func dialRaw(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func readLine(t testing.TB, conn net.Conn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (%q)", err, line)
	}
	return strings.TrimSuffix(line, "\r\n")
}
