package proxy_test

import (
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/pop3"
	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/proxy"
)

func withLimits(l proxy.Limits) func(*proxy.Options) {
	return func(o *proxy.Options) { o.Limits = l }
}

// acceptingUpstream accepts any login and answers every command +OK; RETR
// gets body, if set.
func acceptingUpstream(t testing.TB, body string) string {
	return pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK ready\r\n")
		for line := c.Line(); line != ""; line = c.Line() {
			switch {
			case strings.HasPrefix(line, "RETR") && body != "":
				c.Send("+OK\r\n" + body + ".\r\n")
			case line == "QUIT":
				c.Send("+OK bye\r\n")
				return
			default:
				c.Send("+OK\r\n")
			}
		}
	})
}

func (r *recorder) hasPolicy(rule proxy.Rule) bool {
	for _, got := range r.policyRules() {
		if got == rule {
			return true
		}
	}
	return false
}

func TestLimitMaxSessions(t *testing.T) {
	up := acceptingUpstream(t, "")
	addr, srv, rec := startProxy(t, up, withLimits(proxy.Limits{MaxSessions: 2}))
	a, b := pop3test.Dial(t, addr), pop3test.Dial(t, addr)
	refused := dialRaw(t, addr)
	if line := readLine(t, refused); line != "-ERR [SYS/TEMP] too many connections, try again later" {
		t.Fatalf("third session got %q", line)
	}
	if !rec.hasPolicy("limit.max_sessions") {
		t.Error("no policy event")
	}
	a.Cmd("QUIT", "+OK*")
	waitFor(t, func() bool { return srv.Sessions() == 1 }) // a has gone
	pop3test.Dial(t, addr)                                 // under the limit again
	b.Cmd("CAPA", "+OK*")
}

func TestLimitPerIPSessionsAndTrusted(t *testing.T) {
	up := acceptingUpstream(t, "")
	addr, _, rec := startProxy(t, up, withLimits(proxy.Limits{PerIPSessions: 1}))
	pop3test.Dial(t, addr)
	if line := readLine(t, dialRaw(t, addr)); !strings.HasPrefix(line, "-ERR [SYS/TEMP]") {
		t.Fatalf("second session from one address got %q", line)
	}
	rec.mu.Lock()
	if p := rec.policy[0]; p.Rule != "limit.ip_sessions" || p.Key != "127.0.0.1/32" || p.Value != 1 || p.Listener != "test" || p.Count != 1 {
		t.Errorf("policy event %+v", p)
	}
	rec.mu.Unlock()

	trusted, _ := ratelimit.ParseNetworks([]string{"127.0.0.0/8"})
	addr, _, _ = startProxy(t, up, withLimits(proxy.Limits{PerIPSessions: 1, Trusted: trusted}))
	pop3test.Dial(t, addr)
	pop3test.Dial(t, addr) // exempt
}

func TestLimitPerIPConnectionRate(t *testing.T) {
	up := acceptingUpstream(t, "")
	addr, _, rec := startProxy(t, up, withLimits(proxy.Limits{PerIPRate: 0.5, PerIPBurst: 2}))
	pop3test.Dial(t, addr).Cmd("QUIT", "+OK*")
	pop3test.Dial(t, addr).Cmd("QUIT", "+OK*")
	if line := readLine(t, dialRaw(t, addr)); !strings.HasPrefix(line, "-ERR [SYS/TEMP]") {
		t.Fatalf("third connection within the burst got %q", line)
	}
	if !rec.hasPolicy("limit.ip_connection_rate") {
		t.Error("no policy event")
	}
}

