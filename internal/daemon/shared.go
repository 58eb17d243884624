package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/metrics"
	"github.com/popproxy/popproxy/internal/sharedlimits"
	"github.com/popproxy/popproxy/proxy"
)

var _ proxy.SharedLimits = (*sharedlimits.Store)(nil)

// SharedConfig reads what limits.shared names: the password file and the CA
// file. Check calls it too, so a missing file is found before a restart, and
// so does popproxy limits, to reach the store.
func SharedConfig(sh *config.Shared) (sharedlimits.Config, error) {
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
	sc, err := SharedConfig(sh)
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

// SharedKeys returns the shared store's keys for name: an address's, or a
// user's as the routes send it upstream, under its own name on each
// upstream, and unrouted (the key of a login that no route took).
func SharedKeys(cfg *config.Config, name string) ([]string, error) {
	limits, err := proxyLimits(cfg.Limits)
	if err != nil {
		return nil, err
	}
	if addr, err := netip.ParseAddr(name); err == nil {
		return []string{limits.SharedAddressKey(addr)}, nil
	}
	var keys []string
	add := func(key string) {
		if !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}
	r, err := router(cfg)
	if err != nil {
		return nil, err
	}
	if t, err := r.Route(name); err == nil {
		add(limits.SharedUserKey(t.Upstream, t.Login))
	}
	for _, u := range cfg.Upstreams {
		add(limits.SharedUserKey(u.Name, name))
	}
	add(limits.SharedUserKey("", name))
	return keys, nil
}
