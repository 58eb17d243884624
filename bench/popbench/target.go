package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/popproxy/popproxy/internal/testdovecot"
)

// A target is a POP3 server as a client sees it: Dovecot directly, or popproxy
// in front of it. Variants (implicit TLS through the proxy, stunnel, Dovecot's
// own TLS; the proxy with audit on) are more targets: a dial that wraps the
// connection in tls.Client, or the address of another proxy process.
type target struct {
	name string
	// dial returns a connection whose next bytes are the server's greeting.
	dial func() (net.Conn, error)
	// cpu returns the CPU time used so far by every process serving the
	// target: Dovecot's, and the proxy's in front of it.
	cpu func() (time.Duration, error)
	// reference targets are measured for comparison but not held to goals.
	reference bool
}

// tcpTarget is a plain TCP server at addr, served by cpu's processes.
func tcpTarget(name, addr string, cpu func() (time.Duration, error)) target {
	return target{name: name, cpu: cpu, dial: func() (net.Conn, error) {
		return net.DialTimeout("tcp", addr, 10*time.Second)
	}}
}

// dovecotTarget is Dovecot's plain POP3 port.
func dovecotTarget(name string, dc *testdovecot.Instance) target {
	return tcpTarget(name, dc.Addr(), func() (time.Duration, error) { return groupCPU(dc.Pid()) })
}

// child is a server process popbench started: popproxy, or popbench itself
// as the reference relay.
type child struct {
	name string
	addr string // where it accepts POP3 clients
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
}

// buildProxy builds cmd/popproxy into bin; the working directory must be
// inside the module.
func buildProxy(bin string) error {
	cmd := exec.Command("go", "build", "-o", bin, "github.com/popproxy/popproxy/cmd/popproxy")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build popproxy: %w", err)
	}
	return nil
}

// startProxy writes <work>/<name>.yaml, starts bin with it and waits until it
// greets. The proxy's log goes to <work>/<name>.log; its audit trail to
// /dev/null, or with audit "file" to <work>/<name>-audit.jsonl, or with
// "stdout" to its stdout, which is the file <work>/<name>-stdout.jsonl.
func startProxy(bin, work, name, upstream, audit string) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	output := "/dev/null"
	switch audit {
	case "file":
		output = filepath.Join(work, name+"-audit.jsonl")
	case "stdout":
		output = "stdout"
	}
	// Every client comes from 127.0.0.1 and most log in as the same user, so
	// the default limits (50 sessions per address, 4 per user, 50 commands
	// a second...) would measure the limiter. They are set so high that they
	// never refuse, rather than off, so that their bookkeeping is measured.
	conf := fmt.Sprintf(`listeners:
  - name: bench
    address: %s
upstream:
  address: %s
timeouts:
  idle: 10m
  shutdown_grace: 2s
limits:
  max_sessions: 100000
  per_ip:
    max_sessions: 100000
    connection_rate: 1000000
    connection_burst: 1000000
  per_user:
    max_sessions: 100000
  per_session:
    command_rate: 1000000
    command_burst: 1000000
audit:
  output: %s
`, addr, upstream, output)
	confPath := filepath.Join(work, name+".yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	stdout := ""
	if audit == "stdout" {
		stdout = filepath.Join(work, name+"-stdout.jsonl")
	}
	return startChild(work, name, addr, stdout, bin, "-config", confPath)
}

// startRelay starts popbench itself as the reference relay (see relay.go).
func startRelay(work, name, upstream string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return startChild(work, name, addr, "", self, relayCommand, addr, upstream)
}

// startChild runs bin with args, stderr (and stdout, unless stdout names a
// file for it) to <work>/<name>.log, and waits until addr greets.
func startChild(work, name, addr, stdout, bin string, args ...string) (*child, error) {
	logFile, err := os.Create(filepath.Join(work, name+".log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if stdout != "" {
		f, err := os.Create(stdout)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout = f
	}
	// If popbench dies, so does the child (Linux).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &child{name: name, addr: addr, cmd: cmd, done: make(chan struct{})}
	go reap(cmd, p.done)
	atExit(func() { p.stop() })
	if err := p.waitReady(10 * time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s (log %s): %w", name, logFile.Name(), err)
	}
	return p, nil
}

// reap waits for the process and closes done.
func reap(cmd *exec.Cmd, done chan<- struct{}) {
	cmd.Wait()
	close(done)
}

// waitReady polls until the child's address greets with +OK.
func (p *child) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return errors.New("exited during start")
		default:
		}
		c, err := dial(tcpTarget(p.name, p.addr, nil), 1<<10)
		if err == nil {
			return c.quit()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// target returns the child's listener as a target called name; upstream is
// the target the child relays to, whose processes' CPU time counts too.
func (p *child) target(name string, upstream target) target {
	return tcpTarget(name, p.addr, func() (time.Duration, error) {
		own, err := procCPU(p.pid(), false)
		if err != nil {
			return 0, err
		}
		up, err := upstream.cpu()
		return own + up, err
	})
}

func (p *child) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits for the process to exit, killing it after 10
// s. It may be called more than once.
func (p *child) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within 10s of SIGTERM", p.name)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// rssKiB returns the resident set size of process pid in KiB, VmRSS in
// /proc/PID/status.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v)) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
