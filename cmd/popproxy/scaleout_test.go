package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/daemon"
	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/internal/testproc"
)

// TestScaleOutBehindHAProxy runs two popproxy processes behind a real
// HAProxy (mode tcp, roundrobin, send-proxy-v2) in front of one Dovecot, and
// 60 concurrent clients, each from its own loopback address, that list and
// retrieve whole mailboxes through HAProxy. Every client gets every message
// byte for byte as Dovecot sends it; both instances serve sessions; every
// audit record names the real client (from the PROXY header), never
// HAProxy's address; the audit's RETRs add up to the clients'. A peer outside
// the trusted network, and a trusted one without a header (sending a command,
// or nothing until the header timeout), get no greeting and are closed.
func TestScaleOutBehindHAProxy(t *testing.T) {
	haproxy := lookHAProxy(t)
	bin := buildBinary(t)
	users := scaleUsers(20)
	d := testdovecot.New(t, testdovecot.Config{Users: users})
	addMessages(t, d, users, 5)
	want := referenceMailboxes(t, d.Addr(), users)

	type instance struct {
		addr, admin, audit string
		cmd                *exec.Cmd
	}
	dir := t.TempDir()
	var inst [2]instance
	for i := range inst {
		p := &inst[i]
		p.addr, p.admin = freeAddr(t), freeAddr(t)
		p.audit = filepath.Join(dir, fmt.Sprintf("audit%d.jsonl", i+1))
		cfg := testproc.WriteConfig(t, fmt.Sprintf(`
listeners: [{name: pop3, address: %q, proxy_protocol: ["127.0.0.1/32"]}]
upstream: {address: %q}
admin: {address: %q}
audit: {output: %q}
`, p.addr, d.Addr(), p.admin, p.audit))
		p.cmd = startBehindBalancer(t, bin, cfg, p.admin)
	}
	const probeIP = "127.0.1.250"
	front := startHAProxy(t, haproxy, probeIP, inst[0].addr, inst[1].addr)

	// Straight to an instance, not through HAProxy: from outside the
	// trusted network, and from inside it without a header (a POP3 command
	// instead, or silence until the header timeout), no greeting and close.
	silent := make(chan error, 1)
	go expectSilentClose(inst[1].addr, "127.0.0.1", "", daemon.ProxyHeaderTimeout+5*time.Second, silent)
	if err := expectSilentClose(inst[0].addr, "127.0.0.2", "CAPA\r\n", 3*time.Second, nil); err != nil {
		t.Errorf("untrusted peer: %v", err)
	}
	if err := expectSilentClose(inst[0].addr, "127.0.0.1", "CAPA\r\n", 3*time.Second, nil); err != nil {
		t.Errorf("trusted peer without a PROXY header: %v", err)
	}

	const clients = 60
	names := sortedUsers(users)
	clientUser := map[string]string{} // client address -> user
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var retrs atomic.Int64
	start := time.Now()
	for i := range clients {
		ip := netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)})
		user := names[i%len(names)]
		clientUser[ip.String()] = user
		wg.Add(1)
		go runScaleClient(&wg, errs, &retrs, front, ip, user, users[user], want[user])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d clients, %d RETRs through HAProxy in %v", clients, retrs.Load(), time.Since(start).Round(time.Millisecond))
	if retrs.Load() != clients*5 {
		t.Errorf("clients retrieved %d messages, want %d", retrs.Load(), clients*5)
	}
	if err := <-silent; err != nil {
		t.Errorf("trusted peer silent: %v", err)
	}

	// Each instance's admin listener counts its own sessions; a session is
	// counted just after its QUIT reply, so wait a little for the last ones.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		quits := 0
		for _, p := range inst {
			quits += scrapeCounter(t, p.admin, `popproxy_session_closes_total{reason="quit"}`)
		}
		if quits == clients+1 { // and the probe
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("instances counted %d sessions ended by QUIT, want %d", quits, clients+1)
			break
		}
	}

	auditRetrs, allOpens := 0, 0
	for i, p := range inst {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
		opens, logins := 0, 0
		for _, r := range readAudit(t, p.audit) {
			client, _ := r["client"].(string)
			ap, err := netip.ParseAddrPort(client)
			host := ap.Addr().String()
			if _, known := clientUser[host]; err != nil || !known && host != probeIP {
				t.Errorf("instance %d: record with client %q, not one of the clients' addresses: %v", i+1, client, r)
				continue
			}
			switch r["event"] {
			case "session.open":
				opens++
			case "auth":
				logins++
				if r["ok"] != true || r["user"] != clientUser[host] {
					t.Errorf("instance %d: login of %v from %s, which logged in as %s", i+1, r["user"], host, clientUser[host])
				}
			case "command":
				if r["verb"] == "RETR" && r["ok"] == true {
					auditRetrs++
				}
			}
		}
		t.Logf("instance %d: %d sessions, %d logins", i+1, opens, logins)
		allOpens += opens
		// roundrobin alternates: each instance gets about half.
		if logins < clients/4 {
			t.Errorf("instance %d served %d of %d logins: no spread", i+1, logins, clients)
		}
	}
	if auditRetrs != int(retrs.Load()) {
		t.Errorf("audit logs record %d RETRs, clients made %d", auditRetrs, retrs.Load())
	}
	// The connections refused for their PROXY header never became sessions.
	if allOpens != clients+1 {
		t.Errorf("audit logs record %d sessions, want %d (the clients and the probe)", allOpens, clients+1)
	}
}

