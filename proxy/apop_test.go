package proxy_test

import (
	"crypto/md5"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testlegacy"
	"github.com/popproxy/popproxy/proxy"
)

// apopListener is a plain listener that passes APOP through.
var apopListener = proxy.Listener{Name: "apop", APOP: true}

// apopDigest is the client's side of RFC 1939 §7: MD5 of the greeting's
// timestamp and the secret, in hex.
func apopDigest(greeting, secret string) string {
	ts := greeting[strings.LastIndexByte(greeting, '<'):]
	sum := md5.Sum([]byte(ts + secret))
	return hex.EncodeToString(sum[:])
}

// startSolidAPOP starts solid-pop3d with an APOP secret for its user, and an
// APOP passthrough proxy in front with legacyLimits.
func startSolidAPOP(t *testing.T) (*testlegacy.Instance, string, string, *recorder) {
	t.Helper()
	srv := testlegacy.StartSolid(t)
	secret, err := srv.APOPSecret()
	if err != nil {
		t.Fatal(err)
	}
	addr, _, rec := startListener(t, srv.Addr(), apopListener, func(o *proxy.Options) {
		withUpstream(o, func(u *proxy.Upstream) { u.ResponseTimeout = 10 * time.Second })
		o.Limits = legacyLimits
	})
	return srv, secret, addr, rec
}

// dialGreeting connects and returns the client with the greeting it read.
func dialGreeting(t *testing.T, addr string) (*pop3test.Client, string) {
	t.Helper()
	conn := dialRaw(t, addr)
	c := pop3test.NewClient(t, conn)
	return c, c.Expect("+OK *")
}

// TestAPOPPassthroughSolid: the proxy's greeting carries solid-pop3d's
// timestamp after its own id, APOP with the digest of it logs in and the
// session relays as usual, audited as APOP; USER/PASS keep working on the
// same listener.
func TestAPOPPassthroughSolid(t *testing.T) {
	srv, secret, addr, rec := startSolidAPOP(t)
	if err := srv.AddMessage([]byte("Subject: apop\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	c, greeting := dialGreeting(t, addr)
	if !pop3test.Match("+OK popproxy ready * <*@*>", greeting) {
		t.Fatalf("greeting %q, want the proxy's id and the server's timestamp", greeting)
	}
	c.Cmd("APOP "+srv.User()+" "+apopDigest(greeting, secret), "+OK*")
	c.Cmd("STAT", "+OK 1 *")
	c.Cmd("QUIT", "+OK*")
	ev := lastAuth(t, rec)
	if !ev.OK || ev.Mechanism != "APOP" || ev.User != srv.User() || ev.Upstream != srv.Addr() || ev.Dial <= 0 {
		t.Errorf("auth event %+v, want a successful APOP login at %s", ev, srv.Addr())
	}
	rec.waitClose(t)

	c = pop3test.Dial(t, addr)
	c.Login(srv.User(), srv.Password())
	c.Cmd("QUIT", "+OK*")
	if ev := lastAuth(t, rec); !ev.OK || ev.Mechanism != "USER" {
		t.Errorf("auth event %+v, want a successful USER login", ev)
	}
}

// TestAPOPCurl: curl, a real APOP client, fetches a message through the
// proxy as it does from solid-pop3d directly.
func TestAPOPCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not found: install it with `apt-get install -y curl`")
	}
	srv, secret, addr, _ := startSolidAPOP(t)
	const msg = "Subject: curl\r\n\r\nfetched with APOP\r\n"
	if err := srv.AddMessage([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	fetch := func(hostport string) string {
		t.Helper()
		out, err := exec.Command(curl, "-sS", "--max-time", "20", "--login-options", "AUTH=+APOP",
			"-u", srv.User()+":"+secret, "pop3://"+hostport+"/1").CombinedOutput()
		if err != nil {
			t.Fatalf("curl via %s: %v: %s", hostport, err, out)
		}
		return string(out)
	}
	direct, proxied := fetch(srv.Addr()), fetch(addr)
	if !strings.Contains(direct, "fetched with APOP") || proxied != direct {
		t.Errorf("curl through the proxy got %q, directly %q", proxied, direct)
	}
}

// TestAPOPWrongDigest: a wrong digest gets the server's -ERR and ends the
// session (its timestamp was that connection's); each counts as a failed
// login, digests differing with every timestamp, so the user is blocked at
// the limit even with the right secret.
func TestAPOPWrongDigest(t *testing.T) {
	srv, secret, addr, rec := startSolidAPOP(t)
	for range legacyLimits.FailuresPerUser.MaxFailures {
		c, greeting := dialGreeting(t, addr)
		c.Cmd("APOP "+srv.User()+" "+apopDigest(greeting, "stale"), "-ERR*")
		c.Closed()
	}
	for _, ev := range authEvents(rec) {
		if ev.OK || ev.Mechanism != "APOP" {
			t.Errorf("auth event %+v, want a failed APOP login", ev)
		}
	}
	c, greeting := dialGreeting(t, addr)
	c.Cmd("APOP "+srv.User()+" "+apopDigest(greeting, secret), "-ERR [AUTH] too many failed logins*")
	if !rec.hasPolicy("limit.failed_logins_user") {
		t.Errorf("policy events %q, want limit.failed_logins_user", rec.policyRules())
	}
}

// apopUpstream is a fake APOP server that records what it is sent.
type apopUpstream struct {
	addr  string
	mu    sync.Mutex
	lines []string
	done  chan struct{} // a token per connection that ended
}

func startAPOPUpstream(t *testing.T, greeting string) *apopUpstream {
	u := &apopUpstream{done: make(chan struct{}, 10)}
	u.addr = pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		defer func() { u.done <- struct{}{} }()
		c.Send(greeting + "\r\n")
		for line := c.Line(); line != ""; line = c.Line() {
			u.mu.Lock()
			u.lines = append(u.lines, line)
			u.mu.Unlock()
			c.Send("+OK\r\n")
		}
	})
	return u
}

