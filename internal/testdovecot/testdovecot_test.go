package testdovecot

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/tlsconf"
)

// uidls runs UIDL and returns the UIDLs in message-number order.
func uidls(c *pop3test.Client) []string {
	c.T.Helper()
	c.Cmd("UIDL", "+OK*")
	var out []string
	for i, l := range strings.Split(c.Body(), "\r\n") {
		if l == "" {
			continue
		}
		var n int
		var uidl string
		if _, err := fmt.Sscanf(l, "%d %s", &n, &uidl); err != nil || n != i+1 {
			c.T.Fatalf("bad UIDL line %q", l)
		}
		out = append(out, uidl)
	}
	return out
}

// TestMessages checks what the package comment says of stored messages:
// AddMessage stores the bytes as given and returns the UIDL Dovecot will
// report; LIST and RETR give the sizes and wire forms described there; a
// DELE is gone from Messages once QUIT commits it; users' mailboxes are
// separate.
func TestMessages(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "alice-pw", "bob": "bob pw"}})
	tests := []struct {
		msg  string
		size string // in LIST and the RETR status line
		wire string // the RETR body, before the terminating line
	}{
		{msg: "Subject: one\r\n\r\nfirst message\r\n", size: "31", wire: "Subject: one\r\n\r\nfirst message\r\n"},
		{msg: "Subject: two\r\n\r\nbefore\r\n.\r\nafter\r\n", size: "34", wire: "Subject: two\r\n\r\nbefore\r\n..\r\nafter\r\n"},
		{msg: "Subject: three\n\n.dot\n..two\nend\n", size: "36", wire: "Subject: three\r\n\r\n..dot\r\n...two\r\nend\r\n"},
		{msg: "", size: "0", wire: "\r\n"},
		{msg: "Subject: a\n\nno final newline", size: "30", wire: "Subject: a\r\n\r\nno final newline\r\n"},
		{msg: "Subject: b\r\n\r\nmixed\nends\r\n", size: "27", wire: "Subject: b\r\n\r\nmixed\r\nends\r\n"},
	}
	var added []string
	for _, tt := range tests {
		uidl, err := d.AddMessage("alice", []byte(tt.msg))
		if err != nil {
			t.Fatal(err)
		}
		// RFC 1939 §7: 1 to 70 characters from 0x21 to 0x7E.
		if uidl == "" || len(uidl) > 70 || strings.IndexFunc(uidl, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			t.Errorf("UIDL %q is not a valid POP3 UIDL", uidl)
		}
		added = append(added, uidl)
		if b, err := os.ReadFile(filepath.Join(d.cfg.Dir, "mail", "alice", "Maildir", "new", uidl)); err != nil || string(b) != tt.msg {
			t.Errorf("stored %q (%v), want %q", b, err, tt.msg)
		}
	}
	bobUIDL, err := d.AddMessage("bob", []byte("Subject: bob\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddMessage("carol", []byte("x\r\n")); err == nil {
		t.Error("AddMessage for an unknown user: no error")
	}

	c := pop3test.Dial(t, d.Addr())
	c.Login("alice", "alice-pw")
	c.Cmd("STAT", fmt.Sprintf("+OK %d *", len(tests)))
	if got := uidls(c); !slices.Equal(got, added) {
		t.Errorf("UIDL = %q, want %q", got, added)
	}
	for i, tt := range tests {
		c.Cmd(fmt.Sprintf("LIST %d", i+1), fmt.Sprintf("+OK %d %s", i+1, tt.size))
		c.Cmd(fmt.Sprintf("RETR %d", i+1), "+OK "+tt.size+" octets")
		if got := c.Body(); got != tt.wire {
			t.Errorf("RETR of %q = %q, want %q", tt.msg, got, tt.wire)
		}
	}
	c.Cmd("DELE 2", "+OK*")
	c.Cmd("QUIT", "+OK*")
	got, err := d.Messages("alice")
	if want := slices.Delete(slices.Clone(added), 1, 2); err != nil || !slices.Equal(got, want) {
		t.Errorf("Messages after DELE 2 + QUIT = %q, %v; want %q", got, err, want)
	}

	// A password may contain spaces.
	c = pop3test.Dial(t, d.Addr())
	c.Login("bob", "bob pw")
	if got := uidls(c); !slices.Equal(got, []string{bobUIDL}) {
		t.Errorf("bob's UIDL = %q, want %q", got, []string{bobUIDL})
	}
	c.Cmd("QUIT", "+OK*")
}