// TestReloadUnderLoad sends popproxy SIGHUP five times, each with a new
// configuration (command rate, default route), while 20 clients retrieve
// their whole mailboxes over and over: no client sees an error or a short
// message, every session ends with QUIT +OK, each reload is applied and the
// new routes are used, and the mailboxes are unchanged.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs dovecot")
	}
	bin := buildBinary(t)
	users := scaleUsers(20)
	d := testdovecot.New(t, testdovecot.Config{Users: users})
	addMessages(t, d, users, 5)
	want := referenceMailboxes(t, d.Addr(), users)
	stored := map[string][]string{}
	for u := range users {
		stored[u], _ = d.Messages(u)
	}

	addr := freeAddr(t)
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	// Two upstream names for the one Dovecot, so that a route change shows
	// in the audit's "upstream" field; generation n alternates them.
	configAt := func(n int) string {
		def, other := "main", "alt"
		if n%2 == 1 {
			def, other = other, def
		}
		return fmt.Sprintf(`
listeners: [{name: pop3, address: %q}]
upstreams:
  - {name: main, address: %q}
  - {name: alt, address: %q}
routes: {default: %s, users: {user00: %s}}
limits:
  per_ip: {connection_rate: 0}
  per_session: {command_rate: %d, command_burst: %d}
audit: {output: %q}
`, addr, d.Addr(), d.Addr(), def, other, 100+20*n, 50+10*n, auditPath)
	}
	cfg := testproc.WriteConfig(t, configAt(0))
	proxy := startBinary(t, bin, cfg, addr)
	stderr := proxy.Stderr.(*testproc.SyncBuffer)

	const clients, reloads = 20, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var sessions, retrs atomic.Int64
	until := time.Now().Add(3 * time.Second)
	for i, user := range sortedUsers(users)[:clients] {
		ip := netip.AddrFrom4([4]byte{127, 0, 2, byte(i + 1)})
		wg.Add(1)
		go loopScaleClient(&wg, errs, &sessions, &retrs, until, addr, ip, user, users[user], want[user])
	}
	const applied = "reload: limits and routes applied"
	for n := 1; n <= reloads; n++ {
		time.Sleep(500 * time.Millisecond)
		replaceFile(t, cfg, configAt(n))
		proxy.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(5 * time.Second); strings.Count(stderr.String(), applied) < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("reload %d not applied:\n%s", n, stderr)
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d sessions, %d RETRs across %d reloads", sessions.Load(), retrs.Load(), reloads)
	if sessions.Load() < 2*clients {
		t.Errorf("only %d sessions in 3 s", sessions.Load())
	}
	if log := stderr.String(); strings.Count(log, applied) != reloads || strings.Contains(log, "refused") {
		t.Errorf("operational log, want %d reloads applied and nothing refused:\n%s", reloads, log)
	}

	proxy.Process.Signal(syscall.SIGTERM)
	proxy.Wait()
	upstreams := map[string]int{}
	quits, auditRetrs := 0, 0
	for _, r := range readAudit(t, auditPath) {
		switch r["event"] {
		case "auth":
			if r["ok"] != true {
				t.Errorf("failed login: %v", r)
			}
			upstreams[auditUpstream(r)]++
		case "command":
			if r["verb"] == "RETR" && r["ok"] == true {
				auditRetrs++
			}
		case "session.close":
			if r["reason"] == "quit" && r["logged_in"] == true {
				quits++
			}
		}
	}
	if upstreams["main"] == 0 || upstreams["alt"] == 0 {
		t.Errorf("logins per upstream %v: the reloaded routes were not all used", upstreams)
	}
	if quits != int(sessions.Load()) || auditRetrs != int(retrs.Load()) {
		t.Errorf("audit: %d sessions ended by QUIT and %d RETRs; clients: %d and %d", quits, auditRetrs, sessions.Load(), retrs.Load())
	}
	for u := range users {
		if now, _ := d.Messages(u); !slices.Equal(now, stored[u]) {
			t.Errorf("%s's mailbox changed: %v, was %v", u, now, stored[u])
		}
	}
}