func (u *apopUpstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.lines...)
}

func (u *apopUpstream) waitEnd(t *testing.T) {
	t.Helper()
	select {
	case <-u.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection was left open")
	}
}

// TestAPOPUnusedConnection: a connection opened for the greeting that no
// login uses is closed when the client leaves, with nothing sent on it, not
// even QUIT.
func TestAPOPUnusedConnection(t *testing.T) {
	up := startAPOPUpstream(t, "+OK fake <1.2@fake>")
	addr, _, _ := startListener(t, up.addr, apopListener, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("QUIT", "+OK*")
	up.waitEnd(t)
	if got := up.received(); len(got) != 0 {
		t.Errorf("upstream received %q", got)
	}
}

// TestAPOPRelayed: APOP goes upstream as the client sent it, on the
// connection whose timestamp the greeting showed; a malformed digest is
// refused by the proxy.
func TestAPOPRelayed(t *testing.T) {
	up := startAPOPUpstream(t, "+OK fake <1.2@fake>")
	addr, _, _ := startListener(t, up.addr, apopListener, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("APOP alice c4c9334bac560ecc979e58001b3e22f", "-ERR usage: APOP name digest*")
	c.Cmd("APOP alice c4c9334bac560ecc979e58001b3e22fB", "+OK*")
	c.Cmd("QUIT", "+OK*")
	up.waitEnd(t)
	want := []string{"APOP alice c4c9334bac560ecc979e58001b3e22fB", "QUIT"}
	if got := up.received(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("upstream received %q, want %q", got, want)
	}
}

// TestAPOPWithoutTimestamp: a server without a timestamp, or none at all,
// gives a greeting without one; APOP is refused and USER/PASS work (on the
// connection already open, if there is one).
func TestAPOPWithoutTimestamp(t *testing.T) {
	t.Run("no timestamp", func(t *testing.T) {
		up := startAPOPUpstream(t, "+OK fake ready")
		addr, _, _ := startListener(t, up.addr, apopListener, nil)
		c, greeting := dialGreeting(t, addr)
		if strings.Contains(greeting, "<") {
			t.Errorf("greeting %q has a timestamp", greeting)
		}
		c.Cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb", "-ERR APOP is not available*")
		c.Login("alice", "secret")
		c.Cmd("QUIT", "+OK*")
		up.waitEnd(t)
		want := []string{"USER alice", "PASS secret", "QUIT"}
		if got := up.received(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("upstream received %q, want %q", got, want)
		}
	})
	t.Run("server down", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		down := l.Addr().String()
		l.Close()
		addr, _, _ := startListener(t, down, apopListener, nil)
		c, greeting := dialGreeting(t, addr)
		if strings.Contains(greeting, "<") {
			t.Errorf("greeting %q has a timestamp", greeting)
		}
		c.Cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb", "-ERR APOP is not available*")
		c.Cmd("USER alice", "+OK*")
		c.Cmd("PASS secret", "-ERR [SYS/TEMP]*")
	})
}

// TestAPOPLoopDetected: a popproxy in front of an APOP listener still reads
// its instance id from the greeting, where the upstream's timestamp now
// follows it, and refuses to go back to a popproxy its session came through.
func TestAPOPLoopDetected(t *testing.T) {
	up := startAPOPUpstream(t, "+OK fake <1.2@fake>")
	back, _, _ := startListener(t, up.addr, apopListener, nil)
	_, greeting := dialGreeting(t, back)
	id := strings.Fields(greeting)[3]
	front, _, _ := startProxy(t, back, nil)
	c := pop3test.Dial(t, front)
	c.Cmd("XPOPPROXY "+id, "+OK*")
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "-ERR [SYS/TEMP]*")
}

// TestAPOPLoopBetweenProxies: two popproxies that are each other's upstream,
// one with an APOP listener. The loop is found at its second hop, the
// connections opened for greetings are all closed.
func TestAPOPLoopBetweenProxies(t *testing.T) {
	lp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lq, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve := func(l net.Listener, upstream string, lc proxy.Listener) *proxy.Server {
		srv := proxy.New(oneUpstream(t, proxy.Upstream{Addresses: []string{upstream}, DialTimeout: 2 * time.Second, ResponseTimeout: 2 * time.Second}, proxy.Options{
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}))
		go srv.Serve(l, lc)
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	p := serve(lp, lq.Addr().String(), apopListener)
	q := serve(lq, lp.Addr().String(), proxy.Listener{Name: "plain"})
	c, greeting := dialGreeting(t, lp.Addr().String())
	if strings.Contains(greeting, "<") {
		t.Errorf("greeting %q has a timestamp, though the upstream is a popproxy without", greeting)
	}
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "-ERR [SYS/TEMP]*")
	c.Cmd("QUIT", "+OK*")
	for deadline := time.Now().Add(5 * time.Second); p.Sessions()+q.Sessions() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d and %d sessions still open", p.Sessions(), q.Sessions())
		}
	}
}
