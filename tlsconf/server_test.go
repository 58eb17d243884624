package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSNISelection(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writePair(t, dir, "a", "a.example.test")
	b := writePair(t, dir, "b", "b.example.test", "*.wild.example.test")
	m := newManager(t, Config{Certificates: []CertFile{a.CertFile, b.CertFile}})
	srv := startEcho(t, m.ServerConfig())

	for _, tc := range []struct {
		sni  string
		want pair
	}{
		{"a.example.test", a},
		{"b.example.test", b},
		{"B.Example.TEST", b},           // SNI is case-insensitive
		{"x.wild.example.test", b},      // wildcard
		{"y.x.wild.example.test", a},    // a wildcard covers one label only: default
		{"wild.example.test", a},        // nor the bare parent
		{"unknown.example.test", a},     // unknown: default
		{"", a},                         // no SNI: default
		{"b.example.test.", b},          // trailing dot
		{"a.example.test.evil.test", a}, // no suffix matching
	} {
		if got := peerLeaf(t, srv.addr, tc.sni); !sameCert(got, tc.want.leaf) {
			t.Errorf("SNI %q: got certificate for %v, want %v", tc.sni, got.DNSNames, tc.want.leaf.DNSNames)
		}
	}

	// And a verifying client for b's name succeeds against b alone.
	roots := x509.NewCertPool()
	roots.AddCert(b.leaf)
	c, err := dial(srv.addr, &tls.Config{ServerName: "z.wild.example.test", RootCAs: roots})
	if err != nil {
		t.Fatalf("verified dial: %v", err)
	}
	echo(t, c, "+OK\r\n")
	c.Close()
}

func TestSelfSignedAndStaticOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writePair(t, dir, "a", "a.example.test")

	// Self-signed alone: it is the default.
	m := newManager(t, Config{SelfSigned: []string{"localhost", "127.0.0.1"}})
	srv := startEcho(t, m.ServerConfig())
	leaf := peerLeaf(t, srv.addr, "")
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" ||
		len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("self-signed SANs = %v %v, want [localhost] [127.0.0.1]", leaf.DNSNames, leaf.IPAddresses)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("self-signed key is %T, want ECDSA P-256", leaf.PublicKey)
	}

	// With a static file too, the file is the default and the
	// self-signed certificate is chosen by SNI.
	m2 := newManager(t, Config{Certificates: []CertFile{a.CertFile}, SelfSigned: []string{"localhost"}})
	srv2 := startEcho(t, m2.ServerConfig())
	if got := peerLeaf(t, srv2.addr, ""); !sameCert(got, a.leaf) {
		t.Errorf("no SNI: got %v, want the static file", got.DNSNames)
	}
	if got := peerLeaf(t, srv2.addr, "localhost"); got.DNSNames[0] != "localhost" {
		t.Errorf("SNI localhost: got %v, want the self-signed certificate", got.DNSNames)
	}

	na := m2.NotAfter()
	if !na["a.example.test"].Equal(a.leaf.NotAfter) {
		t.Errorf("NotAfter[a.example.test] = %v, want %v", na["a.example.test"], a.leaf.NotAfter)
	}
	if d := time.Until(na["localhost"]); d < 360*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("NotAfter[localhost] in %v, want about a year", d)
	}
}

func TestSelfSignedPEM(t *testing.T) {
	t.Parallel()
	certPEM, keyPEM, err := SelfSignedPEM("mail.example.test", "::1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if !leaf.IsCA || leaf.DNSNames[0] != "mail.example.test" || !leaf.IPAddresses[0].Equal(net.IPv6loopback) {
		t.Errorf("IsCA=%v DNS=%v IP=%v", leaf.IsCA, leaf.DNSNames, leaf.IPAddresses)
	}
	if d := time.Since(leaf.NotBefore); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("NotBefore %v ago, want 1h", d)
	}
	// The certificate is its own root.
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "mail.example.test"}); err != nil {
		t.Errorf("verify against itself: %v", err)
	}
	if _, _, err := SelfSignedPEM(); err == nil {
		t.Error("SelfSignedPEM() with no names: want an error")
	}
}

