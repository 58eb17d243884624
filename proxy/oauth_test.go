package proxy_test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/proxy"
)

var oauthMechanisms = []string{"PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"}

func bearerResponse(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("n,a=" + user + ",\x01host=127.0.0.1\x01port=995\x01auth=Bearer " + token + "\x01\x01"))
}

func xoauth2Response(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

// oauthProxy serves an implicit-TLS listener offering OAuth in front of
// upstream, with an operational log kept in logs.
func oauthProxy(t *testing.T, upstream string, configure func(*proxy.Options)) (addr string, rec *recorder, logs *testproc.SyncBuffer) {
	t.Helper()
	logs = &testproc.SyncBuffer{}
	addr, _, rec = startListener(t, upstream, proxy.Listener{Name: "pop3s", TLSMode: proxy.TLSImplicit, TLSConfig: serverTLS(t)}, func(o *proxy.Options) {
		o.Mechanisms = oauthMechanisms
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if configure != nil {
			configure(o)
		}
	})
	return addr, rec, logs
}

func dialTLS(t *testing.T, addr string) *pop3test.Client {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, clientTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := pop3test.NewClient(t, conn)
	c.Expect("+OK *")
	return c
}

// noSecret fails if secret appears in an audited event or the log.
func noSecret(t *testing.T, rec *recorder, logs *testproc.SyncBuffer, secret string) {
	t.Helper()
	rec.mu.Lock()
	events := fmt.Sprintf("%+v %+v %+v %+v", rec.auths, rec.policy, rec.cmds, rec.closes)
	rec.mu.Unlock()
	if strings.Contains(events, secret) || strings.Contains(logs.String(), secret) {
		t.Errorf("the token reached the audit or the log:\n%s\n%s", events, logs)
	}
}

// oauthUpstream plays a server that expects "AUTH mech response" and then
// follows steps: lines to send, each but the last followed by the line it
// expects back. It records the lines it got on got.
func oauthUpstream(t *testing.T, got chan<- string, steps ...string) string {
	return pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK fake ready\r\n")
		for i, s := range steps {
			got <- c.Line()
			c.Send(s + "\r\n")
			if i == len(steps)-1 && strings.HasPrefix(s, "+OK") {
				got <- c.Line() // QUIT
				c.Send("+OK bye\r\n")
			}
		}
	})
}

func next(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case l := <-got:
		return l
	case <-time.After(5 * time.Second):
		t.Fatal("upstream got nothing")
		return ""
	}
}

func TestOAuthCapa(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startListener(t, up.Addr().String(), proxy.Listener{Name: "starttls", TLSMode: proxy.TLSStartTLS, TLSConfig: serverTLS(t)},
		func(o *proxy.Options) { o.Mechanisms = []string{"OAUTHBEARER", "PLAIN", "XOAUTH2"} })
	c := pop3test.Dial(t, addr)
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); !strings.Contains(capa, "SASL PLAIN\r\n") {
		t.Errorf("CAPA before STLS offers %q", capa)
	}
	c.Cmd("AUTH "+"OAUTHBEARER "+bearerResponse("alice", "t"), "-ERR [AUTH] TLS required*")
	c.Cmd("AUTH LOGIN", "-ERR unsupported authentication mechanism")
	stls(c, clientTLS(t))
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); !strings.Contains(capa, "SASL OAUTHBEARER PLAIN XOAUTH2\r\n") {
		t.Errorf("CAPA after STLS offers %q", capa)
	}
	c.Cmd("AUTH", "+OK")
	if list := c.Body(); list != "OAUTHBEARER\r\nPLAIN\r\nXOAUTH2\r\n" {
		t.Errorf("AUTH lists %q", list)
	}

	// Without TLS at all, OAuth is never offered.
	addr, _, _ = startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.Mechanisms = []string{"XOAUTH2"} })
	c = pop3test.Dial(t, addr)
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); strings.Contains(capa, "SASL") {
		t.Errorf("CAPA without TLS offers %q", capa)
	}
	c.Cmd("AUTH XOAUTH2 "+xoauth2Response("alice", "t"), "-ERR unsupported authentication mechanism")
	if up.connections() != 0 {
		t.Error("upstream contacted")
	}
}