// TestOrder checks that messages keep insertion order across more than
// nine messages (where string and number order differ) and across
// Dovecot syncs: some added while a session had already assigned UIDs.
func TestOrder(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}})
	var want []string
	add := func(n int) {
		for range n {
			uidl, err := d.AddMessage("alice", []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", len(want))))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, uidl)
		}
	}
	check := func() {
		t.Helper()
		c := pop3test.Dial(t, d.Addr())
		c.Login("alice", "pw")
		if got := uidls(c); !slices.Equal(got, want) {
			t.Errorf("UIDL = %q, want %q", got, want)
		}
		c.Cmd("QUIT", "+OK*")
		if msgs, err := d.Messages("alice"); err != nil || !slices.Equal(msgs, want) {
			t.Errorf("Messages = %q, %v; want %q", msgs, err, want)
		}
	}
	add(5)
	check()
	add(8)
	check()
}

// TestWrongPassword checks that failed logins are answered at Dovecot 2.3's
// pace (a 500 ms timer) and logged, and that the anvil auth penalty is off:
// it would delay later logins by seconds.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}})
	for i, user := range []string{"alice", "alice", "nosuch"} {
		c := pop3test.Dial(t, d.Addr())
		c.Cmd("USER "+user, "+OK*")
		start := time.Now()
		c.Cmd("PASS wrong", "-ERR [AUTH] Authentication failed.")
		if el := time.Since(start); el > time.Second {
			t.Errorf("attempt %d: -ERR after %v, want < 1s", i, el)
		}
		// The session goes on: a good login still works, undelayed.
		start = time.Now()
		c.Cmd("USER alice", "+OK*")
		c.Cmd("PASS pw", "+OK*")
		if el := time.Since(start); el > time.Second {
			t.Errorf("good login after failures took %v, want < 1s", el)
		}
		c.Cmd("QUIT", "+OK*")
	}
	for _, s := range []string{"Password mismatch", "unknown user"} {
		if _, err := d.WaitLog(time.Second, s); err != nil {
			t.Error(err)
		}
	}
}

// writeCert writes a self-signed certificate for localhost and 127.0.0.1
// and its key, and returns a pool that trusts it. Dovecot reads them as
// the user that starts it, so a t.TempDir is fine.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	certPEM, keyPEM, err := tlsconf.SelfSignedPEM("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := errors.Join(os.WriteFile(certFile, certPEM, 0o644), os.WriteFile(keyFile, keyPEM, 0o600)); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, pool
}

// TestTLS logs in over implicit TLS, verified by IP address, and after STLS
// on the plain port, verified by name.
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := writeCert(t)
	d := New(t, Config{Users: map[string]string{"alice": "pw"}, TLSCert: certFile, TLSKey: keyFile})
	if d.TLSAddr() == "" || d.TLSAddr() == d.Addr() {
		t.Fatalf("TLSAddr = %q, Addr = %q", d.TLSAddr(), d.Addr())
	}

	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: pop3test.Timeout}, "tcp", d.TLSAddr(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	c := pop3test.NewClient(t, tc)
	c.Expect("+OK*")
	c.Login("alice", "pw")
	c.Cmd("QUIT", "+OK*")

	c = pop3test.Dial(t, d.Addr())
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); !strings.Contains(capa, "\r\nSTLS\r\n") {
		t.Fatalf("CAPA without STLS: %q", capa)
	}
	c.Cmd("STLS", "+OK*")
	tc = tls.Client(c.Conn, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = pop3test.NewClient(t, tc)
	c.Login("alice", "pw")
	c.Cmd("QUIT", "+OK*")
}

// TestNoTLS: without a certificate there is no TLS port and no STLS.
func TestNoTLS(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}})
	if d.TLSAddr() != "" {
		t.Errorf("TLSAddr = %q without a certificate", d.TLSAddr())
	}
	c := pop3test.Dial(t, d.Addr())
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); strings.Contains(capa, "STLS") {
		t.Errorf("CAPA offers STLS without a certificate: %q", capa)
	}
	c.Cmd("QUIT", "+OK*")
}

