// Package tlsconf builds the *tls.Config values popproxy needs: one for its
// own listeners (implicit TLS and STLS), from static PEM files, a generated
// self-signed certificate, or certificates that certmagic obtains over ACME;
// and one for dialing the upstream POP3 server. It serves no sockets of its
// own except certmagic's short-lived HTTP-01 challenge listener.
//
// Typical usage:
//
//	m, err := tlsconf.New(tlsconf.Config{
//		Certificates: []tlsconf.CertFile{{CertFile: "pop.crt", KeyFile: "pop.key"}},
//	}, logger)
//	if err != nil {
//		return err
//	}
//	defer m.Close()
//	ln, err := tls.Listen("tcp", ":995", m.ServerConfig())
//	...
//	// on SIGHUP:
//	if err := m.Reload(); err != nil {
//		logger.Error("TLS reload failed; keeping the old certificates", "err", err)
//	}
//
//	up, err := tlsconf.Client(tlsconf.UpstreamConfig{CAFile: "upstream-ca.pem"})
//	// per connection, unless up.ServerName is set: a clone with the dialled host
//	c := up.Clone()
//	c.ServerName = "pop.internal"
//	conn, err := tls.Dial("tcp", "pop.internal:995", c)
package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ALPN protocol identifiers.
const (
	// ProtoPOP3 is POP3's identifier in IANA's ALPN registry.
	ProtoPOP3 = "pop3"
	// ProtoACMETLS1 is the ALPN identifier of the TLS-ALPN-01 ACME challenge
	// (RFC 8737).
	ProtoACMETLS1 = "acme-tls/1"
)

// Config configures the server side: the certificates popproxy presents to
// its clients. At least one source (Certificates, SelfSigned or ACME) must be
// given.
type Config struct {
	// Certificates are static PEM certificate chains with their keys. The
	// first one is the default, served to clients that send no SNI or an SNI
	// that matches no certificate; the others are chosen by SNI, matched
	// against each leaf's DNS SANs (wildcards such as *.example.com match
	// exactly one label). Reload re-reads them.
	Certificates []CertFile

	// SelfSigned, if non-empty, makes New generate an ECDSA P-256
	// self-signed certificate for these names (IP addresses become IP SANs,
	// anything else DNS SANs). It comes after Certificates, so it is the
	// default only if there are no static files. Meant for `popproxy demo`
	// and tests. It lives in memory only and Reload keeps it.
	SelfSigned []string

	// ACME, if non-nil, obtains and renews certificates with certmagic.
	ACME *ACME

	// MinVersion is the lowest TLS version accepted: "1.2" (the default,
	// also for "") or "1.3". Older versions are never accepted.
	MinVersion string

	// DisableSessionTickets turns off TLS session resumption by tickets.
	// By default tickets are on, with keys that crypto/tls generates and
	// rotates itself; a resumed session skips certificate selection, so a
	// client resuming after Reload still sees the certificate of its first
	// handshake until the ticket expires (at most 7 days).
	DisableSessionTickets bool
}

// CertFile names a PEM certificate chain (leaf first) and its PEM private key.
type CertFile struct {
	CertFile string
	KeyFile  string
}

// Manager selects the certificate for each handshake and owns certmagic's
// cache when ACME is on. Its methods are safe for concurrent use.
type Manager struct {
	log        *slog.Logger
	files      []CertFile
	selfSigned []*tls.Certificate
	static     atomic.Pointer[certSet] // swapped whole by Reload
	reloadMu   sync.Mutex              // one Reload at a time
	base       *tls.Config             // cloned by ServerConfig
	acme       *acmeState              // nil when ACME is off
	closeOnce  sync.Once
}

// errNoCertificate is returned to crypto/tls when no source has a
// certificate for a handshake.
var errNoCertificate = errors.New("tlsconf: no certificate for this server name")

// New loads the static certificate files, generates the self-signed
// certificate and, if cfg.ACME is set, starts certmagic and waits until every
// name in cfg.ACME.Domains has a certificate (ACME.StartTimeout). Errors about
// files name the file. If log is nil, slog.Default() is used; certmagic's
// logs go to it too. Call Close when done.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	minVersion, err := parseServerVersion(cfg.MinVersion)
	if err != nil {
		return nil, err
	}
	if len(cfg.Certificates) == 0 && len(cfg.SelfSigned) == 0 && cfg.ACME == nil {
		return nil, errors.New("tlsconf: no certificate source: set Certificates, SelfSigned or ACME")
	}
	m := &Manager{
		log:   log,
		files: append([]CertFile(nil), cfg.Certificates...),
	}
	if len(cfg.SelfSigned) > 0 {
		certPEM, keyPEM, err := SelfSignedPEM(cfg.SelfSigned...)
		if err != nil {
			return nil, err
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: self-signed certificate: %w", err)
		}
		m.selfSigned = []*tls.Certificate{&c}
	}
	set, err := m.loadStatic()
	if err != nil {
		return nil, err
	}
	m.static.Store(set)

	protos := []string{ProtoPOP3}
	if cfg.ACME != nil && cfg.ACME.TLSALPN {
		protos = append(protos, ProtoACMETLS1)
	}
	m.base = &tls.Config{
		MinVersion:             minVersion,
		CipherSuites:           tls12CipherSuites,
		NextProtos:             protos,
		GetCertificate:         m.getCertificate,
		SessionTicketsDisabled: cfg.DisableSessionTickets,
	}

	if cfg.ACME != nil {
		a, err := startACME(*cfg.ACME, set.def == nil, log)
		if err != nil {
			return nil, err
		}
		m.acme = a
	}
	return m, nil
}

