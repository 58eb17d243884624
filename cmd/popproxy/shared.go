package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/metrics"
	"github.com/popproxy/popproxy/internal/sharedlimits"
	"github.com/popproxy/popproxy/proxy"
)

var _ proxy.SharedLimits = (*sharedlimits.Store)(nil)

// sharedConfig reads what limits.shared names: the password file and the CA
// file. -check calls it too, so a missing file is found before a restart.
func sharedConfig(sh *config.Shared) (sharedlimits.Config, error) {
	cfg := sharedlimits.Config{Address: sh.Address, Prefix: sh.Prefix, Timeout: sh.Timeout, Lease: sh.SessionLease}
	if sh.PasswordFile != "" {
		b, err := os.ReadFile(sh.PasswordFile)
		if err != nil {
			return cfg, errors.New("limits.shared.password_file: " + err.Error())
		}
		cfg.Password, _, _ = strings.Cut(string(b), "\n")
		cfg.Password = strings.TrimSuffix(cfg.Password, "\r")
	}
	if sh.TLS == config.TLSImplicit {
		host, _, _ := net.SplitHostPort(sh.Address)
		cfg.TLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if sh.CAFile != "" {
			pem, err := os.ReadFile(sh.CAFile)
			if err != nil {
				return cfg, errors.New("limits.shared.ca_file: " + err.Error())
			}
			cfg.TLS.RootCAs = x509.NewCertPool()
			if !cfg.TLS.RootCAs.AppendCertsFromPEM(pem) {
				return cfg, errors.New("limits.shared.ca_file: no PEM certificate in " + sh.CAFile)
			}
		}
	}
	return cfg, nil
}

// openShared opens the store of the fleet-wide limits into opts and exports
// its metrics. Without limits.shared it does nothing and returns nil.
func openShared(cfg *config.Config, opts *proxy.Options, m *metrics.Metrics, logger *slog.Logger) (*sharedlimits.Store, error) {
	sh := cfg.Limits.Shared
	if sh == nil {
		return nil, nil
	}
	sc, err := sharedConfig(sh)
	if err != nil {
		return nil, err
	}
	st := sharedlimits.New(sc, logger)
	opts.Shared, opts.SharedFailClosed = st, sh.OnUnavailable == "closed"
	m.SharedLimits(func() metrics.SharedLimitsState {
		s := st.Stats()
		return metrics.SharedLimitsState{Requests: s.Requests, Errors: s.Failures, RoundTrip: s.RoundTrip, Unavailable: s.Unavailable}
	})
	logger.Info("limits shared with the fleet", "store", sh.Address, "prefix", sh.Prefix, "on_unavailable", sh.OnUnavailable)
	return st, nil
}