func TestVersions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writePair(t, dir, "a", "a.example.test")
	def := startEcho(t, newManager(t, Config{Certificates: []CertFile{a.CertFile}}).ServerConfig())
	only13 := startEcho(t, newManager(t, Config{Certificates: []CertFile{a.CertFile}, MinVersion: "1.3"}).ServerConfig())

	client := func(min, max uint16) *tls.Config {
		return &tls.Config{InsecureSkipVerify: true, MinVersion: min, MaxVersion: max}
	}
	for _, tc := range []struct {
		name     string
		addr     string
		min, max uint16
		want     uint16 // 0: refused
	}{
		{"default/1.0", def.addr, tls.VersionTLS10, tls.VersionTLS10, 0},
		{"default/1.1", def.addr, tls.VersionTLS10, tls.VersionTLS11, 0},
		{"default/1.2", def.addr, tls.VersionTLS12, tls.VersionTLS12, tls.VersionTLS12},
		{"default/1.3", def.addr, tls.VersionTLS12, tls.VersionTLS13, tls.VersionTLS13},
		{"1.3/1.2", only13.addr, tls.VersionTLS12, tls.VersionTLS12, 0},
		{"1.3/1.3", only13.addr, tls.VersionTLS13, tls.VersionTLS13, tls.VersionTLS13},
	} {
		c, err := dial(tc.addr, client(tc.min, tc.max))
		if tc.want == 0 {
			if err == nil {
				c.Close()
				t.Errorf("%s: handshake succeeded, want refused", tc.name)
			} else {
				wantErrContains(t, err, "protocol version")
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if v := c.ConnectionState().Version; v != tc.want {
			t.Errorf("%s: version %x, want %x", tc.name, v, tc.want)
		}
		c.Close()
	}

	for _, bad := range []string{"1.0", "1.1", "TLS1.2", "1.4"} {
		if _, err := New(Config{Certificates: []CertFile{a.CertFile}, MinVersion: bad}, nil); err == nil {
			t.Errorf("MinVersion %q accepted", bad)
		}
	}
}

func TestCipherSuites(t *testing.T) {
	t.Parallel()
	m := newManager(t, Config{SelfSigned: []string{"localhost"}}) // ECDSA
	srv := startEcho(t, m.ServerConfig())
	for _, tc := range []struct {
		suite uint16
		ok    bool
	}{
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
		{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, false},
		{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, false},
	} {
		c, err := dial(srv.addr, &tls.Config{
			InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tc.suite},
		})
		if err == nil {
			c.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tls.CipherSuiteName(tc.suite), err, tc.ok)
		}
	}
}

// TestALPN checks crypto/tls's server behaviour that the ALPACA defence
// relies on: with NextProtos set, a client offering only other protocols is
// refused with a fatal no_application_protocol alert (RFC 7301 §3.2).
func TestALPN(t *testing.T) {
	t.Parallel()
	m := newManager(t, Config{SelfSigned: []string{"localhost"}})
	srv := startEcho(t, m.ServerConfig())
	for _, tc := range []struct {
		offer []string
		want  string // negotiated; "!" = refused
	}{
		{nil, ""},
		{[]string{"pop3"}, "pop3"},
		{[]string{"http/1.1", "pop3"}, "pop3"},
		{[]string{"http/1.1"}, "!"},
		{[]string{"h2", "http/1.1"}, "!"},
		{[]string{"imap"}, "!"},
		{[]string{"acme-tls/1"}, "!"}, // TLSALPN is off
	} {
		for _, max := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			c, err := dial(srv.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: tc.offer, MaxVersion: max})
			if tc.want == "!" {
				if err == nil {
					c.Close()
					t.Errorf("ALPN %q (max %x): accepted, want refused", tc.offer, max)
				} else {
					wantErrContains(t, err, "no application protocol")
				}
				continue
			}
			if err != nil {
				t.Errorf("ALPN %q (max %x): %v", tc.offer, max, err)
				continue
			}
			if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
				t.Errorf("ALPN %q (max %x): negotiated %q, want %q", tc.offer, max, got, tc.want)
			}
			echo(t, c, "CAPA\r\n")
			c.Close()
		}
	}
}

