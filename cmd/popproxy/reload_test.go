package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/tlsconf"
)

// writeCert writes a fresh self-signed certificate to the paths, replacing
// them atomically as a deployment tool would, and returns it.
func writeCert(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	certPEM, keyPEM, err := tlsconf.SelfSignedPEM("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	pair, _ := tls.X509KeyPair(certPEM, keyPEM)
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	return leaf
}

// TestSIGHUPRotatesCertificates rotates the certificate files under a
// running popproxy: after SIGHUP new sessions get the new certificate while a
// session opened before goes on; a broken file keeps the current one.
func TestSIGHUPRotatesCertificates(t *testing.T) {
	bin := buildBinary(t)
	drop := startDrop(t, map[string]string{"u": "p"})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, certFile, keyFile)
	addr := freeAddr(t)
	cfg := testproc.WriteConfig(t, `
listeners: [{name: pop3s, address: "`+addr+`", tls: implicit}]
tls: {certificates: [{cert_file: "`+certFile+`", key_file: "`+keyFile+`"}]}
upstream: {address: "`+drop+`", allow_plaintext_upstream: true}
audit: {output: "`+filepath.Join(dir, "audit.jsonl")+`"}
`)
	cmd := startBinary(t, bin, cfg, addr)
	stderr := cmd.Stderr.(*testproc.SyncBuffer)

	// served dials and returns the certificate the server presents.
	served := func() (*tls.Conn, *x509.Certificate, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return nil, nil, err
		}
		return conn, conn.ConnectionState().PeerCertificates[0], nil
	}
	old, got, err := served()
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if !got.Equal(first) {
		t.Fatal("first certificate not served")
	}
	session := pop3test.NewClient(t, old)
	session.Expect("+OK *")
	session.Login("u", "p")

	second := writeCert(t, certFile, keyFile)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor := func(want *x509.Certificate) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if conn, c, err := served(); err == nil {
				conn.Close()
				if c.Equal(want) {
					return
				}
			}
		}
		t.Fatalf("new certificate not served after SIGHUP; stderr:\n%s", stderr.String())
	}
	waitFor(second)

	// The session opened before the reload goes on.
	session.Cmd("STAT", "+OK 4 *")

	// A broken file is refused and the current certificate stays.
	os.WriteFile(certFile, []byte("not a certificate"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), "keeping the old certificates"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload error logged; stderr:\n%s", stderr.String())
		}
	}
	waitFor(second)
}

// TestSIGHUPReloadsLimits raises a limit under a running popproxy: the open
// session goes on and a second one is now admitted; a broken file is refused
// and the limits in force stay.
func TestSIGHUPReloadsLimits(t *testing.T) {
	bin := buildBinary(t)
	drop := startDrop(t, map[string]string{"u": "p", "v": "p"})
	addr := freeAddr(t)
	dir := t.TempDir()
	cfgText := func(max int) string {
		return fmt.Sprintf("listeners: [{name: pop3, address: %q}]\nupstream: {address: %q}\nlimits: {max_sessions: %d}\naudit: {output: %q}\n",
			addr, drop, max, filepath.Join(dir, "audit.jsonl"))
	}
	cfg := testproc.WriteConfig(t, cfgText(1))
	proxy := startBinary(t, bin, cfg, addr)
	greet := func() (*pop3test.Client, string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := pop3test.NewClient(t, conn)
		return c, c.Line()
	}
	// startBinary's probe connection holds the only slot until its session ends.
	first, g := greet()
	for deadline := time.Now().Add(3 * time.Second); !strings.HasPrefix(g, "+OK popproxy ready ") && time.Now().Before(deadline); {
		first.Conn.Close()
		time.Sleep(50 * time.Millisecond)
		first, g = greet()
	}
	defer first.Conn.Close()
	if !strings.HasPrefix(g, "+OK popproxy ready ") {
		t.Fatalf("first greeting %q", g)
	}
	second, g := greet()
	second.Conn.Close()
	if !strings.HasPrefix(g, "-ERR [SYS/TEMP]") {
		t.Fatalf("second session under max_sessions 1: %q", g)
	}

	os.WriteFile(cfg, []byte(cfgText(2)), 0o644)
	proxy.Process.Signal(syscall.SIGHUP)
	waitLog(t, proxy, "reload: limits and routes applied")
	second, g = greet()
	defer second.Conn.Close()
	if !strings.HasPrefix(g, "+OK popproxy ready ") {
		t.Fatalf("second session after raising the limit: %q", g)
	}

	os.WriteFile(cfg, []byte(cfgText(2)+"limits: {max_sessions: -1}\n"), 0o644)
	proxy.Process.Signal(syscall.SIGHUP)
	waitLog(t, proxy, "keeping the old limits and routes")
	third, g := greet()
	third.Conn.Close()
	if !strings.HasPrefix(g, "-ERR [SYS/TEMP]") {
		t.Fatalf("third session under max_sessions 2: %q", g)
	}
	first.Cmd("QUIT", "+OK*") // the first session lived through it all
}
