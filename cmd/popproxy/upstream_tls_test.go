package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/maildrop"
	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/tlsconf"
)

// tlsDrop is a sample mail drop behind implicit TLS whose certificate names
// one host only.
type tlsDrop struct {
	addr    string // host:port, with the certificate's host
	certPEM []byte
	drop    *maildrop.Server
}

// startTLSDrop serves the first n sample messages to user u (password p)
// on host, an IP address on loopback or "localhost", with a certificate for
// host alone, so that the mailbox size tells which drop served a login.
func startTLSDrop(t *testing.T, host string, n int) *tlsDrop {
	t.Helper()
	certPEM, keyPEM, err := tlsconf.SelfSignedPEM(host)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ip := host
	if host == "localhost" {
		ip = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	d := &tlsDrop{addr: net.JoinHostPort(host, port), certPEM: certPEM,
		drop: maildrop.New(map[string]string{"u": "p"}, maildrop.Sample()[:n])}
	go d.drop.Serve(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{pair}}))
	t.Cleanup(func() { d.drop.Close() })
	return d
}

// stat logs in through the proxy at addr and returns its STAT reply.
func stat(t *testing.T, addr string) string {
	t.Helper()
	c, err := pop3test.DialConn(&net.Dialer{}, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("u", "p"); err != nil {
		t.Fatalf("login: %v", err)
	}
	reply, _ := c.Cmd("STAT") // an -ERR comes back as it came, for the caller to judge
	c.Cmd("QUIT")
	return strings.TrimSpace(reply)
}

// TestUpstreamCertificatePerAddress: without server_name each upstream
// address's certificate is checked against that address's own host, at
// start and after a reload. Each drop's certificate names its host alone:
// a login fails over from localhost to 127.0.0.1, and after SIGHUP goes to
// 127.0.0.2. Before, the name of the first address at start was checked
// against every address.
func TestUpstreamCertificatePerAddress(t *testing.T) {
	byName := startTLSDrop(t, "localhost", 1)
	byIP := startTLSDrop(t, "127.0.0.1", 2)
	reloaded := startTLSDrop(t, "127.0.0.2", 3)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	cas := append(append(append([]byte{}, byName.certPEM...), byIP.certPEM...), reloaded.certPEM...)
	if err := os.WriteFile(caFile, cas, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfgText := func(upstreams ...string) string {
		return fmt.Sprintf("listeners: [{name: pop3, address: %q}]\n"+
			"upstream: {addresses: [%s], tls: implicit, ca_file: %q}\naudit: {output: %q}\n",
			addr, `"`+strings.Join(upstreams, `", "`)+`"`, caFile, filepath.Join(dir, "audit.jsonl"))
	}
	cfg := testproc.WriteConfig(t, cfgText(byName.addr, byIP.addr))
	proxy := startBinary(t, buildBinary(t), cfg, addr)

	if got := stat(t, addr); !strings.HasPrefix(got, "+OK 1 ") {
		t.Fatalf("STAT %q, want the localhost drop's single message", got)
	}
	byName.drop.Close()
	if got := stat(t, addr); !strings.HasPrefix(got, "+OK 2 ") {
		t.Fatalf("after failover: STAT %q, want the 127.0.0.1 drop's 2 messages", got)
	}
	if err := os.WriteFile(cfg, []byte(cfgText(reloaded.addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy.Process.Signal(syscall.SIGHUP)
	waitLog(t, proxy, "reload: limits and routes applied")
	if got := stat(t, addr); !strings.HasPrefix(got, "+OK 3 ") {
		t.Fatalf("after reload: STAT %q, want the 127.0.0.2 drop's 3 messages", got)
	}
}
