package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// upstream is a TLS echo server with a certificate for
// upstream.example.test and 127.0.0.1.
func upstream(t *testing.T) (addr string, cert pair) {
	t.Helper()
	cert = writePair(t, t.TempDir(), "upstream", "upstream.example.test", "127.0.0.1")
	kp, err := tls.LoadX509KeyPair(cert.CertFile.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return startEcho(t, &tls.Config{Certificates: []tls.Certificate{kp}}).addr, cert
}

func TestClientVerify(t *testing.T) {
	t.Parallel()
	addr, cert := upstream(t)
	other := writePair(t, t.TempDir(), "other", "upstream.example.test")

	for _, tc := range []struct {
		name string
		cfg  UpstreamConfig
		ok   bool
	}{
		{"CAFile, IP from address", UpstreamConfig{CAFile: cert.CertFile.CertFile}, true},
		{"CAFile, ServerName", UpstreamConfig{CAFile: cert.CertFile.CertFile, ServerName: "upstream.example.test"}, true},
		{"CAFile, wrong ServerName", UpstreamConfig{CAFile: cert.CertFile.CertFile, ServerName: "wrong.example.test"}, false},
		{"wrong CA", UpstreamConfig{CAFile: other.CertFile.CertFile, ServerName: "upstream.example.test"}, false},
		{"system roots", UpstreamConfig{}, false},
		{"InsecureSkipVerify", UpstreamConfig{InsecureSkipVerify: true}, true},
		{"InsecureSkipVerify, wrong name", UpstreamConfig{InsecureSkipVerify: true, ServerName: "wrong.example.test"}, true},
		{"MinVersion 1.3", UpstreamConfig{CAFile: cert.CertFile.CertFile, MinVersion: "1.3"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Client(tc.cfg) // dial uses the host of addr unless ServerName is set
			if err != nil {
				t.Fatal(err)
			}
			c, err := dial(addr, cfg)
			if !tc.ok {
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded, want a verification error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echo(t, c, "+OK\r\n")
		})
	}
}

func TestClientServerName(t *testing.T) {
	t.Parallel()
	cfg, err := Client(UpstreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "" || cfg.MinVersion != tls.VersionTLS12 || len(cfg.NextProtos) != 0 {
		t.Errorf("ServerName %q MinVersion %x NextProtos %q; want the dialled host's name left to the caller", cfg.ServerName, cfg.MinVersion, cfg.NextProtos)
	}
	cfg, err = Client(UpstreamConfig{ServerName: "pop.example.test", MinVersion: "1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "pop.example.test" || cfg.MinVersion != tls.VersionTLS10 {
		t.Errorf("ServerName %q MinVersion %x", cfg.ServerName, cfg.MinVersion)
	}
}

func TestClientCert(t *testing.T) {
	t.Parallel()
	client := writePair(t, t.TempDir(), "client", "popproxy.example.test")
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(client.leaf)
	cert := writePair(t, t.TempDir(), "upstream", "127.0.0.1")
	kp, err := tls.LoadX509KeyPair(cert.CertFile.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := startEcho(t, &tls.Config{
		Certificates: []tls.Certificate{kp},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	})
	cfg, err := Client(UpstreamConfig{CAFile: cert.CertFile.CertFile, ClientCert: &client.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(srv.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, c, "+OK\r\n")
	st := <-srv.states
	if len(st.PeerCertificates) == 0 || !sameCert(st.PeerCertificates[0], client.leaf) {
		t.Fatalf("server saw client certificates %v, want the configured one", st.PeerCertificates)
	}
	if len(st.VerifiedChains) == 0 {
		t.Error("server did not verify the client certificate")
	}

	// Without the client certificate the server refuses. In TLS 1.3 the
	// client learns it on its first read.
	cfg, err = Client(UpstreamConfig{CAFile: cert.CertFile.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := dial(srv.addr, cfg); err == nil {
		_, err = c.Write([]byte("+OK\r\n"))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
		if err == nil {
			t.Error("server accepted a client without a certificate")
		}
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	good := writePair(t, dir, "good", "x.example.test")
	for _, tc := range []struct {
		cfg  UpstreamConfig
		want string
	}{
		{UpstreamConfig{CAFile: missing}, missing},
		{UpstreamConfig{CAFile: garbage}, garbage},
		{UpstreamConfig{ClientCert: &CertFile{garbage, good.KeyFile}}, garbage},
		{UpstreamConfig{ClientCert: &CertFile{good.CertFile.CertFile, missing}}, missing},
		{UpstreamConfig{MinVersion: "1.4"}, "MinVersion"},
	} {
		_, err := Client(tc.cfg)
		wantErrContains(t, err, tc.want)
	}
}