// TestOAuthRelay logs in with each mechanism, with and without an initial
// response, under either upstream.login: the server gets the client's
// mechanism and response verbatim.
func TestOAuthRelay(t *testing.T) {
	const token = "ya29.a0AfH6SMBx-good-token"
	for _, tc := range []struct {
		name, mech, resp string
		irless, plain    bool
	}{
		{"oauthbearer", "OAUTHBEARER", bearerResponse("alice@example.com", token), false, false},
		{"oauthbearer-no-initial-response", "OAUTHBEARER", bearerResponse("alice@example.com", token), true, false},
		{"xoauth2", "XOAUTH2", xoauth2Response("alice@example.com", token), false, false},
		{"xoauth2-login-plain", "XOAUTH2", xoauth2Response("alice@example.com", token), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 10)
			addr, rec, logs := oauthProxy(t, oauthUpstream(t, got, "+OK Logged in."), func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.LoginPlain = tc.plain }) })
			c := dialTLS(t, addr)
			if tc.irless {
				c.Cmd("AUTH "+strings.ToLower(tc.mech), "+ ")
				c.Cmd(tc.resp, "+OK Logged in.")
			} else {
				c.Cmd("AUTH "+tc.mech+" "+tc.resp, "+OK Logged in.")
			}
			if line := next(t, got); line != "AUTH "+tc.mech+" "+tc.resp {
				t.Errorf("upstream got %q", line)
			}
			c.Cmd("QUIT", "+OK*")
			rec.waitClose(t)
			rec.mu.Lock()
			ev := rec.auths[0]
			rec.mu.Unlock()
			if !ev.OK || ev.Mechanism != tc.mech || ev.User != "alice@example.com" {
				t.Errorf("auth event %+v", ev)
			}
			noSecret(t, rec, logs, token)
		})
	}
}

// TestOAuthBearerFailure plays RFC 7628 §3.2.2's failure: an error
// challenge, the client's ^A, then -ERR [AUTH], relayed both ways, audited
// and counted as a failed login for the user.
func TestOAuthBearerFailure(t *testing.T) {
	const token = "revoked-token-3f9a"
	challenge := base64.StdEncoding.EncodeToString([]byte(`{"status":"invalid_token","schemes":"bearer","scope":"mail"}`))
	got := make(chan string, 10)
	up := oauthUpstream(t, got, "+ "+challenge, "-ERR [AUTH] Authentication failed.")
	addr, rec, logs := oauthProxy(t, up, func(o *proxy.Options) {
		o.Limits.FailuresPerUser = ratelimit.FailureConfig{MaxFailures: 1, Block: time.Minute}
	})
	c := dialTLS(t, addr)
	c.Cmd("AUTH OAUTHBEARER "+bearerResponse("alice", token), "+ "+challenge)
	c.Cmd("AQ==", "-ERR [AUTH] Authentication failed.")
	next(t, got)
	if line := next(t, got); line != "AQ==" {
		t.Errorf("upstream got %q for the client's answer", line)
	}
	// XOAUTH2 fails alike, with an empty answer; alice is blocked now.
	c.Cmd("AUTH XOAUTH2 "+xoauth2Response("alice", "another"), "-ERR [*")
	rec.mu.Lock()
	ev := rec.auths[0]
	blocked := rec.auths[1]
	rec.mu.Unlock()
	if ev.OK || ev.Code != "AUTH" || ev.Mechanism != "OAUTHBEARER" || ev.User != "alice" {
		t.Errorf("auth event %+v", ev)
	}
	if blocked.OK || blocked.Mechanism != "XOAUTH2" || !strings.HasPrefix(blocked.Reason, "limit.") {
		t.Errorf("second login %+v, want refused by the failed-login limit", blocked)
	}
	noSecret(t, rec, logs, token)
}

