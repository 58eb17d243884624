package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// UpstreamConfig configures TLS toward the upstream POP3 server.
type UpstreamConfig struct {
	// ServerName is the name verified in the server's certificate and sent
	// as SNI, for every address of the upstream. If empty, the caller must
	// set it per connection to the host of the address it dials (an IP
	// address is then verified against the certificate's IP SANs and no SNI
	// is sent), so that failover to a second host checks that host's name;
	// the proxy does.
	ServerName string

	// CAFile is a PEM file of root certificates to trust instead of the
	// system roots. If empty, the system roots are used.
	CAFile string

	// InsecureSkipVerify accepts any certificate. Only for tests and for an
	// upstream reached over a link that is already trusted.
	InsecureSkipVerify bool

	// ClientCert, if non-nil, is presented when the server asks for a
	// client certificate (mutual TLS).
	ClientCert *CertFile

	// MinVersion is the lowest TLS version accepted: "1.2" (the default,
	// also for ""), "1.3", or, for legacy servers only, "1.0" or "1.1".
	MinVersion string
}

// Client returns the *tls.Config for dialing the upstream. It offers no ALPN,
// because legacy servers may not know the "pop3" identifier. Errors about
// files name the file.
func Client(cfg UpstreamConfig) (*tls.Config, error) {
	minVersion, err := parseClientVersion(cfg.MinVersion)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		ServerName:         cfg.ServerName,
		MinVersion:         minVersion,
		InsecureSkipVerify: cfg.InsecureSkipVerify,
	}
	if cfg.CAFile != "" {
		data, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: read upstream CA file: %w", err)
		}
		certs, err := parseCertsPEM(data)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: upstream CA file %s: %w", cfg.CAFile, err)
		}
		tc.RootCAs = x509.NewCertPool()
		for _, c := range certs {
			tc.RootCAs.AddCert(c)
		}
	}
	if cfg.ClientCert != nil {
		c, err := loadKeyPair(*cfg.ClientCert)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{*c}
	}
	return tc, nil
}

// parseClientVersion maps UpstreamConfig.MinVersion to a crypto/tls constant.
func parseClientVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.1":
		return tls.VersionTLS11, nil
	case "1.0":
		return tls.VersionTLS10, nil
	}
	return 0, fmt.Errorf("tlsconf: upstream MinVersion %q: want \"1.0\", \"1.1\", \"1.2\" or \"1.3\"", s)
}
