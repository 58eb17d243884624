package proxy_test

import (
	"context"
	"encoding/base64"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/proxy"
)

// TestRFC1939ExampleSession plays the example session of RFC 1939 §10.
func TestRFC1939ExampleSession(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	c.login("alice", "secret")
	c.cmd("STAT", "+OK 3 *")
	c.cmd("LIST", "+OK*")
	if got := c.body(); !strings.HasPrefix(got, "1 ") || strings.Count(got, "\r\n") != 3 {
		t.Fatalf("LIST body %q", got)
	}
	c.cmd("RETR 1", "+OK*")
	if got := c.body(); got != string(sampleMessages[0].Data) {
		t.Fatalf("RETR 1 = %q", got)
	}
	c.cmd("DELE 1", "+OK*")
	c.cmd("RETR 2", "+OK*")
	// The client reads the body raw: dot-stuffing must reach it unchanged.
	if got, want := c.body(), "Subject: two\r\n\r\n..\r\n..leading dot\r\n...\r\n"; got != want {
		t.Fatalf("RETR 2 raw = %q, want %q", got, want)
	}
	c.cmd("DELE 2", "+OK*")
	c.cmd("QUIT", "+OK*")
	c.closed()
	ev := rec.waitClose(t)
	if ev.Reason != "quit" || !ev.Committed || !slices.Equal(ev.Marked, []int{1, 2}) || ev.Retr != 2 || ev.User != "alice" {
		t.Fatalf("close event %+v", ev)
	}
	// The deletions were committed upstream.
	c = dial(t, addr)
	c.login("alice", "secret")
	c.cmd("STAT", "+OK 1 *")
}

// TestCanonicalForwarding checks that the upstream sees the proxy's own
// rendering of each command, never the client's bytes.
func TestCanonicalForwarding(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	c.login("alice", "secret")
	c.cmd("retr   001", "+OK*")
	c.body()
	c.cmd("top 2  0  ", "+OK*")
	c.body()
	c.cmd("QUIT", "+OK*")
	got := up.received()
	for _, want := range []string{"RETR 1\r\n", "TOP 2 0\r\n", "QUIT\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("upstream received %q, want it to contain %q", got, want)
		}
	}
	if strings.Contains(got, "retr") || strings.Contains(got, "001") {
		t.Errorf("client bytes reached the upstream: %q", got)
	}
}

// TestRefusedWithoutUpstream checks that invalid and wrong-state commands get
// -ERR from the proxy and nothing reaches the upstream.
func TestRefusedWithoutUpstream(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.MaxBadCommands = 100 })
	c := dial(t, addr)
	for _, cmd := range []string{"RETR 1", "STAT", "NOOP", "DELE 1", "PASS x", "APOP a b", "XYZZY", "STLS", "GET / HTTP/1.1"} {
		c.cmd(cmd, "-ERR *")
	}
	if n := up.connections(); n != 0 {
		t.Fatalf("upstream saw %d connections before login", n)
	}
	c.login("alice", "secret")
	before := up.received()
	for _, cmd := range []string{
		"RETR", "RETR x", "RETR 0", "RETR -1", "RETR 1 2", "RETR 99999999999", "TOP 1", "TOP 1 x",
		"LIST 1 2", "LIST 1\u3000", "DELE", "STAT 1", "NOOP x", "UIDL a", "USER bob", "PASS x", "AUTH PLAIN", "XTND", "LAST",
	} {
		c.cmd(cmd, "-ERR *")
	}
	c.cmd("NOOP", "+OK*")
	if got := strings.TrimPrefix(up.received(), before); got != "NOOP\r\n" {
		t.Fatalf("upstream received %q after the refused commands, want only NOOP", got)
	}
	rules := rec.policyRules()
	for _, want := range []proxy.Rule{proxy.RuleWrongState, proxy.RuleSyntax, proxy.RuleUnknownCommand, proxy.RuleUnsupported} {
		if !slices.Contains(rules, want) {
			t.Errorf("no %q policy event in %v", want, rules)
		}
	}
}

