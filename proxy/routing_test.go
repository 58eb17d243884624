package proxy_test

import (
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/proxy"
)

// Routing, failover, the circuit breaker, loop detection, and telling the
// upstream who the client is (PROXY v1/v2, XCLIENT), mostly against real
// Dovecot instances of internal/testdovecot.

// logWait bounds the wait for a line in Dovecot's log.
const logWait = 5 * time.Second

// newDovecot starts a private Dovecot with users and gives each user's
// mailbox the messages listed for it, in order.
func newDovecot(t *testing.T, cfg testdovecot.Config, mail map[string][]string) *testdovecot.Instance {
	t.Helper()
	d := testdovecot.New(t, cfg)
	for user, msgs := range mail {
		for _, m := range msgs {
			if _, err := d.AddMessage(user, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return d
}

// relayTo listens on loopback and copies every connection's bytes to and
// from target. The tap counts the connections and records what the proxy
// sent, so a test can tell whether an upstream was contacted at all.
func relayTo(t *testing.T, target string) (string, *tap) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &tap{Listener: l}
	t.Cleanup(func() { l.Close() })
	go serveRelay(tl, target)
	return l.Addr().String(), tl
}

func serveRelay(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go relayConn(c, target)
	}
}

func relayConn(c net.Conn, target string) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go copyAndClose(up, c)
	io.Copy(c, up)
}

// copyAndClose copies src to dst, then half-closes dst.
func copyAndClose(dst, src net.Conn) {
	io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// dialFrom connects to addr from the loopback address ip (any of
// 127.0.0.0/8 works on Linux), so that the proxy's client is not at the
// proxy's own address, and reads the greeting.
func dialFrom(t *testing.T, ip, addr string) *pop3test.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := pop3test.NewClient(t, conn)
	c.Expect("+OK *")
	return c
}

// authEvents returns the auth events recorded so far.
func authEvents(rec *recorder) []proxy.AuthEvent {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.auths)
}

// lastAuth returns the latest auth event. The proxy audits a login before it
// answers, so it is there once the client has its reply.
func lastAuth(t *testing.T, rec *recorder) proxy.AuthEvent {
	t.Helper()
	evs := authEvents(rec)
	if len(evs) == 0 {
		t.Fatal("no auth event")
	}
	return evs[len(evs)-1]
}

// sessionIDs is an Auditor that notes each session's id and passes every
// event on, so a test can find the id the proxy sent upstream.
type sessionIDs struct {
	proxy.Auditor
	mu  sync.Mutex
	ids []string
}

func (s *sessionIDs) SessionOpen(info proxy.SessionInfo) {
	s.mu.Lock()
	s.ids = append(s.ids, info.ID)
	s.mu.Unlock()
	s.Auditor.SessionOpen(info)
}

func (s *sessionIDs) last(t *testing.T) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 {
		t.Fatal("no session opened")
	}
	return s.ids[len(s.ids)-1]
}

// deadUpstream is an upstream address that is down: it accepts and closes
// at once (the greeting read fails), or, once hold is set, accepts and never
// says anything, so that a dial would take the whole DialTimeout. It counts
// the connections it accepts, which are the proxy's dial attempts.
type deadUpstream struct {
	l       net.Listener
	accepts atomic.Int32
	hold    atomic.Bool
	mu      sync.Mutex
	held    []net.Conn
}

func newDeadUpstream(t *testing.T) *deadUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &deadUpstream{l: l}
	t.Cleanup(d.close)
	go d.serve()
	return d
}

func (d *deadUpstream) addr() string { return d.l.Addr().String() }

func (d *deadUpstream) serve() {
	for {
		c, err := d.l.Accept()
		if err != nil {
			return
		}
		d.accepts.Add(1)
		if !d.hold.Load() {
			c.Close()
			continue
		}
		d.mu.Lock()
		d.held = append(d.held, c)
		d.mu.Unlock()
	}
}