// TestLimitFailedLogins shows the per-address and per-user buckets working
// independently, blocks answered [AUTH], successes not counted, and the
// progressive delay.
func TestLimitFailedLogins(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), withLimits(proxy.Limits{
		FailuresPerIP:   ratelimit.FailureConfig{MaxFailures: 4, Window: time.Minute, Block: time.Minute},
		FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute},
	}))
	c := pop3test.Dial(t, addr)
	for range 5 { // successes do not consume the failure budget
		c.Login("bob", "hunter2")
		c.Cmd("QUIT", "+OK*")
		c = pop3test.Dial(t, addr)
	}
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS wrong1", "-ERR [AUTH] *")
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS wrong2", "-ERR [AUTH] *")
	// alice is blocked, even with her password; bob, from the same address, is not.
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "-ERR [AUTH] too many failed logins, try again later")
	if !rec.hasPolicy("limit.failed_logins_user") {
		t.Error("no per-user policy event")
	}
	c.Login("bob", "hunter2")
	c.Cmd("QUIT", "+OK*")

	// Two more failures, for another user, reach the address's limit.
	c = pop3test.Dial(t, addr)
	c.Cmd("USER carol", "+OK*")
	c.Cmd("PASS x", "-ERR [AUTH] *")
	c.Cmd("USER carol", "+OK*")
	c.Cmd("PASS y", "-ERR [AUTH] *")
	c.Cmd("USER bob", "+OK*")
	c.Cmd("PASS hunter2", "-ERR [AUTH] too many failed logins, try again later")
	if !rec.hasPolicy("limit.failed_logins_ip") {
		t.Error("no per-address policy event")
	}

	// Trusted networks are exempt.
	trusted, _ := ratelimit.ParseNetworks([]string{"127.0.0.1"})
	addr, _, _ = startProxy(t, up.Addr().String(), withLimits(proxy.Limits{
		Trusted:         trusted,
		FailuresPerIP:   ratelimit.FailureConfig{MaxFailures: 1, Block: time.Minute},
		FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 1, Block: time.Minute},
	}))
	c = pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS wrong", "-ERR [AUTH] *")
	c.Login("alice", "secret")
}

// TestLimitRepeatedPassword: a client retrying one stale password is counted
// once and never blocked, while one password sprayed over several users from
// one address counts for each user there.
func TestLimitRepeatedPassword(t *testing.T) {
	up := passwordUpstream(t, "secret", nil)
	addr, _, rec := startProxy(t, up, withLimits(proxy.Limits{
		FailuresPerIP:   ratelimit.FailureConfig{MaxFailures: 3, Window: time.Minute, Block: time.Minute},
		FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute},
	}))
	for range 5 {
		c := pop3test.Dial(t, addr)
		c.Cmd("USER alice", "+OK*")
		c.Cmd("PASS stale", "-ERR [AUTH] invalid credentials")
	}
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("QUIT", "+OK*")
	if rules := rec.policyRules(); len(rules) != 0 {
		t.Errorf("policy events %q after one password tried five times", rules)
	}

	c = pop3test.Dial(t, addr)
	for _, user := range []string{"bob", "carol"} {
		c.Cmd("USER "+user, "+OK*")
		c.Cmd("PASS 123456", "-ERR [AUTH] invalid credentials")
	}
	c.Cmd("USER dave", "+OK*")
	c.Cmd("PASS secret", "-ERR [AUTH] too many failed logins, try again later")
	if !rec.hasPolicy("limit.failed_logins_ip") {
		t.Error("no per-address block after alice's and two sprayed failures")
	}
}

// TestLimitServerCodes: which of a server's login -ERRs count as failed
// logins. [SYS/TEMP], [SYS/PERM], [IN-USE] and [LOGIN-DELAY] never do, however
// many passwords; [AUTH], no code and an unknown code count, each relayed as
// the server gave it.
func TestLimitServerCodes(t *testing.T) {
	// The password is "<code> <n>"; "-" stands for no code.
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK ready\r\n")
		for line := c.Line(); line != ""; line = c.Line() {
			code, isPass := strings.CutPrefix(line, "PASS ")
			code, _, _ = strings.Cut(code, " ")
			switch {
			case !isPass:
				c.Send("+OK\r\n")
			case code == "-":
				c.Send("-ERR refused\r\n")
			default:
				c.Send("-ERR [" + code + "] refused\r\n")
			}
		}
	})
	addr, _, rec := startProxy(t, up, withLimits(proxy.Limits{
		FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute},
	}))
	for i, tc := range []struct {
		code   string
		counts bool
	}{
		{"SYS/TEMP", false}, {"SYS/PERM", false}, {"SYS/TEMP/QUOTA", false}, {"IN-USE", false}, {"LOGIN-DELAY", false},
		{"AUTH", true}, {"-", true}, {"X-VENDOR", true},
	} {
		user := "user" + strconv.Itoa(i)
		audited, reply := tc.code, "-ERR ["+tc.code+"] refused"
		if tc.code == "-" {
			audited, reply = "", "-ERR refused"
		}
		c := pop3test.Dial(t, addr)
		for n := range 3 {
			c.Cmd("USER "+user, "+OK*")
			want := reply
			if tc.counts && n == 2 {
				want = "-ERR [AUTH] too many failed logins, try again later"
			}
			c.Cmd("PASS "+tc.code+" "+strconv.Itoa(n), want)
			if ev := lastAuth(t, rec); n == 0 && ev.Code != audited {
				t.Errorf("%s: audited code %q", tc.code, ev.Code)
			}
		}
	}
}