func TestExtensionAllowList(t *testing.T) {
	up := fakeUpstream(t, func(c *fakeConn) {
		c.login()
		for {
			switch c.line() {
			case "XTND XLIST A":
				c.send("+OK\r\nline\r\n.\r\n")
			case "QUIT":
				c.send("+OK bye\r\n")
				return
			case "":
				return
			default:
				c.send("-ERR what\r\n")
			}
		}
	})
	addr, _, _ := startProxy(t, up, func(o *proxy.Options) {
		o.Extensions = []proxy.Extension{{Verb: "XTND", MaxArgs: 2, Multiline: true}}
	})
	c := dial(t, addr)
	c.login("u", "p")
	c.cmd("xtnd  XLIST A", "+OK")
	if got := c.body(); got != "line\r\n" {
		t.Fatalf("body %q", got)
	}
	c.cmd("XTND a b c", "-ERR *")
	c.cmd("LAST", "-ERR unknown command")
	c.cmd("QUIT", "+OK bye")
}

func TestPipelining(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	c.send("USER alice\r\nPASS secret\r\nSTAT\r\nINVALID\r\nNOOP\r\nLIST 2\r\nUIDL\r\nRETR 3\r\nQUIT\r\n")
	c.expect("+OK*")
	c.expect("+OK*")
	c.expect("+OK 3 *")
	c.expect("-ERR unknown command")
	c.expect("+OK*")
	c.expect("+OK 2 *")
	c.expect("+OK*")
	if n := strings.Count(c.body(), "\r\n"); n != 3 {
		t.Fatalf("UIDL listed %d messages", n)
	}
	c.expect("+OK*")
	if got := c.body(); got != string(sampleMessages[2].Data) {
		t.Fatalf("RETR 3 = %q", got)
	}
	c.expect("+OK*")
	c.closed()
}

func TestAuthPipelinedLogin(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	b64 := base64.StdEncoding.EncodeToString
	c.send("AUTH LOGIN\r\n" + b64([]byte("alice")) + "\r\n" + b64([]byte("secret")) + "\r\nSTAT\r\n")
	c.expect("+ VXNlcm5hbWU6")
	c.expect("+ UGFzc3dvcmQ6")
	c.expect("+OK*")
	c.expect("+OK 3 *")
}

func TestAuth(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	c := dial(t, addr)
	c.send("AUTH\r\n")
	c.expect("+OK*")
	if got := c.body(); got != "PLAIN\r\nLOGIN\r\n" {
		t.Fatalf("mechanisms %q", got)
	}
	c.cmd("AUTH CRAM-MD5", "-ERR *")
	c.cmd("AUTH PLAIN", "+ ")
	c.cmd("*", "-ERR *cancelled")
	c.cmd("AUTH PLAIN =", "-ERR *")
	c.cmd("AUTH PLAIN !!!notbase64", "-ERR *")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00wrong"), "-ERR [AUTH] *")
	c.cmd("AUTH LOGIN "+b64("alice"), "+ UGFzc3dvcmQ6")
	c.cmd("*", "-ERR *cancelled")
	c.cmd("AUTH PLAIN "+b64("bob\x00alice\x00secret"), "-ERR authorization identity not supported")
	c.cmd("AUTH PLAIN", "+ ")
	c.cmd(b64("alice\x00alice\x00secret"), "+OK*")
	c.cmd("STAT", "+OK 3 *")

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var results []bool
	for _, a := range rec.auths {
		if a.User != "alice" {
			t.Errorf("auth event for user %q", a.User)
		}
		results = append(results, a.OK)
	}
	if !slices.Equal(results, []bool{false, false, true}) {
		t.Errorf("auth results %v", results)
	}
}

