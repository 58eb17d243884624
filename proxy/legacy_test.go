package proxy_test

import (
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/testlegacy"
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
		o.Upstream.ResponseTimeout = 10 * time.Second
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
				c := dial(t, addr)
				c.cmd("USER "+srv.User(), "+OK*")
				c.cmd("PASS "+srv.Password(), tc.reply)
			}
			for _, ev := range authEvents(rec) {
				if ev.OK || ev.Code != "" {
					t.Errorf("auth event %+v, want a failure without code", ev)
				}
			}
			if err := srv.SetMailboxReadable(true); err != nil {
				t.Fatal(err)
			}
			dial(t, addr).login(srv.User(), srv.Password())
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
		c := dial(t, addr)
		c.cmd("USER "+srv.User(), "+OK*")
		c.cmd("PASS "+guess, "-ERR Authentication failed (bad password?)")
	}
	c := dial(t, addr)
	c.cmd("USER "+srv.User(), "+OK*")
	c.cmd("PASS "+srv.Password(), "-ERR [AUTH] too many failed logins, try again later")
	if !rec.hasPolicy("limit.failed_logins_user") {
		t.Errorf("policy events %q, want limit.failed_logins_user", rec.policyRules())
	}
}