// TestRoutingByDomainBinary routes logins to two Dovecots: a domain to b
// (routes.domains), one exact user to b (routes.map_file), everybody else
// to a. Moving the user to a in the map file and sending SIGHUP sends the
// next login to a while a session opened before stays on b until it quits;
// a map file naming an unknown upstream is refused and the routes stay.
func TestRoutingByDomainBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs dovecot")
	}
	bin := buildBinary(t)
	a := testdovecot.New(t, testdovecot.Config{Users: map[string]string{"alice": "pa", "erin@example.com": "pe", "dave": "pd"}})
	b := testdovecot.New(t, testdovecot.Config{Users: map[string]string{"bob@example.org": "pb", "dave": "pd"}})
	mark := func(d *testdovecot.Instance, backend string, users ...string) {
		for _, u := range users {
			if _, err := d.AddMessage(u, []byte("Subject: where\r\n\r\n"+u+" on backend "+backend+"\r\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	mark(a, "a", "alice", "erin@example.com", "dave")
	mark(b, "b", "bob@example.org", "dave")

	dir := t.TempDir()
	mapFile := filepath.Join(dir, "routes.map")
	replaceFile(t, mapFile, "# exact users first\ndave  b\n")
	addr := freeAddr(t)
	auditPath := filepath.Join(dir, "audit.jsonl")
	cfg := testproc.WriteConfig(t, fmt.Sprintf(`
listeners: [{name: pop3, address: %q}]
upstreams:
  - {name: a, address: %q}
  - {name: b, address: %q}
routes:
  domains: {example.org: b}
  map_file: %q
  default: a
audit: {output: %q}
`, addr, a.Addr(), b.Addr(), mapFile, auditPath))
	proxy := startBinary(t, bin, cfg, addr)

	// login logs in as user and returns the session and the backend its
	// first message says it is on.
	login := func(user, pass string) (*pop3test.Conn, string) {
		t.Helper()
		c, err := pop3test.DialConn(&net.Dialer{}, addr, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(user, pass); err != nil {
			c.Close()
			t.Fatalf("%s: %v", user, err)
		}
		_, body, err := c.Multi("RETR 1")
		if err != nil {
			c.Close()
			t.Fatalf("%s: %v", user, err)
		}
		m := regexp.MustCompile(`on backend (\w+)`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("%s: message %q", user, body)
		}
		return c, string(m[1])
	}
	quit := func(c *pop3test.Conn, user string) {
		t.Helper()
		defer c.Close()
		if _, err := c.Cmd("QUIT"); err != nil {
			t.Errorf("%s: %v", user, err)
		}
	}
	var wantUpstreams []string // in login order, for the audit
	check := func(user, pass, backend string) {
		t.Helper()
		c, got := login(user, pass)
		quit(c, user)
		if got != backend {
			t.Errorf("%s reached backend %s, want %s", user, got, backend)
		}
		wantUpstreams = append(wantUpstreams, backend)
	}
	check("alice", "pa", "a")            // default
	check("erin@example.com", "pe", "a") // a domain without a route: default
	check("bob@example.org", "pb", "b")  // routes.domains
	// Domains match ignoring ASCII case; Dovecot lowercases the name itself.
	check("Bob@EXAMPLE.org", "pb", "b")
	check("dave", "pd", "b") // the map file's exact user

	old, got := login("dave", "pd")
	wantUpstreams = append(wantUpstreams, "b")
	if got != "b" {
		t.Fatalf("dave's long session on %s, want b", got)
	}
	replaceFile(t, mapFile, "dave  a   # moved\n")
	proxy.Process.Signal(syscall.SIGHUP)
	waitLog(t, proxy, "reload: limits and routes applied")
	check("dave", "pd", "a")
	// The session opened before the reload is still on b.
	if _, body, err := old.Multi("RETR 1"); err != nil || !bytes.Contains(body, []byte("on backend b")) {
		t.Errorf("dave's session from before the reload: %q %v", body, err)
	}
	quit(old, "dave")

	replaceFile(t, mapFile, "dave  nosuch\n")
	proxy.Process.Signal(syscall.SIGHUP)
	waitLog(t, proxy, "reload: configuration refused")
	if log := proxy.Stderr.(*testproc.SyncBuffer).String(); !strings.Contains(log, `upstream \"nosuch\" is not defined`) {
		t.Errorf("the refusal does not name the bad upstream:\n%s", log)
	}
	check("dave", "pd", "a")
	check("bob@example.org", "pb", "b")

	proxy.Process.Signal(syscall.SIGTERM)
	proxy.Wait()
	var gotUpstreams []string
	for _, r := range readAudit(t, auditPath) {
		if r["event"] == "auth" {
			gotUpstreams = append(gotUpstreams, auditUpstream(r))
		}
	}
	if !slices.Equal(gotUpstreams, wantUpstreams) {
		t.Errorf("audit: logins went to %v, want %v", gotUpstreams, wantUpstreams)
	}
}

// TestScaleOutExamples checks the example map file against the upstreams
// of backends-by-domain.yaml, as the binary merges them, and the HAProxy
// example with haproxy -c.
func TestScaleOutExamples(t *testing.T) {
	cfg, err := config.Load("../../examples/backends-by-domain.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var upstreams []route.Upstream
	for _, u := range cfg.Upstreams {
		upstreams = append(upstreams, route.Upstream{Name: u.Name, Addresses: u.Addresses})
	}
	users, domains, def, err := route.LoadMap("../../examples/routes.map", upstreams...)
	if err != nil || len(users) == 0 || len(domains) == 0 {
		t.Fatalf("examples/routes.map: %d users, %d domains, %v", len(users), len(domains), err)
	}
	// As the binary merges them: the map file over the configuration.
	rc := route.Config{Upstreams: upstreams, Users: map[string]string{}, Domains: map[string]string{}, Default: cfg.Routes.Default}
	maps.Copy(rc.Users, cfg.Routes.Users)
	maps.Copy(rc.Users, users)
	maps.Copy(rc.Domains, cfg.Routes.Domains)
	maps.Copy(rc.Domains, domains)
	if def != "" {
		rc.Default = def
	}
	if _, err := route.New(rc); err != nil {
		t.Errorf("examples' routes: %v", err)
	}

	haproxy := lookHAProxy(t)
	if out, err := exec.Command(haproxy, "-c", "-f", "../../examples/haproxy.cfg").CombinedOutput(); err != nil {
		t.Errorf("haproxy -c examples/haproxy.cfg: %v\n%s", err, out)
	}
}

// auditUpstream returns the name of the upstream an auth record was routed to.
func auditUpstream(r map[string]any) string {
	name, _ := r["route"].(string)
	return name
}

// lookHAProxy returns haproxy's path, or fails saying how to install it.
func lookHAProxy(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs haproxy")
	}
	path, err := exec.LookPath("haproxy")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/haproxy"); statErr != nil {
			t.Fatal("haproxy not found: run .ci/install-test-tools (apt-get install -y haproxy)")
		}
		path = "/usr/sbin/haproxy"
	}
	return path
}

// startBehindBalancer runs popproxy with cfg and waits until its admin
// listener reports ready. (startBinary's probe would be refused by a
// listener that wants a PROXY header, or hold it until the header timeout.)
func startBehindBalancer(t *testing.T, bin, cfg, admin string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Stderr = &testproc.SyncBuffer{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("popproxy not ready: %v\n%s", err, cmd.Stderr)
		}
	}
}

// startHAProxy runs HAProxy in the foreground in front of servers and
// returns its frontend address once a client (from probeIP) gets a POP3
// greeting through it.
func startHAProxy(t *testing.T, bin, probeIP string, servers ...string) string {
	t.Helper()
	front := freeAddr(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend pop3
  bind %s
  default_backend popproxy
backend popproxy
  balance roundrobin
`, front)
	for i, s := range servers {
		fmt.Fprintf(&cfg, "  server p%d %s send-proxy-v2\n", i+1, s)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	out := &testproc.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(probeIP)}, Timeout: time.Second}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := pop3test.DialConn(dialer, front, 20*time.Second)
		if err == nil {
			_, err = c.Cmd("QUIT")
			c.Close()
			if err != nil {
				t.Fatalf("probe through haproxy: %v", err)
			}
			return front
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy: no greeting through %s: %v\n%s", front, err, out)
		}
	}
}

// expectSilentClose connects to addr from local (if not empty), sends
// send, and checks that the connection is closed within limit without a
// byte from the server. If done is not nil the result is sent there too.
func expectSilentClose(addr, local, send string, limit time.Duration, done chan<- error) (err error) {
	if done != nil {
		defer func() { done <- err }()
	}
	d := &net.Dialer{Timeout: time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return err // the kernel accepts before popproxy sees the peer
	}
	defer conn.Close()
	io.WriteString(conn, send)
	conn.SetReadDeadline(time.Now().Add(limit))
	got, err := io.ReadAll(conn)
	var ne net.Error
	switch {
	case len(got) > 0:
		return fmt.Errorf("server sent %q", got)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("not closed within %v", limit)
	case err != nil && !errors.Is(err, syscall.ECONNRESET):
		return err
	}
	return nil
}

// scrapeCounter returns a counter's value from the admin listener's /metrics.
func scrapeCounter(t *testing.T, admin, series string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}

// replaceFile replaces path's content atomically, so that a reload never
// reads half a file.
func replaceFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func scaleUsers(n int) map[string]string {
	users := map[string]string{}
	for i := range n {
		users[fmt.Sprintf("user%02d", i)] = fmt.Sprintf("pw-%02d-secret", i)
	}
	return users
}

func sortedUsers(users map[string]string) []string {
	var names []string
	for u := range users {
		names = append(names, u)
	}
	slices.Sort(names)
	return names
}

// addMessages stores n messages for each user (scaleMessage).
func addMessages(t *testing.T, d *testdovecot.Instance, users map[string]string, n int) {
	t.Helper()
	for _, u := range sortedUsers(users) {
		for i := range n {
			if _, err := d.AddMessage(u, scaleMessage(u, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// scaleMessage is user's message i: from a few lines to some 100 kB (more
// than any relay buffer), with lines that Dovecot dot-stuffs on the wire,
// a lone "." line in the body, and bare LF line ends (sent as CRLF).
func scaleMessage(user string, i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender@example.test\r\nTo: %s@example.test\r\nMessage-ID: <%s.%d@scaleout.test>\r\nSubject: message %d\r\n\r\n", user, user, i, i)
	for n := range []int{3, 40, 400, 1600, 0}[i%5] {
		switch n % 7 {
		case 3:
			fmt.Fprintf(&b, ".dot-leading line %d of %s\r\n", n, user)
		case 5:
			fmt.Fprintf(&b, "bare LF line %d\n", n)
		default:
			fmt.Fprintf(&b, "line %d of message %d for %s %s\r\n", n, i, user, strings.Repeat("x", n%61))
		}
	}
	if i%5 == 1 {
		b.WriteString(".\r\n..\r\nafter the dots\r\n")
	}
	return []byte(b.String())
}

// referenceMailboxes fetches every user's mailbox straight from the server.
func referenceMailboxes(t *testing.T, addr string, users map[string]string) map[string]pop3test.Mailbox {
	t.Helper()
	out := map[string]pop3test.Mailbox{}
	for u, p := range users {
		c, err := pop3test.DialConn(&net.Dialer{}, addr, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(u, p)
		var m pop3test.Mailbox
		if err == nil {
			m, err = c.FetchAll()
		}
		if err == nil {
			_, err = c.Cmd("QUIT")
		}
		c.Close()
		if err != nil {
			t.Fatalf("%s directly from dovecot: %v", u, err)
		}
		out[u] = m
	}
	return out
}

// runScaleClient is one client's session through the balancer, from ip.
func runScaleClient(wg *sync.WaitGroup, errs chan<- error, retrs *atomic.Int64, addr string, ip netip.Addr, user, pass string, want pop3test.Mailbox) {
	defer wg.Done()
	if err := scaleSession(addr, ip, user, pass, want, retrs); err != nil {
		errs <- fmt.Errorf("client %s (%s): %w", ip, user, err)
	}
}

// loopScaleClient runs sessions one after the other until the time is up.
func loopScaleClient(wg *sync.WaitGroup, errs chan<- error, sessions, retrs *atomic.Int64, until time.Time, addr string, ip netip.Addr, user, pass string, want pop3test.Mailbox) {
	defer wg.Done()
	for n := 1; time.Now().Before(until); n++ {
		if err := scaleSession(addr, ip, user, pass, want, retrs); err != nil {
			errs <- fmt.Errorf("client %s (%s), session %d: %w", ip, user, n, err)
			return
		}
		sessions.Add(1)
	}
}

// scaleSession logs in from ip, lists and retrieves every message, compares
// everything with want, and quits.
func scaleSession(addr string, ip netip.Addr, user, pass string, want pop3test.Mailbox, retrs *atomic.Int64) error {
	c, err := pop3test.DialConn(&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip.AsSlice()}, Timeout: 5 * time.Second}, addr, 20*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(user, pass); err != nil {
		return err
	}
	got, err := c.FetchAll()
	retrs.Add(int64(len(got.Bodies)))
	if err != nil {
		return err
	}
	if !bytes.Equal(got.UIDL, want.UIDL) {
		return fmt.Errorf("UIDL %q, want %q", got.UIDL, want.UIDL)
	}
	if len(got.Bodies) != len(want.Bodies) {
		return fmt.Errorf("%d messages, want %d", len(got.Bodies), len(want.Bodies))
	}
	for i, body := range got.Bodies {
		if !bytes.Equal(body, want.Bodies[i]) {
			return fmt.Errorf("RETR %d: %d octets differ from dovecot's %d (first difference at %d)", i+1, len(body), len(want.Bodies[i]), firstDiff(body, want.Bodies[i]))
		}
	}
	if _, err := c.Cmd("QUIT"); err != nil {
		return err
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