func (d *deadUpstream) close() {
	d.l.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.held {
		c.Close()
	}
}

// TestRoutingByUserAndDomain sends users to two real Dovecots by exact user
// name and by domain, and refuses a user no route matches without
// contacting either.
func TestRoutingByUserAndDomain(t *testing.T) {
	a := newDovecot(t, testdovecot.Config{Users: map[string]string{"alice@example.com": "pw-alice"}},
		map[string][]string{"alice@example.com": {"Subject: one\r\n\r\nalice's mail, kept on A\r\n"}})
	b := newDovecot(t, testdovecot.Config{Users: map[string]string{"bob@example.org": "pw-bob", "carol@example.com": "pw-carol"}},
		map[string][]string{
			"bob@example.org":   {"Subject: one\r\n\r\nbob's mail, kept on B\r\n", "Subject: two\r\n\r\nmore\r\n"},
			"carol@example.com": {"Subject: one\r\n\r\ncarol's mail, kept on B\r\n", "Subject: two\r\n\r\n2\r\n", "Subject: three\r\n\r\n3\r\n"},
		})
	// Relays in front of each Dovecot show whether it was contacted at all.
	addrA, tapA := relayTo(t, a.Addr())
	addrB, tapB := relayTo(t, b.Addr())
	router, err := route.New(route.Config{
		Upstreams: []route.Upstream{{Name: "a", Addresses: []string{addrA}}, {Name: "b", Addresses: []string{addrB}}},
		// carol is at example.com, which lives on A, but her mailbox is on B.
		Users:   map[string]string{"carol@example.com": "b"},
		Domains: map[string]string{"example.com": "a", "example.org": "b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr, _, rec := startProxy(t, "127.0.0.1:1", func(o *proxy.Options) {
		o.Router = router
		o.Upstreams = map[string]proxy.Upstream{
			"a": {Addresses: []string{addrA}, DialTimeout: 2 * time.Second},
			"b": {Addresses: []string{addrB}, DialTimeout: 2 * time.Second},
		}
	})

	for _, tt := range []struct {
		user, pass string
		route      string // the upstream's name, as audited
		upstream   string // the address that must serve, as audited
		stat       string // STAT reply: the message count proves the mailbox
		text       string // in RETR 1: the mail proves the server
	}{
		{"alice@example.com", "pw-alice", "a", addrA, "+OK 1 *", "alice's mail, kept on A"},
		{"bob@example.org", "pw-bob", "b", addrB, "+OK 2 *", "bob's mail, kept on B"},
		{"carol@example.com", "pw-carol", "b", addrB, "+OK 3 *", "carol's mail, kept on B"},
		{"Bob@EXAMPLE.ORG", "pw-bob", "b", addrB, "+OK 2 *", "bob's mail, kept on B"}, // domains ignore ASCII case
	} {
		c := pop3test.Dial(t, addr)
		c.Login(tt.user, tt.pass)
		c.Cmd("STAT", tt.stat)
		c.Cmd("RETR 1", "+OK*")
		if body := c.Body(); !strings.Contains(body, tt.text) {
			t.Errorf("%s: RETR 1 = %q, want %q in it", tt.user, body, tt.text)
		}
		c.Cmd("QUIT", "+OK*")
		if ev := lastAuth(t, rec); !ev.OK || ev.User != tt.user || ev.Route != tt.route || ev.Upstream != tt.upstream {
			t.Errorf("%s: auth event %+v, want OK from %s (%s)", tt.user, ev, tt.route, tt.upstream)
		}
	}

	connsA, connsB := tapA.connections(), tapB.connections()
	c := pop3test.Dial(t, addr)
	c.Cmd("USER dave@example.net", "+OK*")
	c.Cmd("PASS pw-dave", "-ERR [AUTH] *")
	// The session goes on: a routable user may still log in.
	c.Login("alice@example.com", "pw-alice")
	c.Cmd("QUIT", "+OK*")
	evs := authEvents(rec)
	ev := evs[len(evs)-2]
	if ev.OK || ev.User != "dave@example.net" || ev.Code != "AUTH" || ev.Route != "" || ev.Upstream != "" || ev.Dial != 0 || ev.DialFailed {
		t.Errorf("unroutable user: auth event %+v", ev)
	}
	if !strings.Contains(ev.Reason, route.ErrNoRoute.Error()) {
		t.Errorf("unroutable user: reason %q, want %q in it", ev.Reason, route.ErrNoRoute)
	}
	if got := tapA.connections() - connsA; got != 1 {
		t.Errorf("A got %d connections for an unroutable and a good login, want 1", got)
	}
	if got := tapB.connections() - connsB; got != 0 {
		t.Errorf("B got %d connections, want 0", got)
	}
	if sent := tapA.received() + tapB.received(); strings.Contains(sent, "dave") {
		t.Errorf("the unroutable user reached an upstream: %q", sent)
	}
}

// TestRoutingRewritesLogin checks that StripDomain and AddDomain change the
// name Dovecot sees, with users that exist only under the rewritten name.
func TestRoutingRewritesLogin(t *testing.T) {
	d := newDovecot(t, testdovecot.Config{Users: map[string]string{"plain": "pw-plain", "erin@example.org": "pw-erin", "fay@example.org": "pw-fay"}}, nil)
	for _, tt := range []struct {
		cfg         route.Config
		user, login string // what the client sends, what Dovecot must see
		pass        string
	}{
		{route.Config{StripDomain: true}, "plain@example.com", "plain", "pw-plain"},
		{route.Config{AddDomain: "example.org"}, "erin", "erin@example.org", "pw-erin"},
		{route.Config{StripDomain: true, AddDomain: "example.org"}, "fay@legacy.example", "fay@example.org", "pw-fay"},
	} {
		tt.cfg.Upstreams = []route.Upstream{{Name: "store", Addresses: []string{d.Addr()}}}
		tt.cfg.Default = "store"
		router, err := route.New(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		addr, _, rec := startProxy(t, "127.0.0.1:1", func(o *proxy.Options) {
			o.Router = router
			o.Upstreams = map[string]proxy.Upstream{"store": {Addresses: []string{d.Addr()}}}
		})
		c := pop3test.Dial(t, addr)
		c.Login(tt.user, tt.pass)
		c.Cmd("QUIT", "+OK*")
		if _, err := d.WaitLog(logWait, "Login: user=<"+tt.login+">"); err != nil {
			t.Errorf("%s: %v", tt.user, err)
		}
		// The audit keeps the name the client gave.
		if ev := lastAuth(t, rec); !ev.OK || ev.User != tt.user {
			t.Errorf("%s: auth event %+v", tt.user, ev)
		}
	}
}

// TestFailover logs in while the first of two addresses of one upstream is
// up, then after it is stopped: the second takes over, and the audit names
// the address that served.
func TestFailover(t *testing.T) {
	users := map[string]string{"fran": "pw-fran"}
	a1 := newDovecot(t, testdovecot.Config{Users: users}, map[string][]string{"fran": {"Subject: x\r\n\r\nserved by A1\r\n"}})
	a2 := newDovecot(t, testdovecot.Config{Users: users}, map[string][]string{"fran": {"Subject: x\r\n\r\nserved by A2\r\n"}})
	addr, _, rec := startProxy(t, a1.Addr(), func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.Addresses = []string{a1.Addr(), a2.Addr()} })
		o.Breaker = route.NewBreaker(route.BreakerConfig{Refusals: 2, ProbeInterval: time.Minute})
	})
	retr := func(want, wantAddr string) {
		t.Helper()
		c := pop3test.Dial(t, addr)
		c.Login("fran", "pw-fran")
		c.Cmd("RETR 1", "+OK*")
		if body := c.Body(); !strings.Contains(body, want) {
			t.Errorf("RETR 1 = %q, want %q", body, want)
		}
		c.Cmd("QUIT", "+OK*")
		if ev := lastAuth(t, rec); !ev.OK || ev.Upstream != wantAddr {
			t.Errorf("auth event %+v, want upstream %s", ev, wantAddr)
		}
	}
	retr("served by A1", a1.Addr())
	if err := a1.Stop(); err != nil {
		t.Fatal(err)
	}
	retr("served by A2", a2.Addr())
	retr("served by A2", a2.Addr())
}

