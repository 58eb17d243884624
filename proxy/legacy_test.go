package proxy_test

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/testlegacy"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/proxy"
)

// legacyLimits block a user at the third failed login and an address at the
// fifth, far stricter than the defaults.
var legacyLimits = proxy.Limits{
	FailuresPerIP:   ratelimit.FailureConfig{MaxFailures: 5, Window: 15 * time.Minute, Block: 15 * time.Minute},
	FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 3, Window: 15 * time.Minute, Block: 15 * time.Minute},
}

// startLegacyProxy serves a proxy in front of srv with legacyLimits and a
// response timeout longer than the servers' 2-4 s delay before refusing a
// wrong password.
func startLegacyProxy(t *testing.T, srv *testlegacy.Instance) (string, *recorder) {
	t.Helper()
	addr, _, rec := startProxy(t, srv.Addr(), func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.ResponseTimeout = 10 * time.Second })
		o.Limits = legacyLimits
	})
	return addr, rec
}

// TestLegacyServerFaultIsNoFailedLogin: while the mailbox cannot be read, the
// servers refuse the right password, popa3d with a bare -ERR. The proxy
// relays the server's answer as it is, never with an [AUTH] of its own, and
// counts the password once, so the user logs in at once when the mailbox is
// fixed.
func TestLegacyServerFaultIsNoFailedLogin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *testlegacy.Instance
		reply string
	}{
		{"popa3d", testlegacy.StartPopa3d, "-ERR"},
		{"solid-pop3d", testlegacy.StartSolid, "-ERR can't open mailbox file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := tc.start(t)
			addr, rec := startLegacyProxy(t, srv)
			if err := srv.AddMessage([]byte("Subject: waiting\r\n\r\nhello\r\n")); err != nil {
				t.Fatal(err)
			}
			if err := srv.SetMailboxReadable(false); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				c := pop3test.Dial(t, addr)
				c.Cmd("USER "+srv.User(), "+OK*")
				c.Cmd("PASS "+srv.Password(), tc.reply)
			}
			for _, ev := range authEvents(rec) {
				if ev.OK || ev.Code != "" {
					t.Errorf("auth event %+v, want a failure without code", ev)
				}
			}
			if err := srv.SetMailboxReadable(true); err != nil {
				t.Fatal(err)
			}
			pop3test.Dial(t, addr).Login(srv.User(), srv.Password())
			if rules := rec.policyRules(); len(rules) != 0 {
				t.Errorf("policy events %q", rules)
			}
		})
	}
}

// TestLegacyGuesserBlocked: popa3d refuses wrong passwords without a response
// code; distinct ones still count, and at the limit the proxy refuses even
// the right password without asking the server.
func TestLegacyGuesserBlocked(t *testing.T) {
	srv := testlegacy.StartPopa3d(t)
	addr, rec := startLegacyProxy(t, srv)
	for _, guess := range []string{"123456", "password", "123456", "letmein"} {
		c := pop3test.Dial(t, addr)
		c.Cmd("USER "+srv.User(), "+OK*")
		c.Cmd("PASS "+guess, "-ERR Authentication failed (bad password?)")
	}
	c := pop3test.Dial(t, addr)
	c.Cmd("USER "+srv.User(), "+OK*")
	c.Cmd("PASS "+srv.Password(), "-ERR [AUTH] too many failed logins, try again later")
	if !rec.hasPolicy("limit.failed_logins_user") {
		t.Errorf("policy events %q, want limit.failed_logins_user", rec.policyRules())
	}
}

