// Package testredis starts a private redis-server on loopback, for tests of
// the fleet-wide limits against a real store.
//
// Each instance listens on a free 127.0.0.1 port, keeps nothing on disk
// (--save ” --appendonly no, in its own folder) and never touches the
// system Redis service.
//
// Typical usage in a test:
//
//	r := testredis.New(t, "")
//	store := sharedlimits.New(sharedlimits.Config{Address: r.Addr()}, logger)
//	r.Stop()    // the store is down
//	r.Restart() // and back, on the same port, empty
package testredis

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/testproc"
)

// ErrNotFound is returned by Start when no redis-server binary is found.
var ErrNotFound = errors.New("redis-server not found: install it with `apt-get install -y redis-server` (.ci/install-test-tools does)")

// startAttempts bounds retries when a chosen port was taken meanwhile.
const startAttempts = 3

// Instance is one private redis-server.
type Instance struct {
	dir      string
	password string
	port     int
	cmd      *exec.Cmd
	done     chan struct{}
}

// New starts a redis-server for t, requiring password if it is not empty,
// and stops it when t ends. A missing redis-server fails t.
func New(t testing.TB, password string) *Instance {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs redis-server")
	}
	r, err := Start(t.TempDir(), password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

// Start starts a redis-server working in dir.
func Start(dir, password string) (*Instance, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, ErrNotFound
	}
	r := &Instance{dir: dir, password: password}
	var err error
	for range startAttempts {
		if r.port, err = testproc.FreePort(); err != nil {
			return nil, err
		}
		if err = r.start(); err == nil {
			return r, nil
		}
	}
	return nil, err
}

// Addr is the address the server listens on, host:port.
func (r *Instance) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Pid is the server's process id, 0 while it is stopped.
func (r *Instance) Pid() int {
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Restart starts the server again on its port after Stop, with no data.
func (r *Instance) Restart() error { return r.start() }

// Stop kills the server and waits until it is gone. Stopping a stopped
// server does nothing.
func (r *Instance) Stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

func (r *Instance) start() error {
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--logfile", ""}
	if r.password != "" {
		args = append(args, "--requirepass", r.password)
	}
	cmd := exec.Command("redis-server", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	testproc.SetParentDeathSignal(cmd.SysProcAttr)
	out := &lastOutput{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go waitProcess(cmd, done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("redis-server exited: %s", out.String())
		default:
		}
		if c, err := net.Dial("tcp", r.Addr()); err == nil {
			c.Close()
			r.cmd, r.done = cmd, done
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("redis-server did not listen on %s within 10s: %s", r.Addr(), out.String())
}

func waitProcess(cmd *exec.Cmd, done chan<- struct{}) {
	cmd.Wait()
	close(done)
}

// lastOutput keeps the server's latest output, for error messages.
type lastOutput struct {
	mu  sync.Mutex
	buf []byte
}

func (o *lastOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	if len(o.buf) > 4096 {
		o.buf = o.buf[len(o.buf)-4096:]
	}
	return len(p), nil
}

func (o *lastOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf)
}
