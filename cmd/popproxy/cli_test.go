package main

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testproc"
)

// runBinary runs popproxy with args to its end and returns its exit status
// and output.
func runBinary(t *testing.T, bin string, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// TestCommandLine runs the binary with every kind of command line: help
// exits 0 and goes to stdout; a mistake exits 2 with a message and the usage
// on stderr.
func TestCommandLine(t *testing.T) {
	bin := buildBinary(t)
	commands := []string{"popproxy [run] -config FILE", "-check", "popproxy demo", "popproxy audit verify FILE",
		"popproxy audit report FILE", "popproxy version", "popproxy help"}
	tests := []struct {
		args       []string
		status     int
		stdout     []string
		stderr     []string
		stderrOnly bool // nothing on stdout
	}{
		{args: []string{"help"}, stdout: commands},
		{args: []string{"-h"}, stdout: append(commands, "-config FILE", "-version")},
		{args: []string{"--help"}, stdout: commands},
		{args: []string{"run", "-h"}, stdout: commands},
		{args: []string{"help", "demo"}, stdout: []string{"usage: popproxy demo", "-listen ADDR", "-listen-tls ADDR"}},
		{args: []string{"demo", "-h"}, stdout: []string{"usage: popproxy demo"}},
		{args: []string{"audit", "-h"}, stdout: []string{"popproxy audit verify FILE", "popproxy audit report FILE"}},
		{args: []string{"help", "audit"}, stdout: []string{"popproxy audit verify FILE"}},
		{args: []string{"version", "-h"}, stdout: []string{"usage: popproxy version"}},
		{args: []string{"frobnicate"}, status: 2, stderr: append([]string{`popproxy: unknown command "frobnicate"`}, commands...), stderrOnly: true},
		{args: []string{"help", "frobnicate"}, status: 2, stderr: []string{`popproxy: unknown command "frobnicate"`}, stderrOnly: true},
		{args: []string{"audit", "frobnicate", "x"}, status: 2, stderr: []string{`popproxy: unknown command "audit frobnicate"`, "popproxy audit verify FILE"}, stderrOnly: true},
		{args: []string{"audit"}, status: 2, stderr: []string{"popproxy: audit needs a subcommand", "popproxy audit verify FILE"}, stderrOnly: true},
		{args: nil, status: 2, stderr: []string{"popproxy: -config is required", "popproxy [run] -config FILE"}, stderrOnly: true},
		{args: []string{"-check"}, status: 2, stderr: []string{"-config is required"}, stderrOnly: true},
		{args: []string{"run", "-check"}, status: 2, stderr: []string{"-config is required"}, stderrOnly: true},
		{args: []string{"-config"}, status: 2, stderr: []string{"popproxy: flag needs an argument: -config"}, stderrOnly: true},
		{args: []string{"-frob"}, status: 2, stderr: []string{"popproxy: flag provided but not defined: -frob"}, stderrOnly: true},
		{args: []string{"-config", "popproxy.yaml", "extra"}, status: 2, stderr: []string{`popproxy: unexpected argument "extra"`}, stderrOnly: true},
		{args: []string{"-config", "popproxy.yaml", "-check", "extra"}, status: 2, stderr: []string{`popproxy: unexpected argument "extra"`}, stderrOnly: true},
		{args: []string{"demo", "extra"}, status: 2, stderr: []string{`popproxy: unexpected argument "extra"`, "usage: popproxy demo"}, stderrOnly: true},
		{args: []string{"version", "extra"}, status: 2, stderr: []string{`popproxy: unexpected argument "extra"`}, stderrOnly: true},
		{args: []string{"help", "demo", "extra"}, status: 2, stderr: []string{`popproxy: unexpected argument "extra"`}, stderrOnly: true},
		{args: []string{"-config", "/nonexistent/popproxy.yaml"}, status: 1, stderr: []string{"popproxy: open /nonexistent/popproxy.yaml: no such file or directory"}, stderrOnly: true},
	}
	for _, tt := range tests {
		status, stdout, stderr := runBinary(t, bin, tt.args...)
		if status != tt.status {
			t.Errorf("popproxy %s: exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tt.args, " "), status, tt.status, stdout, stderr)
			continue
		}
		for _, want := range tt.stdout {
			if !strings.Contains(stdout, want) {
				t.Errorf("popproxy %s: stdout lacks %q:\n%s", strings.Join(tt.args, " "), want, stdout)
			}
		}
		for _, want := range tt.stderr {
			if !strings.Contains(stderr, want) {
				t.Errorf("popproxy %s: stderr lacks %q:\n%s", strings.Join(tt.args, " "), want, stderr)
			}
		}
		if tt.stderrOnly && stdout != "" {
			t.Errorf("popproxy %s: a mistake printed on stdout:\n%s", strings.Join(tt.args, " "), stdout)
		}
		if tt.status == 0 && stderr != "" {
			t.Errorf("popproxy %s: help printed on stderr:\n%s", strings.Join(tt.args, " "), stderr)
		}
	}
}

// TestVersion checks `popproxy version` and -version on a release build,
// whose version and build date come from -ldflags -X as the README says.
func TestVersion(t *testing.T) {
	bin := buildBinary(t, "-ldflags", "-X main.version=1.2.3-test -X main.buildDate=2026-11-27T10:00:00Z")
	for _, args := range [][]string{{"version"}, {"-version"}} {
		status, stdout, stderr := runBinary(t, bin, args...)
		if status != 0 || stderr != "" {
			t.Errorf("%s: exit status %d, %s", args, status, stderr)
		}
		if !strings.HasPrefix(stdout, "popproxy 1.2.3-test\n") || !strings.Contains(stdout, "built      2026-11-27T10:00:00Z\n") ||
			!strings.Contains(stdout, "go         go1.") {
			t.Errorf("%s:\n%s", args, stdout)
		}
	}
}

// TestVersionText checks what the version says of a build from a checkout,
// and of one without -X.
func TestVersionText(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "51414e2c0ffee"}, {Key: "vcs.time", Value: "2026-11-26T14:57:07Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	got := versionText(bi, "", "")
	for _, want := range []string{"popproxy devel\n", "  revision   51414e2c0ffee (with uncommitted changes)\n", "  committed  2026-11-26T14:57:07Z\n", "  go         go1.26.8 "} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "built") {
		t.Errorf("a build date without -X main.buildDate:\n%s", got)
	}
	bi = &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}}
	if got := versionText(bi, "", ""); !strings.HasPrefix(got, "popproxy v1.4.0\n") {
		t.Errorf("go install's module version:\n%s", got)
	}
	if got := versionText(bi, "1.5.0", ""); !strings.HasPrefix(got, "popproxy 1.5.0\n") {
		t.Errorf("-X main.version over the module version:\n%s", got)
	}
}

