package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/proxy"
	"github.com/popproxy/popproxy/tlsconf"
)

// testCert is a self-signed certificate for 127.0.0.1 and localhost, with a
// pool that trusts it and its PEM files for tools that want paths.
type testCert struct {
	cert              tls.Certificate
	pool              *x509.CertPool
	certFile, keyFile string
}

var (
	certOnce sync.Once
	certVal  testCert
)

func loadTestCert(t *testing.T) testCert {
	t.Helper()
	certOnce.Do(func() {
		certPEM, keyPEM, err := tlsconf.SelfSignedPEM("127.0.0.1", "localhost")
		if err != nil {
			panic(err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			panic(err)
		}
		dir, err := os.MkdirTemp("", "popproxy-cert-")
		if err != nil {
			panic(err)
		}
		os.Chmod(dir, 0o755) // Dovecot reads these files
		certVal = testCert{cert: c, pool: x509.NewCertPool(),
			certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
		certVal.pool.AppendCertsFromPEM(certPEM)
		os.WriteFile(certVal.certFile, certPEM, 0o644)
		os.WriteFile(certVal.keyFile, keyPEM, 0o644)
	})
	return certVal
}

func serverTLS(t *testing.T) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{loadTestCert(t).cert}, NextProtos: []string{"pop3"}, MinVersion: tls.VersionTLS12}
}

func clientTLS(t *testing.T) *tls.Config {
	return &tls.Config{RootCAs: loadTestCert(t).pool, ServerName: "127.0.0.1"}
}

// stls sends STLS, expects +OK and switches c to TLS.
func stls(c *pop3test.Client, cfg *tls.Config) {
	c.T.Helper()
	c.Cmd("STLS", "+OK*")
	if c.R.Buffered() > 0 {
		c.T.Fatal("server sent data after its STLS +OK")
	}
	tc := tls.Client(c.Conn, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.T.Fatalf("handshake: %v", err)
	}
	c.Conn = tc
	c.R = bufio.NewReader(tc)
}

func startTLSListener(t *testing.T, upstream string, mode proxy.TLSMode, require bool) (string, *recorder) {
	t.Helper()
	addr, _, rec := startListener(t, upstream, proxy.Listener{Name: "tls", TLSMode: mode, TLSConfig: serverTLS(t), RequireTLS: require}, nil)
	return addr, rec
}

// TestSTLSCommandInjection sends commands in the same write as STLS: they
// must never be executed, in plaintext or inside TLS (D1.1, D1.2).
func TestSTLSCommandInjection(t *testing.T) {
	up := startMaildrop(t)
	addr, rec := startTLSListener(t, up.Addr().String(), proxy.TLSStartTLS, true)
	for _, injected := range []string{"CAPA\r\n", "USER victim\r\n"} {
		c := pop3test.Dial(t, addr)
		c.Send("STLS\r\n" + injected)
		c.Expect("-ERR commands after STLS*")
		c.Closed()
		if ev := rec.waitClose(t); ev.Reason != "stls_injection" {
			t.Errorf("close reason %q", ev.Reason)
		}
	}
	// Split over two writes: the injected line reaches the TLS handshake as
	// garbage and kills it; it is never answered.
	c := pop3test.Dial(t, addr)
	c.Cmd("STLS", "+OK*")
	c.Send("CAPA\r\n")
	c.Closed()
	if ev := rec.waitClose(t); ev.Reason != "tls_failed" {
		t.Errorf("close reason %q", ev.Reason)
	}
	if up.connections() != 0 {
		t.Error("upstream contacted")
	}
}