// TestBreakerSkipsFailingAddress puts an address that always fails first:
// after the breaker's threshold of failures it is no longer dialled (but for
// a trial every probe interval, here a minute), and logins go straight to
// the second address.
func TestBreakerSkipsFailingAddress(t *testing.T) {
	a2 := newDovecot(t, testdovecot.Config{Users: map[string]string{"gil": "pw-gil"}}, nil)
	dead := newDeadUpstream(t)
	breaker := route.NewBreaker(route.BreakerConfig{Refusals: 2, ProbeInterval: time.Minute})
	addr, _, rec := startProxy(t, dead.addr(), func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.Addresses = []string{dead.addr(), a2.Addr()} })
		o.Breaker = breaker
	})
	for i, wantAccepts := range []int32{1, 2, 2, 2} {
		c := pop3test.Dial(t, addr)
		c.Login("gil", "pw-gil")
		c.Cmd("QUIT", "+OK*")
		if got := dead.accepts.Load(); got != wantAccepts {
			t.Errorf("login %d: the failing address was dialled %d times in all, want %d", i+1, got, wantAccepts)
		}
		if ev := lastAuth(t, rec); !ev.OK || ev.Upstream != a2.Addr() {
			t.Errorf("login %d: auth event %+v", i+1, ev)
		}
	}
	states := breaker.States()
	if i := slices.IndexFunc(states, func(s route.State) bool { return s.Address == dead.addr() }); i < 0 || !states[i].Open {
		t.Errorf("breaker states %+v: want %s open", states, dead.addr())
	}
}

