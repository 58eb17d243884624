// Package daemon is popproxy's running process, apart from its command line:
// it turns a configuration into the proxy's options, opens the audit trail,
// the certificates and the store of the fleet-wide limits, binds the
// listeners and the admin endpoint, serves, reloads on request and shuts
// down gracefully. cmd/popproxy only parses flags and wires it to signals.
//
// Typical usage:
//
//	sig := daemon.NotifySignals() // before New: a SIGHUP must not kill a daemon that accepts
//	defer sig.Stop()
//	d, err := daemon.New(cfg, daemon.Options{ConfigPath: path, Logger: logger})
//	if err != nil {
//		return err
//	}
//	return sig.Run(d) // SIGHUP reloads; SIGINT or SIGTERM shuts down
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/metrics"
	"github.com/popproxy/popproxy/internal/proxyproto"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/internal/sharedlimits"
	"github.com/popproxy/popproxy/proxy"
	"github.com/popproxy/popproxy/tlsconf"
)

// Options are what a Daemon needs besides its configuration.
type Options struct {
	// ConfigPath is the file Reload reads the limits and routes from. If
	// empty, Reload reopens the audit file and reloads the certificates
	// only.
	ConfigPath string
	// Logger is the operational log (not the audit trail). If nil,
	// slog.Default is used.
	Logger *slog.Logger
}

// Daemon is one popproxy process's proxy, listeners, admin endpoint, audit
// trail, certificates and shared-limits store, built by New, served by Run.
type Daemon struct {
	cfg        *config.Config
	configPath string
	logger     *slog.Logger

	auditLog  *audit.Log
	certs     *tlsconf.Manager // nil without TLS
	shared    *sharedlimits.Store
	srv       *proxy.Server
	router    *route.Router
	listeners []net.Listener
	proxyLCs  []proxy.Listener // the listeners' settings, by index
	admin     *http.Server     // nil without admin.address

	listenerPanics atomic.Int64   // recovered in PROXY-header reading
	stopping       atomic.Bool    // Run is shutting down
	hurry          chan os.Signal // StopNow's request, buffered
	reloadMu       sync.Mutex     // one Reload at a time
	releaseOnce    sync.Once
}