// TestStop: a logged-in session is told the server shuts down, its DELE is
// not committed, every process is gone, Stop and Kill then do nothing more,
// and the log is kept.
func TestStop(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}})
	pid := d.Pid()
	if _, err := d.AddMessage("alice", []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	// A logged-in session, so a pop3 process is running too, which
	// outlives Dovecot's master.
	c := pop3test.Dial(t, d.Addr())
	c.Login("alice", "pw")
	c.Cmd("DELE 1", "+OK*")
	start := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %v", time.Since(start))
	c.Expect("-ERR [SYS/TEMP] Server shutting down.*")
	if msgs, err := d.Messages("alice"); err != nil || len(msgs) != 1 {
		t.Errorf("DELE without QUIT committed at Stop: Messages = %q, %v", msgs, err)
	}
	if testproc.GroupAlive(pid) {
		t.Errorf("process group %d still has processes after Stop", pid)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := d.Kill(); err != nil {
		t.Errorf("Kill after Stop: %v", err)
	}
	if _, err := os.Stat(d.logPath()); err != nil {
		t.Errorf("log gone after Stop: %v", err)
	}
}

// TestKill: sessions are cut without a reply, the ports refuse, every
// process is gone, and Kill and Stop then do nothing more.
func TestKill(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}})
	c := pop3test.Dial(t, d.Addr())
	c.Login("alice", "pw")
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	if testproc.GroupAlive(d.Pid()) {
		t.Errorf("process group %d still has processes after Kill", d.Pid())
	}
	if _, err := io.WriteString(c.Conn, "STAT\r\n"); err == nil {
		if l, err := c.R.ReadString('\n'); err == nil {
			t.Errorf("got %q from a killed server", l)
		}
	}
	if _, err := net.DialTimeout("tcp", d.Addr(), time.Second); err == nil {
		t.Error("killed server still accepts connections")
	}
	if err := d.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("Stop after Kill: %v", err)
	}
}

// TestRestart stops an instance, by Stop and by Kill, and starts it again
// on the same ports, with TLS: the mail is still there. Restart refuses a
// running instance and a closed one.
func TestRestart(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := writeCert(t)
	d := New(t, Config{Users: map[string]string{"alice": "pw"}, TLSCert: certFile, TLSKey: keyFile})
	if err := d.Restart(); err == nil {
		t.Error("Restart of a running instance succeeded")
	}
	addr, tlsAddr, pid := d.Addr(), d.TLSAddr(), d.Pid()
	if _, err := d.AddMessage("alice", []byte("Subject: x\r\n\r\nbefore\r\n")); err != nil {
		t.Fatal(err)
	}
	for _, stop := range []func() error{d.Stop, d.Kill} {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if err := d.Restart(); err != nil {
			t.Fatal(err)
		}
		if d.Addr() != addr || d.TLSAddr() != tlsAddr || d.Pid() == pid {
			t.Errorf("after Restart: %s %s pid %d; want %s %s and a new pid", d.Addr(), d.TLSAddr(), d.Pid(), addr, tlsAddr)
		}
		pid = d.Pid()
		c := pop3test.Dial(t, addr)
		c.Login("alice", "pw")
		c.Cmd("STAT", "+OK 1 *")
		c.Cmd("QUIT", "+OK*")
		tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("TLS port after Restart: %v", err)
		}
		tc.Close()
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(); err == nil {
		t.Error("Restart after Close succeeded")
	}
}

// TestPause: a paused instance accepts connections but says nothing until
// Resume, which Greeted notices; Stop ends a paused instance.
func TestPause(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}})
	c := pop3test.Dial(t, d.Addr())
	c.Login("alice", "pw")
	if err := d.Pause(); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", d.Addr(), time.Second)
	if err != nil {
		t.Fatalf("a paused instance refuses connections: %v", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("paused: read %d bytes, %v; want a timeout", n, err)
	}
	c.Send("NOOP\r\n")
	greeted := make(chan time.Time, 1)
	go func() { greeted <- d.Greeted(nil) }()
	time.Sleep(200 * time.Millisecond)
	resumed := time.Now()
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
	if g := <-greeted; g.Before(resumed) || g.Sub(resumed) > time.Second {
		t.Errorf("Greeted %v after Resume, want within a second", g.Sub(resumed))
	}
	c.Expect("+OK*")
	pop3test.NewClient(t, conn).Expect("+OK*")
	if err := d.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("Stop of a paused instance: %v", err)
	}
	if err := d.Resume(); err == nil {
		t.Error("Resume of a stopped instance succeeded")
	}
	done := make(chan struct{})
	close(done)
	if g := d.Greeted(done); !g.IsZero() {
		t.Errorf("Greeted a stopped instance at %v", g)
	}
}