// TestLoginRetry checks that a refused login leaves the client in
// AUTHORIZATION with the upstream's code and text, and that it may retry.
func TestLoginRetry(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	c.cmd("USER alice", "+OK*")
	c.cmd("PASS nope", "-ERR [AUTH] *")
	c.cmd("STAT", "-ERR not logged in")
	c.login("alice", "secret")
	c.cmd("STAT", "+OK 3 *")
}

// TestCapa: before anything is learnt of the upstream, CAPA lists neither
// TOP nor UIDL, before login or after (RFC 2449 §6: they may not differ
// between states); the first login learns them from the server's CAPA, and
// later sessions list them in both states. The server's STLS, SASL and
// IMPLEMENTATION never show; its EXPIRE does after login.
func TestCapa(t *testing.T) {
	up := fakeUpstream(t, func(c *fakeConn) {
		c.login()
		for {
			switch c.line() {
			case "CAPA":
				c.send("+OK\r\nTOP\r\nUSER\r\nSTLS\r\nSASL PLAIN XOAUTH2\r\nIMPLEMENTATION Legacy 1.0\r\nX-WEIRD\r\n" +
					"EXPIRE 30\r\n" + strings.Repeat("A", 600) + "\r\nUIDL\r\n.\r\n")
			case "":
				return
			}
		}
	})
	addr, _, _ := startProxy(t, up, func(o *proxy.Options) { o.Upstream.Capabilities = nil })
	own := "USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
	for _, learnt := range []string{"", "TOP\r\nUIDL\r\n"} {
		c := dial(t, addr)
		c.cmd("CAPA", "+OK*")
		if before := c.body(); !match(learnt+own+"XPOPPROXY *\r\n", before) {
			t.Errorf("CAPA before login = %q, want %q and XPOPPROXY", before, learnt+own)
		}
		c.login("u", "p")
		c.cmd("CAPA", "+OK*")
		if got, want := c.body(), learnt+own+"EXPIRE 30\r\n"; got != want {
			t.Errorf("CAPA after login = %q, want %q", got, want)
		}
	}
}

func TestLineLimits(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	c.cmd("USER "+strings.Repeat("a", 250), "-ERR command line too long")
	c.cmd("USER a\x00b", "-ERR control character*")
	c.cmd("", "-ERR empty command")
	c.cmd("USER alice", "+OK*") // still usable
	c.send(strings.Repeat("x", 1<<20))
	c.expect("-ERR line too long")
	c.closed()
}

func TestTooManyBadCommands(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.MaxBadCommands = 3 })
	c := dial(t, addr)
	c.send("BAD1\r\nBAD2\r\nBAD3\r\nUSER alice\r\n")
	c.expect("-ERR unknown command")
	c.expect("-ERR unknown command")
	c.expect("-ERR unknown command; too many errors, closing")
	c.closed()
	if ev := rec.waitClose(t); ev.Reason != "too_many_errors" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

// TestUpstreamDiesMidRetr checks that a message cut short upstream never
// reaches the client with a terminator.
func TestUpstreamDiesMidRetr(t *testing.T) {
	partial := "Subject: big\r\n\r\n" + strings.Repeat("line of a long message\r\n", 2000)
	up := fakeUpstream(t, func(c *fakeConn) {
		c.login()
		if c.line() == "RETR 1" {
			c.send("+OK 100000 octets\r\n" + partial)
		}
	})
	addr, _, rec := startProxy(t, up, nil)
	c := dial(t, addr)
	c.login("u", "p")
	c.cmd("RETR 1", "+OK*")
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.r.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if got.String() != partial {
		t.Fatalf("client got %d bytes, want the %d relayed before the failure", got.Len(), len(partial))
	}
	ev := rec.waitClose(t)
	if ev.Reason != "upstream_failed" || !ev.Incomplete {
		t.Fatalf("close event %+v", ev)
	}
}

