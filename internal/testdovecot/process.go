package testdovecot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/popproxy/popproxy/internal/testproc"
)

// errAddrInUse marks a start that failed because a chosen port was taken
// between choosing it and Dovecot binding it.
var errAddrInUse = errors.New("address already in use")

// stopTimeout bounds the wait for the processes to exit after SIGTERM, and
// again after SIGKILL.
const stopTimeout = 10 * time.Second

// start runs Dovecot on the written configuration and waits until it
// serves. It returns an error wrapping errAddrInUse if a port was taken.
func (d *Instance) start() error {
	// Dovecot's master keeps its stdout and stderr open, and passes them
	// on: they must be a file, not a pipe, or whoever reads the pipe (the
	// test runner) waits forever. exec.Cmd gives Stdin nil /dev/null.
	logFile, err := os.OpenFile(d.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logStart, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}

	inheritFileLimit()
	cmd := exec.Command(d.bin, "-F", "-c", filepath.Join(d.cfg.Dir, "dovecot.conf"))
	cmd.Stdout, cmd.Stderr, cmd.Dir = logFile, logFile, d.cfg.Dir
	// Own process group, so that Stop and Kill reach every Dovecot process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Dovecot's master stops its children when it gets the signal.
	testproc.SetParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.bin, err)
	}
	d.pgid, d.done = cmd.Process.Pid, make(chan struct{})
	go waitProcess(cmd, d.done)

	if err := d.waitReady(logStart); err != nil {
		_ = d.terminate(syscall.SIGKILL) // the start error says more
		log := d.logSince(logStart)
		if strings.Contains(log, "Address already in use") {
			return fmt.Errorf("%w: %s", errAddrInUse, testproc.LastLines(log, 5))
		}
		return fmt.Errorf("%w; dovecot log:\n%s", err, testproc.LastLines(log, 20))
	}
	return nil
}

// waitProcess reaps Dovecot's master and closes done.
func waitProcess(cmd *exec.Cmd, done chan<- struct{}) {
	_ = cmd.Wait() // exit status after our own signal is not interesting
	close(done)
}

// waitReady greets the plain port until it answers +OK and a pop3-login
// line (the greeting's "Disconnected") has reached the log, greeting again
// every 100 ms while none has: seen with 2.3.19 on a busy machine,
// Dovecot's log process may hold a service's first lines until its next
// one, which in a test ("Login: ... rip=") may never come. Once one line
// has come through, later ones follow at once.
func (d *Instance) waitReady(logStart int64) error {
	const readyTimeout, pokeInterval = 15 * time.Second, 100 * time.Millisecond
	deadline := time.Now().Add(readyTimeout)
	greetErr := errors.New("not tried")
	var greeted time.Time
	for {
		if greetErr != nil || time.Since(greeted) >= pokeInterval {
			greetErr, greeted = testproc.Greets(d.Addr()), time.Now()
		}
		if greetErr == nil && strings.Contains(d.logSince(logStart), "pop3-login: ") {
			return nil
		}
		select {
		case <-d.done:
			return errors.New("dovecot exited during start")
		default:
		}
		if time.Now().After(deadline) {
			if greetErr != nil {
				return fmt.Errorf("no POP3 greeting on %s within %v: %w", d.Addr(), readyTimeout, greetErr)
			}
			return fmt.Errorf("no pop3-login line in the log within %v", readyTimeout)
		}
		time.Sleep(logPoll)
	}
}

var fileLimitOnce sync.Once

// inheritFileLimit lets child processes, Dovecot among them, inherit the
// open-file limit the Go runtime raised for this process (soft = hard). Go
// otherwise gives children the original soft limit, often 1024, and
// Dovecot's log and anvil processes need one descriptor per session. It is
// process-wide, and harmless: it only affects programs that use select(2).
func inheritFileLimit() {
	fileLimitOnce.Do(func() {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
			// Setrlimit with RLIMIT_NOFILE, even unchanged, tells
			// os/exec to stop restoring the original soft limit.
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	})
}

