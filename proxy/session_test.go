package proxy_test

import (
	"context"
	"encoding/base64"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/proxy"
)

// TestRFC1939ExampleSession plays the example session of RFC 1939 §10.
func TestRFC1939ExampleSession(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("STAT", "+OK 3 *")
	c.Cmd("LIST", "+OK*")
	if got := c.Body(); !strings.HasPrefix(got, "1 ") || strings.Count(got, "\r\n") != 3 {
		t.Fatalf("LIST body %q", got)
	}
	c.Cmd("RETR 1", "+OK*")
	if got := c.Body(); got != string(sampleMessages[0].Data) {
		t.Fatalf("RETR 1 = %q", got)
	}
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("RETR 2", "+OK*")
	// The client reads the body raw: dot-stuffing must reach it unchanged.
	if got, want := c.Body(), "Subject: two\r\n\r\n..\r\n..leading dot\r\n...\r\n"; got != want {
		t.Fatalf("RETR 2 raw = %q, want %q", got, want)
	}
	c.Cmd("DELE 2", "+OK*")
	c.Cmd("QUIT", "+OK*")
	c.Closed()
	ev := rec.waitClose(t)
	if ev.Reason != "quit" || !ev.Committed || !slices.Equal(ev.Marked, []int{1, 2}) || ev.Retr != 2 || ev.User != "alice" {
		t.Fatalf("close event %+v", ev)
	}
	// The deletions were committed upstream.
	c = pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("STAT", "+OK 1 *")
}

// TestCanonicalForwarding checks that the upstream sees the proxy's own
// rendering of each command, never the client's bytes.
func TestCanonicalForwarding(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("retr   001", "+OK*")
	c.Body()
	c.Cmd("top 2  0  ", "+OK*")
	c.Body()
	c.Cmd("QUIT", "+OK*")
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
	c := pop3test.Dial(t, addr)
	for _, cmd := range []string{"RETR 1", "STAT", "NOOP", "DELE 1", "PASS x", "APOP a b", "XYZZY", "STLS", "GET / HTTP/1.1"} {
		c.Cmd(cmd, "-ERR *")
	}
	if n := up.connections(); n != 0 {
		t.Fatalf("upstream saw %d connections before login", n)
	}
	c.Login("alice", "secret")
	before := up.received()
	for _, cmd := range []string{
		"RETR", "RETR x", "RETR 0", "RETR -1", "RETR 1 2", "RETR 99999999999", "TOP 1", "TOP 1 x",
		"LIST 1 2", "LIST 1\u3000", "DELE", "STAT 1", "NOOP x", "UIDL a", "USER bob", "PASS x", "AUTH PLAIN", "XTND", "LAST",
	} {
		c.Cmd(cmd, "-ERR *")
	}
	c.Cmd("NOOP", "+OK*")
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
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		for {
			switch c.Line() {
			case "XTND XLIST A":
				c.Send("+OK\r\nline\r\n.\r\n")
			case "QUIT":
				c.Send("+OK bye\r\n")
				return
			case "":
				return
			default:
				c.Send("-ERR what\r\n")
			}
		}
	})
	addr, _, _ := startProxy(t, up, func(o *proxy.Options) {
		o.Extensions = []proxy.Extension{{Verb: "XTND", MaxArgs: 2, Multiline: true}}
	})
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")
	c.Cmd("xtnd  XLIST A", "+OK")
	if got := c.Body(); got != "line\r\n" {
		t.Fatalf("body %q", got)
	}
	c.Cmd("XTND a b c", "-ERR *")
	c.Cmd("LAST", "-ERR unknown command")
	c.Cmd("QUIT", "+OK bye")
}

func TestPipelining(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Send("USER alice\r\nPASS secret\r\nSTAT\r\nINVALID\r\nNOOP\r\nLIST 2\r\nUIDL\r\nRETR 3\r\nQUIT\r\n")
	c.Expect("+OK*")
	c.Expect("+OK*")
	c.Expect("+OK 3 *")
	c.Expect("-ERR unknown command")
	c.Expect("+OK*")
	c.Expect("+OK 2 *")
	c.Expect("+OK*")
	if n := strings.Count(c.Body(), "\r\n"); n != 3 {
		t.Fatalf("UIDL listed %d messages", n)
	}
	c.Expect("+OK*")
	if got := c.Body(); got != string(sampleMessages[2].Data) {
		t.Fatalf("RETR 3 = %q", got)
	}
	c.Expect("+OK*")
	c.Closed()
}

func TestAuthPipelinedLogin(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	b64 := base64.StdEncoding.EncodeToString
	c.Send("AUTH LOGIN\r\n" + b64([]byte("alice")) + "\r\n" + b64([]byte("secret")) + "\r\nSTAT\r\n")
	c.Expect("+ VXNlcm5hbWU6")
	c.Expect("+ UGFzc3dvcmQ6")
	c.Expect("+OK*")
	c.Expect("+OK 3 *")
}

