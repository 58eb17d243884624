package daemon

import (
	"context"
	"fmt"
	"os"
)

// shutdown stops the server: listeners close at once, open sessions may go
// on for timeouts.shutdown_grace, and StopNow ends them at once, as an admin
// who does not want to wait expects. Either way every session writes its
// session.close.
func (d *Daemon) shutdown() {
	grace := d.cfg.Timeouts.ShutdownGrace
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if n := d.srv.Sessions(); n > 0 && grace > 0 {
		d.logger.Info(fmt.Sprintf("waiting up to %s for %s; send the signal again to stop now", grace, sessions(n)),
			"sessions", n, "grace", grace.String())
		go d.cancelOnHurry(ctx, cancel)
	}
	if err := d.srv.Shutdown(ctx); err != nil {
		d.logger.Warn("sessions still open were stopped", "err", err)
	}
}

// StopNow ends Run's wait for open sessions: they are closed at once. sig,
// if not nil, is the signal that asked, for the log. Called before that wait,
// it takes effect when the wait begins; called twice, the second call does
// nothing.
func (d *Daemon) StopNow(sig os.Signal) {
	select {
	case d.hurry <- sig:
	default:
	}
}

// cancelOnHurry cancels ctx when StopNow is called before ctx ends.
func (d *Daemon) cancelOnHurry(ctx context.Context, cancel context.CancelFunc) {
	select {
	case sig := <-d.hurry:
		if sig != nil {
			d.logger.Info("stopping every session now", "signal", sig.String())
		} else {
			d.logger.Info("stopping every session now")
		}
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
