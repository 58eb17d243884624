package daemon

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Signals are the process signals a daemon answers: SIGINT and SIGTERM shut
// it down, a second one stops the open sessions at once, and SIGHUP reloads.
type Signals struct {
	stop chan os.Signal // SIGINT, SIGTERM
	hup  chan os.Signal
}

// NotifySignals starts catching SIGINT, SIGTERM and SIGHUP. Call it before
// New: once the listeners accept, a client (or a test) may send SIGHUP, whose
// default action would end the process.
func NotifySignals() *Signals {
	s := &Signals{stop: make(chan os.Signal, 2), hup: make(chan os.Signal, 1)}
	signal.Notify(s.stop, syscall.SIGINT, syscall.SIGTERM)
	signal.Notify(s.hup, syscall.SIGHUP)
	return s
}

// Stop stops catching the signals.
func (s *Signals) Stop() {
	signal.Stop(s.stop)
	signal.Stop(s.hup)
}

// Run runs d until the first SIGINT or SIGTERM, or until a listener fails,
// and returns Run's error. Until then each SIGHUP calls d.Reload; once d is
// shutting down, SIGINT or SIGTERM calls d.StopNow.
func (s *Signals) Run(d *Daemon) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go runDaemon(ctx, d, done)
	hup := s.hup
	for {
		select {
		case err := <-done:
			return err
		case sig := <-s.stop:
			if ctx.Err() != nil || d.stopping.Load() {
				d.StopNow(sig)
				continue
			}
			d.logger.Info("shutting down", "signal", sig.String())
			cancel()
			hup = nil // no reload while shutting down
		case <-hup:
			d.Reload()
		}
	}
}

// runDaemon runs d until ctx is done and sends Run's error on done.
func runDaemon(ctx context.Context, d *Daemon, done chan<- error) {
	done <- d.Run(ctx)
}