// TestBreakerHungUpstreamAnswersPromptly takes every address of the
// upstream down so that a dial hangs: the first login waits for each; then,
// with every circuit open after a timeout, logins fail at once without a
// dial, but for one trial a second.
func TestBreakerHungUpstreamAnswersPromptly(t *testing.T) {
	d1, d2 := newDeadUpstream(t), newDeadUpstream(t)
	d1.hold.Store(true)
	d2.hold.Store(true)
	addr, _, rec := startProxy(t, d1.addr(), func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) {
			u.Addresses = []string{d1.addr(), d2.addr()}
			u.DialTimeout = 300 * time.Millisecond
		})
	})
	c := pop3test.Dial(t, addr)
	c.Cmd("USER hal", "+OK*")
	c.Cmd("PASS pw-hal", "-ERR [SYS/TEMP] *")
	if a1, a2 := d1.accepts.Load(), d2.accepts.Load(); a1 != 1 || a2 != 1 {
		t.Fatalf("first login: dials %d and %d, want 1 each", a1, a2)
	}
	c.Cmd("USER hal", "+OK*")
	start := time.Now()
	c.Cmd("PASS pw-hal", "-ERR [SYS/TEMP] *")
	if el := time.Since(start); el >= 250*time.Millisecond {
		t.Errorf("with every circuit open after a timeout, -ERR took %v, want it at once", el)
	}
	if a1, a2 := d1.accepts.Load(), d2.accepts.Load(); a1 != 1 || a2 != 1 {
		t.Errorf("with every circuit open: dials %d and %d, want none since", a1, a2)
	}
	if ev := lastAuth(t, rec); ev.OK || !ev.DialFailed || ev.Code != "SYS/TEMP" || !strings.Contains(ev.Reason, "open circuit") {
		t.Errorf("auth event %+v, want a dial failure with open circuits", ev)
	}
	time.Sleep(time.Second)
	c.Cmd("USER hal", "+OK*")
	c.Cmd("PASS pw-hal", "-ERR [SYS/TEMP] *")
	if a1, a2 := d1.accepts.Load(), d2.accepts.Load(); a1 != 2 || a2 != 2 {
		t.Errorf("a second later: dials %d and %d, want a trial of each", a1, a2)
	}
}

