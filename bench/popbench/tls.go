package main

// The TLS measurements (-tests tls-retr,tls-handshakes,tls-idle), with
// popproxy terminating implicit TLS and relaying to Dovecot's plain port:
//
//	tls-retr        bulk RETR, one client, against stunnel4 (the baseline, in
//	                front of the same plain port, with the same certificate),
//	                popproxy, and Dovecot's own TLS port (a reference)
//	tls-handshakes  sessions/s with full handshakes, 64 clients, popproxy
//	                against Dovecot's TLS port, with an ECDSA P-256 and with
//	                an RSA-2048 certificate (a second Dovecot and proxy); then
//	                popproxy with resumption against popproxy without
//	tls-idle        RSS per idle logged-in TLS session through popproxy
//
// Every client speaks TLS 1.3 with X25519 only. Go would otherwise offer
// X25519MLKEM768 too, which popproxy (Go) accepts and OpenSSL 3.0 (Dovecot,
// stunnel) does not know: the handshakes would not do the same work. Clients
// pin the server's certificate rather than verify a chain, which would add a
// signature check per handshake to clients that share the two CPUs with the
// servers.

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/tlsconf"
)

const sectionTLS = "TLS"

// benchCert is a self-signed certificate for 127.0.0.1 in PEM files.
type benchCert struct {
	kind              string // "ECDSA P-256" or "RSA-2048"
	certFile, keyFile string
	der               []byte // the certificate, which clients pin
}

// newCert writes <work>/<name>.crt and .key: ECDSA P-256 (tlsconf's), or
// with rsaKey RSA-2048.
func newCert(work, name string, rsaKey bool) (*benchCert, error) {
	c := &benchCert{kind: "ECDSA P-256", certFile: filepath.Join(work, name+".crt"), keyFile: filepath.Join(work, name+".key")}
	var certPEM, keyPEM []byte
	var err error
	if rsaKey {
		c.kind = "RSA-2048"
		certPEM, keyPEM, err = selfSignedRSA("127.0.0.1")
	} else {
		certPEM, keyPEM, err = tlsconf.SelfSignedPEM("127.0.0.1")
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, errors.New("self-signed certificate: no PEM block")
	}
	c.der = block.Bytes
	if err := os.WriteFile(c.certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	return c, os.WriteFile(c.keyFile, keyPEM, 0o600)
}

// selfSignedRSA is tlsconf.SelfSignedPEM with an RSA-2048 key, for one IP.
func selfSignedRSA(ip string) (certPEM, keyPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: ip},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// clientTLS is the clients' configuration for servers presenting c: TLS 1.3,
// X25519, c pinned, no session cache (every handshake is a full one).
func clientTLS(c *benchCert) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519},
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, c.der) {
				return errors.New("server certificate is not the bench's " + c.kind)
			}
			return nil
		},
	}
}

// handshakes counts a target's TLS handshakes.
type handshakes struct{ full, resumed atomic.Int64 }

