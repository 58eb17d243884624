// Command popproxy is a POP3 proxy: it terminates clients' connections,
// handles their login, relays every command to the upstream server after
// checking it, and writes an audit trail of mailbox access.
//
// Usage:
//
//	popproxy [run] -config FILE          run
//	popproxy [run] -config FILE -check   check the configuration and every file it names, and exit
//	popproxy demo                        run against an embedded sample mail drop
//	popproxy audit verify FILE...        check the hash chain of audit files, oldest first
//	popproxy audit report FILE...        summarise audit files per user
//	popproxy limits show|clear -config FILE USER|ADDRESS
//	                                     show or clear fleet-wide limits in the shared store
//	popproxy version                     print the version and build information
//	popproxy help [COMMAND]              print the usage
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/metrics"
	"github.com/popproxy/popproxy/internal/proxyproto"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/proxy"
	"github.com/popproxy/popproxy/tlsconf"
)

func main() {
	audit.SetGlobals()
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// run serves cfg until SIGINT or SIGTERM, then shuts down (see shutdown). On
// SIGHUP it re-reads configPath (if set) for new limits. ready, if not nil, is
// called with the bound listeners once they accept.
func run(cfg *config.Config, configPath string, logger *slog.Logger, ready func([]net.Listener)) error {
	auditLog, err := openAudit(cfg.Audit, logger)
	if err != nil {
		return fmt.Errorf("audit.output: %w", err)
	}
	defer auditLog.Close()
	var certs *tlsconf.Manager
	if cfg.UsesTLS() {
		if certs, err = tlsconf.New(serverTLS(cfg), logger); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		defer certs.Close()
	}
	m := metrics.New()
	m.AuditFailures(auditLog.Failures)
	opts, err := serverOptions(cfg, m.Auditor(auditLog), logger)
	if err != nil {
		return err
	}
	m.Circuits(circuits(opts.Router, opts.Breaker))
	shared, err := openShared(cfg, &opts, m, logger)
	if err != nil {
		return err
	}
	if shared != nil {
		defer shared.Close()
	}
	srv := proxy.New(opts)
	var listenerPanics atomic.Int64 // recovered in PROXY-header reading
	m.Panics(func() int64 { return srv.Panics() + listenerPanics.Load() })

	var listeners []net.Listener
	for _, lc := range cfg.Listeners {
		l, err := listen(lc, logger, &listenerPanics)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		listeners = append(listeners, l)
	}
	if certs != nil {
		m.CertExpiry(certs.NotAfter)
	}
	if cfg.Admin.Address != "" {
		admin, err := serveAdmin(cfg.Admin.Address, m, readiness(cfg, auditLog), logger)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("admin.address: %w", err)
		}
		defer admin.Close()
	}
	stopSignals := make(chan os.Signal, 2)
	signal.Notify(stopSignals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stopSignals)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	errc := make(chan error, len(listeners))
	for i, l := range listeners {
		lc := proxyListener(cfg.Listeners[i], certs)
		logger.Info("listening", "listener", lc.Name, "address", l.Addr().String(), "tls", lc.TLSMode.String())
		if lc.APOP {
			logger.Warn("apop passthrough: APOP is MD5-based; it keeps the secret off the wire, but a digest seen "+
				"on an unencrypted connection can be attacked offline; offer it over TLS where clients can", "listener", lc.Name)
		}
		go func() { errc <- srv.Serve(l, lc) }()
	}
	if ready != nil {
		ready(listeners)
	}
	var serveErr error
wait:
	for {
		select {
		case sig := <-stopSignals:
			logger.Info("shutting down", "signal", sig.String())
			break wait
		case serveErr = <-errc:
			logger.Error("listener failed", "err", serveErr)
			break wait
		case <-hup:
			reload(configPath, srv, opts.Router, certs, auditLog, logger)
		}
	}
	shutdown(srv, cfg.Timeouts.ShutdownGrace, stopSignals, logger)
	if errors.Is(serveErr, proxy.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// listen opens a listener, behind the PROXY protocol if configured: then only
// the trusted load balancers may connect, and the client address the proxy
// sees (for limits and audit) is the one they report.
func listen(lc config.Listener, logger *slog.Logger, panics *atomic.Int64) (net.Listener, error) {
	l, err := net.Listen("tcp", lc.Address)
	if err != nil || len(lc.ProxyProtocol) == 0 {
		return l, err
	}
	trusted, err := ratelimit.ParseNetworks(lc.ProxyProtocol)
	if err != nil {
		l.Close()
		return nil, err
	}
	return &proxyproto.Listener{Listener: l, Trusted: trusted, Timeout: proxyHeaderTimeout,
		OnReject: func(remote net.Addr, err error) {
			if pe, ok := err.(*proxyproto.PanicError); ok {
				panics.Add(1)
				logger.Error("panic recovered", "listener", lc.Name, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
			}
		}}, nil
}

// proxyHeaderTimeout bounds the wait for a load balancer's PROXY header.
const proxyHeaderTimeout = 5 * time.Second

// reload re-reads what SIGHUP refreshes: the limits from the configuration
// file, certificates, and the audit file (after logrotate moved it). Each part
// that fails keeps its old state; no session is dropped.
func reload(configPath string, srv *proxy.Server, routes *route.Router, certs *tlsconf.Manager, auditLog *audit.Log, logger *slog.Logger) {
	if configPath != "" {
		if err := reloadConfig(configPath, srv, routes); err != nil {
			logger.Error("reload: configuration refused; keeping the old limits and routes", "err", err)
		} else {
			logger.Info("reload: limits and routes applied")
		}
	}
	if err := auditLog.Reopen(); err != nil {
		logger.Error("reload: audit file not reopened; still writing to the old one", "err", err)
	}
	if certs == nil {
		return
	}
	if err := certs.Reload(); err != nil {
		logger.Error("reload: keeping the old certificates", "err", err)
		return
	}
	logger.Info("reload: certificates reloaded")
}

// reloadConfig applies the limits and routes of the file at path, both or
// neither.
func reloadConfig(path string, srv *proxy.Server, routes *route.Router) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	limits, err := proxyLimits(cfg.Limits)
	if err != nil {
		return err
	}
	rc, err := routeConfig(cfg)
	if err != nil {
		return err
	}
	if err := routes.Update(rc); err != nil {
		return err
	}
	srv.SetLimits(limits)
	return nil
}

func serverOptions(cfg *config.Config, auditor proxy.Auditor, logger *slog.Logger) (proxy.Options, error) {
	var exts []proxy.Extension
	for _, e := range cfg.Commands.Allow {
		exts = append(exts, proxy.Extension{Verb: strings.ToUpper(e.Verb), MaxArgs: e.MaxArgs, Multiline: e.Multiline})
	}
	limits, err := proxyLimits(cfg.Limits)
	if err != nil {
		return proxy.Options{}, err
	}
	upstreams, err := proxyUpstreams(cfg, logger)
	if err != nil {
		return proxy.Options{}, err
	}
	router, err := router(cfg)
	if err != nil {
		return proxy.Options{}, err
	}
	return proxy.Options{
		Breaker:            route.NewBreaker(route.BreakerConfig{}),
		Upstreams:          upstreams,
		Router:             router,
		Limits:             limits,
		ResolveUIDs:        cfg.Audit.ResolveUIDs,
		CheckpointInterval: cfg.Audit.Checkpoint,
		AuditFailOpen:      cfg.Audit.OnFailure == "continue",
		LoginTimeout:       cfg.Timeouts.Login,
		IdleTimeout:        cfg.Timeouts.Idle,
		MaxBadCommands:     cfg.Limits.MaxBadCommands,
		Mechanisms:         cfg.Auth.Mechanisms,
		Extensions:         exts,
		Auditor:            auditor,
		Logger:             logger,
	}, nil
}

// openAudit opens the audit destination: stdout, syslog, or a file appended
// to and readable by its owner only.
func openAudit(cfg config.Audit, logger *slog.Logger) (*audit.Log, error) {
	opts := audit.Options{Chain: cfg.Chain, Logger: logger, HeadInterval: cfg.Checkpoint}
	switch cfg.Output {
	case "stdout":
		return audit.New(os.Stdout, opts), nil
	case "syslog":
		return audit.OpenSyslog("popproxy", opts)
	}
	return audit.OpenFile(cfg.Output, opts)
}