func TestAuth(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	c := pop3test.Dial(t, addr)
	c.Send("AUTH\r\n")
	c.Expect("+OK*")
	if got := c.Body(); got != "PLAIN\r\nLOGIN\r\n" {
		t.Fatalf("mechanisms %q", got)
	}
	c.Cmd("AUTH CRAM-MD5", "-ERR *")
	c.Cmd("AUTH PLAIN", "+ ")
	c.Cmd("*", "-ERR *cancelled")
	c.Cmd("AUTH PLAIN =", "-ERR *")
	c.Cmd("AUTH PLAIN !!!notbase64", "-ERR *")
	c.Cmd("AUTH PLAIN "+b64("\x00alice\x00wrong"), "-ERR [AUTH] *")
	c.Cmd("AUTH LOGIN "+b64("alice"), "+ UGFzc3dvcmQ6")
	c.Cmd("*", "-ERR *cancelled")
	c.Cmd("AUTH PLAIN "+b64("bob\x00alice\x00secret"), "-ERR authorization identity not supported")
	c.Cmd("AUTH PLAIN", "+ ")
	c.Cmd(b64("alice\x00alice\x00secret"), "+OK*")
	c.Cmd("STAT", "+OK 3 *")

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
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS nope", "-ERR [AUTH] *")
	c.Cmd("STAT", "-ERR not logged in")
	c.Login("alice", "secret")
	c.Cmd("STAT", "+OK 3 *")
}

// TestCapa: before anything is learnt of the upstream, CAPA lists neither
// TOP nor UIDL, before login or after (RFC 2449 §6: they may not differ
// between states); the first login learns them from the server's CAPA, and
// later sessions list them in both states. The server's STLS, SASL and
// IMPLEMENTATION never show; its EXPIRE does after login.
func TestCapa(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		for {
			switch c.Line() {
			case "CAPA":
				c.Send("+OK\r\nTOP\r\nUSER\r\nSTLS\r\nSASL PLAIN XOAUTH2\r\nIMPLEMENTATION Legacy 1.0\r\nX-WEIRD\r\n" +
					"EXPIRE 30\r\n" + strings.Repeat("A", 600) + "\r\nUIDL\r\n.\r\n")
			case "":
				return
			}
		}
	})
	addr, _, _ := startProxy(t, up, func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = nil }) })
	own := "USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
	for _, learnt := range []string{"", "TOP\r\nUIDL\r\n"} {
		c := pop3test.Dial(t, addr)
		c.Cmd("CAPA", "+OK*")
		if before := c.Body(); !pop3test.Match(learnt+own+"XPOPPROXY *\r\n", before) {
			t.Errorf("CAPA before login = %q, want %q and XPOPPROXY", before, learnt+own)
		}
		c.Login("u", "p")
		c.Cmd("CAPA", "+OK*")
		if got, want := c.Body(), learnt+own+"EXPIRE 30\r\n"; got != want {
			t.Errorf("CAPA after login = %q, want %q", got, want)
		}
	}
}

func TestLineLimits(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER "+strings.Repeat("a", 250), "-ERR command line too long")
	c.Cmd("USER a\x00b", "-ERR control character*")
	c.Cmd("", "-ERR empty command")
	c.Cmd("USER alice", "+OK*") // still usable
	c.Send(strings.Repeat("x", 1<<20))
	c.Expect("-ERR line too long")
	c.Closed()
}

func TestTooManyBadCommands(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.MaxBadCommands = 3 })
	c := pop3test.Dial(t, addr)
	c.Send("BAD1\r\nBAD2\r\nBAD3\r\nUSER alice\r\n")
	c.Expect("-ERR unknown command")
	c.Expect("-ERR unknown command")
	c.Expect("-ERR unknown command; too many errors, closing")
	c.Closed()
	if ev := rec.waitClose(t); ev.Reason != "too_many_errors" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

// TestUpstreamDiesMidRetr checks that a message cut short upstream never
// reaches the client with a terminator.
func TestUpstreamDiesMidRetr(t *testing.T) {
	partial := "Subject: big\r\n\r\n" + strings.Repeat("line of a long message\r\n", 2000)
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		if c.Line() == "RETR 1" {
			c.Send("+OK 100000 octets\r\n" + partial)
		}
	})
	addr, _, rec := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")
	c.Cmd("RETR 1", "+OK*")
	c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.R.Read(buf)
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
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		for line := c.Line(); line != ""; line = c.Line() {
			if line == "RETR 9" {
				c.Send("-ERR no such message\r\n")
			} else {
				c.Send("+OK\r\n")
			}
		}
	})
	addr, _, _ := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")
	c.Cmd("RETR 9", "-ERR no such message")
	c.Cmd("NOOP", "+OK")
}

func TestUpstreamDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	addr, _, rec := startProxy(t, dead, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "-ERR [SYS/TEMP] *")
	c.Cmd("CAPA", "+OK*") // still in AUTHORIZATION
	c.Body()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.auths) != 1 || rec.auths[0].OK || rec.auths[0].Code != "SYS/TEMP" {
		t.Fatalf("auth events %+v", rec.auths)
	}
}

func TestUpstreamGreetingRefused(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("-ERR [SYS/TEMP] \x1b[31mtoo busy\r\n")
		c.Line()
	})
	addr, _, _ := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "-ERR [SYS/TEMP] mail server unavailable*")
}

func TestUpstreamResponseTimeout(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		c.Line()
		time.Sleep(3 * time.Second) // never answers in time
	})
	addr, _, rec := startProxy(t, up, func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.ResponseTimeout = 300 * time.Millisecond })
	})
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")
	c.Cmd("STAT", "-ERR [SYS/TEMP] *")
	c.Closed()
	if ev := rec.waitClose(t); ev.Reason != "upstream_failed" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

// TestUnsolicitedUpstreamData checks that bytes the upstream sends beyond a
// response end the session instead of being taken as the next answer.
func TestUnsolicitedUpstreamData(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		c.Line()
		c.Send("+OK\r\n+OK injected\r\n")
		c.Line()
	})
	addr, _, _ := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")
	c.Cmd("NOOP", "+OK")
	c.Expect("-ERR [SYS/TEMP] *")
	c.Closed()
}

// TestNoQuitUpstreamWithoutClientQuit checks that deletions are committed only
// through the client's own QUIT.
func TestNoQuitUpstreamWithoutClientQuit(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("DELE 1", "+OK*")
	c.Conn.Close()
	ev := rec.waitClose(t)
	if ev.Committed || !slices.Equal(ev.Marked, []int{1}) || ev.Reason != "client_closed" {
		t.Fatalf("close event %+v", ev)
	}
	if strings.Contains(up.received(), "QUIT") {
		t.Fatalf("proxy sent QUIT upstream: %q", up.received())
	}
	c = pop3test.Dial(t, addr)
	loginWhenUnlocked(c, "alice", "secret")
	c.Cmd("STAT", "+OK 3 *")
}

func TestRsetUnmarks(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("RSET", "+OK*")
	c.Cmd("QUIT", "+OK*")
	if ev := rec.waitClose(t); ev.Committed || len(ev.Marked) != 0 {
		t.Fatalf("close event %+v", ev)
	}
}

func TestClientDisconnectMidRetr(t *testing.T) {
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 1<<15) // 2 MiB
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		c.Line()
		c.Send("+OK\r\n" + big + ".\r\n")
		c.Line()
	})
	addr, _, rec := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")
	c.Cmd("RETR 1", "+OK*")
	c.Conn.Close()
	ev := rec.waitClose(t)
	if ev.Reason != "client_gone" && ev.Reason != "client_closed" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

func TestLoginTimeout(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.LoginTimeout = 200 * time.Millisecond })
	c := pop3test.Dial(t, addr)
	c.Expect("-ERR [SYS/TEMP] login not completed in time")
	c.Closed()
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
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("DELE 1", "+OK*")
	c.Expect("-ERR disconnected for inactivity")
	c.Closed()
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
	idle := pop3test.Dial(t, addr)
	idle.Login("alice", "secret")
	idle.Cmd("DELE 1", "+OK*")
	active := pop3test.Dial(t, addr)
	active.Login("bob", "hunter2")

	done := make(chan error)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	go func() { done <- srv.Shutdown(ctx) }()
	// During the grace period open sessions go on; new ones are refused.
	time.Sleep(100 * time.Millisecond)
	active.Cmd("STAT", "+OK*")
	active.Cmd("QUIT", "+OK*")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("new connection accepted during shutdown")
	}
	idle.Expect("-ERR [SYS/TEMP] server shutting down")
	idle.Closed()
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
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Send("NOOP\r\n")
	c.Expect("+OK*")
	c.Expect("-ERR [SYS/TEMP] internal error")
	if ev := rec.waitClose(t); ev.Reason != "internal_error" {
		t.Fatalf("close reason %q", ev.Reason)
	}
	other := pop3test.Dial(t, addr) // the server still serves
	other.Cmd("CAPA", "+OK*")
}

// TestSlowDripClient checks that a line must arrive whole within the timeout:
// a byte now and then does not keep a session open.
func TestSlowDripClient(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.LoginTimeout = 500 * time.Millisecond })
	c := pop3test.Dial(t, addr)
	start := time.Now()
	for _, b := range "USER alice" {
		if _, err := c.Conn.Write([]byte{byte(b)}); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Expect("-ERR [SYS/TEMP] login not completed in time")
	if ev := rec.waitClose(t); ev.Reason != "login_timeout" {
		t.Fatalf("close reason %q", ev.Reason)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("dropped after %v", d)
	}
}