func TestSTLSRules(t *testing.T) {
	up := startMaildrop(t)
	addr, rec := startTLSListener(t, up.Addr().String(), proxy.TLSStartTLS, true)
	c := pop3test.Dial(t, addr)
	c.Cmd("STLS now", "-ERR STLS takes no arguments")
	c.Cmd("CAPA", "+OK*")
	before := c.Body()
	if !strings.Contains(before, "STLS\r\n") || strings.Contains(before, "USER") || strings.Contains(before, "SASL") {
		t.Errorf("CAPA before STLS = %q", before)
	}
	c.Cmd("USER alice", "-ERR [AUTH] TLS required*")
	c.Cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "-ERR [AUTH] TLS required*")
	stls(c, clientTLS(t))
	c.Cmd("STLS", "-ERR TLS already active")
	c.Cmd("CAPA", "+OK*")
	after := c.Body()
	if strings.Contains(after, "STLS") || !strings.Contains(after, "USER\r\n") || !strings.Contains(after, "SASL PLAIN LOGIN\r\n") {
		t.Errorf("CAPA after STLS = %q", after)
	}
	c.Login("alice", "secret")
	c.Cmd("STLS", "-ERR already logged in")
	c.Cmd("RETR 1", "+OK*")
	if got := c.Body(); got != string(sampleMessages[0].Data) {
		t.Errorf("RETR over TLS = %q", got)
	}
	c.Cmd("QUIT", "+OK*")
	rec.waitClose(t)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.tls) != 1 || rec.tls[0].Mode != "starttls" || rec.tls[0].Version == "" || rec.tls[0].CipherSuite == "" {
		t.Errorf("tls events %+v", rec.tls)
	}
}

// TestSTLSForgetsUser checks that USER given before STLS does not count after.
func TestSTLSForgetsUser(t *testing.T) {
	up := startMaildrop(t)
	addr, _ := startTLSListener(t, up.Addr().String(), proxy.TLSStartTLS, false)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	stls(c, clientTLS(t))
	c.Cmd("PASS secret", "-ERR send USER first")
}

func TestImplicitTLS(t *testing.T) {
	up := startMaildrop(t)
	addr, rec := startTLSListener(t, up.Addr().String(), proxy.TLSImplicit, false)

	conn, err := tls.Dial("tcp", addr, clientTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	c := pop3test.NewClient(t, conn)
	c.Expect("+OK popproxy ready *")
	c.Cmd("CAPA", "+OK*")
	if capa := c.Body(); strings.Contains(capa, "STLS") || !strings.Contains(capa, "USER") {
		t.Errorf("CAPA on implicit TLS = %q", capa)
	}
	c.Login("alice", "secret")
	c.Cmd("STAT", "+OK 3 *")
	c.Cmd("QUIT", "+OK*")
	conn.Close()
	rec.waitClose(t)
	rec.mu.Lock()
	if len(rec.tls) != 1 || rec.tls[0].Mode != "implicit" || rec.tls[0].ALPN != "" {
		t.Errorf("tls events %+v", rec.tls)
	}
	rec.mu.Unlock()

	// ALPN: pop3 or none is fine, anything else is refused (ALPACA).
	for protos, ok := range map[string]bool{"pop3": true, "http/1.1": false, "imap": false} {
		cfg := clientTLS(t)
		cfg.NextProtos = []string{protos}
		conn, err := tls.Dial("tcp", addr, cfg)
		if (err == nil) != ok {
			t.Errorf("ALPN %q: handshake error %v", protos, err)
		}
		if err == nil {
			conn.Close()
		}
	}
}

// TestImplicitTLSPlaintext checks that plaintext on the implicit port gets no
// greeting and no answer.
func TestImplicitTLSPlaintext(t *testing.T) {
	up := startMaildrop(t)
	addr, rec := startTLSListener(t, up.Addr().String(), proxy.TLSImplicit, false)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte("USER alice\r\nPASS secret\r\n"))
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(raw)
	if strings.Contains(string(got), "+OK") || strings.Contains(string(got), "-ERR") {
		t.Fatalf("plaintext client got POP3 text: %q", got)
	}
	// Not a session: one refusal record, no session.open or session.close.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.closes) != 0 || len(rec.policy) != 1 {
		t.Fatalf("closes %+v, policy %+v", rec.closes, rec.policy)
	}
	if p := rec.policy[0]; p.Rule != "tls_handshake" || p.Detail != "client sent plaintext to a TLS port" || p.Count != 1 {
		t.Errorf("policy %+v", p)
	}
}