func TestLimitFailedLoginDelay(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), withLimits(proxy.Limits{
		FailuresPerUser: ratelimit.FailureConfig{BaseDelay: 150 * time.Millisecond, MaxDelay: time.Second},
	}))
	c := pop3test.Dial(t, addr)
	var took []time.Duration
	for i := range 3 {
		c.Cmd("USER alice", "+OK*")
		start := time.Now()
		c.Cmd("PASS wrong"+strconv.Itoa(i), "-ERR [AUTH] *")
		took = append(took, time.Since(start))
	}
	for i, want := range []time.Duration{150, 300, 600} {
		if got := took[i]; got < want*time.Millisecond || got > want*time.Millisecond+time.Second {
			t.Errorf("failure %d answered after %v, want about %vms", i+1, got, want)
		}
	}
}

func TestLimitPerUserSessions(t *testing.T) {
	var quits atomic.Int32
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		for line := c.Line(); line != ""; line = c.Line() {
			if line == "QUIT" {
				quits.Add(1)
			}
			c.Send("+OK\r\n")
		}
	})
	addr, _, rec := startProxy(t, up, withLimits(proxy.Limits{PerUserSessions: 1}))
	first := pop3test.Dial(t, addr)
	first.Login("alice", "pw")
	second := pop3test.Dial(t, addr)
	second.Cmd("USER Alice", "+OK*") // case variants share the limit
	second.Cmd("PASS pw", "-ERR [IN-USE] mailbox in use by another session")
	if !rec.hasPolicy("limit.user_sessions") {
		t.Error("no policy event")
	}
	first.Cmd("QUIT", "+OK*")
	rec.waitClose(t)
	second.Login("alice", "pw")
	if n := quits.Load(); n != 1 {
		t.Errorf("%d QUITs upstream, want only the client's own", n)
	}
}

func TestLimitLoginDelay(t *testing.T) {
	up := acceptingUpstream(t, "")
	addr, _, _ := startProxy(t, up, withLimits(proxy.Limits{LoginDelay: time.Second}))
	c := pop3test.Dial(t, addr)
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); !strings.Contains(capa, "LOGIN-DELAY 1\r\n") {
		t.Errorf("CAPA %q", capa)
	}
	c.Login("alice", "pw")
	c.Cmd("QUIT", "+OK*")
	c = pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS pw", "-ERR [LOGIN-DELAY] wait 1 seconds*")
	time.Sleep(1100 * time.Millisecond)
	c.Login("alice", "pw")
}

// TestLimitCommandRate checks that the command rate paces a session, audits
// the first hold-up, and refuses only a client so far ahead that it would
// wait more than a few seconds.
func TestLimitCommandRate(t *testing.T) {
	up := acceptingUpstream(t, "")
	addr, _, rec := startProxy(t, up, withLimits(proxy.Limits{CommandRate: 10, CommandBurst: 5}))
	c := pop3test.Dial(t, addr)
	c.Login("alice", "pw")
	start := time.Now()
	c.Send(strings.Repeat("NOOP\r\n", 15))
	for range 15 {
		c.Expect("+OK")
	}
	// 5 at once, then 10 at 10 per second.
	if took := time.Since(start); took < 900*time.Millisecond || took > 2*time.Second {
		t.Errorf("15 NOOPs took %v, want about 1s", took)
	}
	if !rec.hasPolicy("limit.command_rate.throttled") {
		t.Error("no policy event for the hold-up")
	}

	addr, _, rec = startProxy(t, up, withLimits(proxy.Limits{CommandRate: 0.1, CommandBurst: 1}))
	c = pop3test.Dial(t, addr)
	c.Login("alice", "pw")
	c.Cmd("NOOP", "+OK")
	c.Cmd("NOOP", "-ERR [SYS/TEMP] too many commands, slow down") // would wait 10 s
	if !rec.hasPolicy("limit.command_rate") {
		t.Error("no policy event for the refusal")
	}
}

func TestLimitMaxRetrievals(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), withLimits(proxy.Limits{MaxRetrievals: 2}))
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("RETR 1", "+OK*")
	c.Body()
	c.Cmd("TOP 2 0", "+OK*")
	c.Body()
	c.Cmd("RETR 3", "-ERR [SYS/PERM] retrieval limit for this session reached")
	c.Cmd("DELE 3", "+OK*")
}