// TestDir: Dir is made mode 0755, whether Start makes it or is given it,
// and Close removes it only if Start made it.
func TestDir(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("integration test: needs dovecot")
	}
	given := filepath.Join(os.TempDir(), fmt.Sprintf("popdc-dir-%d", os.Getpid()), "dc")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(given)) })
	for _, dir := range []string{"", given} {
		d, err := Start(Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(d.cfg.Dir); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("Dir %q: %v, %v; want mode 0755", dir, fi.Mode(), err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(d.cfg.Dir); (dir == "") != errors.Is(err, os.ErrNotExist) {
			t.Errorf("Dir %q after Close: %v; want removed only if Start made it", dir, err)
		}
	}
}

// TestConcurrentSessions checks that many sessions of one user from
// 127.0.0.1 are allowed at once (Dovecot's default is 10).
func TestConcurrentSessions(t *testing.T) {
	t.Parallel()
	const n = 40
	d := New(t, Config{Users: map[string]string{"alice": "pw"}, MaxConnections: 50})
	if _, err := d.AddMessage("alice", []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	var cs []*pop3test.Client
	for range n {
		c := pop3test.Dial(t, d.Addr())
		c.Login("alice", "pw")
		cs = append(cs, c)
	}
	for _, c := range cs {
		c.Cmd("STAT", "+OK 1 *")
	}
	for _, c := range cs {
		c.Cmd("QUIT", "+OK*")
	}
}

// TestBadConfig: Start refuses users and passwords that would break the
// passwd-file or a maildir path, and half a certificate.
func TestBadConfig(t *testing.T) {
	t.Parallel()
	if _, err := findDovecot(); err != nil {
		t.Skip(err)
	}
	for _, cfg := range []Config{
		{Users: map[string]string{"a:b": "pw"}},
		{Users: map[string]string{"../x": "pw"}},
		{Users: map[string]string{"a b": "pw"}},
		{Users: map[string]string{"alice": "p:w"}},
		{Users: map[string]string{"alice": "p\nw"}},
		{TLSCert: "cert.pem"},
	} {
		if d, err := Start(cfg); err == nil {
			d.Close()
			t.Errorf("Start(%+v): no error", cfg)
		}
	}
}

// dial connects to addr without reading the greeting, so that a PROXY
// header can go first.
func dial(t *testing.T, addr string) *pop3test.Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, pop3test.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return pop3test.NewClient(t, c)
}

// proxyV2 is a PROXY protocol v2 header for a TCP over IPv4 connection
// from src to dst, written by hand so the fixture is checked against the
// specification (haproxy's proxy-protocol.txt §2.2), not against the
// proxy's own encoder.
func proxyV2(src, dst netip.AddrPort) []byte {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, 0x11, 0, 12) // v2 PROXY; TCP over IPv4; 12 octets follow
	h = append(h, src.Addr().AsSlice()...)
	h = append(h, dst.Addr().AsSlice()...)
	h = binary.BigEndian.AppendUint16(h, src.Port())
	return binary.BigEndian.AppendUint16(h, dst.Port())
}

// TestHAProxy logs in through the haproxy listener with a v2 and a v1
// header: Dovecot's log names the header's source address as the client.
// A connection without a header is dropped.
func TestHAProxy(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}, HAProxy: true})
	if d.HAProxyAddr() == "" || d.HAProxyAddr() == d.Addr() {
		t.Fatalf("HAProxyAddr() = %q (Addr %q)", d.HAProxyAddr(), d.Addr())
	}
	for _, tt := range []struct {
		name, ip string
		header   []byte
	}{
		{"v2", "192.0.2.9", proxyV2(netip.MustParseAddrPort("192.0.2.9:5555"), netip.MustParseAddrPort("127.0.0.1:110"))},
		{"v1", "198.51.100.4", []byte("PROXY TCP4 198.51.100.4 127.0.0.1 5556 110\r\n")},
	} {
		c := dial(t, d.HAProxyAddr())
		c.Send(string(tt.header))
		c.Expect("+OK*")
		c.Login("alice", "pw")
		c.Cmd("QUIT", "+OK*")
		line, err := d.WaitLog(5*time.Second, "Login: user=<alice>", "rip="+tt.ip+",")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		t.Logf("%s: %s", tt.name, line)
	}

	// Dovecot insists on the header.
	c := dial(t, d.HAProxyAddr())
	c.Send("USER alice\r\n")
	if l, err := c.R.ReadString('\n'); err == nil {
		t.Errorf("without a PROXY header: got %q, want the connection dropped", l)
	}
	if _, err := d.WaitLog(5*time.Second, "Failed to read valid HAproxy data"); err != nil {
		t.Error(err)
	}
}

