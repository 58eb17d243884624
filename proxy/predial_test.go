package proxy_test

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/proxy"
)

// watchedUpstream accepts any password but "wrong" and reports each
// connection, numbered from 1 in the order accepted, when its greeting is
// sent and when it ends.
type watchedUpstream struct {
	addr            string
	greeted, closed chan int
	mu              sync.Mutex
	lines           [][]string // what each connection received
}

// startWatched starts a watchedUpstream greeting with greeting; with "" it
// never greets.
func startWatched(t *testing.T, greeting string) *watchedUpstream {
	w := &watchedUpstream{greeted: make(chan int, 100), closed: make(chan int, 100)}
	w.addr = pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		w.mu.Lock()
		w.lines = append(w.lines, nil)
		n := len(w.lines)
		w.mu.Unlock()
		defer func() { w.closed <- n }()
		if greeting == "" {
			io.Copy(io.Discard, c.Conn)
			return
		}
		c.Send(greeting + "\r\n")
		w.greeted <- n
		for {
			c.Conn.SetReadDeadline(time.Now().Add(time.Minute))
			line, err := c.R.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\r\n")
			w.mu.Lock()
			w.lines[n-1] = append(w.lines[n-1], line)
			w.mu.Unlock()
			switch {
			case line == "QUIT":
				c.Send("+OK bye\r\n")
				return
			case line == "PASS wrong":
				c.Send("-ERR [AUTH] wrong password\r\n")
			case strings.HasPrefix(line, "PASS "):
				c.Send("+OK logged in\r\n")
			default:
				c.Send("+OK\r\n")
			}
		}
	})
	return w
}

func (w *watchedUpstream) connections() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lines)
}

// received returns what connection n received.
func (w *watchedUpstream) received(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lines[n-1]
}

// waitConn waits for connection want's event on ch.
func waitConn(t *testing.T, ch chan int, want int, event string) {
	t.Helper()
	select {
	case n := <-ch:
		if n != want {
			t.Fatalf("connection %d %s, want %d", n, event, want)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("connection %d not %s", want, event)
	}
}

// TestPredialGreetedBeforePass: USER dials the upstream and reads its
// greeting; PASS logs in on that connection, the only one.
func TestPredialGreetedBeforePass(t *testing.T) {
	up := startWatched(t, "+OK ready")
	addr, _, rec := startProxy(t, up.addr, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	waitConn(t, up.greeted, 1, "greeted")
	c.Cmd("PASS secret", "+OK*")
	c.Cmd("STAT", "+OK*")
	if n := up.connections(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
	if got := strings.Join(up.received(1), "|"); got != "USER alice|PASS secret|STAT" {
		t.Errorf("the upstream received %q", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.auths) != 1 || !rec.auths[0].OK || rec.auths[0].Dial <= 0 {
		t.Errorf("auth events %+v, want one login with its dial time", rec.auths)
	}
}

// TestPredialPipelinedLogin: to an upstream known to pipeline, USER and PASS
// go in one write. A refused USER is the answer, PASS's reply dropped.
func TestPredialPipelinedLogin(t *testing.T) {
	type login struct {
		user, pass string
		buffered   int // what the upstream had buffered after USER's line
	}
	var mu sync.Mutex
	var logins []login
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK ready\r\n")
		for line := c.Line(); line != ""; line = c.Line() {
			switch {
			case strings.HasPrefix(line, "USER "):
				buffered := c.R.Buffered()
				pass := c.Line() // before USER is answered: only a pipelined PASS comes
				mu.Lock()
				logins = append(logins, login{line, pass, buffered})
				mu.Unlock()
				switch {
				case line == "USER nobody":
					c.Send("-ERR no such user\r\n-ERR send USER first\r\n")
				case pass == "PASS secret":
					c.Send("+OK\r\n+OK logged in\r\n")
				default:
					c.Send("+OK\r\n-ERR [AUTH] wrong password\r\n")
				}
			case line == "QUIT":
				c.Send("+OK bye\r\n")
				return
			default:
				c.Send("+OK\r\n")
			}
		}
	})
	addr, _, _ := startProxy(t, up, func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = []string{"TOP", "UIDL", "PIPELINING"} })
	})
	c := pop3test.Dial(t, addr)
	c.Cmd("USER nobody", "+OK*")
	c.Cmd("PASS x", "-ERR no such user")
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS wrong", "-ERR [AUTH] wrong password")
	c.Login("alice", "secret")
	c.Cmd("STAT", "+OK") // nothing left over from the login
	mu.Lock()
	defer mu.Unlock()
	want := []login{{user: "USER nobody", pass: "PASS x"}, {user: "USER alice", pass: "PASS wrong"}, {user: "USER alice", pass: "PASS secret"}}
	if len(logins) != len(want) {
		t.Fatalf("logins %+v, want %+v", logins, want)
	}
	for i, l := range logins {
		if l.user != want[i].user || l.pass != want[i].pass || l.buffered != len(l.pass)+2 {
			t.Errorf("login %d: %q then %q with %d octets buffered after USER, want %q then %q in one write",
				i+1, l.user, l.pass, l.buffered, want[i].user, want[i].pass)
		}
	}
}