// TestLimitBandwidth measures a RETR through a session limited to 1 MB/s:
// the transfer must land within ±15% of the configured rate.
func TestLimitBandwidth(t *testing.T) {
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", 25_000) // 2 MB
	up := acceptingUpstream(t, body)
	for _, l := range []proxy.Limits{{SessionBandwidth: 1 << 20}, {UserBandwidth: 1 << 20}} {
		addr, _, _ := startProxy(t, up, withLimits(l))
		c := pop3test.Dial(t, addr)
		c.Login("alice", "pw")
		start := time.Now()
		c.Cmd("RETR 1", "+OK")
		if got := c.Body(); len(got) != len(body) {
			t.Fatalf("got %d bytes", len(got))
		}
		took := time.Since(start)
		// The first burst (a tenth of a second's worth) goes at once.
		want := time.Duration(float64(len(body)-(1<<20)/10) / (1 << 20) * float64(time.Second))
		// Faster than the limit is a bug; slower may be a busy machine, so
		// only four times too slow fails.
		if took < want*85/100 || took > want*4 {
			t.Errorf("%+v: RETR of %d bytes took %v, want %v (-15%%, +300%%)", l, len(body), took, want)
		}
	}
}

// TestSetLimits tightens the limits under an open session: it goes on, and
// new connections meet the new limit.
func TestSetLimits(t *testing.T) {
	up := acceptingUpstream(t, "")
	addr, srv, _ := startProxy(t, up, withLimits(proxy.Limits{MaxSessions: 10}))
	c := pop3test.Dial(t, addr)
	c.Login("alice", "pw")
	srv.SetLimits(proxy.Limits{MaxSessions: 1, PerIPRate: rate.Inf})
	c.Cmd("NOOP", "+OK")
	if line := readLine(t, dialRaw(t, addr)); !strings.HasPrefix(line, "-ERR [SYS/TEMP]") {
		t.Fatalf("new session beyond the new limit got %q", line)
	}
	c.Cmd("QUIT", "+OK*")
}

// dialAdmitted connects to addr until a session is admitted (the greeting is
// +OK), for up to 5 seconds: a closed session gives its slots back only
// after the client has seen it end.
func dialAdmitted(t *testing.T, addr string) *pop3test.Client {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn := dialRaw(t, addr)
		c := pop3test.NewClient(t, conn)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := c.R.ReadString('\n')
		if strings.HasPrefix(line, "+OK ") {
			return c
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no session admitted within 5s; last greeting %q (%v)", line, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLimitPerIPAcrossPrefixChange changes limits.ipv6_prefix while a
// session from ::1 is open. When it ends it gives back the slot it took, under
// the key it took it: the old prefix's count does not leak (::1 refused until
// a restart), and the new prefix's count, held by another session, does not
// drop.
func TestLimitPerIPAcrossPrefixChange(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := proxy.New(oneUpstream(t, proxy.Upstream{Addresses: []string{acceptingUpstream(t, "")}}, proxy.Options{
		Limits: proxy.Limits{PerIPSessions: 1, IPv6Prefix: 64},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}))
	go srv.Serve(l, proxy.Listener{Name: "v6"})
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()
	refused := func(when string) {
		t.Helper()
		if line := readLine(t, dialRaw(t, addr)); !strings.HasPrefix(line, "-ERR [SYS/TEMP]") {
			t.Fatalf("%s: got %q, want a refusal", when, line)
		}
	}

	a := pop3test.Dial(t, addr) // holds ::/64
	refused("second session in ::/64")
	srv.SetLimits(proxy.Limits{PerIPSessions: 1, IPv6Prefix: 128})
	pop3test.Dial(t, addr) // b holds ::1/128
	a.Cmd("QUIT", "+OK*")
	srv.SetLimits(proxy.Limits{PerIPSessions: 1, IPv6Prefix: 64})
	dialAdmitted(t, addr) // a gave back ::/64
	srv.SetLimits(proxy.Limits{PerIPSessions: 1, IPv6Prefix: 128})
	refused("b still holds ::1/128")
}

// passwordUpstream accepts any user name with password pass, by USER/PASS or
// AUTH PLAIN (with any authorization identity), refuses every other password
// with -ERR [AUTH], and answers every other command +OK. If logins is not
// nil, it receives each accepted login as the upstream saw it: the user
// name, or "authcid as authzid" with an authorization identity.
func passwordUpstream(t testing.TB, pass string, logins chan<- string) string {
	return pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK ready\r\n")
		var user string
		for line := c.Line(); line != ""; line = c.Line() {
			verb, arg, _ := strings.Cut(line, " ")
			var who, got string
			switch verb {
			case "USER":
				user = arg
				c.Send("+OK\r\n")
				continue
			case "PASS":
				who, got = user, arg
			case "AUTH":
				_, resp, _ := strings.Cut(arg, " ")
				msg, _ := pop3.DecodeSASL(resp)
				authzid, authcid, passwd, _ := pop3.ParsePlain(msg)
				who, got = authcid, passwd
				if authzid != "" {
					who = authcid + " as " + authzid
				}
			case "QUIT":
				c.Send("+OK bye\r\n")
				return
			case "CAPA":
				c.Send("+OK\r\nSASL PLAIN\r\nTOP\r\nUIDL\r\n.\r\n")
				continue
			default:
				c.Send("+OK\r\n")
				continue
			}
			if got != pass {
				c.Send("-ERR [AUTH] invalid credentials\r\n")
				continue
			}
			if logins != nil {
				logins <- who
			}
			c.Send("+OK logged in\r\n")
		}
	})
}