// TestUpstreamBackWithinASecond takes the only upstream, a real Dovecot,
// away for 2 s while clients keep logging in: restarted (its port refuses),
// or paused (its port accepts but never greets, and dials time out). The
// first login after Dovecot greets again must succeed within a second. The
// breaker this replaced skipped the address for 10 s after 3 failures.
func TestUpstreamBackWithinASecond(t *testing.T) {
	type instance = testdovecot.Instance
	for _, tc := range []struct {
		name     string
		down, up func(*instance) error
	}{
		{"restart", (*instance).Stop, (*instance).Restart},
		{"pause", (*instance).Pause, (*instance).Resume},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDovecot(t, testdovecot.Config{Users: map[string]string{"ida": "pw-ida"}}, nil)
			addr, _, _ := startProxy(t, d.Addr(), func(o *proxy.Options) {
				withUpstream(o, func(u *proxy.Upstream) { u.DialTimeout = time.Second })
				o.Auditor = nil // the recorder holds 100 sessions; this test makes more
			})
			if !tryLogin(addr, "ida", "pw-ida") {
				t.Fatal("login before the outage failed")
			}
			if err := tc.down(d); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var wg sync.WaitGroup
			defer wg.Wait()
			defer close(done)
			greeted := make(chan time.Time, 1)
			wg.Go(func() { greeted <- d.Greeted(done) })
			logins := make(chan time.Time, 1)
			for range 4 {
				wg.Go(func() { keepLoggingIn(addr, "ida", "pw-ida", done, logins) })
			}
			time.Sleep(2 * time.Second)
			if err := tc.up(d); err != nil {
				t.Fatal(err)
			}
			back := <-greeted
			select {
			case first := <-logins:
				d := first.Sub(back).Round(time.Millisecond)
				if d > time.Second {
					t.Errorf("first login %v after Dovecot greeted again, want within 1s", d)
				}
				t.Logf("first login %v after Dovecot greeted again", d)
			case <-time.After(5 * time.Second):
				t.Errorf("no login within %v of Dovecot greeting again", time.Since(back).Round(time.Millisecond))
			}
		})
	}
}