// TestPredialNotWhenRefused: a login PASS refuses before the dial is not
// dialled at USER, and PASS answers as ever.
func TestPredialNotWhenRefused(t *testing.T) {
	block := ratelimit.FailureConfig{MaxFailures: 1, Window: time.Minute, Block: time.Minute}
	for _, tc := range []struct {
		name   string
		limits proxy.Limits
		answer string
	}{
		{"address blocked", proxy.Limits{FailuresPerIP: block}, "-ERR [AUTH] too many failed logins, try again later"},
		{"user blocked", proxy.Limits{FailuresPerUser: block}, "-ERR [AUTH] too many failed logins, try again later"},
		{"unrouted", proxy.Limits{}, "-ERR [AUTH] authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startWatched(t, "+OK ready")
			addr, _, _ := startProxy(t, up.addr, func(o *proxy.Options) {
				o.Limits = tc.limits
				router, err := route.New(route.Config{
					Upstreams: []route.Upstream{{Name: "default", Addresses: []string{up.addr}}},
					Users:     map[string]string{"alice": "default"},
				})
				if err != nil {
					t.Fatal(err)
				}
				o.Router = router
			})
			c := pop3test.Dial(t, addr)
			user := "alice"
			if tc.name == "unrouted" {
				user = "mallory"
			} else {
				c.Cmd("USER alice", "+OK*")
				c.Cmd("PASS wrong", "-ERR [AUTH] wrong password") // blocked from now on
			}
			before := up.connections()
			c.Cmd("USER "+user, "+OK*")
			time.Sleep(200 * time.Millisecond) // a dial would have been greeted
			c.Cmd("PASS secret", tc.answer)
			if n := up.connections() - before; n != 0 {
				t.Errorf("%d upstream connections for a refused login", n)
			}
		})
	}
}

