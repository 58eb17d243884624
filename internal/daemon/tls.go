package daemon

import (
	"crypto/tls"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/proxy"
	"github.com/popproxy/popproxy/tlsconf"
)

func tlsMode(mode string) proxy.TLSMode {
	switch mode {
	case config.TLSStartTLS:
		return proxy.TLSStartTLS
	case config.TLSImplicit:
		return proxy.TLSImplicit
	}
	return proxy.TLSNone
}

func proxyListener(l config.Listener, certs *tlsconf.Manager) proxy.Listener {
	lc := proxy.Listener{Name: l.Name, TLSMode: tlsMode(l.TLS), RequireTLS: *l.RequireTLS, APOP: l.APOP == config.APOPPassthrough}
	if lc.TLSMode != proxy.TLSNone {
		lc.TLSConfig = certs.ServerConfig()
	}
	return lc
}

// serverTLS maps the configuration onto tlsconf's.
func serverTLS(cfg *config.Config) tlsconf.Config {
	t := cfg.TLS
	out := tlsconf.Config{
		SelfSigned:            t.SelfSigned,
		MinVersion:            t.MinVersion,
		DisableSessionTickets: !*t.SessionTickets,
	}
	for _, c := range t.Certificates {
		out.Certificates = append(out.Certificates, tlsconf.CertFile{CertFile: c.CertFile, KeyFile: c.KeyFile})
	}
	if a := t.ACME; a != nil {
		out.ACME = &tlsconf.ACME{
			Domains: a.Domains, Email: a.Email, CA: a.CA, Storage: a.Storage,
			HTTPPort: a.HTTPPort, ListenHost: a.ListenHost, TLSALPN: a.TLSALPN, TLSALPNPort: a.TLSALPNPort,
			OnDemand: a.OnDemand, TrustedRootsFile: a.TrustedRootsFile,
		}
	}
	return out
}

// clientTLS returns the configuration for dialing an upstream, or nil.
func clientTLS(u config.Upstream) (*tls.Config, error) {
	if u.TLS == config.TLSNone {
		return nil, nil
	}
	out := tlsconf.UpstreamConfig{
		ServerName:         u.ServerName,
		CAFile:             u.CAFile,
		InsecureSkipVerify: u.InsecureSkipVerify,
		MinVersion:         u.MinVersion,
	}
	if u.ClientCert != nil {
		out.ClientCert = &tlsconf.CertFile{CertFile: u.ClientCert.CertFile, KeyFile: u.ClientCert.KeyFile}
	}
	return tlsconf.Client(out)
}
