package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// ACME configures certificates obtained and renewed by certmagic. Setting it
// means agreeing to the CA's terms of service. There is no DNS-01: turn on
// HTTP-01 (HTTPPort), TLS-ALPN-01 (TLSALPN) or both.
type ACME struct {
	// Domains get a certificate each at New, renewed in the background.
	Domains []string

	// Email is the ACME account's contact address. Required: with none,
	// certmagic stops at start to ask for one on standard input.
	Email string

	// CA is the ACME directory URL. If empty, Let's Encrypt's production
	// directory is used.
	CA string

	// Storage is the folder where certmagic keeps the account, keys and
	// certificates (certmagic.FileStorage). Required.
	Storage string

	// HTTPPort is where certmagic briefly listens to answer HTTP-01
	// challenges. The CA always connects to port 80, so this is 80 or a
	// port that 80 is forwarded to. 0 turns HTTP-01 off.
	HTTPPort int

	// ListenHost is the host certmagic's challenge listeners bind to. If
	// empty, all interfaces.
	ListenHost string

	// TLSALPN answers TLS-ALPN-01 challenges on popproxy's implicit-TLS
	// listeners: ServerConfig then also accepts ALPN "acme-tls/1", and the
	// proxy closes such connections after the handshake. The CA always
	// connects to port 443, so the implicit-TLS listener must be on
	// TLSALPNPort and 443 must reach it.
	// During New that listener is not up yet, so certmagic binds
	// ListenHost:TLSALPNPort itself for the challenge and closes it
	// afterwards; later renewals find popproxy's listener there (the port
	// is in use) and are answered through ServerConfig.
	TLSALPN bool

	// TLSALPNPort is the port described at TLSALPN. If 0, 443.
	TLSALPNPort int

	// OnDemand lists names that may get a certificate the first time a
	// client asks for them by SNI, at handshake time. An entry
	// "*.example.com" allows any single label in its place. Empty means no
	// on-demand issuance.
	OnDemand []string

	// TrustedRootsFile is a PEM file of roots to trust for the CA's HTTPS
	// endpoint instead of the system roots (private CAs, tests).
	TrustedRootsFile string

	// StartTimeout bounds how long New waits for the certificates of
	// Domains. If 0, 2 minutes.
	StartTimeout time.Duration
}

// defaultStartTimeout is ACME.StartTimeout's default.
const defaultStartTimeout = 2 * time.Minute

// trustedRoots reads ACME.TrustedRootsFile; nil for "" (the system roots).
func trustedRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: read ACME trusted roots: %w", err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: ACME trusted roots %s: %w", file, err)
	}
	roots := x509.NewCertPool()
	for _, c := range certs {
		roots.AddCert(c)
	}
	return roots, nil
}

// acmeState is the certmagic side of a Manager.
type acmeState struct {
	tlsALPN  bool
	domains  map[string]bool
	allow    []string          // ACME.OnDemand, normalized
	cache    *certmagic.Cache  // shared by both configs
	managed  *certmagic.Config // Domains; OnDemand nil so ManageSync obtains now
	onDemand *certmagic.Config // nil unless ACME.OnDemand is set
	mu       sync.Mutex        // guards names
	names    map[string]bool   // every SAN certmagic has cached, for NotAfter
	log      *slog.Logger
}

// startACME sets up certmagic and obtains (or loads from Storage) a
// certificate for each of cfg.Domains before it returns. ManageSync is used
// rather than ManageAsync so that a wrong CA, account or challenge setup
// fails popproxy's start instead of leaving it without a certificate. If
// the only failure is a renewal and every domain still has an unexpired
// certificate, it logs a warning and carries on; certmagic's maintenance
// retries. If defaultCert, the first domain serves clients without SNI.
func startACME(cfg ACME, defaultCert bool, log *slog.Logger) (*acmeState, error) {
	if cfg.Storage == "" {
		return nil, errors.New("tlsconf: ACME.Storage is required")
	}
	if cfg.Email == "" {
		// certmagic's interactive (ManageSync) path would prompt on stdin.
		return nil, errors.New("tlsconf: ACME.Email is required")
	}
	if len(cfg.Domains) == 0 && len(cfg.OnDemand) == 0 {
		return nil, errors.New("tlsconf: ACME needs Domains or OnDemand names")
	}
	if cfg.HTTPPort == 0 && !cfg.TLSALPN {
		return nil, errors.New("tlsconf: ACME needs a challenge: set HTTPPort (HTTP-01) or TLSALPN (TLS-ALPN-01)")
	}
	roots, err := trustedRoots(cfg.TrustedRootsFile)
	if err != nil {
		return nil, err
	}
	ca := cfg.CA
	if ca == "" {
		ca = certmagic.LetsEncryptProductionCA
	}
	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = defaultStartTimeout
	}

	a := &acmeState{
		tlsALPN: cfg.TLSALPN,
		domains: make(map[string]bool),
		names:   make(map[string]bool),
		log:     log,
	}
	var domains []string
	for _, d := range cfg.Domains {
		d = normalizeName(d)
		a.domains[d] = true
		domains = append(domains, d)
	}
	for _, n := range cfg.OnDemand {
		a.allow = append(a.allow, normalizeName(n))
	}
	zl := newZapLogger(log.Handler().WithAttrs([]slog.Attr{slog.String("component", "certmagic")}))
	storage := &certmagic.FileStorage{Path: cfg.Storage}
	// Never certmagic.NewDefault: its cache is global and never stopped.
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: a.configForCert,
		Logger:           zl,
	})
	newConfig := func(onDemand *certmagic.OnDemandConfig, defaultName string) *certmagic.Config {
		c := certmagic.New(a.cache, certmagic.Config{
			Storage:           storage,
			Logger:            zl,
			OnDemand:          onDemand,
			DefaultServerName: defaultName,
			OnEvent:           a.onEvent,
			ShouldEmitFunc:    func(event string) bool { return event == "cached_managed_cert" },
		})
		// NewACMEIssuer, not a literal: it builds the HTTP client from
		// TrustedRoots.
		c.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(c, certmagic.ACMEIssuer{
			CA:                      ca,
			Email:                   cfg.Email,
			Agreed:                  true,
			DisableHTTPChallenge:    cfg.HTTPPort == 0,
			DisableTLSALPNChallenge: !cfg.TLSALPN,
			ListenHost:              cfg.ListenHost,
			AltHTTPPort:             cfg.HTTPPort,
			AltTLSALPNPort:          cfg.TLSALPNPort,
			TrustedRoots:            roots,
			Logger:                  zl,
		})}
		return c
	}
	defaultName := ""
	if defaultCert && len(domains) > 0 {
		defaultName = domains[0]
	}
	a.managed = newConfig(nil, defaultName)
	if len(a.allow) > 0 {
		a.onDemand = newConfig(&certmagic.OnDemandConfig{DecisionFunc: a.decide}, "")
	}

	if len(domains) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := a.managed.ManageSync(ctx, domains)
		cancel()
		if err != nil {
			if missing := a.missing(domains); len(missing) > 0 {
				a.close()
				return nil, fmt.Errorf("tlsconf: ACME (%s) for %s: %w", ca, strings.Join(missing, ", "), err)
			}
			log.Warn("ACME renewal failed at start; serving the current certificates until certmagic's retry succeeds",
				"ca", ca, "err", err)
		}
	}
	return a, nil
}