func TestSessionTickets(t *testing.T) {
	t.Parallel()
	for _, disabled := range []bool{false, true} {
		m := newManager(t, Config{SelfSigned: []string{"localhost"}, DisableSessionTickets: disabled})
		srv := startEcho(t, m.ServerConfig())
		for _, max := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			cc := &tls.Config{
				ServerName: "localhost", InsecureSkipVerify: true, MaxVersion: max,
				ClientSessionCache: tls.NewLRUClientSessionCache(4),
			}
			var resumed bool
			for range 2 {
				c, err := dial(srv.addr, cc)
				if err != nil {
					t.Fatal(err)
				}
				echo(t, c, "NOOP\r\n") // reads the TLS 1.3 ticket too
				resumed = c.ConnectionState().DidResume
				c.Close()
			}
			if resumed == disabled {
				t.Errorf("DisableSessionTickets=%v, max %x: second handshake resumed=%v", disabled, max, resumed)
			}
		}
	}
}

func TestServerConfigIsACopy(t *testing.T) {
	t.Parallel()
	m := newManager(t, Config{SelfSigned: []string{"localhost"}})
	a := m.ServerConfig()
	a.NextProtos[0] = "changed"
	a.MinVersion = tls.VersionTLS13
	b := m.ServerConfig()
	if b.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x after a caller changed its copy", b.MinVersion)
	}
	if b.NextProtos[0] != "pop3" {
		t.Errorf("NextProtos = %q after a caller changed its copy", b.NextProtos)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writePair(t, dir, "a", "a.example.test")
	b := writePair(t, dir, "b", "b.example.test")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM at all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")

	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"nothing", Config{}, []string{"no certificate source"}},
		{"missing cert", Config{Certificates: []CertFile{{missing, a.KeyFile}}}, []string{missing}},
		{"missing key", Config{Certificates: []CertFile{{a.CertFile.CertFile, missing}}}, []string{missing}},
		{"garbage cert", Config{Certificates: []CertFile{{garbage, a.KeyFile}}}, []string{garbage, "CERTIFICATE"}},
		{"garbage key", Config{Certificates: []CertFile{{a.CertFile.CertFile, garbage}}}, []string{"key " + garbage}},
		{"mismatched key", Config{Certificates: []CertFile{{a.CertFile.CertFile, b.KeyFile}}}, []string{"key " + b.KeyFile, a.CertFile.CertFile}},
		{"second file bad", Config{Certificates: []CertFile{a.CertFile, {garbage, b.KeyFile}}}, []string{garbage}},
		{"empty name", Config{Certificates: []CertFile{{"", a.KeyFile}}}, []string{"must be set"}},
		{"acme without storage", Config{ACME: &ACME{Domains: []string{"x.test"}, Email: "a@x.test", HTTPPort: 80}}, []string{"Storage"}},
		{"acme without email", Config{ACME: &ACME{Domains: []string{"x.test"}, Storage: dir, HTTPPort: 80}}, []string{"Email"}},
		{"acme without challenge", Config{ACME: &ACME{Domains: []string{"x.test"}, Email: "a@x.test", Storage: dir}}, []string{"challenge"}},
		{"acme without names", Config{ACME: &ACME{Email: "a@x.test", Storage: dir, HTTPPort: 80}}, []string{"Domains"}},
		{"acme bad roots", Config{ACME: &ACME{Domains: []string{"x.test"}, Email: "a@x.test", Storage: dir, HTTPPort: 80, TrustedRootsFile: garbage}}, []string{garbage}},
	} {
		m, err := New(tc.cfg, testLogger(t))
		if err == nil {
			m.Close()
			t.Errorf("%s: New succeeded", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, w)
			}
		}
	}
}
