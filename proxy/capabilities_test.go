package proxy_test

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/internal/testlegacy"
	"github.com/popproxy/popproxy/proxy"
)

// capaLines asks CAPA and returns its lines.
func capaLines(c *pop3test.Client) []string {
	c.Cmd("CAPA", "+OK*")
	return strings.Split(strings.TrimSuffix(c.Body(), "\r\n"), "\r\n")
}

// sharedLines keeps the capabilities that may not differ between
// AUTHORIZATION and TRANSACTION (RFC 2449 §6): it drops STLS (before TLS
// only), XPOPPROXY (popproxy's own, before login), and the per-user EXPIRE
// and LOGIN-DELAY.
func sharedLines(caps []string) []string {
	return slices.DeleteFunc(slices.Clone(caps), func(c string) bool {
		tag, _, _ := strings.Cut(c, " ")
		return tag == "STLS" || tag == "XPOPPROXY" || tag == "EXPIRE" || tag == "LOGIN-DELAY"
	})
}

// checkCapaSession logs in with CAPA before and after, and checks that both
// list the same shared capabilities, with TOP and UIDL as want says.
func checkCapaSession(t *testing.T, addr, user, pass string, want ...string) {
	t.Helper()
	c := pop3test.Dial(t, addr)
	before := capaLines(c)
	c.Login(user, pass)
	after := capaLines(c)
	c.Cmd("QUIT", "+OK*")
	if !slices.Equal(sharedLines(before), sharedLines(after)) {
		t.Errorf("CAPA before login %q, after %q", before, after)
	}
	var got []string
	for _, c := range before {
		if c == "TOP" || c == "UIDL" {
			got = append(got, c)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("CAPA lists %q of TOP and UIDL, want %q", got, want)
	}
}

// TestCapaLegacyLearnt: popa3d has no CAPA. The first session's CAPA lists
// neither TOP nor UIDL, before login or after; that login tries UIDL 1 and
// TOP 1 0, and later sessions list both, before and after login, and both
// work. An empty mailbox shows UIDL only.
func TestCapaLegacyLearnt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fill   bool
		learnt []string
	}{
		{"message", true, []string{"TOP", "UIDL"}},
		{"empty mailbox", false, []string{"UIDL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testlegacy.StartPopa3d(t)
			if tc.fill {
				if err := srv.AddMessage([]byte("Subject: probe\r\n\r\nhello\r\n")); err != nil {
					t.Fatal(err)
				}
			}
			addr, _, rec := startProxy(t, srv.Addr(), func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = nil }) })
			checkCapaSession(t, addr, srv.User(), srv.Password())
			checkCapaSession(t, addr, srv.User(), srv.Password(), tc.learnt...)
			if tc.fill {
				c := pop3test.Dial(t, addr)
				c.Login(srv.User(), srv.Password())
				c.Cmd("UIDL 1", "+OK 1 *")
				c.Cmd("TOP 1 0", "+OK*")
				c.Body()
				c.Cmd("QUIT", "+OK*")
			}
			// The probes are the proxy's, not the client's.
			if n := len(rec.commands("TOP")) + len(rec.commands("STAT")); tc.fill && n != 1 || !tc.fill && n != 0 {
				t.Errorf("%d TOP and STAT commands audited, want only the client's", n)
			}
		})
	}
}

// TestCapaDovecotLearnt: Dovecot lists TOP and UIDL in its CAPA after login;
// from the second session on, popproxy lists them before and after login.
func TestCapaDovecotLearnt(t *testing.T) {
	d := sharedDovecot(t)
	addr, _, _ := startProxy(t, d.Addr(), func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = nil }) })
	checkCapaSession(t, addr, "capa", dovecotUsers["capa"])
	checkCapaSession(t, addr, "capa", dovecotUsers["capa"], "TOP", "UIDL")
}