// TestDemoBusyPort checks that an address given with -listen is used or the
// demo fails with the bind error; it never moves to another port.
func TestDemoBusyPort(t *testing.T) {
	bin := buildBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, args := range [][]string{
		{"demo", "-listen", busy.Addr().String(), "-listen-tls", "127.0.0.1:0"},
		{"demo", "-listen", "127.0.0.1:0", "-listen-tls", busy.Addr().String()},
	} {
		status, _, stderr := runBinary(t, bin, args...)
		if status != 1 || !strings.Contains(stderr, "listen tcp "+busy.Addr().String()+": bind: address already in use") ||
			strings.Contains(stderr, "popproxy in front of it") {
			t.Errorf("%s: exit status %d\n%s", args, status, stderr)
		}
	}
}

// TestSecondSignalStopsNow checks that SIGTERM with a session open says how
// long popproxy will wait and for how many sessions, and that a second
// signal stops at once, long before the 30 s grace, with the session's
// session.close written.
func TestSecondSignalStopsNow(t *testing.T) {
	bin := buildBinary(t)
	drop := startDrop(t, map[string]string{"u": "p"})
	addr := freeAddr(t)
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := testproc.WriteConfig(t, "listeners: [{name: pop3, address: "+addr+"}]\nupstream: {address: "+drop+
		"}\ntimeouts: {shutdown_grace: 30s}\naudit: {output: "+auditPath+"}\n")
	cmd := startBinary(t, bin, cfg, addr)
	c, err := pop3test.DialConn(&net.Dialer{}, addr, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("u", "p"); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	waitLog(t, cmd, "waiting up to 30s for 1 session; send the signal again to stop now")
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, cmd.Stderr)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("the second signal took %v to stop popproxy", waited)
	}
	if line, _ := c.ReadLine(); line != "-ERR [SYS/TEMP] server shutting down\r\n" {
		t.Errorf("the client read %q", line)
	}
	data, _ := os.ReadFile(auditPath)
	if !strings.Contains(string(data), `"event":"session.close"`) {
		t.Errorf("no session.close after the second signal:\n%s", data)
	}
}

// TestDemoShortGrace checks that the demo waits 2 s for open sessions, not
// the 30 s a production configuration gets.
func TestDemoShortGrace(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "demo", "-listen", "127.0.0.1:0", "-listen-tls", "127.0.0.1:0")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var addr string
	log := make(chan string, 100)
	sc := bufio.NewScanner(stderr)
	for addr == "" && sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "popproxy in front of it at "); ok {
			addr = strings.TrimSuffix(rest, ".")
		}
	}
	go func() {
		for sc.Scan() {
			log <- sc.Text()
		}
		close(log)
	}()
	c, err := pop3test.DialConn(&net.Dialer{}, addr, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(demoUser, demoPassword); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	var all strings.Builder
	for line := range log { // to the end of the demo's output
		all.WriteString(line + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 1900*time.Millisecond || waited > 15*time.Second {
		t.Errorf("the demo stopped after %v; want its 2s grace", waited)
	}
	if !strings.Contains(all.String(), "waiting up to 2s for 1 session") {
		t.Errorf("log:\n%s", all.String())
	}
}
