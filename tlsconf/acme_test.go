package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// pebbleCA is an in-process Pebble ACME server, wired as cmd/pebble does.
// Its environment variables are set in TestMain.
type pebbleCA struct {
	dirURL    string            // ACME directory, over HTTPS
	rootsFile string            // PEM of the directory's HTTPS certificate
	root      *x509.Certificate // Pebble's issuing root
}

// startPebble starts Pebble. Its VA validates TLS-ALPN-01 on tlsPort and
// resolves names with the DNS server at resolver ("" = system resolver);
// both matter only when PEBBLE_VA_ALWAYS_VALID is off.
func startPebble(t *testing.T, tlsPort int, resolver string) *pebbleCA {
	t.Helper()
	out := io.Discard
	if testing.Verbose() {
		out = tWriter{t}
	}
	logger := log.New(out, "pebble ", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1,
		map[string]ca.Profile{"default": {Description: "default profile"}})
	validator := va.New(logger, 80, tlsPort, false, resolver, store)
	front := wfe.New(logger, store, validator, authority,
		[]string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	// Pebble insists on HTTPS (its JWS "url" check hard-codes the scheme).
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)

	rootsFile := filepath.Join(t.TempDir(), "acme-server.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(rootsFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	root := authority.GetRootCert(0)
	if root == nil {
		t.Fatal("pebble has no root")
	}
	return &pebbleCA{dirURL: srv.URL + "/dir", rootsFile: rootsFile, root: root.Cert}
}

func (p *pebbleCA) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.root)
	return pool
}

// checkFromPebble fails unless a verified handshake's chain ends at
// Pebble's root through a Pebble intermediate.
func checkFromPebble(t *testing.T, cs tls.ConnectionState, p *pebbleCA, name string) *x509.Certificate {
	t.Helper()
	leaf := cs.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != name {
		t.Errorf("leaf SANs %v, want [%s]", leaf.DNSNames, name)
	}
	if !strings.HasPrefix(leaf.Issuer.CommonName, "Pebble Intermediate CA") {
		t.Errorf("leaf issuer %q, want a Pebble intermediate", leaf.Issuer.CommonName)
	}
	if len(cs.VerifiedChains) == 0 {
		t.Fatal("no verified chain")
	}
	chain := cs.VerifiedChains[0]
	if !sameCert(chain[len(chain)-1], p.root) {
		t.Errorf("chain ends at %q, want Pebble's root", chain[len(chain)-1].Subject)
	}
	return leaf
}

// TestACMEHTTP01 obtains a certificate at New over HTTP-01 (Pebble
// always-valid, so certmagic's listener is bound but not called), serves it,
// and loads it from storage on a restart without a new issuance.
func TestACMEHTTP01(t *testing.T) {
	t.Parallel()
	p := startPebble(t, 443, "")
	port := freePort(t)
	cfg := Config{ACME: &ACME{
		Domains:          []string{"mail.example.test"},
		Email:            "postmaster@example.test",
		CA:               p.dirURL,
		Storage:          t.TempDir(),
		HTTPPort:         port,
		ListenHost:       "127.0.0.1",
		TrustedRootsFile: p.rootsFile,
		StartTimeout:     30 * time.Second,
	}}
	start := time.Now()
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("New with ACME issuance: %v", time.Since(start))
	srv := startEcho(t, m.ServerConfig())

	c, err := dial(srv.addr, &tls.Config{ServerName: "mail.example.test", RootCAs: p.pool(), NextProtos: []string{"pop3"}})
	if err != nil {
		t.Fatalf("verified handshake: %v", err)
	}
	leaf := checkFromPebble(t, c.ConnectionState(), p, "mail.example.test")
	echo(t, c, "CAPA\r\n")
	c.Close()

	// Without SNI the first ACME domain is the default; an unknown name
	// has no certificate (there is no static default).
	if got := peerLeaf(t, srv.addr, ""); !sameCert(got, leaf) {
		t.Errorf("no SNI: got %v, want the ACME certificate", got.DNSNames)
	}
	if c, err := dial(srv.addr, insecure("other.example.test")); err == nil {
		c.Close()
		t.Error("unknown SNI with no default: handshake succeeded")
	}
	if got := m.NotAfter()["mail.example.test"]; !got.Equal(leaf.NotAfter) {
		t.Errorf("NotAfter = %v, want %v", got, leaf.NotAfter)
	}
	// certmagic closed its challenge listener.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Errorf("HTTP-01 port still bound after issuance: %v", err)
	} else {
		ln.Close()
	}
	m.Close()
	m.Close() // idempotent

	// A restart finds the certificate in Storage.
	m2 := newManager(t, cfg)
	srv2 := startEcho(t, m2.ServerConfig())
	if got := peerLeaf(t, srv2.addr, "mail.example.test"); !sameCert(got, leaf) {
		t.Errorf("after restart: serial %v, want the stored %v", got.SerialNumber, leaf.SerialNumber)
	}
}

