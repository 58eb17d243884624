package daemon

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/metrics"
	"github.com/popproxy/popproxy/proxy"
)

// serveAdmin starts the admin HTTP listener: /metrics, /healthz, /readyz,
// and srv's own limits (adminHandler).
func serveAdmin(addr string, m *metrics.Metrics, ready func() error, srv *proxy.Server, logger *slog.Logger) (*http.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: adminHandler(m.Handler(ready), srv), ReadHeaderTimeout: 10 * time.Second}
	logger.Info("admin listening", "address", l.Addr().String())
	if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
		logger.Warn("admin listener is not on loopback: /metrics has no authentication", "address", l.Addr().String())
	}
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin listener failed", "err", err)
		}
	}()
	return hs, nil
}

// readiness reports not ready while the proxy refuses sessions because the
// audit trail cannot be written.
func readiness(cfg *config.Config, auditLog *audit.Log) func() error {
	return func() error {
		if cfg.Audit.OnFailure == "close" {
			if err := auditLog.Err(); err != nil {
				return errors.New("audit trail unavailable: " + err.Error())
			}
		}
		return nil
	}
}
