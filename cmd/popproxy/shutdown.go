package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/popproxy/popproxy/proxy"
)

// shutdown stops srv after the first SIGINT or SIGTERM: listeners close at
// once, open sessions may go on for grace, and a second signal on signals
// ends them at once, as an admin who does not want to wait expects. Either
// way every session writes its session.close.
func shutdown(srv *proxy.Server, grace time.Duration, signals <-chan os.Signal, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if n := srv.Sessions(); n > 0 && grace > 0 {
		logger.Info(fmt.Sprintf("waiting up to %s for %s; send the signal again to stop now", grace, sessions(n)),
			"sessions", n, "grace", grace.String())
		go cancelOnSignal(ctx, cancel, signals, logger)
	}
	if err := srv.Shutdown(ctx); err != nil {
		logger.Warn("sessions still open were stopped", "err", err)
	}
}

// cancelOnSignal cancels ctx when a signal arrives before ctx ends.
func cancelOnSignal(ctx context.Context, cancel context.CancelFunc, signals <-chan os.Signal, logger *slog.Logger) {
	select {
	case sig := <-signals:
		logger.Info("stopping every session now", "signal", sig.String())
		cancel()
	case <-ctx.Done():
	}
}

func sessions(n int) string {
	if n == 1 {
		return "1 session"
	}
	return fmt.Sprintf("%d sessions", n)
}