// tryLogin logs in through a fresh connection to addr and reports whether
// the server said +OK to PASS.
func tryLogin(addr, user, pass string) bool {
	c, err := pop3test.DialConn(&net.Dialer{Timeout: 5 * time.Second}, addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	if c.Login(user, pass) != nil {
		return false
	}
	c.Cmd("QUIT")
	return true
}

// keepLoggingIn tries to log in every 50 ms until done is closed, and sends
// the time of each success it can hand over without waiting.
func keepLoggingIn(addr, user, pass string, done <-chan struct{}, logins chan<- time.Time) {
	for {
		if tryLogin(addr, user, pass) {
			select {
			case logins <- time.Now():
			default:
			}
		}
		select {
		case <-done:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestLoopDetected points the proxy at its own listener: it must recognise
// its own greeting and refuse, not log in to itself.
func TestLoopDetected(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	srv := proxy.New(oneUpstream(t, proxy.Upstream{Addresses: []string{l.Addr().String()}, DialTimeout: 2 * time.Second, ResponseTimeout: 2 * time.Second}, proxy.Options{
		Auditor: rec,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}))
	go srv.Serve(l, proxy.Listener{Name: "test"})
	t.Cleanup(func() { srv.Close() })

	c := pop3test.Dial(t, l.Addr().String())
	c.Cmd("USER ivy", "+OK*")
	c.Cmd("PASS pw-ivy", "-ERR [SYS/TEMP] *")
	evs := authEvents(rec)
	if len(evs) != 1 {
		t.Fatalf("auth events %+v, want only the client's login (the proxy must not log in to itself)", evs)
	}
	if ev := evs[0]; ev.OK || !ev.DialFailed || !strings.Contains(ev.Reason, "loop") {
		t.Errorf("auth event %+v, want a dial failure naming the loop", ev)
	}
}

// clientAddrIntoDovecot logs in through a proxy that tells Dovecot the
// client's address as sendClient says, from clientIP, and checks that
// Dovecot logs clientIP, not the proxy's 127.0.0.1, as the client.
func clientAddrIntoDovecot(t *testing.T, sendClient proxy.ProxyHeader, clientIP string, cfg testdovecot.Config, upstreamAddr func(*testdovecot.Instance) string) (line, session string) {
	t.Helper()
	cfg.Users = map[string]string{"jo": "pw-jo"}
	d := newDovecot(t, cfg, nil)
	var ids *sessionIDs
	addr, _, rec := startProxy(t, upstreamAddr(d), func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.SendClient = sendClient })
		ids = &sessionIDs{Auditor: o.Auditor}
		o.Auditor = ids
	})
	c := dialFrom(t, clientIP, addr)
	c.Login("jo", "pw-jo")
	c.Cmd("STAT", "+OK 0 *")
	c.Cmd("QUIT", "+OK*")
	if ev := lastAuth(t, rec); !ev.OK {
		t.Fatalf("auth event %+v", ev)
	}
	line, err := d.WaitLog(logWait, "Login: user=<jo>")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, " rip="+clientIP+",") {
		t.Errorf("Dovecot's login line %q does not name the client %s", line, clientIP)
	}
	return line, ids.last(t)
}

func haproxyAddr(d *testdovecot.Instance) string { return d.HAProxyAddr() }
func plainAddr(d *testdovecot.Instance) string   { return d.Addr() }

// TestProxyV2IntoDovecot sends a PROXY v2 header to Dovecot's haproxy
// listener.
func TestProxyV2IntoDovecot(t *testing.T) {
	clientAddrIntoDovecot(t, proxy.SendProxyV2, "127.0.0.2", testdovecot.Config{HAProxy: true}, haproxyAddr)
}

// TestProxyV1IntoDovecot sends a PROXY v1 header to Dovecot's haproxy
// listener.
func TestProxyV1IntoDovecot(t *testing.T) {
	clientAddrIntoDovecot(t, proxy.SendProxyV1, "127.0.0.4", testdovecot.Config{HAProxy: true}, haproxyAddr)
}

// TestXClientIntoDovecot sends XCLIENT to a Dovecot that trusts the proxy:
// Dovecot logs the client's address and the proxy's session id.
func TestXClientIntoDovecot(t *testing.T) {
	line, session := clientAddrIntoDovecot(t, proxy.SendXClient, "127.0.0.3", testdovecot.Config{LoginTrusted: true}, plainAddr)
	if !strings.Contains(line, " session=<"+session+">") {
		t.Errorf("Dovecot's login line %q does not carry the proxy's session id %s", line, session)
	}
}

// transcript collects what a fake upstream received, one slice per
// connection, delivered when the proxy has hung up.
type transcript chan []string

// record reads lines until the proxy hangs up, answering each with reply,
// and delivers them all.
func (tr transcript) record(c *pop3test.UpstreamConn, lines []string, reply func(line string) string) {
	for {
		line := c.Line()
		if line == "" {
			tr <- lines
			return
		}
		lines = append(lines, line)
		c.Send(reply(line))
	}
}

func (tr transcript) next(t *testing.T) []string {
	t.Helper()
	select {
	case lines := <-tr:
		return lines
	case <-time.After(5 * time.Second):
		t.Fatal("the fake upstream's connection did not end")
		return nil
	}
}