// stripDomainRouter routes every user to the upstream "store" at addr, as
// the name before the '@', except users at other.example, who go to the
// upstream "other", also at addr.
func stripDomainRouter(t *testing.T, addr string) func(*proxy.Options) {
	t.Helper()
	router, err := route.New(route.Config{
		Upstreams:   []route.Upstream{{Name: "store", Addresses: []string{addr}}, {Name: "other", Addresses: []string{addr}}},
		Domains:     map[string]string{"other.example": "other"},
		Default:     "store",
		StripDomain: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return func(o *proxy.Options) {
		o.Router = router
		o.Upstreams = map[string]proxy.Upstream{"store": {}, "other": {}}
	}
}

// withRoutedLimits combines stripDomainRouter and withLimits.
func withRoutedLimits(t *testing.T, addr string, l proxy.Limits) func(*proxy.Options) {
	t.Helper()
	routed := stripDomainRouter(t, addr)
	return func(o *proxy.Options) {
		routed(o)
		o.Limits = l
	}
}

// TestLimitFailedLoginsAcrossDomains guesses alice's password under several
// domains that strip_domain sends upstream as "alice": they share one budget,
// so the right password is then refused too. The same login on another
// upstream is another user.
func TestLimitFailedLoginsAcrossDomains(t *testing.T) {
	up := passwordUpstream(t, "secret", nil)
	addr, _, rec := startProxy(t, up, withRoutedLimits(t, up, proxy.Limits{
		FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 3, Window: time.Minute, Block: time.Minute},
	}))
	c := pop3test.Dial(t, addr)
	for i, user := range []string{"alice@a.example", "alice@b.example", "Alice@c.example"} {
		c.Cmd("USER "+user, "+OK*")
		c.Cmd("PASS wrong"+strconv.Itoa(i), "-ERR [AUTH] invalid credentials")
	}
	c.Cmd("USER alice@d.example", "+OK*")
	c.Cmd("PASS secret", "-ERR [AUTH] too many failed logins, try again later")
	rec.mu.Lock()
	p := rec.policy[len(rec.policy)-1]
	rec.mu.Unlock()
	if p.Rule != "limit.failed_logins_user" || p.Key != "store/alice" {
		t.Errorf("policy event %+v, want limit.failed_logins_user on store/alice", p)
	}
	if ev := lastAuth(t, rec); ev.OK || ev.User != "alice@d.example" || ev.Route != "store" || ev.Upstream != "" {
		t.Errorf("auth event %+v, want a refusal before the upstream", ev)
	}
	c.Login("bob@a.example", "secret")
	c.Cmd("QUIT", "+OK*")
	pop3test.Dial(t, addr).Login("alice@other.example", "secret")
}

// TestLimitUsernameCase: by default ASCII case variants of a login share its
// failure budget, but no other character is folded; with KeepUsernameCase
// none are.
func TestLimitUsernameCase(t *testing.T) {
	up := passwordUpstream(t, "secret", nil)
	failures := ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute}
	guess := func(addr string, users ...string) *pop3test.Client {
		c := pop3test.Dial(t, addr)
		for i, user := range users {
			c.Cmd("USER "+user, "+OK*")
			c.Cmd("PASS wrong"+strconv.Itoa(i), "-ERR [AUTH] invalid credentials")
		}
		return c
	}

	addr, _, _ := startProxy(t, up, withLimits(proxy.Limits{FailuresPerUser: failures}))
	c := guess(addr, "KIM", "kIm")
	c.Cmd("USER kim", "+OK*")
	c.Cmd("PASS secret", "-ERR [AUTH] too many failed logins, try again later")
	// U+212A KELVIN SIGN lowers to 'k' in Unicode, but it is not an ASCII letter.
	c.Login("\u212Aim", "secret")

	addr, _, _ = startProxy(t, up, withLimits(proxy.Limits{FailuresPerUser: failures, KeepUsernameCase: true}))
	c = guess(addr, "KIM", "KIM")
	c.Cmd("USER KIM", "+OK*")
	c.Cmd("PASS secret", "-ERR [AUTH] too many failed logins, try again later")
	c.Login("kim", "secret")
}