// configForCert is the cache's GetConfigForCert: certificates obtained on
// demand are maintained by the on-demand config, all others by managed.
func (a *acmeState) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	if a.onDemand != nil {
		for _, n := range c.Names {
			n = normalizeName(n)
			if !a.domains[n] && a.allowedOnDemand(n) {
				return a.onDemand, nil
			}
		}
	}
	return a.managed, nil
}

// decide is the on-demand DecisionFunc: only allow-listed names.
func (a *acmeState) decide(_ context.Context, name string) error {
	if a.allowedOnDemand(normalizeName(name)) {
		return nil
	}
	return fmt.Errorf("tlsconf: %q is not in the ACME on-demand allow-list", name)
}

func (a *acmeState) allowedOnDemand(name string) bool {
	for _, p := range a.allow {
		if p == name {
			return true
		}
		if rest, ok := strings.CutPrefix(p, "*"); ok {
			if i := strings.IndexByte(name, '.'); i > 0 && name[i:] == rest {
				return true
			}
		}
	}
	return false
}

// onEvent records the names of cached certificates for NotAfter.
func (a *acmeState) onEvent(_ context.Context, event string, data map[string]any) error {
	if event != "cached_managed_cert" {
		return nil
	}
	sans, _ := data["sans"].([]string)
	a.mu.Lock()
	for _, n := range sans {
		a.names[normalizeName(n)] = true
	}
	a.mu.Unlock()
	return nil
}

// getCertificate returns certmagic's certificate for a non-empty SNI name:
// from the cache, or obtained now if name is allowed on demand.
func (a *acmeState) getCertificate(hello *tls.ClientHelloInfo, name string) (*tls.Certificate, error) {
	cfg := a.managed
	if a.onDemand != nil && !a.domains[name] && a.allowedOnDemand(name) {
		cfg = a.onDemand
	}
	return checkCert(cfg.GetCertificate(hello))
}

// getDefault serves a client without SNI (certmagic tries the local IP,
// then DefaultServerName).
func (a *acmeState) getDefault(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return checkCert(a.managed.GetCertificate(hello))
}

// checkCert turns certmagic's empty certificate with a nil error, which it
// returns in a few paths, into an error.
func checkCert(c *tls.Certificate, err error) (*tls.Certificate, error) {
	if err != nil {
		return nil, err
	}
	if c == nil || len(c.Certificate) == 0 {
		return nil, errNoCertificate
	}
	return c, nil
}

// missing returns the names without an unexpired certificate in the cache.
func (a *acmeState) missing(names []string) []string {
	var out []string
	now := time.Now()
	for _, n := range names {
		ok := false
		for _, c := range a.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil && now.Before(c.Leaf.NotAfter) {
				ok = true
				break
			}
		}
		if !ok {
			out = append(out, n)
		}
	}
	return out
}

// notAfter adds the newest expiry of each name certmagic holds, unless a
// static certificate already has the name (static ones are served first).
func (a *acmeState) notAfter(out map[string]time.Time) {
	a.mu.Lock()
	names := make([]string, 0, len(a.names))
	for n := range a.names {
		names = append(names, n)
	}
	a.mu.Unlock()
	for _, n := range names {
		if _, ok := out[n]; ok {
			continue
		}
		var latest time.Time
		for _, c := range a.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(latest) {
				latest = c.Leaf.NotAfter
			}
		}
		if !latest.IsZero() {
			out[n] = latest
		}
	}
}

func (a *acmeState) close() {
	a.cache.Stop()
}