// startDNS answers every A query with 127.0.0.1 over TCP, as Pebble's VA
// asks with a custom resolver.
func startDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{
		Listener:          ln,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			for _, q := range r.Question {
				if q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
						A:   net.IPv4(127, 0, 0, 1),
					})
				}
			}
			w.WriteMsg(m)
		}),
	}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// TestACMETLSALPN uses real TLS-ALPN-01 validation: Pebble resolves the
// names to 127.0.0.1 and connects to the challenge port. At New nothing is
// there yet, so certmagic answers on its own listener; afterwards
// popproxy's listener (ServerConfig) holds the port and answers the
// validation of a name issued on demand. Names outside the on-demand
// allow-list get the static default.
func TestACMETLSALPN(t *testing.T) {
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0") // so no t.Parallel
	port := freePort(t)
	p := startPebble(t, port, startDNS(t))
	static := writePair(t, t.TempDir(), "static", "static.example.test")
	m := newManager(t, Config{
		Certificates: []CertFile{static.CertFile},
		ACME: &ACME{
			Domains:          []string{"mail.example.test"},
			OnDemand:         []string{"*.od.example.test", "exact.example.test"},
			Email:            "hostmaster@example.test",
			CA:               p.dirURL,
			Storage:          t.TempDir(),
			TLSALPN:          true,
			TLSALPNPort:      port,
			ListenHost:       "127.0.0.1",
			TrustedRootsFile: p.rootsFile,
			StartTimeout:     30 * time.Second,
		},
	})

	sc := m.ServerConfig()
	if len(sc.NextProtos) != 2 || sc.NextProtos[0] != ProtoPOP3 || sc.NextProtos[1] != ProtoACMETLS1 {
		t.Fatalf("NextProtos = %q, want [pop3 acme-tls/1]", sc.NextProtos)
	}
	var validations atomic.Int32
	get := sc.GetCertificate
	sc.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == ProtoACMETLS1 {
			validations.Add(1)
		}
		return get(h)
	}
	srv := startEchoAt(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), sc)

	verified := func(name string) *tls.Config {
		return &tls.Config{ServerName: name, RootCAs: p.pool()}
	}
	c, err := dial(srv.addr, verified("mail.example.test"))
	if err != nil {
		t.Fatalf("mail.example.test: %v", err)
	}
	checkFromPebble(t, c.ConnectionState(), p, "mail.example.test")
	c.Close()
	if n := validations.Load(); n != 0 {
		t.Errorf("%d validations reached the listener before any on-demand issuance", n)
	}

	// On demand: the handshake waits while certmagic obtains the
	// certificate, and Pebble validates through this listener.
	start := time.Now()
	c, err = dial(srv.addr, verified("a.od.example.test"))
	if err != nil {
		t.Fatalf("on-demand a.od.example.test: %v", err)
	}
	t.Logf("on-demand handshake with TLS-ALPN-01 issuance: %v", time.Since(start))
	checkFromPebble(t, c.ConnectionState(), p, "a.od.example.test")
	echo(t, c, "STAT\r\n")
	c.Close()
	if validations.Load() == 0 {
		t.Error("Pebble's TLS-ALPN-01 validation did not reach popproxy's listener")
	}
	challengeSeen := false
	for len(srv.states) > 0 {
		if (<-srv.states).NegotiatedProtocol == ProtoACMETLS1 {
			challengeSeen = true
		}
	}
	if !challengeSeen {
		t.Error("no handshake negotiated acme-tls/1")
	}

	// Not allowed on demand: the static default, and no issuance.
	for _, name := range []string{"evil.example.test", "x.a.od.example.test", "od.example.test"} {
		if got := peerLeaf(t, srv.addr, name); !sameCert(got, static.leaf) {
			t.Errorf("%s: got %v, want the static default", name, got.DNSNames)
		}
	}
	// acme-tls/1 alone with no challenge in progress is refused.
	if c, err := dial(srv.addr, &tls.Config{ServerName: "mail.example.test", InsecureSkipVerify: true, NextProtos: []string{ProtoACMETLS1}}); err == nil {
		c.Close()
		t.Error("acme-tls/1 handshake without a pending challenge succeeded")
	}

	na := m.NotAfter()
	for _, name := range []string{"mail.example.test", "a.od.example.test", "static.example.test"} {
		if na[name].IsZero() {
			t.Errorf("NotAfter has no %s: %v", name, na)
		}
	}
	if _, ok := na["evil.example.test"]; ok {
		t.Error("NotAfter lists a name that was refused")
	}
}