// TestLimitPerUserSessionsAcrossDomains logs in as alice under two domains
// that strip_domain sends upstream as "alice": one mailbox, one session slot.
func TestLimitPerUserSessionsAcrossDomains(t *testing.T) {
	up := passwordUpstream(t, "secret", nil)
	addr, _, rec := startProxy(t, up, withRoutedLimits(t, up, proxy.Limits{PerUserSessions: 1}))
	first := pop3test.Dial(t, addr)
	first.Login("alice@a.example", "secret")
	second := pop3test.Dial(t, addr)
	second.Cmd("USER ALICE@b.example", "+OK*")
	second.Cmd("PASS secret", "-ERR [IN-USE] mailbox in use by another session")
	if !rec.hasPolicy("limit.user_sessions") {
		t.Error("no policy event")
	}
	pop3test.Dial(t, addr).Login("alice@other.example", "secret") // another upstream's alice
	first.Cmd("QUIT", "+OK*")
}

// TestLimitLoginDelayAcrossDomains: alice under two domains that
// strip_domain sends upstream as "alice" has one LOGIN-DELAY interval.
func TestLimitLoginDelayAcrossDomains(t *testing.T) {
	up := passwordUpstream(t, "secret", nil)
	addr, _, _ := startProxy(t, up, withRoutedLimits(t, up, proxy.Limits{LoginDelay: time.Minute}))
	c := pop3test.Dial(t, addr)
	c.Login("alice@a.example", "secret")
	c.Cmd("QUIT", "+OK*")
	c = pop3test.Dial(t, addr)
	c.Cmd("USER alice@b.example", "+OK*")
	c.Cmd("PASS secret", "-ERR [LOGIN-DELAY] wait * seconds before logging in again")
}

// authPlain sends AUTH PLAIN with an initial response and expects a status
// matching pattern.
func authPlain(c *pop3test.Client, authzid, authcid, pass, pattern string) {
	c.T.Helper()
	c.Cmd("AUTH PLAIN "+pop3.EncodeSASL([]byte(authzid+"\x00"+authcid+"\x00"+pass)), pattern)
}

// TestLimitAuthzid logs in with SASL authorization identities (master-user
// logins): failures count against the authentication identity, whose
// password is guessed; the login is routed, and sessions counted, on the
// authorization identity, whose mailbox it is; the audit names both.
func TestLimitAuthzid(t *testing.T) {
	logins := make(chan string, 10)
	up := passwordUpstream(t, "secret", logins)
	routed := stripDomainRouter(t, up)
	addr, _, rec := startProxy(t, up, func(o *proxy.Options) {
		routed(o)
		o.Upstreams["store"] = proxy.Upstream{LoginPlain: true}
		o.Limits = proxy.Limits{
			FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute},
			PerUserSessions: 1,
		}
	})
	upstreamSaw := func(want string) {
		t.Helper()
		select {
		case got := <-logins:
			if got != want {
				t.Errorf("the upstream accepted %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the upstream accepted no login, want %q", want)
		}
	}

	// admin guesses while acting for alice: admin is blocked, for any mailbox...
	c := pop3test.Dial(t, addr)
	authPlain(c, "alice@a.example", "admin", "wrong1", "-ERR [AUTH] invalid credentials")
	authPlain(c, "alice@b.example", "admin", "wrong2", "-ERR [AUTH] invalid credentials")
	authPlain(c, "carol@a.example", "admin", "secret", "-ERR [AUTH] too many failed logins, try again later")
	if ev := authEvents(rec)[0]; ev.User != "admin" || ev.Authzid != "alice@a.example" || ev.Code != "AUTH" || ev.Route != "store" {
		t.Errorf("first auth event %+v", ev)
	}
	// ... and alice is not.
	alice := pop3test.Dial(t, addr)
	alice.Login("alice@c.example", "secret")
	upstreamSaw("alice")

	// bob, acting for alice, finds her mailbox in use: sessions count on alice.
	authPlain(c, "alice@d.example", "bob", "secret", "-ERR [IN-USE] mailbox in use by another session")
	upstreamSaw("bob as alice")
	if ev := lastAuth(t, rec); ev.OK || ev.User != "bob" || ev.Authzid != "alice@d.example" || ev.Code != "IN-USE" || ev.Route != "store" {
		t.Errorf("auth event %+v, want bob acting for alice refused [IN-USE]", ev)
	}

	// Naming oneself as the authorization identity is an ordinary login.
	authPlain(c, "dave@a.example", "dave@a.example", "secret", "+OK*")
	upstreamSaw("dave")
	if ev := lastAuth(t, rec); !ev.OK || ev.User != "dave@a.example" || ev.Authzid != "" {
		t.Errorf("auth event %+v", ev)
	}
}

