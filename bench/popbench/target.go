package main

import (
	"bytes"
	"crypto/tls"
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
	// hop, for a proxy or relay, returns the CPU time its own processes
	// used so far, without the server's behind it: the cost of the hop.
	hop func() (time.Duration, error)
	// reference targets are measured for comparison but not held to goals.
	reference bool
	// stallsOnDelayedACK marks a server that stalls on clients which delay
	// their ACKs (nginx); retr.go measures it on a sample with such clients.
	stallsOnDelayedACK bool
	// perClient, if set, gives client i of the sessions/s measurement a
	// target of its own, the same in every window (one TLS session cache
	// per client). It is called from one goroutine.
	perClient func(i int) target
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
	addr string      // where it accepts POP3 clients
	tls  *tls.Config // if set, it expects clients to speak TLS at once
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

// proxyConf is what differs between the popproxy processes of a run.
type proxyConf struct {
	upstream string // Dovecot's plain port
	// audit is "off" (/dev/null), "file" (<work>/<name>-audit.jsonl),
	// "stdout" (to the file <work>/<name>-stdout.jsonl), or "chain": full
	// auditing, to <work>/<name>-audit.jsonl with the hash chain on and
	// resolve_uids off.
	audit string
	// limits is the YAML of the limits section: limitsHigh, limitsOff, or
	// empty for popproxy's defaults.
	limits string
	// cert, if set, makes the listener implicit TLS with this certificate
	// (the upstream stays plain); clients is the clients' side of it.
	cert    *benchCert
	clients *tls.Config
	// admin, if set, is the admin listener's host:port (/metrics).
	admin string
}

// Every client comes from 127.0.0.1 and most log in as the same user, so
// the default limits (50 sessions per address, 4 per user, 50 commands a
// second...) would measure the limiter. limitsHigh sets them so high that
// they never refuse, rather than off, so that their bookkeeping is measured.
const limitsHigh = `limits:
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
`

// limitsOff switches every limit off (0); max_bad_commands cannot be off
// and keeps its default, ipv6_prefix is a setting rather than a limit.
const limitsOff = `limits:
  max_sessions: 0
  per_ip: {max_sessions: 0, connection_rate: 0, connection_burst: 0}
  failed_logins:
    per_ip: {max: 0, window: 0s, delay: 0s, max_delay: 0s, block: 0s}
    per_user: {max: 0, window: 0s, delay: 0s, max_delay: 0s, block: 0s}
  per_user: {max_sessions: 0, login_delay: 0s, download_rate: 0}
  per_session: {command_rate: 0, command_burst: 0, download_rate: 0, max_retrievals: 0}
`

// startProxy starts the proxy of the original measurements: plain listener,
// limitsHigh, audit as -audit says.
func startProxy(bin, work, name, upstream, audit string) (*child, error) {
	return startProxyConf(bin, work, name, proxyConf{upstream: upstream, audit: audit, limits: limitsHigh})
}

// startProxyConf writes <work>/<name>.yaml for pc, starts bin with it and
// waits until it greets. The proxy's log goes to <work>/<name>.log.
func startProxyConf(bin, work, name string, pc proxyConf) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	output := "/dev/null"
	switch pc.audit {
	case "file", "chain":
		output = auditFile(work, name)
	case "stdout":
		output = "stdout"
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "listeners:\n  - name: bench\n    address: %s\n", addr)
	if pc.cert != nil {
		fmt.Fprintf(&conf, "    tls: implicit\ntls:\n  certificates:\n    - cert_file: %s\n      key_file: %s\n",
			pc.cert.certFile, pc.cert.keyFile)
	}
	fmt.Fprintf(&conf, "upstream:\n  address: %s\n", pc.upstream)
	if pc.cert != nil {
		conf.WriteString("  allow_plaintext_upstream: true\n")
	}
	conf.WriteString("timeouts:\n  idle: 10m\n  shutdown_grace: 2s\n")
	conf.WriteString(pc.limits)
	fmt.Fprintf(&conf, "audit:\n  output: %s\n", output)
	if pc.admin != "" {
		fmt.Fprintf(&conf, "admin:\n  address: %s\n", pc.admin)
	}
	if pc.audit == "chain" {
		conf.WriteString("  chain: true\n  resolve_uids: false\n")
	}
	confPath := filepath.Join(work, name+".yaml")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		return nil, err
	}
	stdout := ""
	if pc.audit == "stdout" {
		stdout = filepath.Join(work, name+"-stdout.jsonl")
	}
	return startChild(work, name, addr, stdout, pc.clients, bin, "-config", confPath)
}

// auditFile is where the proxy called name writes its audit trail when it
// writes it to a file.
func auditFile(work, name string) string { return filepath.Join(work, name+"-audit.jsonl") }

// startRelay starts popbench itself as the reference relay command (see
// relays).
func startRelay(work, command, upstream string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return startChild(work, command, addr, "", nil, self, command, addr, upstream)
}

// startChild runs bin with args, stderr (and stdout, unless stdout names a
// file for it) to <work>/<name>.log, and waits until addr greets, over TLS
// with clientTLS if it is set.
func startChild(work, name, addr, stdout string, clientTLS *tls.Config, bin string, args ...string) (*child, error) {
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
	p := &child{name: name, addr: addr, tls: clientTLS, cmd: cmd, done: make(chan struct{})}
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
		c, err := dial(p.target(p.name, target{}), 1<<10)
		if err == nil {
			return c.quit()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// target returns the child's listener as a target called name, over TLS if
// the child expects it; upstream is the target the child relays to, whose
// processes' CPU time counts too.
func (p *child) target(name string, upstream target) target {
	t := p.tcp(name, upstream)
	if p.tls != nil {
		t = tlsTarget(t, p.tls, nil)
	}
	return t
}

// tcp is target without TLS, for callers that wrap it themselves.
func (p *child) tcp(name string, upstream target) target {
	return hopTarget(tcpTarget(name, p.addr, nil), upstream, func() (time.Duration, error) { return procCPU(p.pid(), false) })
}

// hopTarget returns t with hop as its own CPU time, and hop's plus
// upstream's as cpu.
func hopTarget(t, upstream target, hop func() (time.Duration, error)) target {
	t.hop = hop
	t.cpu = func() (time.Duration, error) {
		own, err := hop()
		if err != nil || upstream.cpu == nil {
			return own, err
		}
		up, err := upstream.cpu()
		return own + up, err
	}
	return t
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