// TestXClientRefused: an upstream that offers XCLIENT and then refuses it
// gets no credentials, and the client a temporary failure.
func TestXClientRefused(t *testing.T) {
	tr := make(transcript, 10)
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK [XCLIENT] ready\r\n")
		tr.record(c, nil, func(line string) string {
			if strings.HasPrefix(line, "XCLIENT ") {
				return "-ERR You aren't allowed to use XCLIENT\r\n"
			}
			return "+OK\r\n"
		})
	})
	addr, _, rec := startProxy(t, up, func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.SendClient = proxy.SendXClient }) })
	c := pop3test.Dial(t, addr)
	c.Cmd("USER kim", "+OK*")
	c.Cmd("PASS pw-kim", "-ERR [SYS/TEMP] *")
	lines := tr.next(t)
	if len(lines) != 1 || !pop3test.Match("XCLIENT ADDR=127.0.0.1 PORT=* SESSION=* TTL=*", lines[0]) {
		t.Errorf("upstream received %q, want only an XCLIENT line", lines)
	}
	if ev := lastAuth(t, rec); ev.OK || !ev.DialFailed || !strings.Contains(ev.Reason, "XCLIENT refused") {
		t.Errorf("auth event %+v", ev)
	}
}

// TestXClientNotOffered: without [XCLIENT] in the greeting the proxy sends
// no XCLIENT even when configured to, and with it but not configured
// neither; it logs in directly.
func TestXClientNotOffered(t *testing.T) {
	for _, tt := range []struct {
		greeting   string
		sendClient proxy.ProxyHeader
	}{
		{"+OK ready", proxy.SendXClient},
		{"+OK XCLIENT ready", proxy.SendXClient}, // not a response code
		{"+OK [XCLIENT] ready", proxy.SendNothing},
	} {
		tr := make(transcript, 10)
		up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
			c.Send(tt.greeting + "\r\n")
			tr.record(c, nil, func(string) string { return "+OK\r\n" })
		})
		addr, _, _ := startProxy(t, up, func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.SendClient = tt.sendClient }) })
		c := pop3test.Dial(t, addr)
		c.Login("lee", "pw-lee")
		c.Cmd("QUIT", "+OK*")
		if lines := tr.next(t); !slices.Equal(lines, []string{"USER lee", "PASS pw-lee", "QUIT"}) {
			t.Errorf("greeting %q, SendClient %d: upstream received %q", tt.greeting, tt.sendClient, lines)
		}
	}
}

// TestLoopBetweenTwoProxies points two proxies at each other: the loop is
// found at the second hop and the client gets -ERR [SYS/TEMP], instead of
// sessions nesting until a limit.
func TestLoopBetweenTwoProxies(t *testing.T) {
	la, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	start := func(l net.Listener, upstream string) *recorder {
		rec := newRecorder()
		srv := proxy.New(oneUpstream(t, proxy.Upstream{Addresses: []string{upstream}, DialTimeout: 2 * time.Second, ResponseTimeout: 2 * time.Second}, proxy.Options{
			Auditor: rec,
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		}))
		go srv.Serve(l, proxy.Listener{Name: "loop"})
		t.Cleanup(func() { srv.Close() })
		return rec
	}
	recA := start(la, lb.Addr().String())
	recB := start(lb, la.Addr().String())
	c := pop3test.Dial(t, la.Addr().String())
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "-ERR [SYS/TEMP] *")
	recA.mu.Lock()
	defer recA.mu.Unlock()
	recB.mu.Lock()
	defer recB.mu.Unlock()
	// A's session reached B, whose session refused to dial A: one auth event each.
	if len(recA.auths) != 1 || len(recB.auths) != 1 || !strings.Contains(recB.auths[0].Reason, "loop") {
		t.Fatalf("auth events: A %+v, B %+v", recA.auths, recB.auths)
	}
}