// TestLimitFailedLoginsAcrossDomainsDovecot is the strip_domain bypass
// against a real Dovecot, which knows only "plain": wrong passwords under
// three domains block the fourth login, right password or not, before it
// reaches Dovecot.
func TestLimitFailedLoginsAcrossDomainsDovecot(t *testing.T) {
	d := newDovecot(t, testdovecot.Config{Users: map[string]string{"plain": "pw-plain"}}, nil)
	relay, tap := relayTo(t, d.Addr())
	router, err := route.New(route.Config{
		Upstreams:   []route.Upstream{{Name: "store", Addresses: []string{relay}}},
		Default:     "store",
		StripDomain: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr, _, _ := startProxy(t, "127.0.0.1:1", func(o *proxy.Options) {
		o.Router = router
		o.Upstreams = map[string]proxy.Upstream{"store": {}}
		o.Limits = proxy.Limits{FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 3, Window: time.Minute, Block: time.Minute}}
	})
	c := pop3test.Dial(t, addr)
	for i, user := range []string{"plain@a.example", "plain@b.example", "PLAIN@c.example"} {
		c.Cmd("USER "+user, "+OK*")
		c.Cmd("PASS wrong"+strconv.Itoa(i), "-ERR [AUTH] *")
	}
	if n := tap.connections(); n != 3 {
		t.Fatalf("Dovecot was asked %d times, want 3", n)
	}
	c.Cmd("USER plain@d.example", "+OK*")
	c.Cmd("PASS pw-plain", "-ERR [AUTH] too many failed logins, try again later")
	if n := tap.connections(); n != 3 {
		t.Errorf("the blocked login reached Dovecot (%d connections)", n)
	}
}

// TestLimitStateAndClear shows and clears what the proxy's own limits hold on
// a user, under the key the routes send it upstream, and on an address: an
// operator's `popproxy limits` without a shared store.
func TestLimitStateAndClear(t *testing.T) {
	up := passwordUpstream(t, "secret", nil)
	addr, srv, _ := startProxy(t, up, withRoutedLimits(t, up, proxy.Limits{
		FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute},
		FailuresPerIP:   ratelimit.FailureConfig{MaxFailures: 10, Window: time.Minute},
		PerUserSessions: 2,
		LoginDelay:      time.Minute,
	}))
	c := pop3test.Dial(t, addr)
	for i, user := range []string{"alice@a.example", "alice@b.example"} {
		c.Cmd("USER "+user, "+OK*")
		c.Cmd("PASS wrong"+strconv.Itoa(i), "-ERR [AUTH] invalid credentials")
	}
	b := pop3test.Dial(t, addr)
	b.Login("bob", "secret")

	state := func(name, key string) proxy.LimitState {
		t.Helper()
		for _, s := range srv.LimitState(name) {
			if s.Key == key {
				return s
			}
		}
		t.Fatalf("LimitState(%q) = %+v: no key %s", name, srv.LimitState(name), key)
		return proxy.LimitState{}
	}
	if s := state("Alice@c.example", "user:store/alice"); s.Failures != 2 || s.Blocked <= 50*time.Second || s.Sessions != 0 {
		t.Errorf("alice: %+v, want 2 failures and blocked", s)
	}
	if s := state("127.0.0.1", "ip:127.0.0.1/32"); s.Failures != 2 || s.Blocked != 0 || s.Sessions != 2 {
		t.Errorf("127.0.0.1: %+v, want 2 failures, not blocked, 2 connections", s)
	}
	if s := state("bob", "user:store/bob"); s.Sessions != 1 || s.LoginDelay <= 50*time.Second || s.Failures != 0 {
		t.Errorf("bob: %+v, want one session and a LOGIN-DELAY", s)
	}

	if keys := srv.ClearLimits("alice"); !slices.Contains(keys, "user:store/alice") {
		t.Errorf("ClearLimits(alice) = %v", keys)
	}
	srv.ClearLimits("bob")
	if s := state("alice", "user:store/alice"); s != (proxy.LimitState{Key: "user:store/alice"}) {
		t.Errorf("alice after ClearLimits: %+v", s)
	}
	if s := state("bob", "user:store/bob"); s.Sessions != 1 || s.LoginDelay != 0 {
		t.Errorf("bob after ClearLimits: %+v, want his session kept and no LOGIN-DELAY", s)
	}
	c.Login("alice@a.example", "secret")
	pop3test.Dial(t, addr).Login("bob", "secret")
	srv.ClearLimits("127.0.0.1")
	if s := state("127.0.0.1", "ip:127.0.0.1/32"); s.Failures != 0 {
		t.Errorf("127.0.0.1 after ClearLimits: %+v", s)
	}
}