// TestCapaOverride: configured capabilities are announced from the first
// session on, and nothing is probed.
func TestCapaOverride(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		for line := c.Line(); line != ""; line = c.Line() {
			mu.Lock()
			seen = append(seen, line)
			mu.Unlock()
			switch line {
			case "CAPA":
				c.Send("-ERR unknown command\r\n")
			default:
				c.Send("+OK\r\n")
			}
		}
	})
	addr, _, _ := startProxy(t, up, func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = []string{"uidl"} }) })
	checkCapaSession(t, addr, "u", "p", "UIDL")
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"CAPA", "QUIT"}; !slices.Equal(seen, want) {
		t.Errorf("the server received %q after login, want the client's %q", seen, want)
	}
}

// TestCapaIntersection: before login the user, and so the upstream, is
// unknown: CAPA lists what every upstream a route leads to has, and nothing
// an upstream not learnt yet may lack. An upstream no route leads to does
// not count.
func TestCapaIntersection(t *testing.T) {
	addr := "127.0.0.1:1" // never dialled
	ups := []route.Upstream{{Name: "full", Addresses: []string{addr}}, {Name: "uidl", Addresses: []string{addr}},
		{Name: "unknown", Addresses: []string{addr}}, {Name: "none", Addresses: []string{addr}}}
	for _, tc := range []struct {
		name    string
		domains map[string]string
		want    []string
	}{
		{"one", map[string]string{"a.example": "full"}, []string{"TOP", "UIDL"}},
		{"both", map[string]string{"a.example": "full", "b.example": "uidl"}, []string{"UIDL"}},
		{"one unknown", map[string]string{"a.example": "full", "c.example": "unknown"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			router, err := route.New(route.Config{Upstreams: ups, Domains: tc.domains})
			if err != nil {
				t.Fatal(err)
			}
			addr, _, _ := startProxy(t, addr, func(o *proxy.Options) {
				o.Router = router
				o.Upstreams = map[string]proxy.Upstream{
					"full": {Capabilities: []string{"TOP", "UIDL"}}, "uidl": {Capabilities: []string{"UIDL"}},
					"unknown": {}, "none": {Capabilities: []string{}},
				}
			})
			var got []string
			for _, c := range capaLines(pop3test.Dial(t, addr)) {
				if c == "TOP" || c == "UIDL" {
					got = append(got, c)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("CAPA lists %q of TOP and UIDL, want %q", got, tc.want)
			}
		})
	}
}

// TestCapaReload: what was learnt of an upstream survives a reload that
// keeps its addresses (SIGHUP, for logrotate, must not make CAPA flap), and
// is forgotten when they change: another server may answer there.
func TestCapaReload(t *testing.T) {
	server := func(c *pop3test.UpstreamConn) {
		c.Login()
		for line := c.Line(); line != ""; line = c.Line() {
			switch line {
			case "CAPA":
				c.Send("+OK\r\nTOP\r\nUIDL\r\n.\r\n")
			default:
				c.Send("+OK\r\n")
			}
		}
	}
	first, second := pop3test.FakeUpstream(t, server), pop3test.FakeUpstream(t, server)
	config := func(addr string) route.Config {
		return route.Config{Upstreams: []route.Upstream{{Name: "store", Addresses: []string{addr}}}, Default: "store"}
	}
	router, err := route.New(config(first))
	if err != nil {
		t.Fatal(err)
	}
	addr, _, _ := startProxy(t, first, func(o *proxy.Options) {
		o.Router = router
		o.Upstreams = map[string]proxy.Upstream{"store": {}}
	})
	checkCapaSession(t, addr, "u", "p")
	for _, step := range []struct {
		to   string
		want []string
	}{{first, []string{"TOP", "UIDL"}}, {second, nil}} {
		if err := router.Update(config(step.to)); err != nil {
			t.Fatal(err)
		}
		checkCapaSession(t, addr, "u", "p", step.want...)
	}
}