// TestLoginTrusted sends XCLIENT from a trusted network, as a proxy does:
// the greeting offers it, and the log names the announced client address
// and session id.
func TestLoginTrusted(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}, LoginTrusted: true})
	c := pop3test.Dial(t, d.Addr())
	if !strings.HasPrefix(c.Greeting, "+OK [XCLIENT] ") {
		t.Fatalf("greeting %q does not offer [XCLIENT]", c.Greeting)
	}
	c.Cmd("XCLIENT ADDR=192.0.2.7 PORT=4321 SESSION=xclientTest42 TTL=4", "+OK*")
	c.Login("alice", "pw")
	c.Cmd("QUIT", "+OK*")
	line, err := d.WaitLog(5*time.Second, "Login: user=<alice>", "rip=192.0.2.7,", "session=<xclientTest42>")
	if err != nil {
		t.Fatal(err)
	}
	t.Log(line)
}

// TestXClientUntrusted documents what Dovecot 2.3.19 does without
// LoginTrusted: no [XCLIENT] in the greeting, and XCLIENT is answered +OK
// but ignored, so a proxy must go by the greeting, not by the reply.
func TestXClientUntrusted(t *testing.T) {
	t.Parallel()
	d := New(t, Config{Users: map[string]string{"alice": "pw"}})
	c := pop3test.Dial(t, d.Addr())
	if strings.Contains(c.Greeting, "XCLIENT") {
		t.Fatalf("greeting %q offers XCLIENT to an untrusted client", c.Greeting)
	}
	if got := c.Cmd("XCLIENT ADDR=192.0.2.7 PORT=4321 SESSION=untrusted1 TTL=4", "+OK*"); !strings.Contains(got, "ignoring") {
		t.Errorf("XCLIENT from an untrusted client: %q", got)
	}
	c.Login("alice", "pw")
	c.Cmd("QUIT", "+OK*")
	if _, err := d.WaitLog(5*time.Second, "Login: user=<alice>", "rip=127.0.0.1,"); err != nil {
		t.Fatal(err)
	}
	if log := d.logSince(0); strings.Contains(log, "192.0.2.7") || strings.Contains(log, "untrusted1") {
		t.Errorf("the ignored XCLIENT reached the log:\n%s", log)
	}
}

// TestOAuth2 logs in with a bearer token that the introspection endpoint
// knows, with both mechanisms, and fails with one it does not.
func TestOAuth2(t *testing.T) {
	t.Parallel()
	in := NewIntrospection(t, map[string]string{"good-token": "alice"})
	d := New(t, Config{Users: map[string]string{"alice": "pw"}, OAuth2IntrospectionURL: in.URL})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c := pop3test.Dial(t, d.Addr())
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); !strings.Contains(capa, "SASL PLAIN LOGIN OAUTHBEARER XOAUTH2") {
		t.Errorf("CAPA: %q", capa)
	}
	c.Cmd("AUTH OAUTHBEARER "+b64("n,a=alice,\x01auth=Bearer good-token\x01\x01"), "+OK*")
	c = pop3test.Dial(t, d.Addr())
	c.Cmd("AUTH XOAUTH2 "+b64("user=alice\x01auth=Bearer good-token\x01\x01"), "+OK*")
	c = pop3test.Dial(t, d.Addr())
	c.Cmd("AUTH OAUTHBEARER "+b64("n,a=alice,\x01auth=Bearer bad-token\x01\x01"), "+ *")
	c.Cmd("AQ==", "-ERR [AUTH]*")
	pop3test.Dial(t, d.Addr()).Login("alice", "pw") // passwords still work
	if in.Requests() != 3 {
		t.Errorf("%d introspection requests, want 3", in.Requests())
	}
}