// shuttingDownUpstream lists AUTH-RESP-CODE, accepts "good", answers
// "shutdown" with a bare "-ERR Shutting down", as a restarting Dovecot does,
// and refuses any other password with [AUTH].
func shuttingDownUpstream(t testing.TB) string {
	return pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK ready\r\n")
		for line := c.Line(); line != ""; line = c.Line() {
			verb, arg, _ := strings.Cut(line, " ")
			switch {
			case verb == "CAPA":
				c.Send("+OK\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n")
			case verb == "PASS" && arg == "good":
				c.Send("+OK logged in\r\n")
			case verb == "PASS" && strings.HasPrefix(arg, "shutdown"):
				c.Send("-ERR Shutting down\r\n")
			case verb == "PASS":
				c.Send("-ERR [AUTH] invalid credentials\r\n")
			case verb == "QUIT":
				c.Send("+OK bye\r\n")
				return
			default:
				c.Send("+OK\r\n")
			}
		}
	})
}

// TestNoCodeFromAnAuthRespCodeServerIsNoFailedLogin: a server that lists
// AUTH-RESP-CODE marks refused credentials [AUTH], so its bare -ERR (a
// restart's "Shutting down") must not count towards the failed-login blocks:
// counted, one upstream restart locked every client of an address out.
func TestNoCodeFromAnAuthRespCodeServerIsNoFailedLogin(t *testing.T) {
	up := shuttingDownUpstream(t)
	addr, _, rec := startProxy(t, up, func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.Capabilities = nil }) // learnt from the server's CAPA
		o.Limits = proxy.Limits{
			FailuresPerUser: ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute},
			FailuresPerIP:   ratelimit.FailureConfig{MaxFailures: 2, Window: time.Minute, Block: time.Minute},
		}
	})
	c := pop3test.Dial(t, addr)
	c.Login("alice", "good") // the proxy learns the server's CAPA
	c.Cmd("QUIT", "+OK*")
	c = pop3test.Dial(t, addr)
	for i := range 5 {
		c.Cmd("USER alice", "+OK*")
		c.Cmd("PASS shutdown"+strconv.Itoa(i), "-ERR Shutting down")
	}
	c.Login("alice", "good")
	if rec.hasPolicy(proxy.RuleFailedLoginsUser) || rec.hasPolicy(proxy.RuleFailedLoginsIP) {
		t.Fatalf("bare -ERRs from an AUTH-RESP-CODE server counted as failed logins: %v", rec.policyRules())
	}
	// [AUTH] still counts.
	c = pop3test.Dial(t, addr)
	for i := range 2 {
		c.Cmd("USER bob", "+OK*")
		c.Cmd("PASS wrong"+strconv.Itoa(i), "-ERR [AUTH]*")
	}
	c.Cmd("USER bob", "+OK*")
	c.Cmd("PASS good", "-ERR [AUTH] too many failed logins*")
}
