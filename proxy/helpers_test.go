package proxy_test

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/maildrop"
	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/route"
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
		Upstreams: map[string]proxy.Upstream{"default": {Addresses: []string{upstream}, DialTimeout: 2 * time.Second, ResponseTimeout: 2 * time.Second,
			Capabilities: []string{"TOP", "UIDL"}}},
		Auditor: rec,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if configure != nil {
		configure(&opts)
	}
	srv := proxy.New(routeToDefault(t, opts))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l, lc)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), srv, rec
}

// oneUpstream returns o with every user routed to up, named "default".
func oneUpstream(t testing.TB, up proxy.Upstream, o proxy.Options) proxy.Options {
	t.Helper()
	o.Upstreams = map[string]proxy.Upstream{"default": up}
	return routeToDefault(t, o)
}

// routeToDefault returns o with, unless it has a Router, one that sends
// every user to the upstream "default" at that upstream's addresses.
func routeToDefault(t testing.TB, o proxy.Options) proxy.Options {
	t.Helper()
	if o.Router != nil {
		return o
	}
	router, err := route.New(route.Config{
		Upstreams: []route.Upstream{{Name: "default", Addresses: o.Upstreams["default"].Addresses}},
		Default:   "default",
	})
	if err != nil {
		t.Fatal(err)
	}
	o.Router = router
	return o
}

// withUpstream changes the upstream "default" of startProxy's options.
func withUpstream(o *proxy.Options, change func(*proxy.Upstream)) {
	up := o.Upstreams["default"]
	change(&up)
	o.Upstreams["default"] = up
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

// loginWhenUnlocked logs in as user right after another session of the same
// mailbox ended: the mail drop unlocks a mailbox when it sees the proxy's
// side close, which may take a moment ([IN-USE] until then).
func loginWhenUnlocked(c *pop3test.Client, user, pass string) {
	c.T.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.Cmd("USER "+user, "+OK*")
		reply := c.Cmd("PASS "+pass, "*")
		if strings.HasPrefix(reply, "+OK") {
			return
		}
		if !strings.HasPrefix(reply, "-ERR [IN-USE]") || time.Now().After(deadline) {
			c.T.Fatalf("login: %q", reply)
		}
	}
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

// readLine reads one line from a connection dialRaw made.
func readLine(t testing.TB, conn net.Conn) string {
	t.Helper()
	return pop3test.NewClient(t, conn).Line()
}