// TestPredialClosed: the connection USER opened is closed when it will not
// serve a login, and a PASS after that dials afresh.
func TestPredialClosed(t *testing.T) {
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	for _, tc := range []struct {
		name   string
		listen proxy.Listener
		hold   time.Duration
		login  time.Duration                          // LoginTimeout, if set
		after  func(t *testing.T, c *pop3test.Client) // what closes it
	}{
		{name: "QUIT", after: func(t *testing.T, c *pop3test.Client) { c.Cmd("QUIT", "+OK*") }},
		{name: "disconnect", after: func(t *testing.T, c *pop3test.Client) { c.Conn.Close() }},
		{name: "AUTH", after: func(t *testing.T, c *pop3test.Client) { c.Cmd("AUTH PLAIN "+plain, "+OK*") }},
		{name: "refused PASS", after: func(t *testing.T, c *pop3test.Client) {
			c.Cmd("PASS bad\xff", "-ERR invalid credentials: *")
		}},
		{name: "STLS", listen: proxy.Listener{Name: "stls", TLSMode: proxy.TLSStartTLS, TLSConfig: serverTLS(t)},
			after: func(t *testing.T, c *pop3test.Client) { stls(c, clientTLS(t)) }},
		{name: "hold", hold: 100 * time.Millisecond, after: func(t *testing.T, c *pop3test.Client) {}},
		{name: "login timeout", login: 300 * time.Millisecond, after: func(t *testing.T, c *pop3test.Client) {
			c.Expect("-ERR [SYS/TEMP] login not completed in time")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hold > 0 {
				proxy.SetPredialHold(t, tc.hold)
			}
			up := startWatched(t, "+OK ready")
			if tc.listen.Name == "" {
				tc.listen.Name = "test"
			}
			addr, _, _ := startListener(t, up.addr, tc.listen, func(o *proxy.Options) { o.LoginTimeout = tc.login })
			c := pop3test.Dial(t, addr)
			c.Cmd("USER alice", "+OK*")
			waitConn(t, up.greeted, 1, "greeted")
			tc.after(t, c)
			waitConn(t, up.closed, 1, "closed")
			if got := up.received(1); len(got) != 0 {
				t.Errorf("the unused connection received %q", got)
			}
			if tc.name == "hold" {
				c.Login("alice", "secret")
				waitConn(t, up.greeted, 2, "greeted")
			}
		})
	}
}

// TestPredialSecondUser: another USER closes the first name's connection
// and opens one for the second, which PASS uses.
func TestPredialSecondUser(t *testing.T) {
	up := startWatched(t, "+OK ready")
	addr, _, _ := startProxy(t, up.addr, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	waitConn(t, up.greeted, 1, "greeted")
	c.Cmd("USER bob", "+OK*")
	waitConn(t, up.closed, 1, "closed")
	waitConn(t, up.greeted, 2, "greeted")
	c.Cmd("PASS hunter2", "+OK*")
	if got := strings.Join(up.received(2), "|"); got != "USER bob|PASS hunter2" {
		t.Errorf("the second connection received %q", got)
	}
	if n := up.connections(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
}

// TestPredialEndsWithSession: a session that ends while its predial waits
// for a greeting abandons the dial at once, long before the dial timeout.
func TestPredialEndsWithSession(t *testing.T) {
	up := startWatched(t, "") // never greets
	addr, _, rec := startProxy(t, up.addr, func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.DialTimeout = time.Minute })
	})
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	for up.connections() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	c.Conn.Close()
	rec.waitClose(t)
	waitConn(t, up.closed, 1, "closed")
}

// TestPredialFailed: a failed predial is the login's failed dial, reported
// at PASS and not tried again.
func TestPredialFailed(t *testing.T) {
	up := startWatched(t, "-ERR too busy")
	addr, _, rec := startProxy(t, up.addr, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "-ERR [SYS/TEMP] mail server unavailable, try again later")
	if n := up.connections(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.auths) != 1 || !rec.auths[0].DialFailed || !strings.Contains(rec.auths[0].Reason, "too busy") {
		t.Errorf("auth events %+v, want one failed dial", rec.auths)
	}
}

// TestPredialRerouted: when a reload routes the user elsewhere between USER
// and PASS, the predialled connection is closed and PASS dials the new route.
func TestPredialRerouted(t *testing.T) {
	a, b := startWatched(t, "+OK a"), startWatched(t, "+OK b")
	ups := []route.Upstream{{Name: "a", Addresses: []string{a.addr}}, {Name: "b", Addresses: []string{b.addr}}}
	router, err := route.New(route.Config{Upstreams: ups, Default: "a"})
	if err != nil {
		t.Fatal(err)
	}
	addr, _, _ := startProxy(t, a.addr, func(o *proxy.Options) {
		o.Router = router
		o.Upstreams = map[string]proxy.Upstream{"a": o.Upstreams["default"], "b": o.Upstreams["default"]}
	})
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	waitConn(t, a.greeted, 1, "greeted")
	if err := router.Update(route.Config{Upstreams: ups, Default: "b"}); err != nil {
		t.Fatal(err)
	}
	c.Cmd("PASS secret", "+OK*")
	waitConn(t, a.closed, 1, "closed")
	if got := strings.Join(b.received(1), "|"); got != "USER alice|PASS secret" {
		t.Errorf("the new route received %q", got)
	}
}

