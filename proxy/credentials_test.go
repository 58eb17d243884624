package proxy_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/popproxy/popproxy/internal/pop3"
	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/proxy"
)

// TestBadCredentialsNeverGoUpstream checks that USER/PASS, AUTH PLAIN and
// AUTH LOGIN all refuse what pop3.CheckCredentials refuses, before anything
// is sent upstream, and audit it without the value.
func TestBadCredentialsNeverGoUpstream(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.MaxBadCommands = 100 })
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	// Every bad value holds "MARK", which must reach no audit record.
	bad := []struct{ user, pass string }{
		{"alice", "MARK\x01"},
		{"alice", "MARK\r\nQUIT"},
		{"alice", "MARK\x7f"},
		{"alice", "MARK\xff"},
		{"MARK\x1b[2J", "secret"},
		{"MARK alice", "secret"},
		{"MARK" + strings.Repeat("a", route.MaxUserLen), "secret"},
		{"alice", "MARK" + strings.Repeat("p", pop3.MaxPasswordLen)},
	}
	c := pop3test.Dial(t, addr)
	refused := 0
	for _, b := range bad {
		c.Cmd("AUTH PLAIN "+b64("\x00"+b.user+"\x00"+b.pass), "-ERR invalid credentials: *")
		c.Cmd("AUTH LOGIN "+b64(b.user), "+ UGFzc3dvcmQ6")
		c.Cmd(b64(b.pass), "-ERR invalid credentials: *")
		refused += 2
	}
	c.Cmd("AUTH PLAIN "+b64("MARK\x01\x00alice\x00secret"), "-ERR invalid credentials: authorization identity *")
	c.Cmd("AUTH LOGIN "+b64("MARK\x00alice"), "+ UGFzc3dvcmQ6") // a NUL would end PLAIN's field
	c.Cmd(b64("secret"), "-ERR invalid credentials: user name holds a control character")
	// A USER or PASS line cannot carry controls (ParseCommand refuses them),
	// but it can carry invalid UTF-8.
	c.Cmd("USER MARK\xff", "+OK*")
	c.Cmd("PASS secret", "-ERR invalid credentials: user name is not valid UTF-8")
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS MARK\xc3", "-ERR invalid credentials: password is not valid UTF-8")
	refused += 4
	// USER alice was dialled early (see predial.go), but nothing was sent.
	if got := up.received(); got != "" {
		t.Fatalf("the upstream received %q with bad credentials", got)
	}
	c.Login("alice", "secret") // the upstream was there all along
	if got := up.received(); got != "USER alice\r\nPASS secret\r\n" {
		t.Fatalf("the upstream received %q, want one login", got)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	syntax := 0
	for _, p := range rec.policy {
		if strings.Contains(p.Detail, "MARK") {
			t.Errorf("policy event quotes the value: %+v", p)
		}
		if p.Rule == "syntax" && strings.HasPrefix(p.Detail, "invalid credentials: ") {
			syntax++
		}
	}
	if syntax != refused {
		t.Errorf("%d syntax policy events for %d refused logins", syntax, refused)
	}
	for _, a := range rec.auths {
		if strings.Contains(a.User, "MARK") {
			t.Errorf("auth event for a refused login: %+v", a)
		}
	}
}

// TestMaxUserLenIsRoutes keeps the two limits one: no user name passes the
// proxy's check only to be refused for its length by the router.
func TestMaxUserLenIsRoutes(t *testing.T) {
	if pop3.MaxUserLen != route.MaxUserLen {
		t.Fatalf("pop3.MaxUserLen = %d, route.MaxUserLen = %d", pop3.MaxUserLen, route.MaxUserLen)
	}
}