// TestLegacyAuditSizes: popa3d answers RETR with a bare +OK, so the record's
// size is measured from the relayed body, and equals popa3d's own LIST.
// TOP has a size only with ResolveUIDs, which asks LIST n (and UIDL n). The
// body reaches the client as popa3d sent it.
func TestLegacyAuditSizes(t *testing.T) {
	srv := testlegacy.StartPopa3d(t)
	for _, m := range []string{
		"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nend.\r\n",
		"Subject: plain\r\nMessage-ID: <plain@test>\r\n\r\nHello.\r\n",
	} {
		if err := srv.AddMessage([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// dial wants a greeting with text; popa3d's is a bare +OK.
	conn := dialRaw(t, srv.Addr())
	direct := pop3test.NewClient(t, conn)
	direct.Expect("+OK")
	direct.Login(srv.User(), srv.Password())
	direct.Cmd("LIST", "+OK")
	list := direct.Body()
	direct.Cmd("UIDL", "+OK")
	uidl := direct.Body()
	direct.Cmd("RETR 1", "+OK")
	message := direct.Body()
	direct.Cmd("QUIT", "+OK")
	sizes, uids := map[string]int64{}, map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(list, "\r\n"), "\r\n") {
		n, size, _ := strings.Cut(l, " ")
		sizes[n], _ = strconv.ParseInt(size, 10, 64)
	}
	for _, l := range strings.Split(strings.TrimSuffix(uidl, "\r\n"), "\r\n") {
		n, uid, _ := strings.Cut(l, " ")
		uids[n] = uid
	}

	for _, resolve := range []bool{false, true} {
		t.Run("resolve_uids="+strconv.FormatBool(resolve), func(t *testing.T) {
			addr, _, rec := startProxy(t, srv.Addr(), func(o *proxy.Options) { o.ResolveUIDs = resolve })
			c := pop3test.Dial(t, addr)
			c.Login(srv.User(), srv.Password())
			c.Cmd("RETR 1", "+OK")
			if got := c.Body(); got != message {
				t.Errorf("RETR 1 through the proxy %q, directly %q", got, message)
			}
			c.Cmd("TOP 2 0", "+OK")
			c.Body()
			c.Cmd("QUIT", "+OK")
			rec.waitClose(t)

			retr, top := rec.commands("RETR"), rec.commands("TOP")
			if len(retr) != 1 || retr[0].Size != sizes["1"] {
				t.Errorf("RETR events %+v, want size %d as popa3d lists it", retr, sizes["1"])
			}
			wantTop, wantUID := int64(-1), ""
			if resolve {
				wantTop, wantUID = sizes["2"], uids["2"]
			}
			if len(top) != 1 || top[0].Size != wantTop || top[0].UIDL != wantUID {
				t.Errorf("TOP events %+v, want size %d and uidl %q", top, wantTop, wantUID)
			}
		})
	}
}

// TestLegacyLoginPlainWithoutSASL: with upstream.login plain in front of
// popa3d, which has no SASL, the proxy sends no credentials: each login,
// right password or not, gets -ERR [SYS/TEMP], never [AUTH], counts as no
// failed login, and the operational log says what to fix.
func TestLegacyLoginPlainWithoutSASL(t *testing.T) {
	srv := testlegacy.StartPopa3d(t)
	var log testproc.SyncBuffer
	addr, _, rec := startProxy(t, srv.Addr(), func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.LoginPlain = true })
		o.Limits = legacyLimits
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	for _, pass := range []string{srv.Password(), "wrong1", "wrong2", "wrong3", srv.Password()} {
		c := pop3test.Dial(t, addr)
		c.Cmd("USER "+srv.User(), "+OK*")
		c.Cmd("PASS "+pass, "-ERR [SYS/TEMP] *")
	}
	for _, ev := range authEvents(rec) {
		if ev.OK || ev.Code != "SYS/TEMP" {
			t.Errorf("auth event %+v, want a failure with SYS/TEMP", ev)
		}
	}
	if rules := rec.policyRules(); len(rules) != 0 {
		t.Errorf("policy events %q", rules)
	}
	if got := log.String(); !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "SASL PLAIN") {
		t.Errorf("operational log %q, want an error naming SASL PLAIN", got)
	}
}