func TestErrToMultiLineCommandHasNoBody(t *testing.T) {
	up := fakeUpstream(t, func(c *fakeConn) {
		c.login()
		for line := c.line(); line != ""; line = c.line() {
			if line == "RETR 9" {
				c.send("-ERR no such message\r\n")
			} else {
				c.send("+OK\r\n")
			}
		}
	})
	addr, _, _ := startProxy(t, up, nil)
	c := dial(t, addr)
	c.login("u", "p")
	c.cmd("RETR 9", "-ERR no such message")
	c.cmd("NOOP", "+OK")
}

func TestUpstreamDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	addr, _, rec := startProxy(t, dead, nil)
	c := dial(t, addr)
	c.cmd("USER alice", "+OK*")
	c.cmd("PASS secret", "-ERR [SYS/TEMP] *")
	c.cmd("CAPA", "+OK*") // still in AUTHORIZATION
	c.body()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.auths) != 1 || rec.auths[0].OK || rec.auths[0].Code != "SYS/TEMP" {
		t.Fatalf("auth events %+v", rec.auths)
	}
}

func TestUpstreamGreetingRefused(t *testing.T) {
	up := fakeUpstream(t, func(c *fakeConn) {
		c.send("-ERR [SYS/TEMP] \x1b[31mtoo busy\r\n")
		c.line()
	})
	addr, _, _ := startProxy(t, up, nil)
	c := dial(t, addr)
	c.cmd("USER alice", "+OK*")
	c.cmd("PASS secret", "-ERR [SYS/TEMP] mail server unavailable*")
}

func TestUpstreamResponseTimeout(t *testing.T) {
	up := fakeUpstream(t, func(c *fakeConn) {
		c.login()
		c.line()
		time.Sleep(3 * time.Second) // never answers in time
	})
	addr, _, rec := startProxy(t, up, func(o *proxy.Options) { o.Upstream.ResponseTimeout = 300 * time.Millisecond })
	c := dial(t, addr)
	c.login("u", "p")
	c.cmd("STAT", "-ERR [SYS/TEMP] *")
	c.closed()
	if ev := rec.waitClose(t); ev.Reason != "upstream_failed" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

// TestUnsolicitedUpstreamData checks that bytes the upstream sends beyond a
// response end the session instead of being taken as the next answer.
func TestUnsolicitedUpstreamData(t *testing.T) {
	up := fakeUpstream(t, func(c *fakeConn) {
		c.login()
		c.line()
		c.send("+OK\r\n+OK injected\r\n")
		c.line()
	})
	addr, _, _ := startProxy(t, up, nil)
	c := dial(t, addr)
	c.login("u", "p")
	c.cmd("NOOP", "+OK")
	c.expect("-ERR [SYS/TEMP] *")
	c.closed()
}

// TestNoQuitUpstreamWithoutClientQuit checks that deletions are committed only
// through the client's own QUIT.
func TestNoQuitUpstreamWithoutClientQuit(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	c.login("alice", "secret")
	c.cmd("DELE 1", "+OK*")
	c.conn.Close()
	ev := rec.waitClose(t)
	if ev.Committed || !slices.Equal(ev.Marked, []int{1}) || ev.Reason != "client_closed" {
		t.Fatalf("close event %+v", ev)
	}
	if strings.Contains(up.received(), "QUIT") {
		t.Fatalf("proxy sent QUIT upstream: %q", up.received())
	}
	c = dial(t, addr)
	c.loginWhenUnlocked("alice", "secret")
	c.cmd("STAT", "+OK 3 *")
}

func TestRsetUnmarks(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := dial(t, addr)
	c.login("alice", "secret")
	c.cmd("DELE 1", "+OK*")
	c.cmd("RSET", "+OK*")
	c.cmd("QUIT", "+OK*")
	if ev := rec.waitClose(t); ev.Committed || len(ev.Marked) != 0 {
		t.Fatalf("close event %+v", ev)
	}
}

func TestClientDisconnectMidRetr(t *testing.T) {
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 1<<15) // 2 MiB
	up := fakeUpstream(t, func(c *fakeConn) {
		c.login()
		c.line()
		c.send("+OK\r\n" + big + ".\r\n")
		c.line()
	})
	addr, _, rec := startProxy(t, up, nil)
	c := dial(t, addr)
	c.login("u", "p")
	c.cmd("RETR 1", "+OK*")
	c.conn.Close()
	ev := rec.waitClose(t)
	if ev.Reason != "client_gone" && ev.Reason != "client_closed" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

func TestLoginTimeout(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.LoginTimeout = 200 * time.Millisecond })
	c := dial(t, addr)
	c.expect("-ERR [SYS/TEMP] login not completed in time")
	c.closed()
	if ev := rec.waitClose(t); ev.Reason != "login_timeout" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