// wireTap forwards connections to a server and records, per connection,
// what each read of the proxy's side returned.
type wireTap struct {
	mu    sync.Mutex
	reads [][]string
}

func startWireTap(t *testing.T, server string) (string, *wireTap) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	w := &wireTap{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.reads = append(w.reads, nil)
			n := len(w.reads) - 1
			w.mu.Unlock()
			go w.forward(c, server, n)
		}
	}()
	return l.Addr().String(), w
}

// forward relays connection n, c, to server until either side closes.
func (w *wireTap) forward(c net.Conn, server string, n int) {
	defer c.Close()
	s, err := net.Dial("tcp", server)
	if err != nil {
		return
	}
	defer s.Close()
	go func() {
		io.Copy(c, s)
		c.Close()
	}()
	buf := make([]byte, 4096)
	for {
		k, err := c.Read(buf)
		if k > 0 {
			w.mu.Lock()
			w.reads[n] = append(w.reads[n], string(buf[:k]))
			w.mu.Unlock()
			s.Write(buf[:k])
		}
		if err != nil {
			return
		}
	}
}

// TestDovecotPredialPipelined: Dovecot lists PIPELINING in its CAPA after
// login, so from the second login there on USER and PASS reach it in one
// write, a wrong password's and a right one's.
func TestDovecotPredialPipelined(t *testing.T) {
	d := sharedDovecot(t)
	server, wire := startWireTap(t, d.Addr())
	addr, _, _ := startProxy(t, server, func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = nil }) })
	pass := dovecotUsers["pipeline"]
	c := pop3test.Dial(t, addr)
	c.Login("pipeline", pass) // learns the capabilities
	c.Cmd("QUIT", "+OK*")
	c = pop3test.Dial(t, addr)
	c.Cmd("USER pipeline", "+OK*")
	c.Cmd("PASS wrong", "-ERR [AUTH] *")
	c.Login("pipeline", pass)
	c.Cmd("STAT", "+OK*")
	c.Cmd("QUIT", "+OK*")
	c.Closed()

	wire.mu.Lock()
	defer wire.mu.Unlock()
	if len(wire.reads) != 3 {
		t.Fatalf("%d connections to Dovecot, want 3: %q", len(wire.reads), wire.reads)
	}
	for i, reads := range wire.reads {
		pipelined := slices.ContainsFunc(reads, func(r string) bool {
			return strings.HasPrefix(r, "USER pipeline\r\nPASS ")
		})
		if want := i > 0; pipelined != want {
			t.Errorf("login %d pipelined %v, want %v: %q", i+1, pipelined, want, reads)
		}
	}
}

// panickyShared is a SharedLimits whose Blocked panics.
type panickyShared struct{ proxy.SharedLimits }

func (panickyShared) Blocked(context.Context, string) (time.Duration, error) {
	panic("boom in Blocked")
}

// TestPredialPanicIsContained: a panic in the predial's checks is counted
// and ends nothing; PASS's own checks panic in the session, which ends.
func TestPredialPanicIsContained(t *testing.T) {
	up := startWatched(t, "+OK ready")
	addr, srv, _ := startProxy(t, up.addr, func(o *proxy.Options) { o.Shared = panickyShared{} })
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	waitFor(t, func() bool { return srv.Panics() == 1 })
	c.Cmd("PASS secret", "-ERR [SYS/TEMP] internal error")
	c.Closed()
	if n := up.connections(); n != 0 {
		t.Errorf("%d upstream connections", n)
	}
}