// Greeted polls the plain port every 10 ms until Dovecot greets with +OK,
// and returns when it did: once it is stopped or paused, the moment it
// serves again after Restart or Resume. If done is closed first, Greeted
// returns the zero time.
func (d *Instance) Greeted(done <-chan struct{}) time.Time {
	for {
		if t, err := testproc.GreetedAt(d.Addr()); err == nil {
			return t
		}
		select {
		case <-done:
			return time.Time{}
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM to every process of the instance (the master's
// process group) and waits until none is left: a logged-in session gets
// "-ERR [SYS/TEMP] Server shutting down." and commits no DELE. The whole
// group, because the pop3 processes of sessions outlive Dovecot 2.3's
// master. Once no pop3 or pop3-login process is left for 100 ms, the rest
// (the master, anvil, ...; seen lingering for seconds) gets SIGKILL, as
// does anything left after 10 s. Log lines written meanwhile may be lost.
//
// Stop and Kill act once: later calls return the first call's result until
// Restart. Stop keeps Dir.
func (d *Instance) Stop() error { return d.halt(syscall.SIGTERM) }

// Kill sends SIGKILL to every process of the instance at once, as if the
// server crashed, and waits until they are gone. Connections are reset.
func (d *Instance) Kill() error { return d.halt(syscall.SIGKILL) }

func (d *Instance) halt(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped {
		d.stopped = true
		d.stopErr = d.terminate(sig)
	}
	return d.stopErr
}

// terminate sends sig to the process group and waits until it is gone,
// sending SIGKILL if it is not within stopTimeout.
func (d *Instance) terminate(sig syscall.Signal) error {
	_ = syscall.Kill(-d.pgid, sig)             // ESRCH: gone already
	_ = syscall.Kill(-d.pgid, syscall.SIGCONT) // a paused instance must see SIGTERM
	if d.waitGone() {
		return nil
	}
	_ = syscall.Kill(-d.pgid, syscall.SIGKILL)
	if !d.waitGone() {
		return fmt.Errorf("testdovecot: processes of group %d still running %v after SIGKILL", d.pgid, stopTimeout)
	}
	return fmt.Errorf("testdovecot: dovecot still running %v after %v; killed", stopTimeout, sig)
}

// waitGone waits up to stopTimeout until the master has been reaped and no
// process of its group is left, sending SIGKILL once only the master and
// its helpers (anvil, log, auth, ...) have been left for masterAloneGrace.
func (d *Instance) waitGone() bool {
	const masterAloneGrace = 100 * time.Millisecond
	deadline := time.Now().Add(stopTimeout)
	var alone time.Time // when no serving process was first seen
	for {
		select {
		case <-d.done:
			if !testproc.GroupAlive(d.pgid) {
				return true
			}
		default:
		}
		if procs, ok := testproc.Group(d.pgid); ok && !slices.ContainsFunc(procs, serving) {
			if alone.IsZero() {
				alone = time.Now()
			} else if time.Since(alone) > masterAloneGrace {
				_ = syscall.Kill(-d.pgid, syscall.SIGKILL)
			}
		} else {
			alone = time.Time{}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serving reports whether p serves clients: a login or a mail process.
func serving(p testproc.Proc) bool { return p.Comm == "pop3" || p.Comm == "pop3-login" }

// Restart starts Dovecot again after Stop or Kill, on the same ports, with
// the same configuration and the mail as it is now, and returns once it
// greets. A port may be taken meanwhile, most likely as the local port of
// an outgoing connection; Restart then tries again for up to 10 s.
func (d *Instance) Restart() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped {
		return errors.New("testdovecot: restart: still running; Stop or Kill it first")
	}
	// A master killed while it updated its list of instances leaves this
	// lock behind, and the next one waits 10 s for it to go stale (seen
	// with 2.3.19: "file_dotlock_open(.../state/instances) failed").
	if err := os.Remove(filepath.Join(d.cfg.Dir, "state", "instances.lock")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testdovecot: restart: %w", err)
	}
	const restartTimeout = 10 * time.Second
	deadline := time.Now().Add(restartTimeout)
	for {
		err := d.start()
		if err == nil {
			d.stopped, d.stopErr = false, nil
			return nil
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			return fmt.Errorf("testdovecot: restart: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pause sends SIGSTOP to every process of the instance, as if the server
// hung: the kernel still accepts connections on its ports, but nothing is
// answered until Resume. Stop and Kill work on a paused instance.
func (d *Instance) Pause() error { return d.signal(syscall.SIGSTOP) }

// Resume sends SIGCONT to every process of a paused instance.
func (d *Instance) Resume() error { return d.signal(syscall.SIGCONT) }

func (d *Instance) signal(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return fmt.Errorf("testdovecot: %v: the instance is stopped", sig)
	}
	if err := syscall.Kill(-d.pgid, sig); err != nil {
		return fmt.Errorf("testdovecot: %v: %w", sig, err)
	}
	return nil
}
