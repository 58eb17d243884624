package daemon

import (
	"fmt"
	"log/slog"
	"maps"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/metrics"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/proxy"
)

var sendClient = map[string]proxy.ProxyHeader{
	"none":     proxy.SendNothing,
	"proxy-v1": proxy.SendProxyV1,
	"proxy-v2": proxy.SendProxyV2,
	"xclient":  proxy.SendXClient,
}

// proxyUpstreams maps the configured upstreams onto the proxy's, by name:
// every setting but the addresses, which the router holds (routeConfig), so
// that a reload changes them in one place.
func proxyUpstreams(cfg *config.Config, logger *slog.Logger) (map[string]proxy.Upstream, error) {
	out := map[string]proxy.Upstream{}
	for _, u := range cfg.Upstreams {
		tlsConfig, err := clientTLS(u)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		if u.InsecureSkipVerify {
			logger.Warn("insecure_skip_verify is set: the upstream's certificate is not checked, so anyone on the path can read the credentials", "upstream", u.Name)
		}
		if u.SendClient == "xclient" && u.TLS == config.TLSStartTLS {
			logger.Warn("send_client xclient with tls starttls: XCLIENT is sent only if the server lists it in CAPA after STLS, "+
				"and Dovecot 2.3 offers it only in its plaintext greeting; use tls implicit", "upstream", u.Name)
		}
		var caps []string // nil: learnt from the server
		if u.Capabilities != nil {
			caps = append([]string{}, *u.Capabilities...)
		}
		out[u.Name] = proxy.Upstream{
			Name:            u.Name,
			SendClient:      sendClient[u.SendClient],
			TLSMode:         tlsMode(u.TLS),
			TLSConfig:       tlsConfig,
			LoginPlain:      u.Login == "plain",
			Capabilities:    caps,
			DialTimeout:     cfg.Timeouts.UpstreamDial,
			ResponseTimeout: cfg.Timeouts.UpstreamResponse,
		}
	}
	return out, nil
}

// routeConfig is the routing table: the configuration's routes, then the
// map file's entries, which take precedence.
func routeConfig(cfg *config.Config) (route.Config, error) {
	rc := route.Config{
		Users:       maps.Clone(cfg.Routes.Users),
		Domains:     maps.Clone(cfg.Routes.Domains),
		Default:     cfg.Routes.Default,
		StripDomain: cfg.Routes.StripDomain,
		AddDomain:   cfg.Routes.AddDomain,
	}
	for _, u := range cfg.Upstreams {
		rc.Upstreams = append(rc.Upstreams, route.Upstream{Name: u.Name, Addresses: u.Addresses})
	}
	if cfg.Routes.MapFile != "" {
		users, domains, def, err := route.LoadMap(cfg.Routes.MapFile, rc.Upstreams...)
		if err != nil {
			return route.Config{}, fmt.Errorf("routes.map_file: %w", err)
		}
		if rc.Users == nil {
			rc.Users = map[string]string{}
		}
		if rc.Domains == nil {
			rc.Domains = map[string]string{}
		}
		maps.Copy(rc.Users, users)
		maps.Copy(rc.Domains, domains)
		if def != "" {
			rc.Default = def
		}
	}
	return rc, nil
}

// circuits reports the breaker's state per address of every upstream in the
// routing table in effect, for the popproxy_upstream_circuit_open metric: a
// reload that changes the upstreams changes the series.
func circuits(r *route.Router, b *route.Breaker) func() []metrics.CircuitState {
	return func() []metrics.CircuitState {
		open := map[string]bool{}
		for _, s := range b.States() {
			open[s.Address] = s.Open
		}
		var out []metrics.CircuitState
		for _, u := range r.Upstreams() {
			for _, a := range u.Addresses {
				out = append(out, metrics.CircuitState{Upstream: u.Name, Address: a, Open: open[a]})
			}
		}
		return out
	}
}

func router(cfg *config.Config) (*route.Router, error) {
	rc, err := routeConfig(cfg)
	if err != nil {
		return nil, err
	}
	r, err := route.New(rc)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	return r, nil
}