func TestIdleTimeoutAfterLogin(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) {
		o.LoginTimeout = 5 * time.Second
		o.IdleTimeout = 300 * time.Millisecond
	})
	c := dial(t, addr)
	c.login("alice", "secret")
	c.cmd("DELE 1", "+OK*")
	c.expect("-ERR disconnected for inactivity")
	c.closed()
	if ev := rec.waitClose(t); ev.Reason != "timeout" || ev.Committed {
		t.Fatalf("close event %+v", ev)
	}
	if strings.Contains(up.received(), "QUIT") {
		t.Fatal("an expired timer sent QUIT upstream")
	}
}

func TestShutdown(t *testing.T) {
	up := startMaildrop(t)
	addr, srv, rec := startProxy(t, up.Addr().String(), nil)
	idle := dial(t, addr)
	idle.login("alice", "secret")
	idle.cmd("DELE 1", "+OK*")
	active := dial(t, addr)
	active.login("bob", "hunter2")

	done := make(chan error)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	go func() { done <- srv.Shutdown(ctx) }()
	// During the grace period open sessions go on; new ones are refused.
	time.Sleep(100 * time.Millisecond)
	active.cmd("STAT", "+OK*")
	active.cmd("QUIT", "+OK*")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("new connection accepted during shutdown")
	}
	idle.expect("-ERR [SYS/TEMP] server shutting down")
	idle.closed()
	if err := <-done; err != context.DeadlineExceeded {
		t.Fatalf("Shutdown = %v", err)
	}
	rec.waitClose(t)
	rec.waitClose(t)
	if strings.Count(up.received(), "QUIT") != 1 {
		t.Fatalf("upstream QUITs: %q", up.received())
	}
}

// panicky panics on every command, standing in for a bug in one session.
type panicky struct{ *recorder }

func (panicky) Command(string, proxy.CommandEvent) { panic("boom") }

func TestPanicIsContained(t *testing.T) {
	up := startMaildrop(t)
	rec := newRecorder()
	addr, _, _ := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.Auditor = panicky{rec} })
	c := dial(t, addr)
	c.login("alice", "secret")
	c.send("NOOP\r\n")
	c.expect("+OK*")
	c.expect("-ERR [SYS/TEMP] internal error")
	if ev := rec.waitClose(t); ev.Reason != "internal_error" {
		t.Fatalf("close reason %q", ev.Reason)
	}
	other := dial(t, addr) // the server still serves
	other.cmd("CAPA", "+OK*")
}

// TestSlowDripClient checks that a line must arrive whole within the timeout:
// a byte now and then does not keep a session open.
func TestSlowDripClient(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.LoginTimeout = 500 * time.Millisecond })
	c := dial(t, addr)
	start := time.Now()
	for _, b := range "USER alice" {
		if _, err := c.conn.Write([]byte{byte(b)}); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.expect("-ERR [SYS/TEMP] login not completed in time")
	if ev := rec.waitClose(t); ev.Reason != "login_timeout" {
		t.Fatalf("close reason %q", ev.Reason)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("dropped after %v", d)
	}
}