// tlsTarget is t with its connections wrapped in TLS with conf; dial returns
// once the handshake is complete. If hs is set, it counts the handshakes.
func tlsTarget(t target, conf *tls.Config, hs *handshakes) target {
	plain := t.dial
	t.dial = func() (net.Conn, error) {
		conn, err := plain()
		if err != nil {
			return nil, err
		}
		tc := tls.Client(conn, conf)
		tc.SetDeadline(time.Now().Add(opTimeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		if hs != nil && tc.ConnectionState().DidResume {
			hs.resumed.Add(1)
		} else if hs != nil {
			hs.full.Add(1)
		}
		return tc, nil
	}
	return t
}

// resumingTarget is tlsTarget with session resumption: each client of the
// sessions/s measurement (see target.perClient) keeps a session cache of its
// own across windows and rounds, and so resumes with the ticket of its
// previous session; only its first handshake is full.
func resumingTarget(plain target, conf *tls.Config, hs *handshakes) target {
	t := tlsTarget(plain, conf, hs)
	var clients []target
	t.perClient = func(i int) target {
		for len(clients) <= i {
			c := conf.Clone()
			c.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			clients = append(clients, tlsTarget(plain, c, hs))
		}
		return clients[i]
	}
	return t
}

// describeTLS returns what a session with t negotiates.
func describeTLS(t target) (string, error) {
	conn, err := t.dial()
	if err != nil {
		return "", fmt.Errorf("%s: %w", t.name, err)
	}
	defer conn.Close()
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return "", fmt.Errorf("%s: not TLS", t.name)
	}
	cs := tc.ConnectionState()
	return fmt.Sprintf("%s %s %s %s", t.name, tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.CurveID), nil
}

// startStunnel runs stunnel4 as a TLS server in front of upstream with
// cert, in the foreground, as a child like popproxy.
func startStunnel(work, name, upstream string, cert *benchCert) (*child, error) {
	bin, err := exec.LookPath("stunnel4")
	if err != nil {
		if bin, err = exec.LookPath("stunnel"); err != nil {
			return nil, errors.New("stunnel4 not found: apt-get install -y stunnel4")
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := fmt.Sprintf("foreground = yes\npid =\nsyslog = no\n\n[pop3s]\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\n",
		addr, upstream, cert.certFile, cert.keyFile)
	confPath := filepath.Join(work, name+".conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return startChild(work, name, addr, "", clientTLS(cert), bin, confPath)
}

// tlsProxy starts a popproxy with an implicit-TLS listener presenting cert,
// in front of upstream.
func (b *bench) tlsProxy(name, upstream string, cert *benchCert) (*child, error) {
	return startProxyConf(b.proxyBin, b.work, name, proxyConf{
		upstream: upstream, audit: b.o.audit, limits: limitsHigh, cert: cert, clients: clientTLS(cert)})
}

// dovecotTLS is Dovecot's own implicit-TLS port, presenting cert.
func dovecotTLS(name string, dc *testdovecot.Instance, cert *benchCert, hs *handshakes) target {
	t := tcpTarget(name, dc.TLSAddr(), func() (time.Duration, error) { return groupCPU(dc.Pid()) })
	return tlsTarget(t, clientTLS(cert), hs)
}

// tlsComparisons runs tls-retr and tls-handshakes. Dovecot (b.dc) was
// started with b.cert, ECDSA P-256.
func (b *bench) tlsComparisons() error {
	p, err := b.tlsProxy("tls", b.dc.Addr(), b.cert)
	if err != nil {
		return err
	}
	defer p.stop()
	if b.o.tests["tls-retr"] {
		if err := b.tlsRETR(p); err != nil {
			return err
		}
	}
	if b.o.tests["tls-handshakes"] {
		if err := b.tlsHandshakes(p); err != nil {
			return err
		}
	}
	return p.stop()
}

// tlsRETR compares bulk RETR through stunnel, popproxy and Dovecot's TLS.
func (b *bench) tlsRETR(p *child) error {
	want, err := b.bulk()
	if err != nil {
		return err
	}
	s, err := startStunnel(b.work, "stunnel", b.dc.Addr(), b.cert)
	if err != nil {
		return err
	}
	defer s.stop()
	dovecot := dovecotTLS("dovecot-tls", b.dc, b.cert, nil)
	dovecot.reference = true
	targets := []target{s.target("stunnel", b.direct), p.target("popproxy", b.direct), dovecot}
	var negotiated []string
	for _, t := range targets {
		if err := warmUp(t, userBulk, userLight); err != nil {
			return err
		}
		d, err := describeTLS(t)
		if err != nil {
			return err
		}
		negotiated = append(negotiated, d)
	}
	b.rep.Notes = append(b.rep.Notes, "tls-retr negotiated: "+strings.Join(negotiated, "; "))
	c := variant(retrComparison(want, ordinaryClient), sectionTLS, "TLS ", ratioAtLeast(1.0))
	c.extra = [][2]string{{"popproxy", "dovecot-tls"}}
	if err := compare(b.rep, evenRounds(b.o.rounds), targets, []comparison{c}); err != nil {
		return err
	}
	return s.stop()
}

// tlsHandshakes compares full-handshake sessions/s of popproxy and of
// Dovecot's TLS port with each certificate, then popproxy's with and without
// resumption. p is the ECDSA proxy in front of b.dc; the RSA pair gets a
// Dovecot of its own (only userLight) and a proxy in front of it.
func (b *bench) tlsHandshakes(p *child) error {
	rsaCert, err := newCert(b.work, "rsa", true)
	if err != nil {
		return err
	}
	dcRSA, err := testdovecot.Start(testdovecot.Config{
		Dir:     filepath.Join(b.work, "dovecot-rsa"),
		Users:   map[string]string{userLight: password},
		TLSCert: rsaCert.certFile, TLSKey: rsaCert.keyFile,
	})
	if err != nil {
		return err
	}
	atExit(func() { dcRSA.Stop() })
	defer dcRSA.Stop()
	if err := fillLight(b.dc, b.o.seed); err != nil {
		return err
	}
	if err := fillLight(dcRSA, b.o.seed); err != nil {
		return err
	}
	pRSA, err := b.tlsProxy("tls-rsa", dcRSA.Addr(), rsaCert)
	if err != nil {
		return err
	}
	defer pRSA.stop()

	var hsFull, hsResumed handshakes
	full := tlsTarget(p.tcp("popproxy", b.direct), clientTLS(b.cert), &hsFull)
	resumed := resumingTarget(p.tcp("popproxy-resumed", b.direct), clientTLS(b.cert), &hsResumed)
	directRSA := dovecotTarget("direct-rsa", dcRSA)
	pairs := []struct {
		targets []target
		prefix  string
		goal    goal
	}{
		{[]target{dovecotTLS("dovecot-tls", b.dc, b.cert, nil), full}, "TLS P-256 ", ratioAtLeast(1.0)},
		{[]target{dovecotTLS("dovecot-tls", dcRSA, rsaCert, nil), pRSA.target("popproxy", directRSA)}, "TLS RSA-2048 ", ratioAtLeast(1.0)},
		{[]target{full, resumed}, "TLS P-256 resumption: ", goal{}},
	}
	for _, pair := range pairs {
		for _, t := range pair.targets {
			if err := warmUp(t, userLight); err != nil {
				return err
			}
		}
		c := variant(sessionsComparison(b.o.clients, b.o.sessionTime), sectionTLS, pair.prefix, pair.goal)
		if err := compare(b.rep, evenRounds(b.o.rounds), pair.targets, []comparison{c}); err != nil {
			return err
		}
	}
	// Full handshakes must have been full, resumed ones resumed.
	if n := hsFull.resumed.Load(); n > 0 {
		return fmt.Errorf("tls-handshakes: %d handshakes resumed without a session cache", n)
	}
	r, f := hsResumed.resumed.Load(), hsResumed.full.Load()
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf(
		"tls-handshakes: popproxy-resumed resumed %d of %d handshakes (%.1f%%; each client's first is full); popproxy's %d were all full",
		r, r+f, 100*float64(r)/float64(max(r+f, 1)), hsFull.full.Load()))
	return pRSA.stop()
}

// tlsIdle measures popproxy's RSS per idle logged-in TLS session, with a
// proxy of its own, as idle does for plain sessions.
func (b *bench) tlsIdle() error {
	if err := fillLight(b.dc, b.o.seed); err != nil {
		return err
	}
	p, err := b.tlsProxy("tls-idle", b.dc.Addr(), b.cert)
	if err != nil {
		return err
	}
	defer p.stop()
	m, err := measureIdle(p.target("popproxy", b.direct), p.pid(), b.o.idle)
	if err != nil {
		return err
	}
	m.Section, m.Name, m.goal = sectionTLS, "RSS per idle TLS session", atMost(16, "KiB")
	b.rep.Metrics = append(b.rep.Metrics, m)
	return p.stop()
}