func TestXOAuth2Failure(t *testing.T) {
	challenge := base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`))
	got := make(chan string, 10)
	addr, rec, _ := oauthProxy(t, oauthUpstream(t, got, "+ "+challenge, "-ERR [AUTH] Authentication failed."), nil)
	c := dialTLS(t, addr)
	c.Cmd("AUTH XOAUTH2 "+xoauth2Response("bob", "bad"), "+ "+challenge)
	c.Cmd("", "-ERR [AUTH] Authentication failed.")
	next(t, got)
	if line := next(t, got); line != "" {
		t.Errorf("upstream got %q for the client's empty answer", line)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if ev := rec.auths[0]; ev.OK || ev.Code != "AUTH" || ev.User != "bob" {
		t.Errorf("auth event %+v", ev)
	}
}

// TestOAuthBadUser: a response that names no valid user never goes upstream.
func TestOAuthBadUser(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := oauthProxy(t, up.Addr().String(), nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, line := range []string{
		"AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer t\x01\x01"),
		"AUTH OAUTHBEARER " + b64("n,a=,\x01auth=Bearer t\x01\x01"),
		"AUTH OAUTHBEARER " + b64("n,a=al=ice,\x01auth=Bearer t\x01\x01"),
		"AUTH OAUTHBEARER " + b64("n,a=al ice,\x01auth=Bearer t\x01\x01"),
		"AUTH OAUTHBEARER " + b64("p=tls-unique,a=alice,\x01auth=Bearer t\x01\x01"),
		"AUTH OAUTHBEARER " + b64("n,a=alice\x01auth=Bearer t\x01\x01"),
		"AUTH OAUTHBEARER " + b64("n,a=alice,\x01\x01"),
		"AUTH OAUTHBEARER not-base64!",
		"AUTH XOAUTH2 " + b64("auth=Bearer t\x01\x01"),
		"AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer t"),
		"AUTH XOAUTH2 =",
	} {
		c := dialTLS(t, addr)
		c.Cmd(line, "-ERR [AUTH] *")
	}
	if up.connections() != 0 {
		t.Error("upstream contacted")
	}
}

// TestOAuthLongLines: an AUTH line and a continuation line of up to 16 KiB
// pass, verbatim; longer ones and lines with CR or NUL inside do not.
func TestOAuthLongLines(t *testing.T) {
	got := make(chan string, 10)
	addr, _, _ := oauthProxy(t, oauthUpstream(t, got, "+OK Logged in."), nil)
	fill := func(n int) string { return strings.Repeat("x", n) }
	// The longest token that fits: the line is 16 KiB with its CRLF.
	overhead := len("AUTH OAUTHBEARER " + bearerResponse("alice", "") + "\r\n")
	token := fill((16<<10-overhead)/4*3 - 2)
	line := "AUTH OAUTHBEARER " + bearerResponse("alice", token)
	if len(line)+2 > 16<<10 || len(line)+2 < 16<<10-8 {
		t.Fatalf("line of %d octets", len(line)+2)
	}
	c := dialTLS(t, addr)
	c.Cmd(line, "+OK Logged in.")
	if up := next(t, got); up != line {
		t.Errorf("upstream got %d octets, want the client's %d", len(up), len(line))
	}

	c = dialTLS(t, addr)
	c.Cmd("AUTH XOAUTH2", "+ ")
	c.Cmd(xoauth2Response("alice", token), "+OK Logged in.")

	c = dialTLS(t, addr)
	c.Cmd("AUTH OAUTHBEARER "+bearerResponse("alice", fill(16<<10)), "-ERR line too long")
	c.Closed()

	c = dialTLS(t, addr)
	c.Cmd("AUTH OAUTHBEARER "+bearerResponse("alice", "t")[:8]+"\r"+bearerResponse("alice", "t")[8:], "-ERR control character*")
	c.Cmd("AUTH XOAUTH2", "+ ")
	c.Cmd("dXNlcj1h\rbGljZQ==", "-ERR control character*")
	c.Cmd("AUTH XOAUTH2", "+ ")
	c.Cmd("dXNlcj1h\x00bGljZQ==", "-ERR control character*")
}

// TestOAuthBrokenOff: a client that answers a relayed challenge, the
// server's refusal, with "*" or a line with CR inside ends the exchange;
// the upstream is dropped, and it is a failed login all the same.
func TestOAuthBrokenOff(t *testing.T) {
	challenge := base64.StdEncoding.EncodeToString([]byte(`{"status":"invalid_token"}`))
	got := make(chan string, 20)
	addr, rec, _ := oauthProxy(t, oauthUpstream(t, got, "+ "+challenge, "-ERR [AUTH] Authentication failed."), func(o *proxy.Options) {
		o.Limits.FailuresPerUser = ratelimit.FailureConfig{MaxFailures: 3, Block: time.Minute}
	})
	c := dialTLS(t, addr)
	c.Cmd("AUTH OAUTHBEARER "+bearerResponse("alice", "t1"), "+ "+challenge)
	c.Cmd("*", "-ERR authentication cancelled")
	c.Cmd("AUTH OAUTHBEARER "+bearerResponse("alice", "t2"), "+ "+challenge)
	c.Cmd("AQ\r==", "-ERR control character*")
	c = dialTLS(t, addr)
	c.Cmd("AUTH OAUTHBEARER "+bearerResponse("alice", "t3"), "+ "+challenge)
	c.Conn.Close() // hangs up, as curl does
	rec.waitClose(t)
	c = dialTLS(t, addr)
	c.Cmd("AUTH OAUTHBEARER "+bearerResponse("alice", "t4"), "-ERR [*") // three failures: blocked
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.auths) != 4 || rec.auths[0].OK || rec.auths[0].Reason == "" || !strings.HasPrefix(rec.auths[3].Reason, "limit.") {
		t.Errorf("auth events %+v", rec.auths)
	}
}