// ServerConfig returns a new *tls.Config for a listener; the caller may
// change it. It accepts TLS 1.2 (only ECDHE key exchange with AEAD ciphers)
// and 1.3, or 1.3 only if so configured. ALPN: it offers "pop3" (and
// "acme-tls/1" when ACME.TLSALPN is set); a client that offers ALPN values
// but none of these (http/1.1, imap, ...) gets a fatal no_application_protocol
// alert, which defeats cross-protocol attacks such as ALPACA; a client that
// offers no ALPN is accepted. The certificate is chosen per handshake by
// SNI: static and self-signed certificates first, then certmagic's, then the
// default. Connections whose negotiated protocol is "acme-tls/1" are ACME
// validations (RFC 8737 §3) and must be closed after the handshake without
// speaking POP3.
func (m *Manager) ServerConfig() *tls.Config {
	c := m.base.Clone()
	// Clone shares slices; give the caller its own.
	c.NextProtos = slices.Clone(c.NextProtos)
	c.CipherSuites = slices.Clone(c.CipherSuites)
	return c
}

// Reload re-reads every static certificate file. It is all or nothing: if
// any file fails to load, the certificates in use stay as they were and the
// error names the file. Connections already open are unaffected; new
// handshakes use the new certificates. Self-signed and ACME certificates are
// not touched (certmagic renews its own).
func (m *Manager) Reload() error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	set, err := m.loadStatic()
	if err != nil {
		return err
	}
	m.static.Store(set)
	m.log.Info("tls certificates reloaded", "files", len(m.files))
	return nil
}

// Close stops certmagic's cache maintenance. Listeners using ServerConfig
// keep serving the certificates already loaded. Close may be called more
// than once.
func (m *Manager) Close() {
	m.closeOnce.Do(func() {
		if m.acme != nil {
			m.acme.close()
		}
	})
}

// NotAfter returns the expiry of the certificate served for each name: every
// DNS and IP SAN of the static and self-signed certificates (the first
// certificate holding a name wins, as in selection) and every name certmagic
// holds a certificate for. The map is new on each call.
func (m *Manager) NotAfter() map[string]time.Time {
	out := make(map[string]time.Time)
	for _, c := range m.static.Load().certs {
		for _, name := range certNames(c.Leaf) {
			if _, ok := out[name]; !ok {
				out[name] = c.Leaf.NotAfter
			}
		}
	}
	if m.acme != nil {
		m.acme.notAfter(out)
	}
	return out
}

// getCertificate is the GetCertificate callback of ServerConfig.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	a := m.acme
	// RFC 8737 §3: a validation offers exactly "acme-tls/1" with the SNI of
	// the name being validated; certmagic answers with the challenge cert.
	if a != nil && a.tlsALPN && hello.ServerName != "" &&
		len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ProtoACMETLS1 {
		return a.managed.GetCertificate(hello)
	}
	set := m.static.Load()
	name := normalizeName(hello.ServerName)
	if name != "" {
		if c := set.match(hello, name); c != nil {
			return c, nil
		}
		if a != nil {
			c, err := a.getCertificate(hello, name)
			if err == nil {
				return c, nil
			}
			if set.def == nil {
				return nil, err
			}
			m.log.Debug("tls: no certificate for server name; serving the default",
				"server_name", name, "err", err)
		}
	}
	if set.def != nil {
		return set.def, nil
	}
	if a != nil {
		// certmagic's DefaultServerName is the first ACME domain.
		return a.getDefault(hello)
	}
	return nil, errNoCertificate
}

// tls12CipherSuites are the TLS 1.2 suites ServerConfig allows: ECDHE for
// forward secrecy, AEAD only (no CBC, no RSA key exchange). TLS 1.3 suites
// are not configurable in crypto/tls and are all AEAD.
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// parseServerVersion maps Config.MinVersion to a crypto/tls constant.
func parseServerVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tlsconf: MinVersion %q: want \"1.2\" or \"1.3\"", s)
}
