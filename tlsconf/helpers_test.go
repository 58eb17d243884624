package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Pebble reads these when its VA and WFE are built (see acme_test.go).
	// Set once here so that Pebble tests can run in parallel; a test that
	// needs real validation overrides PEBBLE_VA_ALWAYS_VALID with t.Setenv.
	for k, v := range map[string]string{
		"PEBBLE_VA_ALWAYS_VALID": "1", // no validation request
		"PEBBLE_VA_NOSLEEP":      "1", // no random 0-4 s sleep
		"PEBBLE_WFE_NONCEREJECT": "0", // no rejected good nonces
		"PEBBLE_AUTHZREUSE":      "0", // fresh authorizations every time
	} {
		os.Setenv(k, v)
	}
	os.Exit(m.Run())
}

// testLogger writes to the test log at debug level when -v is given.
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// pair is a generated certificate written to files.
type pair struct {
	CertFile
	leaf    *x509.Certificate
	certPEM []byte
}

// writePair generates a self-signed certificate for names into dir, under
// the given base file name.
func writePair(t *testing.T, dir, base string, names ...string) pair {
	t.Helper()
	certPEM, keyPEM, err := SelfSignedPEM(names...)
	if err != nil {
		t.Fatal(err)
	}
	p := pair{
		CertFile: CertFile{CertFile: filepath.Join(dir, base+".crt"), KeyFile: filepath.Join(dir, base+".key")},
		certPEM:  certPEM,
	}
	if err := os.WriteFile(p.CertFile.CertFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.KeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	p.leaf = c.Leaf
	return p
}

// newManager is New that fails the test on error and closes at cleanup.
func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// echoServer is a TLS listener on loopback whose connections echo what they
// read after the handshake. Handshake errors are kept for inspection.
type echoServer struct {
	addr string
	mu   sync.Mutex
	errs []error
	// states receives each completed handshake's state (buffered).
	states chan tls.ConnectionState
}

func startEcho(t *testing.T, cfg *tls.Config) *echoServer {
	t.Helper()
	return startEchoAt(t, "127.0.0.1:0", cfg)
}

func startEchoAt(t *testing.T, addr string, cfg *tls.Config) *echoServer {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{addr: ln.Addr().String(), states: make(chan tls.ConnectionState, 64)}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns = append(conns, c)
			connsMu.Unlock()
			wg.Add(1)
			go s.handle(&wg, c.(*tls.Conn))
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *echoServer) handle(wg *sync.WaitGroup, c *tls.Conn) {
	defer wg.Done()
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		s.mu.Lock()
		s.errs = append(s.errs, err)
		s.mu.Unlock()
		return
	}
	cs := c.ConnectionState()
	select {
	case s.states <- cs:
	default:
	}
	if cs.NegotiatedProtocol == ProtoACMETLS1 {
		return // RFC 8737 §3: validation only, no application data.
	}
	io.Copy(c, c)
}

// dial connects to addr and completes the handshake (which may include an
// on-demand ACME issuance, hence the generous timeout).
func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 20 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, nil
}

// peerLeaf dials with verification off and returns the server's leaf.
func peerLeaf(t *testing.T, addr, serverName string) *x509.Certificate {
	t.Helper()
	c, err := dial(addr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("dial %s (SNI %q): %v", addr, serverName, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// echo writes a line and checks that it comes back.
func echo(t *testing.T, c *tls.Conn, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(line))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != line {
		t.Fatalf("echo = %q, want %q", buf, line)
	}
}

func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.Raw, b.Raw)
}

// wantErrContains fails unless err is non-nil and mentions every part.
func wantErrContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want an error mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("err = %v, want it to mention %q", err, p)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// insecure is a client config that sends sni and skips verification.
func insecure(sni string) *tls.Config {
	return &tls.Config{ServerName: sni, InsecureSkipVerify: true}
}