// New builds everything cfg describes and binds the listeners and the admin
// endpoint, which accept (into the kernel's backlog) when it returns; Run
// serves them. On error nothing is left open; the error names the part at
// fault (audit.output, tls, listener NAME, admin.address, ...).
func New(cfg *config.Config, opts Options) (_ *Daemon, err error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	d := &Daemon{cfg: cfg, configPath: opts.ConfigPath, logger: logger, hurry: make(chan os.Signal, 1)}
	defer func() {
		if err != nil {
			for _, l := range d.listeners {
				l.Close()
			}
			d.release()
		}
	}()
	if d.auditLog, err = openAudit(cfg.Audit, logger); err != nil {
		return nil, fmt.Errorf("audit.output: %w", err)
	}
	if cfg.UsesTLS() {
		if d.certs, err = tlsconf.New(serverTLS(cfg), logger); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	m := metrics.New()
	m.AuditFailures(d.auditLog.Failures)
	po, err := serverOptions(cfg, m.Auditor(d.auditLog), logger)
	if err != nil {
		return nil, err
	}
	d.router = po.Router
	m.Circuits(circuits(po.Router, po.Breaker))
	if d.shared, err = openShared(cfg, &po, m, logger); err != nil {
		return nil, err
	}
	d.srv = proxy.New(po)
	m.Panics(func() int64 { return d.srv.Panics() + d.listenerPanics.Load() })

	for _, lc := range cfg.Listeners {
		l, err := listen(lc, logger, &d.listenerPanics)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		d.listeners = append(d.listeners, l)
	}
	if d.certs != nil {
		m.CertExpiry(d.certs.NotAfter)
	}
	if cfg.Admin.Address != "" {
		if d.admin, err = serveAdmin(cfg.Admin.Address, m, readiness(cfg, d.auditLog), d.srv, logger); err != nil {
			return nil, fmt.Errorf("admin.address: %w", err)
		}
	}
	for i, l := range d.listeners {
		lc := proxyListener(cfg.Listeners[i], d.certs)
		d.proxyLCs = append(d.proxyLCs, lc)
		logger.Info("listening", "listener", lc.Name, "address", l.Addr().String(), "tls", lc.TLSMode.String())
		if lc.APOP {
			logger.Warn("apop passthrough: APOP is MD5-based; it keeps the secret off the wire, but a digest seen "+
				"on an unencrypted connection can be attacked offline; offer it over TLS where clients can", "listener", lc.Name)
		}
	}
	return d, nil
}

// Addrs returns the listeners' addresses, in the configuration's order: with
// port 0 in the configuration, the ports the system chose.
func (d *Daemon) Addrs() []net.Addr {
	out := make([]net.Addr, len(d.listeners))
	for i, l := range d.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Run serves the listeners until ctx is done or one of them fails, then shuts
// down (listeners close at once, open sessions may go on for
// timeouts.shutdown_grace unless StopNow is called) and releases everything
// New opened. It returns the listener's error, or nil. Call it once.
func (d *Daemon) Run(ctx context.Context) error {
	errc := make(chan error, len(d.listeners))
	for i, l := range d.listeners {
		go serveListener(d.srv, l, d.proxyLCs[i], errc)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		d.logger.Error("listener failed", "err", serveErr)
	}
	d.stopping.Store(true)
	d.shutdown()
	d.release()
	if errors.Is(serveErr, proxy.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// serveListener serves l until it fails or the server shuts down, and sends
// the error on errc.
func serveListener(srv *proxy.Server, l net.Listener, lc proxy.Listener, errc chan<- error) {
	errc <- srv.Serve(l, lc)
}

// Close stops a Daemon that Run is not serving: it closes the listeners, the
// admin endpoint, the shared store, the certificates and the audit trail.
// Run does this itself when it returns.
func (d *Daemon) Close() error {
	for _, l := range d.listeners {
		l.Close()
	}
	d.srv.Close()
	d.release()
	return nil
}

// release closes, once, what New opened besides the listeners.
func (d *Daemon) release() {
	d.releaseOnce.Do(func() {
		if d.admin != nil {
			d.admin.Close()
		}
		if d.shared != nil {
			d.shared.Close()
		}
		if d.certs != nil {
			d.certs.Close()
		}
		if d.auditLog != nil {
			d.auditLog.Close()
		}
	})
}

// Reload re-reads what SIGHUP refreshes: the limits and routes from the
// configuration file (Options.ConfigPath), the certificates, and the audit
// file (after logrotate moved it). Each part that fails keeps its old state
// and is logged; no session is dropped.
func (d *Daemon) Reload() {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.configPath != "" {
		if err := reloadConfig(d.configPath, d.srv, d.router); err != nil {
			d.logger.Error("reload: configuration refused; keeping the old limits and routes", "err", err)
		} else {
			d.logger.Info("reload: limits and routes applied")
		}
	}
	if err := d.auditLog.Reopen(); err != nil {
		d.logger.Error("reload: audit file not reopened; still writing to the old one", "err", err)
	}
	if d.certs == nil {
		return
	}
	if err := d.certs.Reload(); err != nil {
		d.logger.Error("reload: keeping the old certificates", "err", err)
		return
	}
	d.logger.Info("reload: certificates reloaded")
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
	return &proxyproto.Listener{Listener: l, Trusted: trusted, Timeout: ProxyHeaderTimeout,
		OnReject: func(remote net.Addr, err error) {
			if pe, ok := err.(*proxyproto.PanicError); ok {
				panics.Add(1)
				logger.Error("panic recovered", "listener", lc.Name, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
			}
		}}, nil
}

// ProxyHeaderTimeout bounds the wait for a load balancer's PROXY header on a
// listener with proxy_protocol.
const ProxyHeaderTimeout = 5 * time.Second

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
